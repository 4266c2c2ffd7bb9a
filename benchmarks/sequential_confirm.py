"""Seeds where they are needed: a sequential confirm phase against a fixed 10 seeds per cell.

    .venv/bin/python benchmarks/sequential_confirm.py

Runs benchmarks/specs/sequential_confirm.yaml twice on a local Ray: as given (a seed budget: every
cell 3 seeds, then rounds for the comparisons still open, up to 10) and with a fixed list of seeds
0-9 for every cell. Reports the comparisons each resolves and the confirm compute of each
(trial-seconds: the sum of the confirm trials' run times in MLflow). Both are decided by the same
rule (the interval excludes 0, or lies inside +-margin): the adaptive study by its sequential
procedure (intervals at the Bonferroni-adjusted level over its looks), the fixed one by one look at
10 seeds with 95% intervals. Targets: at least as many comparisons resolved, at most half the
confirm compute.

Training on a CPU is deterministic, so a (cell, seed) trial gives the same numbers in both studies:
the record says whether the adaptive decisions replayed from the fixed study's trials match, and
prices the adaptive study's trials at the fixed study's seconds (`compute_share_same_load`), which
a shared machine's drifting speed between the two runs cannot skew.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.read.runs import load_trials, read_per_image  # noqa: E402
from analysis.read.study_spec import settings_of_spec  # noqa: E402
from analysis.stats.statements.sequential import Design, design_of, replay  # noqa: E402
from analysis.stats.statements.study import declared_claims, observed_of  # noqa: E402
from benchmarks._common import record, timed_study  # noqa: E402
from study import metrics_names as M  # noqa: E402
from study.spec import load_spec  # noqa: E402

SPEC = ROOT / "benchmarks" / "specs" / "sequential_confirm.yaml"
FIXED_SEEDS = 10


def study_state(uri: str, experiment: str, design: Design):
    """Replay `design` over a finished study's confirm trials (what the report does): the declared
    claims of the spec, looked at with every seed each cell got."""
    trials = load_trials(experiment, tracking_uri=uri)
    rows = read_per_image(trials, tracking_uri=uri)
    settings = settings_of_spec(load_spec(SPEC))
    observed = observed_of(rows.in_domain, trials, shift_rows=rows.shift)
    return replay(design, observed, lambda obs: declared_claims(obs, settings=settings, reference="unet"),
                  cells=sorted(set(trials["cell"])))


def trial_seconds(runs: list) -> dict[tuple[str, int], float]:
    """Each confirm trial's seconds, from its MLflow run's start to its end, by (cell, seed)."""
    return {(r.data.tags[M.CELL_TAG], int(r.data.tags[M.SEED_TAG])): (r.info.end_time - r.info.start_time) / 1000
            for r in runs if r.info.end_time}


def run(variant: str, tmp: Path) -> dict:
    raw = yaml.safe_load(SPEC.read_text())
    if variant == "fixed":
        raw["confirm"] = {"seeds": list(range(FIXED_SEEDS))}
    spec = tmp / f"{variant}.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    keep = tmp / f"{variant}.db"
    timed = timed_study(spec, store=keep)
    budget = load_spec(SPEC)
    design = design_of(budget.confirm, alpha=budget.statistics.alpha) if variant == "adaptive" else Design(
        looks=(FIXED_SEEDS,), margin=budget.confirm.resolution.margin, alpha=budget.statistics.alpha)
    state = study_state(f"sqlite:///{keep}", raw["name"], design)
    return {
        "wall_s": round(timed.elapsed_s, 1),
        "confirm_trials": len(timed.runs),
        "confirm_trial_s": round(sum(trial_seconds(timed.runs).values()), 1),
        "trial_s_median": round(statistics.median(trial_seconds(timed.runs).values()), 1),
        "seconds": trial_seconds(timed.runs),
        "resolved": len(state.resolved),
        "declared_claims": len(state.decisions),
        "decisions": [d.line() for d in state.decisions],
        "seeds_per_cell": state.due,
        "uri": f"sqlite:///{keep}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, default=None, help="folder for the two MLflow stores (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        adaptive = run("adaptive", folder)
        fixed = run("fixed", folder)
        # The adaptive decisions, replayed from the fixed study's trials (the same numbers on a CPU).
        replayed = study_state(fixed["uri"], "bench_sequential", design_of(load_spec(SPEC).confirm))  # statistics.alpha 0.05
    # The machine is shared and its speed drifts between the two studies; the fixed study ran every
    # trial the adaptive one did (same numbers), so its seconds price both designs under one load.
    priced = sum(fixed["seconds"][trial] for trial in adaptive["seconds"])
    record(
        ROOT / "benchmarks" / "results.jsonl",
        {
            "benchmark": "sequential_confirm",
            "command": "python " + " ".join(sys.argv),
            "adaptive": {k: v for k, v in adaptive.items() if k not in ("uri", "seconds")},
            "fixed_10": {k: v for k, v in fixed.items() if k not in ("uri", "seconds")},
            "compute_share": round(adaptive["confirm_trial_s"] / fixed["confirm_trial_s"], 3),
            "compute_share_same_load": round(priced / fixed["confirm_trial_s"], 3),
            "trial_share": round(adaptive["confirm_trials"] / fixed["confirm_trials"], 3),
            "adaptive_replayed_from_fixed_matches": [d.line(replayed.design) for d in replayed.decisions]
            == adaptive["decisions"],
        },
    )


if __name__ == "__main__":
    main()
