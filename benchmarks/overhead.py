"""Overhead of `segstudy run` over a plain Python loop running the same trials on the same data.

    .venv/bin/python benchmarks/overhead.py [--repeats 3]

Both sides run the 4 x --seeds trials of benchmarks/specs/overhead.yaml one at a time with 2 torch threads
(resources.cpu: 2). The loop calls `study.trainable.run_plan` directly on data built once; the
study side is the whole `run_study` (Ray start, data build, object store, reporting, MLflow
logging, checkpoints). Target: median ratio <= 1.10 for trials of about 30 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import record  # noqa: E402
from study.cells import expand_cells  # noqa: E402
from study.engine import run_study  # noqa: E402
from study.spec import load_spec  # noqa: E402
from study.study_data import build_study_data  # noqa: E402
from study.trainable import run_plan  # noqa: E402
from study.training import TrialPlan  # noqa: E402

SPEC = ROOT / "benchmarks" / "specs" / "overhead.yaml"


def spec_with_seeds(n_seeds: int, tmp: Path) -> Path:
    """The benchmark spec with `n_seeds` seeds: 4 cells x n_seeds trials."""
    raw = yaml.safe_load(SPEC.read_text())
    raw["seeds"] = list(range(n_seeds))
    path = tmp / "overhead.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def plain_loop(spec_path: Path) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    data = build_study_data(spec)
    per_trial = []
    for cell in expand_cells(spec):
        for seed in spec.confirm_seeds:
            t = time.perf_counter()
            plan = TrialPlan.from_config(spec, TrialPlan.config(cell, seed=seed, phase="confirm"))
            run_plan(plan, spec=spec, data=data)
            per_trial.append(time.perf_counter() - t)
    return time.perf_counter() - t0, per_trial


def through_segstudy(spec_path: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_study(spec_path, tracking_uri=f"sqlite:///{tmp}/mlflow.db", storage=Path(tmp) / "results")
        elapsed = time.perf_counter() - t0
    assert result.ok, result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="trials = 4 cells x seeds")
    args = parser.parse_args()
    torch.set_num_threads(2)
    loops, studies, trial_times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = spec_with_seeds(args.seeds, Path(tmp))
        for _ in range(args.repeats):
            total, per_trial = plain_loop(spec_path)
            loops.append(total)
            trial_times += per_trial
            studies.append(through_segstudy(spec_path))
    ratios = [s / l for s, l in zip(studies, loops)]
    record(
        ROOT / "benchmarks" / "results.jsonl",
        {
            "benchmark": "overhead",
            "command": "python " + " ".join(sys.argv),
            "trials": len(trial_times) // args.repeats,
            "trial_s_median": round(statistics.median(trial_times), 1),
            "loop_s": [round(v, 1) for v in loops],
            "segstudy_s": [round(v, 1) for v in studies],
            "ratio_median": round(statistics.median(ratios), 3),
        },
    )


if __name__ == "__main__":
    main()
