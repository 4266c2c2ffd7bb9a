"""Post-hoc analysis: MLflow runs -> tidy frames -> summaries -> plots.

Stages hand over through pandas frames (and CSV files in `analyze`), so each can be used alone:

    from analysis import load_trials, summarise
    trials = load_trials("skip_vs_complexity", tracking_uri="sqlite:////data/mlflow.db")
    summarise(trials, by=["architecture", "alpha"])
"""

from __future__ import annotations

from analysis.analyze import analyze
from analysis.context import dice_by_fbr_bin, fbr_shift, with_patch_metrics
from analysis.context_plots import plot_dice_vs_fbr, plot_dice_vs_patch_size, plot_patch_pos_heatmap
from analysis.plots import plot_dice_vs_complexity
from analysis.recommend import recommend
from analysis.report import build_report
from analysis.robustness import condition_summary, parse_condition, robustness_summary
from analysis.runs import factor_names, load_per_image, load_trials
from analysis.stats import friedman, pairwise_wilcoxon
from analysis.stats_plots import plot_critical_difference
from analysis.summary import summarise

__all__ = [
    "analyze",
    "build_report",
    "condition_summary",
    "friedman",
    "pairwise_wilcoxon",
    "parse_condition",
    "plot_critical_difference",
    "recommend",
    "robustness_summary",
    "dice_by_fbr_bin",
    "factor_names",
    "fbr_shift",
    "load_per_image",
    "load_trials",
    "plot_dice_vs_complexity",
    "plot_dice_vs_fbr",
    "plot_dice_vs_patch_size",
    "plot_patch_pos_heatmap",
    "summarise",
    "with_patch_metrics",
]
