"""The one module that writes to MLflow: a parent run per study, a child run per trial.

All writes come from the Tune driver (SQLite wants a single writer) through `MlflowClient`, so no
global "active run" state leaks between studies in one process. Layout and names: DESIGN.md
section 3 and `study.metrics_names`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study import metrics_names as M
from study.errors import SegstudyError

TRACKING_ENV = "MLFLOW_TRACKING_URI"
_PARAM_LIMIT = 6000  # MLflow rejects longer param values


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None, *, cwd: Path | None = None) -> str:
    """`--tracking-uri`, else MLFLOW_TRACKING_URI, else the spec's, else SQLite in the working dir.

    A relative SQLite path is made absolute: Ray job working dirs are unpacked copies, and a
    relative store would land inside one and vanish with it.
    """
    uri = cli_uri or os.environ.get(TRACKING_ENV) or spec_uri
    base = (cwd or Path.cwd()).resolve()
    if not uri:
        return f"sqlite:///{base / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(base / uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri:
        raise SegstudyError(
            f"tracking URI '{uri}': accepted are sqlite:///PATH, postgresql://..., http(s)://HOST:PORT"
        )
    return uri


def _artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


class StudyTracker:
    """Creates and fills the MLflow runs of one study."""

    def __init__(self, tracking_uri: str, experiment: str, *, flush_interval_s: float = 5.0) -> None:
        self.uri = tracking_uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.study_run_id: str | None = None
        self._experiment_id: str | None = None
        # Per-epoch metrics are buffered and written every few seconds: one store write per
        # epoch per trial costs the driver enough CPU to slow trials on a small machine.
        self.flush_interval_s = flush_interval_s
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()

    def check_reachable(self) -> None:
        """Fail fast, before any trial, when the store cannot be opened or the server is down."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot track"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SegstudyError(f"tracking URI '{self.uri}' is not reachable: {first[:200]}") from None

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                root = _artifact_root(self.uri)
                location = f"{root}/{self.experiment}" if root else None
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        return self._experiment_id

    def start_study(self, *, params: Mapping[str, Any], tags: Mapping[str, str], spec_file: Path | None) -> str:
        run = self.client.create_run(
            self.experiment_id(),
            run_name=f"{self.experiment}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={M.ROLE_TAG: M.ROLE_STUDY, **tags},
        )
        self.study_run_id = run.info.run_id
        self._log_params(self.study_run_id, params)
        if spec_file is not None:
            self.client.log_artifact(self.study_run_id, str(spec_file))
        return self.study_run_id

    def start_trial(
        self, *, cell: str, phase: str, seed: int, factors: list[str], params: Mapping[str, Any], trial_id: str
    ) -> str:
        tags = {
            M.ROLE_TAG: M.ROLE_TRIAL,
            M.CELL_TAG: cell,
            M.PHASE_TAG: phase,
            M.SEED_TAG: str(seed),
            M.FACTORS_TAG: json.dumps(sorted(factors)),
            M.TRIAL_ID_TAG: trial_id,
        }
        if self.study_run_id:
            tags[M.PARENT_TAG] = self.study_run_id
        run = self.client.create_run(self.experiment_id(), run_name=f"{cell}|seed={seed}|{phase}", tags=tags)
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int = 0, buffered: bool = False) -> None:
        """Log metrics now, or (buffered) with the next flush, at most `flush_interval_s` later."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if not buffered:
            self._write(run_id, batch)
            return
        self._pending.setdefault(run_id, []).extend(batch)
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self, run_id: str | None = None) -> None:
        """Write buffered metrics (of one run, or all)."""
        for rid in [run_id] if run_id is not None else list(self._pending):
            self._write(rid, self._pending.pop(rid, []))
        if run_id is None:
            self._last_flush = time.monotonic()

    def _write(self, run_id: str, metrics: list[Metric]) -> None:
        for i in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def log_artifacts(self, run_id: str, directory: Path, *, names: tuple[str, ...]) -> None:
        for name in names:
            path = directory / name
            if path.is_file():
                self.client.log_artifact(run_id, str(path))

    def log_file(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, run_id: str, *, failed_reason: str | None = None) -> None:
        self.flush(run_id)
        if failed_reason is not None:
            self.set_tags(run_id, {M.ERROR_TAG: failed_reason[:5000]})
        self.client.set_terminated(run_id, status="FAILED" if failed_reason is not None else "FINISHED")

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, _param_text(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(run_id, params=items[i : i + 100])


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:_PARAM_LIMIT]


__all__ = ["StudyTracker", "resolve_tracking_uri"]
