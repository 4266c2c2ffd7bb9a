"""Tune driver callback: mirrors each trial's life into its MLflow child run.

Runs in the driver only, so the MLflow store has one writer whatever the cluster size. A trial
that failed because of the machine (its worker killed, its node lost, a full disk) and not
because of its own configuration is tagged `segstudy.fault=machine`: `segstudy resume` runs it
again (`study.run.record.reconcile`). A full disk also stops the study (`full_disk_stops`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray import tune

from study import disk, process_state
from study import metrics_names as M
from study.training.checkpoints import WEIGHTS_FILE
from study.serving.mlflow_model import MODEL_ARTIFACT_PATH, registered_model_name, save_mlflow_model
from study.serving.package import ARCHITECTURE_FILE, CALIBRATION_FILE
from study.spec import StudySpec
from study.tracking import StudyTracker
from study.training import TrialPlan
from study.run.tune.stopping import full_disk_stops
from study.run.tune.tune_report import HISTORY, checkpoint_files, failure_of, stopped_early

log = logging.getLogger(__name__)

_EPOCH_METRICS = (M.TRAIN_LOSS, M.VAL_DICE, M.BEST_VAL_DICE, *M.GPU_METRICS)  # GPU ones: CUDA trials only, running
_FINAL_PREFIXES = ("test_", M.COVERAGE_PREFIX, M.PATCH_FG_PREFIX, M.PATCH_FG_MEAN, M.BEST_VAL_DICE, M.PEAK_MEMORY, *M.GPU_METRICS)
_ARTIFACTS = (M.PER_IMAGE_FILE, M.PATCH_FG_FILE, M.PATCH_FG_HIST_FILE, M.COVERAGE_FILE, ARCHITECTURE_FILE, CALIBRATION_FILE)
# What a trial's error says when the machine failed it, not its configuration: Ray's dead worker,
# actor or node, its memory monitor's kill, a lost object, a full disk (study.disk).
_MACHINE_FAULTS = (
    "ActorDiedError", "actor died unexpectedly", "WorkerCrashedError", "NodeDiedError", "node died", "marked dead",
    "ActorUnavailableError", "OwnerDiedError", "ObjectLostError", "RaySystemError", "OutOfMemoryError: Task was killed",
    "killed due to the node running low on memory",
)


def _store_of(callback: TrackingCallback) -> list[Path | str | None]:
    """Where the callback writes: the MLflow store, and the study folder (a trial's model is made
    in its checkpoint there before it is logged)."""
    return [callback.tracker.local_store or callback.tracker.uri, callback.folder]


class TrackingCallback(tune.Callback):
    """Creates a child run when a trial starts, logs each epoch, closes it FINISHED or FAILED."""

    def __init__(self, tracker: StudyTracker, spec: StudySpec, *, full_epochs: int, folder: Path | None = None) -> None:
        self.tracker = tracker
        self.folder = folder  # the study folder, named when its disk fills up
        self.spec = spec
        self.full_epochs = full_epochs
        self.runs: dict[str, str] = {}
        self.failed = 0
        self.completed = 0  # trials ended (finished or failed for good), retried attempts not counted
        self.lost = 0  # trials failed by a fault of the machine (counted in `failed` too): resume runs them again

    @full_disk_stops(_store_of)
    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if trial.trial_id in self.runs:
            return
        plan = TrialPlan.from_config(self.spec, trial.config)
        self.runs[trial.trial_id] = self.tracker.start_trial(
            cell=plan.cell_key,
            phase=plan.phase,
            seed=plan.seed,
            factors=list(plan.cell),
            params=plan.params(),
            trial_id=trial.trial_id,
            extra_tags={M.TRIAL_KEY_TAG: plan.key},
        )

    @full_disk_stops(_store_of)
    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        for epoch in result.get(HISTORY, []):  # every epoch since the last report
            metrics = {k: epoch[k] for k in _EPOCH_METRICS if k in epoch}
            self.tracker.log_metrics(run_id, metrics, step=int(epoch[M.EPOCH]), buffered=True)

    @full_disk_stops(_store_of)
    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.completed += 1
        run_id = self.runs.pop(trial.trial_id, None)
        if run_id is None:
            return
        final = trial.last_result or {}
        failure = failure_of(final)
        if failure:
            self.failed += 1
            self.tracker.finish(run_id, failed_reason=failure)
            return
        self.tracker.log_metrics(run_id, {k: v for k, v in final.items() if k.startswith(_FINAL_PREFIXES)})
        stopped = stopped_early(final, full_epochs=self.full_epochs)
        tags = {M.STOPPED_EARLY_TAG: "true" if stopped else "false"}
        if M.LEARNED in final:  # confirm trials: the learning gate's verdict
            tags[M.LEARNED_TAG] = "true" if final[M.LEARNED] else "false"
            if final.get(M.LEARNING_ISSUE):
                tags[M.LEARNING_ISSUE_TAG] = str(final[M.LEARNING_ISSUE])
        if final.get(M.TRAINED_IN):
            tags[M.TRAINED_IN_TAG] = str(final[M.TRAINED_IN])
        self.tracker.set_tags(run_id, tags)
        with checkpoint_files(trial) as directory:
            if directory is not None:
                self.tracker.log_artifacts(run_id, [directory / n for n in _ARTIFACTS if (directory / n).is_file()])
                if (directory / WEIGHTS_FILE).is_file():
                    self._log_model(run_id, directory, TrialPlan.from_config(self.spec, trial.config))
        self.tracker.finish(run_id)

    def _log_model(self, run_id: str, directory: Path, plan: TrialPlan) -> None:
        """Log the trial's package as an MLflow model and register it as a version of its cell's model."""
        model_dir = save_mlflow_model(directory, directory / "mlflow_model")
        self.tracker.log_tree(run_id, model_dir, artifact_path=MODEL_ARTIFACT_PATH)
        self.tracker.register_model(
            run_id,
            name=registered_model_name(self.spec.name, plan.cell_key),
            artifact_path=MODEL_ARTIFACT_PATH,
            tags={M.CELL_TAG: plan.cell_key, M.SEED_TAG: plan.seed, M.PHASE_TAG: plan.phase},
        )

    @full_disk_stops(_store_of)
    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # A run still open here belongs to a trial that never ended: the phase was stopped
        # (study.run.tune.stopping). KILLED, not a result; resume deletes it and runs the trial again.
        for run_id in self.runs.values():
            self.tracker.finish(run_id, failed_reason="interrupted: the study was stopped; resume runs the trial again",
                                status="KILLED")
        self.runs.clear()
        self.tracker.flush()

    @full_disk_stops(_store_of)
    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # The attempt that failed keeps its own FAILED run; the retry opens a new one.
        self._fail(trial, retried=True)

    @full_disk_stops(_store_of)
    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._fail(trial, retried=False)

    def _fail(self, trial: Any, *, retried: bool) -> None:
        self.failed += 0 if retried else 1
        self.completed += 0 if retried else 1
        text = error_text(trial)
        if disk.is_no_space_text(text):  # the trial's writes met a full disk: every next trial would too
            process_state.stop_on_full_disk(f"no space left on device: {disk.space_text(_trial_folder(trial))}")
        run_id = self.runs.pop(trial.trial_id, None)
        if run_id is None:
            return
        reason = error_reason(text)
        tags = {M.RETRIED_TAG: "true"} if retried else {}
        if machine_fault(text):
            tags[M.FAULT_TAG] = M.FAULT_MACHINE
            self.lost += 0 if retried else 1
        if tags:
            self.tracker.set_tags(run_id, tags)
        self.tracker.finish(run_id, failed_reason=f"{reason} (retried)" if retried else reason)


def machine_fault(text: str) -> bool:
    """Whether a trial's error text says the machine failed it (a killed worker, a lost node, a
    full disk), so running it again may well succeed, unlike a failure of its configuration."""
    return disk.is_no_space_text(text) or any(mark.lower() in text.lower() for mark in _MACHINE_FAULTS)


def _trial_folder(trial: Any) -> Path | str:
    storage = getattr(trial, "storage", None)
    return getattr(storage, "trial_fs_path", None) or getattr(trial, "local_path", None) or "the study folder"


def error_text(trial: Any) -> str:
    """The whole text of the trial's error (its traceback), '' when none was recorded."""
    try:
        # The local error file is written at once; the storage copy behind get_error() only
        # after the next sync, too late for on_trial_recover.
        local = getattr(trial, "error_file", None)
        return Path(local).read_text() if local and Path(local).is_file() else str(trial.get_error() or "")
    except Exception:  # noqa: BLE001 - the error file may be unreadable; the status still matters
        log.debug("could not read error of trial %s", trial.trial_id, exc_info=True)
        return ""


def error_reason(text: str) -> str:
    """The last line of a trial's traceback, e.g. 'LossDivergedError: loss diverged at epoch 3'."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "trial failed (no error text recorded)"
    if "ActorDiedError" in text or "actor died unexpectedly" in text.lower():
        # Ray's last line for a dead worker is a hint about logs; say what happened instead.
        cause = next((line for line in lines if "exit_detail" in line or "killed" in line.lower()), lines[-1])
        return f"worker process died: {cause[:300]}"
    return lines[-1]
