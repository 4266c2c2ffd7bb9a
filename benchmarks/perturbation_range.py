"""Where a perturbation leaves the models of a finished study: above the trivial answer, or at it.

    .venv/bin/python benchmarks/perturbation_range.py --tracking-uri sqlite:///mlflow.db \\
        --spec search_spaces/skip_vs_complexity.yaml --perturbation speckle \\
        --values 0.002,0.005,0.01,0.02,0.05 --levels 0.1,0.8,0.93

Loads every confirm model of the study (MLflow, `study.serving`) at the given complexity levels,
corrupts the study's own test split with the perturbation at each value (the study's per-image
seeds), and prints per level, arm and value: the mean test Dice over seeds, its between-seed SD,
and the loss from clean with its between-seed SD, beside the all-foreground Dice of that split
(the trivial answer). A claim (b) compares the arms' losses; where every model is at the trivial
answer the loss is each model's clean Dice minus a constant, and the claim compares clean Dice.
This finds the values that span mild to severe without erasing the task at the hardest claim level.

With `--test-alphas 0.2,0.3,0.5` it measures the train/test shift instead: each model on the test
split rendered at those alphas by the study's own dataset (the `value` column is then the alpha).
`--out F.csv` keeps the per-seed rows. The parameter is applied as a value, not a severity, through
the perturbation's own `_perturb`, so any value can be tried without a spec.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.read.runs import load_trials  # noqa: E402
from study.perturbations import condition_seed, get_perturbation  # noqa: E402
from study.serving.predict import fetch_package  # noqa: E402
from study.spec import load_spec  # noqa: E402
from study.training.evaluation.evaluate import dice_per_image  # noqa: E402
from study.training.evaluation.learning import trivial_dice  # noqa: E402
from study.training.inputs.strategies import WholeImages  # noqa: E402
from study.training.inputs.study_data import build_study_data, data_key  # noqa: E402


def corrupted(split, perturbation, value: float, *, base_seed: int):
    """The split with every image corrupted at `value` (seeded per image as a study seeds it)."""
    p = perturbation  # one value, not a severity: the parameter itself
    images = [p._perturb(split.volume(i)[0], value=value, seed=condition_seed(base_seed, image_id, p.name, 1), mask=None)[0]
              for i, image_id in enumerate(split.ids)]
    return dataclasses.replace(split, images=np.stack(images).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--spec", default=str(ROOT / "search_spaces" / "skip_vs_complexity.yaml"))
    ap.add_argument("--study", default="latest", help="a study run id, or latest")
    ap.add_argument("--perturbation", default="speckle")
    ap.add_argument("--values", default="", help="comma-separated parameter values")
    ap.add_argument("--levels", required=True, help="comma-separated alpha levels")
    ap.add_argument("--test-alphas", help="instead of the perturbation: test each model on the test split rendered at "
                    "these alphas (train/test shift), e.g. 0.2,0.3,0.5")
    ap.add_argument("--out", help="also write every (level, arm, seed, value) row to this CSV")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    data = build_study_data(spec)
    levels = [float(v) for v in args.levels.split(",")]
    values = [float(v) for v in args.values.split(",")] if args.values else []
    shifted = {}
    if args.test_alphas:  # the test split at other alphas, rendered by the study's own dataset
        other = spec.model_copy(update={"factors": {**spec.factors, "alpha": [float(a) for a in args.test_alphas.split(",")]},
                                        "evaluation": spec.evaluation.model_copy(update={"shift": {}})})
        shifted = {key[spec.dataset_factors.index("alpha")]: level.test for key, level in build_study_data(other).items()}
    perturbation = get_perturbation(args.perturbation)
    trials = load_trials(spec.name, tracking_uri=args.tracking_uri, study=args.study)
    trials = trials[trials["alpha"].round(6).isin([round(v, 6) for v in levels])]
    rows = []
    for level in levels:
        split = data[data_key(spec, {"alpha": level})].test
        versions = {0.0: split, **{v: corrupted(split, perturbation, v, base_seed=spec.evaluation.perturbation_seed) for v in values},
                    **shifted}
        floor = trivial_dice(split)
        for trial in trials[(trials["alpha"] - level).abs() < 1e-9].itertuples():
            package = fetch_package(trial.run_id, tracking_uri=args.tracking_uri)
            network = package.network.eval()
            for value, version in versions.items():
                with torch.no_grad():
                    probs = WholeImages(batch_size=8).predict(network, version, device=torch.device("cpu"))
                dice = float(np.mean(dice_per_image(probs, version, threshold=spec.evaluation.threshold)))
                rows.append({"alpha": level, "arm": trial.architecture, "seed": trial.seed, "value": value,
                             "dice": dice, "trivial": floor})
            print(f"alpha {level:g} {trial.architecture} seed {trial.seed} done", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    clean = frame[frame["value"] == 0.0].set_index(["alpha", "arm", "seed"])["dice"]
    frame["loss"] = [c - d for c, d in zip(clean.loc[list(zip(frame.alpha, frame.arm, frame.seed))], frame.dice)]
    if args.out:
        frame.to_csv(args.out, index=False)
    table = frame.groupby(["alpha", "arm", "value"]).agg(
        dice=("dice", "mean"), dice_sd=("dice", "std"), loss=("loss", "mean"), loss_sd=("loss", "std"),
        seeds=("seed", "nunique"), trivial=("trivial", "first"))
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
