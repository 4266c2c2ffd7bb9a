"""Post-hoc analysis: MLflow runs -> tidy frames -> summaries -> plots.

Stages hand over through pandas frames (and CSV files in `analyze`), so each can be used alone:

    from analysis import load_trials, summarise
    trials = load_trials("skip_vs_complexity", tracking_uri="sqlite:////data/mlflow.db")
    summarise(trials, by=["architecture", "alpha"])
"""

from __future__ import annotations

import importlib
from typing import Any

# Name -> module that defines it. Imported on first use (PEP 562), so `import analysis` or
# `from analysis import load_trials` does not pull in matplotlib and jinja2 for a caller that
# only reads runs.
_EXPORTS = {
    "analyze": "analysis.commands.analyze",
    "build_report": "analysis.commands.report",
    "condition_summary": "analysis.stats.describe.robustness",
    "dice_by_fbr_bin": "analysis.stats.describe.context",
    "factor_names": "analysis.read.runs",
    "fbr_shift": "analysis.stats.describe.context",
    "mean_ranks": "analysis.stats.statements.pairwise",
    "load_per_image": "analysis.read.runs",
    "load_trials": "analysis.read.runs",
    "pairwise_tests": "analysis.stats.statements.pairwise",
    "contrast": "analysis.stats.core.inference",
    "frame_contrast": "analysis.stats.core.contrasts",
    "parse_condition": "analysis.stats.describe.robustness",
    "plot_critical_difference": "analysis.plots.critical_difference",
    "plot_dice_vs_complexity": "analysis.plots.trade_offs",
    "plot_dice_vs_fbr": "analysis.plots.context",
    "plot_dice_vs_patch_size": "analysis.plots.context",
    "plot_patch_pos_heatmap": "analysis.plots.context",
    "recommend": "analysis.commands.recommend",
    "robustness_summary": "analysis.stats.describe.robustness",
    "summarise": "analysis.stats.describe.summary",
    "with_patch_metrics": "analysis.stats.describe.context",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "analyze",
    "build_report",
    "condition_summary",
    "mean_ranks",
    "pairwise_tests",
    "contrast",
    "frame_contrast",
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
