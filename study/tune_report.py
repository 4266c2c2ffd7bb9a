"""The one place that talks to Ray Tune's reporting and checkpoint API.

Everything else in segstudy returns plain dicts and files; this module turns them into
`ray.tune.report` calls so a Ray upgrade touches one file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from ray import tune


def report_epoch(metrics: Mapping[str, float]) -> None:
    """Report one epoch's metrics (Tune schedulers and the MLflow callback read them)."""
    tune.report(dict(metrics))


def report_final(metrics: Mapping[str, float], write_files: Callable[[Path], None]) -> None:
    """Report the trial's final metrics with a checkpoint holding the files `write_files` writes."""
    with tempfile.TemporaryDirectory(prefix="segstudy-ckpt-") as tmp:
        write_files(Path(tmp))
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(tmp))


def checkpoint_dir(trial: object) -> Path | None:
    """Local directory of a finished trial's latest checkpoint, if it has one."""
    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        return None
    return Path(checkpoint.path)
