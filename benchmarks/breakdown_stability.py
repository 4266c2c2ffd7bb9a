"""Between-seed spread at the breakdown: the flagship's recipe before and after, 10 seeds per arm.

    .venv/bin/python benchmarks/breakdown_stability.py [--keep DIR] [--only before|after]

Runs two studies on a local Ray, each the 2D flagship (search_spaces/skip_vs_complexity.yaml) cut to
its hardest complexity level, every arm tuned in its cell as the flagship does, then 10 confirm
seeds:

* **before**: the recipe of 2026-12-02 (benchmarks/specs/breakdown_before.yaml: blobs in the middle
  of the image, 100 images of which 60 train and 10 validate, alpha 0.93);
* **after**: the flagship as shipped, at its own hardest level.

For each arm: the mean and between-seed SD of the models' clean test Dice (each seed's mean over the
test images), the worst seed, and the models the learning gate rejected. Target (issue 27): the SD at
least halved for every arm whose SD was above 0.05, every arm >= 0.90 at the easiest level (the
flagship run checks that), and at least one arm below 0.60 at the hardest level.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import record, timed_study  # noqa: E402
from study import metrics_names as M  # noqa: E402

FLAGSHIP = ROOT / "search_spaces" / "skip_vs_complexity.yaml"
BEFORE = ROOT / "benchmarks" / "specs" / "breakdown_before.yaml"
SEEDS = 10


def cut(spec: Path, name: str, out: Path) -> Path:
    """The spec at its hardest alpha only, with 10 fixed confirm seeds, no out-of-domain tests."""
    raw = yaml.safe_load(spec.read_text())
    raw["name"] = name
    raw["factors"]["alpha"] = [max(raw["factors"]["alpha"])]
    raw["confirm"] = {"seeds": list(range(SEEDS))}
    raw.pop("seeds", None)
    raw.pop("statistics", None)
    evaluation = raw.setdefault("evaluation", {})
    evaluation.pop("shift", None)
    evaluation["perturbations"] = []
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def spread(runs: list) -> dict[str, dict]:
    by_arm: dict[str, list[float]] = {}
    rejected: dict[str, int] = {}
    for r in runs:
        arm = r.data.params["architecture"]
        by_arm.setdefault(arm, []).append(r.data.metrics[M.TEST_DICE])
        rejected[arm] = rejected.get(arm, 0) + (r.data.tags.get(M.LEARNED_TAG) == "false")
    return {
        arm: {"n": len(v), "mean": round(statistics.mean(v), 3), "sd": round(statistics.stdev(v), 3),
              "worst": round(min(v), 3), "not_learned": rejected[arm]}
        for arm, v in sorted(by_arm.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="folder for the specs and MLflow stores (default: temporary)")
    parser.add_argument("--only", choices=["before", "after"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for label, spec in (("before", BEFORE), ("after", FLAGSHIP)):
            if args.only not in (None, label):
                continue
            alpha = max(yaml.safe_load(spec.read_text())["factors"]["alpha"])
            timed = timed_study(cut(spec, f"breakdown_{label}", folder), store=folder / f"{label}.db")
            out[label] = {"alpha": alpha, "wall_s": round(timed.elapsed_s, 1), "arms": spread(timed.runs)}
            print(label, out[label], flush=True)
    record(ROOT / "benchmarks" / "results.jsonl",
           {"benchmark": "breakdown_stability", "command": "python " + " ".join(sys.argv), **out})


if __name__ == "__main__":
    main()
