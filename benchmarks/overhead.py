"""Overhead of `segstudy run` over a plain Python loop running the same trials on the same data.

    .venv/bin/python benchmarks/overhead.py [--repeats 3] [--seeds 2] [--epochs N]

Both sides run the 4 x --seeds trials of benchmarks/specs/overhead.yaml one at a time with 2 torch threads
(resources.cpu: 2). The loop calls `study.training.trial.run_plan` directly on data built once; the
study side is the whole `run_study` (Ray start, data build, object store, reporting, MLflow
logging, model registration, checkpoints) into an existing MLflow store. Target: median ratio
<= 1.10 for trials of about 30 s. Each record also splits the study's time into its trials (MLflow
run durations) and the fixed rest. Repeats alternate which side runs first.
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

from benchmarks._common import record, timed_study  # noqa: E402
from study.spec.cells import expand_cells  # noqa: E402
from study.spec import load_spec  # noqa: E402
from study.training.inputs.study_data import build_study_data  # noqa: E402
from study.training.trial import run_plan  # noqa: E402
from study.training import TrialPlan  # noqa: E402

SPEC = ROOT / "benchmarks" / "specs" / "overhead.yaml"


def spec_with_seeds(n_seeds: int, tmp: Path, epochs: int | None = None) -> Path:
    """The benchmark spec with `n_seeds` seeds (4 cells x n_seeds trials), `epochs` if given."""
    raw = yaml.safe_load(SPEC.read_text())
    raw["seeds"] = list(range(n_seeds))
    if epochs is not None:
        raw["training"]["epochs"] = epochs
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


def through_segstudy(spec_path: Path) -> tuple[float, list[float]]:
    """Wall-clock of the whole `run_study`, and each trial's MLflow run duration (trial start to
    its model being registered) so the fixed part can be told from the per-trial part."""
    timed = timed_study(spec_path)
    return timed.elapsed_s, [(r.info.end_time - r.info.start_time) / 1000 for r in timed.runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="trials = 4 cells x seeds")
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's (quick checks)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    loops, studies, trial_times, study_trial_times = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = spec_with_seeds(args.seeds, Path(tmp), args.epochs)
        for repeat in range(args.repeats):
            # Alternate which side runs first: the machine's speed drifts over minutes, and a
            # fixed order would charge the drift to one side.
            order = ("loop", "study") if repeat % 2 == 0 else ("study", "loop")
            for side in order:
                if side == "loop":
                    total, per_trial = plain_loop(spec_path)
                    loops.append(total)
                    trial_times += per_trial
                else:
                    elapsed, per_study_trial = through_segstudy(spec_path)
                    studies.append(elapsed)
                    study_trial_times += per_study_trial
    ratios = [s / l for s, l in zip(studies, loops)]
    n = len(trial_times) // args.repeats
    record(
        ROOT / "benchmarks" / "results.jsonl",
        {
            "benchmark": "overhead",
            "command": "python " + " ".join(sys.argv),
            "trials": n,
            "trial_s_median": round(statistics.median(trial_times), 1),
            "segstudy_trial_s_median": round(statistics.median(study_trial_times), 1),
            # What is left of the study's wall-clock after its trials: Ray start and stop, data
            # build, first worker, MLflow study run (the loop's total holds its own data build).
            "segstudy_fixed_s": [round(s - sum(study_trial_times[i * n:(i + 1) * n]), 1) for i, s in enumerate(studies)],
            "loop_s": [round(v, 1) for v in loops],
            "segstudy_s": [round(v, 1) for v in studies],
            "ratios": [round(r, 3) for r in ratios],
            "ratio_median": round(statistics.median(ratios), 3),
        },
    )


if __name__ == "__main__":
    main()
