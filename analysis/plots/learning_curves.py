"""Validation-Dice learning curves per cell: under-training at a glance.

Every confirm trial logs `val_dice` each epoch (step = epoch). One small panel per cell, one line
per seed; a panel whose trials the learning gate rejected is drawn in red and says so, so a cell
that never left the trivial regime cannot hide behind a table of means.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.read.runs import not_learned_trials
from study import metrics_names as M

_PANEL_COLUMNS = 5


def plot_learning_curves(curves: pd.DataFrame, trials: pd.DataFrame, out: Path) -> Path:
    """A grid of per-cell panels of validation Dice against epoch; rejected cells in red."""
    cells = sorted(curves["cell"].unique())
    rejected = set(not_learned_trials(trials)["cell"])
    n_cols = min(_PANEL_COLUMNS, max(1, len(cells)))
    n_rows = max(1, math.ceil(len(cells) / n_cols))
    fig = Figure(figsize=(3.0 * n_cols, 2.5 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    for ax, cell in zip(axes.flat, cells):
        colour = "tab:red" if cell in rejected else "tab:blue"
        for seed, group in curves[curves["cell"] == cell].groupby("seed"):
            ax.plot(group["epoch"], group[M.VAL_DICE], color=colour, alpha=0.8, lw=1.2, label=f"seed {seed}")
        title = textwrap.fill(cell.replace("architecture=", "").replace(",", ", "), width=34)
        ax.set_title(title + ("\nDID NOT LEARN" if cell in rejected else ""), fontsize=7, color=colour)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    fig.supxlabel("epoch", fontsize=8)
    fig.supylabel("validation Dice", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


__all__ = ["plot_learning_curves"]
