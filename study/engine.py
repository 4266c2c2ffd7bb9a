"""Run a whole study: validate, connect to Ray, build data once, run every cell x seed, track.

The order matters for the "nothing started on bad input" promise: the spec is validated and the
cluster's resources are checked before MLflow sees a run or Tune sees a trial.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from study import metrics_names as M
from study.cells import cell_key, expand_cells
from study.errors import SegstudyError
from study.spec import StudySpec, load_spec
from study.study_data import build_study_data, summarise_data
from study.tracking import StudyTracker, resolve_tracking_uri
from study.trainable import train_trial
from study.tune_callback import TrackingCallback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    """What a finished study left behind, and where."""

    experiment: str
    study_run_id: str
    tracking_uri: str
    storage_path: Path
    n_trials: int
    n_failed: int

    @property
    def ok(self) -> bool:
        return self.n_failed == 0


def run_study(
    spec_path: str | Path,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
) -> StudyResult:
    """Run the study described by the spec file and return where its results are.

    Args:
        spec_path: YAML study spec.
        address: Ray cluster to join ("auto", "ray://...", "HOST:PORT"); None starts Ray here.
        tracking_uri: MLflow tracking URI; default MLFLOW_TRACKING_URI, the spec's, or ./mlflow.db.
        storage: directory for Tune's results and checkpoints (default ./ray_results).

    Raises:
        SegstudyError: bad spec or a resource request the cluster cannot meet (nothing started).
    """
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    storage_path = Path(storage or "ray_results").resolve()
    tracker = StudyTracker(uri, spec.name)
    tracker.check_reachable()
    started_ray = connect_ray(address)
    try:
        check_resources(spec)
        return _run(spec, spec_path, tracker, storage_path)
    finally:
        if started_ray:
            ray.shutdown()


def connect_ray(address: str | None) -> bool:
    """Join `address` or start a local Ray; returns True when this call started it."""
    if ray.is_initialized():
        return False
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
    return True


def check_resources(spec: StudySpec) -> None:
    """A trial that asks for more than any node has would wait forever: refuse it up front."""
    want = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for kind, amount in want.items():
        if amount <= 0:
            continue
        best = max((res.get(kind, 0.0) for res in nodes), default=0.0)
        if best < amount:
            raise SegstudyError(
                f"resources.{kind.lower()}: {amount:g} per trial requested, but the largest node of this "
                f"Ray cluster has {best:g} {kind}; lower resources.{kind.lower()} or use a bigger cluster"
            )


def _run(spec: StudySpec, spec_path: Path, tracker: StudyTracker, storage_path: Path) -> StudyResult:
    cells = expand_cells(spec)
    t0 = time.perf_counter()
    data = build_study_data(spec)
    log.info("built data for %d level(s) in %.1f s", len(data), time.perf_counter() - t0)
    study_run = tracker.start_study(
        params={
            "spec_name": spec.name,
            "n_cells": len(cells),
            "seeds": spec.seeds,
            "factors": {k: list(v) for k, v in spec.factors.items()},
            "dataset": spec.data.dataset,
        },
        tags={M.FACTORS_TAG: json.dumps(sorted(spec.factors)), "segstudy.cells": ";".join(map(cell_key, cells))},
        spec_file=spec_path,
    )
    with tempfile.TemporaryDirectory(prefix="segstudy-") as tmp:
        summary = Path(tmp) / "data_summary.csv"
        summarise_data(spec, data).to_csv(summary, index=False)
        tracker.log_file(study_run, summary)
    callback = TrackingCallback(tracker, spec)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, spec=spec, data=data),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={
            "cell": tune.grid_search(cells),
            "seed": tune.grid_search(list(spec.seeds)),
            "phase": M.PHASE_CONFIRM,
        },
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage_path),
            callbacks=[callback],
            verbose=1,
        ),
    )
    status = "FAILED"
    try:
        grid = tuner.fit()
        n_failed = sum(1 for r in grid if r.error is not None)
        status = "FINISHED" if n_failed == 0 else "FAILED"
        tracker.set_tags(study_run, {"segstudy.n_trials": str(len(grid)), "segstudy.n_failed": str(n_failed)})
    finally:
        tracker.finish(study_run, failed_reason=None if status == "FINISHED" else "some trials failed")
    return StudyResult(
        experiment=spec.name,
        study_run_id=study_run,
        tracking_uri=tracker.uri,
        storage_path=storage_path,
        n_trials=len(grid),
        n_failed=n_failed,
    )


__all__ = ["StudyResult", "check_resources", "connect_ray", "run_study"]
