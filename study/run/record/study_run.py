"""The study's MLflow parent run: opened (or found again on resume), the chosen hyperparameters
logged on it, and closed FINISHED, FAILED or KILLED with the outbox delivered."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from study import metrics_names as M
from study import process_state
from study.run.record.gpu_summary import log_study_gpu
from study.run.record.reconcile import study_trial_runs
from study.run.record.study_dir import StudyDir
from study.spec import StudySpec
from study.spec.cells import cell_key
from study.tracking import StudyTracker
from study.training.inputs.study_data import summarise_data


def open_study_run(spec: StudySpec, study: StudyDir, tracker: StudyTracker, cells: list[dict[str, Any]], data: Any) -> str:
    """The study's MLflow parent run: the one this folder already has, or a new one."""
    manifest = study.manifest
    run_id = manifest.get("study_run_id") or _find_study_run(tracker, study)
    if run_id is None:
        run_id = tracker.start_study(
            params={
                "spec_name": spec.name,
                "n_cells": len(cells),
                "seeds": spec.confirm.budget.model_dump() if spec.confirm.budget else spec.confirm_seeds,
                "factors": {k: list(v) for k, v in spec.factors.items()},
                "dataset": spec.data.dataset,
                # Every random choice of the study, so a run can be repeated exactly.
                "data_seed": spec.data.seed,
                "perturbation_seed": spec.evaluation.perturbation_seed,
                "tuning_seed": spec.tuning.seed if spec.tuning else None,
            },
            tags={
                M.FACTORS_TAG: json.dumps(sorted(spec.factors)),
                "segstudy.cells": ";".join(map(cell_key, cells)),
                M.STUDY_DIR_TAG: study.location,  # a bucket URI for a study in a bucket: the same on every machine
                **({M.REPLICATE_OF_TAG: manifest["replicate_of"]["study_run_id"]} if manifest.get("replicate_of") else {}),
            },
            spec_file=study.spec_file,
            run_name=study.run_name,
        )
        study.update(study_run_id=run_id)
    else:
        run_id = tracker.real_id(run_id)
        tracker.reopen(run_id)  # a resumed study is running again
        tracker.set_tags(run_id, {M.STATE_TAG: "running"})
    tracker.study_run_id = run_id
    if not manifest.get("data_summary_logged"):
        with tempfile.TemporaryDirectory(prefix="segstudy-") as tmp:
            summary = Path(tmp) / "data_summary.csv"
            summarise_data(spec, data).to_csv(summary, index=False)
            tracker.log_file(run_id, summary)
        study.update(data_summary_logged=True)
    return run_id


def _find_study_run(tracker: StudyTracker, study: StudyDir) -> str | None:
    # The driver may have died between creating the run and recording it in study.json.
    runs = tracker.search_runs(f"tags.`{M.STUDY_DIR_TAG}` = '{study.location}'", max_results=1)
    return runs[0].info.run_id if runs else None


def log_chosen(tracker: StudyTracker, run_id: str, chosen: dict[str, dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory(prefix="segstudy-") as tmp:
        path = Path(tmp) / "chosen_hyperparameters.json"
        path.write_text(json.dumps(chosen, indent=2, sort_keys=True))
        tracker.log_file(run_id, path)
    tracker.set_tags(run_id, {M.CHOSEN_TAG: json.dumps(chosen, sort_keys=True)[:5000]})


def close_study_run(tracker: StudyTracker, study_run: str, *, status: str, study: StudyDir) -> int:
    """End the study run as FINISHED, FAILED or KILLED (stopped: tagged interrupted with what
    stopped it, a signal or a full disk, never FINISHED; docs/ARCHITECTURE.md 3, "Stopping") and
    deliver the outbox; returns the writes still waiting for the server."""
    log_study_gpu(tracker, tracker.real_id(study_run))  # CUDA trials only: the study-wide utilisation
    if status == "KILLED":
        tracker.set_tags(study_run, {M.STATE_TAG: M.STATE_INTERRUPTED,
                                     M.STOP_SIGNAL_TAG: process_state.stop_reason() or "?"})
        tracker.finish(study_run, status="KILLED")
    else:
        tracker.set_tags(study_run, {M.STATE_TAG: status.lower()})
        tracker.finish(study_run, failed_reason=None if status == "FINISHED" else "some trials or cells failed")
    pending = tracker.deliver()
    if pending:
        warnings.warn(
            f"{pending} tracking write(s) could not reach {tracker.uri} and are kept in {study.outbox}; "
            f"run `segstudy sync {study.location}` when the server is back",
            stacklevel=3,
        )
    return pending


def not_learned(tracker: StudyTracker, study_run_id: str) -> tuple[str, ...]:
    """'cell seed=S: reason' of every finished confirm trial of the study that did not learn."""
    out = []
    for run in study_trial_runs(tracker, study_run_id):
        tags = run.data.tags
        if run.info.status == "FINISHED" and tags.get(M.LEARNED_TAG) == "false":
            out.append(f"{tags.get(M.CELL_TAG)} seed={tags.get(M.SEED_TAG)}: {tags.get(M.LEARNING_ISSUE_TAG, '?')}")
    return tuple(sorted(out))


__all__ = ["close_study_run", "log_chosen", "not_learned", "open_study_run"]
