"""`segstudy analyze`: a study's MLflow runs -> tidy CSVs and the Dice-vs-complexity plot.

Each stage hands over through a file in `out_dir`, so a notebook can pick up trials.csv or
per_image.csv without MLflow.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd

from analysis.plots import plot_dice_vs_complexity
from analysis.runs import factor_names, load_per_image, load_trials
from analysis.summary import summarise
from study import metrics_names as M
from study.errors import SegstudyError

COMPLEXITY_FACTOR = "alpha"
MIN_SEEDS = 3  # fewer seeds per cell give intervals too wide to separate arms (DESIGN.md section 5)

log = logging.getLogger(__name__)


def analyze(
    experiment: str,
    *,
    out_dir: Path,
    tracking_uri: str,
    phase: str | None = M.PHASE_CONFIRM,
    study: str = "latest",
) -> dict[str, Path]:
    """Write trials.csv, per_image.csv, summary.csv and dice_vs_complexity.png into `out_dir`.

    summary.csv holds every test metric (long format, one `metric` column) per cell, i.e. per
    combination of all factors, with mean, sd, n and 95% t-interval over seeds.

    Args:
        experiment: MLflow experiment name (= the study spec's `name`).
        out_dir: created if missing; existing files of the same names are overwritten.
        tracking_uri: the MLflow store the study logged to.
        phase: "confirm" (default), "tune", or None for every trial.
        study: "latest" study run of the experiment (default), "all", or a study run id.

    Returns:
        {"trials": ..., "per_image": ..., "summary": ..., "dice_vs_complexity": ...} paths.

    Raises:
        SegstudyError: unknown experiment, no trials, or no `alpha` factor to plot against.

    Example:
        >>> analyze("skip_vs_complexity", out_dir=Path("analysis_out"),
        ...         tracking_uri="sqlite:////data/mlflow.db")  # doctest: +SKIP
    """
    trials = load_trials(experiment, tracking_uri=tracking_uri, phase=phase, study=study)
    factors = factor_names(trials)
    if COMPLEXITY_FACTOR not in factors:
        raise SegstudyError(
            f"experiment '{experiment}': the complexity plot needs a '{COMPLEXITY_FACTOR}' factor; "
            f"factors found: {', '.join(factors) or '(none)'}"
        )
    _warn_few_seeds(trials)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{name}.csv" for name in ("trials", "per_image", "summary")}
    trials.to_csv(paths["trials"], index=False)
    load_per_image(trials, tracking_uri=tracking_uri).to_csv(paths["per_image"], index=False)

    metrics = [m for m in M.TEST_METRICS if trials[m].notna().any()]
    if M.TEST_DICE not in metrics:
        raise SegstudyError(f"experiment '{experiment}': no trial logged {M.TEST_DICE}; nothing to summarise")
    summary = pd.concat([summarise(trials, by=factors, metric=m) for m in metrics], ignore_index=True)
    summary.to_csv(paths["summary"], index=False)

    plot = plot_dice_vs_complexity(
        summary[summary["metric"] == M.TEST_DICE],
        summary[summary["metric"] == M.TEST_TD],
        out_dir / "dice_vs_complexity.png",
        x=COMPLEXITY_FACTOR,
    )
    log.info("analysed %d trials of '%s' into %s", len(trials), experiment, out_dir)
    return {**paths, "dice_vs_complexity": plot}


def _warn_few_seeds(trials: pd.DataFrame) -> None:
    seeds = trials.groupby("cell")["seed"].nunique()
    few = seeds[seeds < MIN_SEEDS]
    if not few.empty:
        warnings.warn(
            f"{len(few)} of {len(seeds)} cells have fewer than {MIN_SEEDS} seeds "
            f"(e.g. '{few.index[0]}' has {few.iloc[0]}); confidence intervals will be wide or missing",
            stacklevel=3,
        )


__all__ = ["COMPLEXITY_FACTOR", "MIN_SEEDS", "analyze"]
