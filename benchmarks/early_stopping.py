"""Epochs saved by per-cell early stopping, and what it costs in the chosen configurations.

    .venv/bin/python benchmarks/early_stopping.py

Runs the tune phase of benchmarks/specs/early_stopping.yaml twice: with per-cell ASHA and without
early stopping. The random sampler draws the same configurations in both, so the run without
early stopping knows every configuration's full-length score. Reports the ratio of tune-phase
epochs (target <= 0.5) and, per cell, how far the configuration chosen with early stopping
falls below the exhaustive best, both scored by the full-length run (target <= 0.01 Dice).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import record  # noqa: E402
from study import metrics_names as M  # noqa: E402
from study.run.driver.engine import run_study  # noqa: E402

SPEC = ROOT / "benchmarks" / "specs" / "early_stopping.yaml"


def tune_runs(uri: str, study_run: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bench_early_stopping")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{M.PHASE_TAG}` = '{M.PHASE_TUNE}' and tags.`{M.PARENT_TAG}` = '{study_run}'",
        max_results=1000,
    )
    out = []
    for r in runs:
        history = client.get_metric_history(r.info.run_id, M.VAL_DICE)
        key = json.dumps({k: r.data.params[k] for k in ("lr", "batch_size")}, sort_keys=True)
        out.append((r.data.tags[M.CELL_TAG], key, len(history), r.data.metrics.get(M.BEST_VAL_DICE)))
    return out


def run(kind: str, tmp: Path, *, grace: int | None, rf: float | None, trials: int | None) -> tuple[list, dict]:
    raw = yaml.safe_load(SPEC.read_text())
    if trials is not None:
        raw["tuning"]["trials_per_cell"] = trials
    raw["tuning"]["early_stopping"]["kind"] = kind
    if grace is not None:
        raw["tuning"]["early_stopping"]["grace_period"] = grace
    if rf is not None:
        raw["tuning"]["early_stopping"]["reduction_factor"] = rf
    spec = tmp / f"{kind}.yaml"
    spec.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = run_study(spec, tracking_uri=uri, storage=tmp / "results")
    chosen = json.loads(MlflowClient(tracking_uri=uri).get_run(result.study_run_id).data.tags["segstudy.chosen"])
    return tune_runs(uri, result.study_run_id), chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grace-period", type=int, default=None, help="override the spec's")
    parser.add_argument("--reduction-factor", type=float, default=None, help="override the spec's")
    parser.add_argument("--trials-per-cell", type=int, default=None, help="override the spec's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asha, chosen = run("asha", Path(tmp), grace=args.grace_period, rf=args.reduction_factor,
                           trials=args.trials_per_cell)
        full, _ = run("none", Path(tmp), grace=None, rf=None, trials=args.trials_per_cell)
    settings = yaml.safe_load(SPEC.read_text())["tuning"]["early_stopping"]
    settings.update({k: v for k, v in {"grace_period": args.grace_period,
                                       "reduction_factor": args.reduction_factor}.items() if v is not None})
    epochs_asha = sum(r[2] for r in asha)
    epochs_full = sum(r[2] for r in full)
    full_score = {(cell, key): score for cell, key, _, score in full}
    gaps = {}
    for cell in sorted({r[0] for r in full}):
        best = max(score for (c, _), score in full_score.items() if c == cell)
        # Parameters travel through MLflow as text; compare them the same way.
        key = json.dumps({k: str(chosen[cell][k]) for k in ("lr", "batch_size")}, sort_keys=True)
        gaps[cell] = round(best - full_score[(cell, key)], 4)
    record(
        ROOT / "benchmarks" / "results.jsonl",
        {
            "benchmark": "early_stopping",
            "command": "python " + " ".join(sys.argv),
            "asha": settings,
            "trials": len(full),
            "epochs_with_asha": epochs_asha,
            "epochs_without": epochs_full,
            "epoch_ratio": round(epochs_asha / epochs_full, 3),
            "max_gap_dice": max(gaps.values()),
            "gap_per_cell": gaps,
        },
    )


if __name__ == "__main__":
    main()
