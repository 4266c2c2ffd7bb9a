"""`segstudy analyze`: a study's MLflow runs -> tidy CSVs and the plots its factors call for.

Every study gets trials.csv, per_image.csv and summary.csv; a complexity study (`alpha` factor)
adds the Dice-vs-complexity plot, a context study (`patch_size` factor) the FBR-shift tables and
patch-size plots, a study with `evaluation.shift` the train x test tables. Each stage hands over through a file in `out_dir`, so a notebook can pick up
trials.csv or per_image.csv without MLflow.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd

from analysis.stats.describe.context import dice_by_fbr_bin, fbr_shift, with_patch_metrics
from analysis.plots.context import plot_dice_vs_fbr, plot_dice_vs_patch_size, plot_patch_pos_heatmap
from analysis.read.study_spec import read_study
from analysis.stats.statements.findings import ARM
from analysis.stats.statements.study import study_statements
from analysis.commands.output import output_dir
from analysis.plots.trade_offs import plot_dice_vs_complexity
from analysis.read.runs import factor_names, load_trials, not_learned_trials, read_per_image
from analysis.stats.describe.shift import shift_factors, shift_matrix, shift_table
from analysis.stats.describe.summary import summarise
from study import metrics_names as M
from study.metrics_names import MIN_SEEDS
from study.errors import SegstudyError
from study.paths import output_folder

COMPLEXITY_FACTOR = "alpha"
PATCH_FACTOR = "patch_size"
POS_FACTOR = "pos_fraction"

log = logging.getLogger(__name__)


def analyze(
    experiment: str,
    *,
    out_dir: Path,
    tracking_uri: str,
    phase: str | None = M.PHASE_CONFIRM,
    study: str = "latest",
) -> dict[str, Path]:
    """Write the study's tables and the plots its factors call for into `out_dir`.

    Always trials.csv, per_image.csv and summary.csv: every test metric (and peak_memory_mb when
    logged; long format, one `metric` column) per cell, i.e. per combination of all factors, with
    mean, sd, n and 95% t-interval over seeds. With several arms: findings.csv (each arm against the
    reference arm per level, exploratory), claims.csv (the claims the factors allow, the declared
    ones one Holm family; `analysis.stats.statements.study`) and breakdown.csv (per cell, the models
    that broke down and the worst seed's Dice). With an `alpha` factor: dice_vs_complexity.png.
    With a `patch_size` factor: fbr_shift.csv, dice_by_fbr.csv, dice_vs_patch_size.png,
    dice_vs_fbr.png and, when `pos_fraction` takes several values, patch_pos_heatmap.png (see
    `analysis.stats.describe.context`). A study with neither factor gets the tables only. With
    `evaluation.shift`: shift_per_image.csv (the rows tested at other levels, and the clean ones)
    and per shifted factor shift_<factor>.csv (`analysis.stats.describe.shift.shift_matrix`); per_image.csv
    keeps each model's own level.

    Args:
        experiment: MLflow experiment name (= the study spec's `name`).
        out_dir: created if missing; existing files of the same names are overwritten.
        tracking_uri: the MLflow store the study logged to.
        phase: "confirm" (default), "tune", or None for every trial.
        study: "latest" study run of the experiment (default), "all", or a study run id.

    Returns:
        Written file name without suffix -> path, e.g. {"trials": ..., "per_image": ...,
        "summary": ..., "dice_vs_complexity": ...}.

    Raises:
        SegstudyError: unknown experiment, no trials, or no trial logged test_dice.

    Example:
        >>> analyze("skip_vs_complexity", out_dir=Path("analysis_out"),
        ...         tracking_uri="sqlite:////data/mlflow.db")  # doctest: +SKIP
    """
    output_folder(out_dir, option="--out")  # a file in the way is refused before MLflow is read; nothing made yet
    trials = load_trials(experiment, tracking_uri=tracking_uri, phase=phase, study=study)
    factors = factor_names(trials)
    if PATCH_FACTOR in factors:
        trials = with_patch_metrics(trials, experiment=experiment, tracking_uri=tracking_uri, study=study)
    metrics = [m for m in (*M.TEST_METRICS, M.PEAK_MEMORY) if m in trials.columns and trials[m].notna().any()]
    if M.TEST_DICE not in metrics:
        raise SegstudyError(f"experiment '{experiment}': no trial logged {M.TEST_DICE}; nothing to summarise")
    rows = read_per_image(trials, tracking_uri=tracking_uri)
    out_dir = output_dir(out_dir)  # made only now that every check has passed
    _warn_few_seeds(trials)
    paths = {name: out_dir / f"{name}.csv" for name in ("trials", "per_image", "summary")}
    trials.to_csv(paths["trials"], index=False)
    per_image = rows.in_domain
    per_image.to_csv(paths["per_image"], index=False)
    paths.update(_shift_outputs(rows.shift, factors, out_dir=out_dir))

    summary = pd.concat([summarise(trials, by=factors, metric=m) for m in metrics], ignore_index=True)
    summary.to_csv(paths["summary"], index=False)
    dice = summary[summary["metric"] == M.TEST_DICE]

    _warn_not_learned(trials)

    if COMPLEXITY_FACTOR in factors:
        paths["dice_vs_complexity"] = plot_dice_vs_complexity(
            dice, summary[summary["metric"] == M.TEST_TD], out_dir / "dice_vs_complexity.png", x=COMPLEXITY_FACTOR
        )
    if PATCH_FACTOR in factors:
        paths.update(_context_outputs(trials, per_image, dice, out_dir=out_dir))
    if ARM in factors and phase == M.PHASE_CONFIRM:  # tune trials are not seed repeats of one configuration
        record = read_study(experiment, tracking_uri=tracking_uri, study=study)
        said = study_statements(per_image, trials, settings=record.settings, shift_rows=rows.shift,
                                ended=record.ended_confirm())
        for name, table in (("findings", said.findings), ("claims", said.claims), ("breakdown", said.breakdown)):
            if not table.empty:
                paths[name] = out_dir / f"{name}.csv"
                table.to_csv(paths[name], index=False)
    log.info("analysed %d trials of '%s' into %s", len(trials), experiment, out_dir)
    return paths


def _shift_outputs(rows: pd.DataFrame, factors: list[str], *, out_dir: Path) -> dict[str, Path]:
    """Train/test shift (`evaluation.shift`): its per-image rows, and per shifted factor the train x
    test table per arm (rows: training level, columns: test level, mean test Dice over seeds)."""
    if rows.empty:
        return {}
    paths = {"shift_per_image": out_dir / "shift_per_image.csv"}
    rows.to_csv(paths["shift_per_image"], index=False)
    for factor in shift_factors(rows):
        within = [f for f in factors if f not in (ARM, factor)]
        table = shift_table(rows, factor=factor, arm=ARM, within=within)
        paths[f"shift_{factor}"] = out_dir / f"shift_{factor}.csv"
        shift_matrix(table, factor=factor, arm=ARM, within=within).to_csv(paths[f"shift_{factor}"], index=False)
    return paths


def _context_outputs(trials: pd.DataFrame, per_image: pd.DataFrame, dice: pd.DataFrame, *, out_dir: Path) -> dict[str, Path]:
    """The context vs FBR study's tables and plots (docs/ARCHITECTURE.md 4.2)."""
    paths = {"dice_vs_patch_size": plot_dice_vs_patch_size(dice, out_dir / "dice_vs_patch_size.png")}
    if POS_FACTOR in dice.columns and dice[POS_FACTOR].nunique() > 1:
        paths["patch_pos_heatmap"] = plot_patch_pos_heatmap(dice, out_dir / "patch_pos_heatmap.png")
    # Runs logged before per-image FBRs were recorded still get the patch-size plots.
    if "fbr" not in per_image.columns or not per_image["fbr"].notna().any():
        skipped = "fbr_shift.csv, dice_by_fbr.csv, dice_vs_fbr.png"
        warnings.warn(f"no test-volume FBR in per_image.csv: skipping {skipped}", stacklevel=3)
        return paths
    shift = fbr_shift(per_image, trials)
    paths["fbr_shift"] = out_dir / "fbr_shift.csv"
    shift.to_csv(paths["fbr_shift"], index=False)
    paths["dice_by_fbr"] = out_dir / "dice_by_fbr.csv"
    dice_by_fbr_bin(per_image).to_csv(paths["dice_by_fbr"], index=False)
    paths["dice_vs_fbr"] = plot_dice_vs_fbr(per_image, shift, out_dir / "dice_vs_fbr.png")
    return paths


def _warn_not_learned(trials: pd.DataFrame) -> None:
    """Say which cells hold trials whose model did not learn (the learning gate's verdict)."""
    bad = not_learned_trials(trials)
    if not bad.empty:
        cells = sorted(bad["cell"].unique())
        warnings.warn(
            f"{len(bad)} trial(s) in {len(cells)} cell(s) did not learn ({', '.join(cells)}; first reason: "
            f"{bad['learning_issue'].iloc[0]}); comparisons involving them mean nothing",
            stacklevel=3,
        )


def _warn_few_seeds(trials: pd.DataFrame) -> None:
    seeds = trials.groupby("cell")["seed"].nunique()
    few = seeds[seeds < MIN_SEEDS]
    if not few.empty:
        warnings.warn(
            f"{len(few)} of {len(seeds)} cells have fewer than {MIN_SEEDS} seeds "
            f"(e.g. '{few.index[0]}' has {few.iloc[0]}); confidence intervals will be wide or missing",
            stacklevel=3,
        )


__all__ = ["COMPLEXITY_FACTOR", "MIN_SEEDS", "PATCH_FACTOR", "POS_FACTOR", "analyze"]
