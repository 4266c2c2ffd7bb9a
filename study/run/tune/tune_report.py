"""The one place that talks to Ray Tune's reporting and checkpoint API.

Everything else in segstudy returns plain dicts and files; this module turns them into
`ray.tune.report` calls so a Ray upgrade touches one file.

Each `tune.report` from a function trainable waits for the driver to ask for the next result, a
round trip through Tune's event loop. With sub-second epochs that costs a large share of the
trial, so when no scheduler needs a decision every epoch (the confirm phase), epochs are reported
in batches: at most one report per `interval_s`, carrying every epoch since the last one in
`HISTORY` so MLflow still gets each epoch's values.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.result import EXPR_RESULT_FILE

from study import metrics_names as M
from study.run.tune.stopping import full_disk_stops

HISTORY = "epoch_history"
FAILURE = "segstudy_failure"  # in a trial's last result: why it ended as FAILED


class EpochReporter:
    """Report epoch metrics to Tune, every epoch (`interval_s=0`) or batched in time."""

    def __init__(self, *, interval_s: float = 0.0) -> None:
        self.interval_s = interval_s
        self._pending: list[dict[str, float]] = []
        self._last = time.monotonic()

    def __call__(self, metrics: Mapping[str, float]) -> None:
        self._pending.append(dict(metrics))
        if time.monotonic() - self._last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            tune.report(self.result())
            self._pending.clear()
        self._last = time.monotonic()

    def result(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The latest epoch's values at top level (schedulers read them), all pending in HISTORY."""
        out: dict[str, Any] = {**(self._pending[-1] if self._pending else {}), **(extra or {})}
        out[HISTORY] = list(self._pending)
        return out

    def final(self, metrics: Mapping[str, float], write_files: Callable[[Path], None]) -> None:
        """The trial's final report: pending epochs, final metrics and a checkpoint of files."""
        with tempfile.TemporaryDirectory(prefix="segstudy-ckpt-") as tmp:
            write_files(Path(tmp))
            tune.report(self.result(metrics), checkpoint=tune.Checkpoint.from_directory(tmp))
        self._pending.clear()


    def failed(self, reason: str, metrics: Mapping[str, float]) -> None:
        """End the trial as failed without raising: a deterministic failure (divergence, out of
        memory) would fail again on every retry, so it must not use up Tune's `max_failures`.
        `metrics` fills the keys Tune insists on seeing in every result (NaN: no value)."""
        tune.report(self.result({**metrics, FAILURE: reason}))
        self._pending.clear()


def failure_of(final: Mapping[str, Any]) -> str | None:
    """Why a trial ended FAILED without raising (its last result says so), else None."""
    reason = final.get(FAILURE)
    return str(reason) if reason else None


def stopped_early(final: Mapping[str, Any], *, full_epochs: int) -> bool:
    """Whether a trial's last result ended before the full schedule (early stopping)."""
    return int(final.get(M.EPOCH, 0) or 0) < full_epochs


def study_storage() -> tuple[Any, str] | None:
    """(pyarrow filesystem, path) of the storage the running trial's study lives in: the study
    folder, or its folder in a bucket; None outside a Tune trial (the trainable called directly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Ray's "only inside a Tuner": the None says it
        storage = tune.get_context().get_storage()
    return None if storage is None else (storage.storage_filesystem, storage.storage_fs_path)


@contextlib.contextmanager
def checkpoint_files(trial: object) -> Iterator[Path | None]:
    """A local folder holding a finished trial's latest checkpoint (None: it has none) while the
    body runs: the checkpoint itself on local storage, a download of it when Tune's storage is a
    bucket (removed afterwards), so callers read files the same way wherever the study lives."""
    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as local:
        yield Path(local)


class LastResultFile(tune.Callback):
    """Write each ended trial's last result as its `result.json`, once.

    segstudy turns Tune's per-result file loggers off (MLflow records every epoch, and the loggers
    cost driver CPU on every result). When `fit` returns, Tune still reads every trial's
    result.json or progress.csv to build its ResultGrid and logs a FileNotFoundError per trial
    when neither exists. One line written at the end of each trial is all it needs.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder  # where the trials' folders are, for the line of a full disk

    @full_disk_stops(lambda self: self.folder)
    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trial)

    @full_disk_stops(lambda self: self.folder)
    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trial)

    @staticmethod
    def _write(trial: Any) -> None:
        storage = trial.storage
        fs = storage.storage_filesystem
        fs.create_dir(storage.trial_fs_path, recursive=True)
        line = json.dumps(trial.last_result or {}, default=str) + "\n"
        with fs.open_output_stream(Path(storage.trial_fs_path, EXPR_RESULT_FILE).as_posix()) as out:
            out.write(line.encode("utf-8"))
