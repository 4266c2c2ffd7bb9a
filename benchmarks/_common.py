"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def machine() -> str:
    """The machine a record was made on: cores, CPU model and the vector ISA torch's kernels use
    (two 2-core AMD EPYC VMs differed 2.4 x in time per step, benchmarks/RESULTS.md: a record's
    seconds compare only with records of the same machine)."""
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return (f"{platform.node() or 'host'}: {cpus} CPU cores, {_cpu_model() or platform.processor() or platform.machine()}, "
            f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})")


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def record(path: Path, payload: dict) -> None:
    """Append one JSON line of results (the RESULTS.md figures are copied from these)."""
    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), **payload}
    with path.open("a") as f:
        f.write(json.dumps(payload) + "\n")
    print(json.dumps(payload, indent=2))


@dataclass
class TimedStudy:
    """One whole `run_study`: its wall-clock, its confirm trials' MLflow runs and the study run's metrics."""

    elapsed_s: float
    runs: list[Any]
    study_metrics: dict[str, float]


def timed_study(
    spec_path: Path, *, around: contextlib.AbstractContextManager[Any] | None = None, store: Path | None = None
) -> TimedStudy:
    """Run the study on a local Ray into a fresh SQLite store and time it (inside `around`, e.g. a
    GPU sampler). `store`: the SQLite file to keep it in (default: a temporary one).

    The MLflow store is created first, outside the timing: its one-off schema set-up (1.3-2.8 s
    for SQLite) belongs to the store, which every later study reuses, not to a study.
    """
    from mlflow.tracking import MlflowClient

    from study import metrics_names as M
    from study.run.driver.engine import run_study

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{store or Path(tmp) / 'mlflow.db'}"
        MlflowClient(tracking_uri=uri).search_experiments()
        with around or contextlib.nullcontext():
            t0 = time.perf_counter()
            result = run_study(spec_path, tracking_uri=uri, storage=Path(tmp) / "results")
            elapsed = time.perf_counter() - t0
        assert result.ok, result
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(result.experiment)
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{M.PHASE_TAG}` = '{M.PHASE_CONFIRM}'")
        return TimedStudy(elapsed, list(runs), dict(client.get_run(result.study_run_id).data.metrics))
