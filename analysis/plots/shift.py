"""Plots of the train/test shift (`evaluation.shift`): how each arm's Dice falls away from its training level.

Same conventions as `analysis.plots.trade_offs`: object-oriented `Figure` on the Agg canvas (no
pyplot, no process-wide backend switch), 95% Student-t bands over seeds cut to Dice's [0, 1].
Both figures read `analysis.stats.describe.shift.shift_table`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis.plots.trade_offs import MARKERS
from analysis.stats.describe.shift import SEEDS
from analysis.stats.describe.summary import level_text
from study import metrics_names as M


def plot_shift_heatmaps(
    table: pd.DataFrame, out: Path, *, factor: str, arm: str = "architecture", within: Sequence[str] = ()
) -> Path:
    """One heatmap per arm (and stratum of `within`): training level down, test level across,
    the mean test Dice written in each cell and the in-domain cells (tested where trained) framed.

    Args:
        table: `shift_table(rows, factor=factor, arm=arm, within=within)`.
        out: the PNG to write; parent folders are created.
        factor: the shifted factor, e.g. "alpha".
        arm, within: as given to `shift_table`.

    Returns:
        `out`.
    """
    test = M.test_level_column(factor)
    panels = _panels(table, [*within, arm])
    trains, tests = sorted(table[factor].unique()), sorted(table[test].unique())
    fig = Figure(figsize=(0.75 * len(tests) * len(panels) + 2.6, 0.6 * len(trains) + 2.6), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    image = None
    for ax, (title, rows) in zip(axes, panels, strict=True):
        grid = rows.pivot_table(index=factor, columns=test, values="mean", aggfunc="first").reindex(index=trains, columns=tests)
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):  # dark text on the bright end of viridis, light on the dark end
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="black" if value > 0.6 else "white", fontsize="small")
            if trains[i] == tests[j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.8))
        ax.set_xticks(range(len(tests)), [level_text(v) for v in tests])
        ax.set_yticks(range(len(trains)), [level_text(v) for v in trains])
        ax.set_xlabel(f"test {factor}")
        ax.set_title(title, fontsize="medium")
    axes[0].set_ylabel(f"training {factor}")
    fig.colorbar(image, ax=list(axes), label="test Dice (mean over seeds)", shrink=0.9)
    fig.suptitle(f"Train/test shift along {factor}: mean test Dice per training and test level")
    fig.supxlabel(
        f"red frame: tested at the training level (in-domain); {_counts(table[SEEDS])} per cell; colour scale 0-1",
        fontsize="x-small", color="0.35",
    )
    return _save(fig, out)


def plot_shift_degradation(
    table: pd.DataFrame, out: Path, *, factor: str, arm: str = "architecture", within: Sequence[str] = ()
) -> Path:
    """Degradation curves: mean test Dice against the test level, one line per arm, one panel per
    training level (and stratum of `within`), the training level marked.

    Args: as `plot_shift_heatmaps`.

    Returns:
        `out`.
    """
    test = M.test_level_column(factor)
    panels = _panels(table, [*within, factor], label=lambda c, v: f"trained at {level_text(v)}" if c == factor else f"{c}={v}")
    arms = list(pd.unique(table[arm]))
    # Named levels (sites) stand at evenly spaced places in sorted order; numbers where they are.
    levels = sorted(set(table[test]) | set(table[factor]), key=lambda v: (not _numeric(v), v if _numeric(v) else str(v)))
    named = not all(_numeric(v) for v in levels)
    where = {v: (i if named else float(v)) for i, v in enumerate(levels)}
    styles = {a: {"marker": m, "color": f"C{i % 10}"} for i, (a, m) in enumerate(zip(arms, itertools.cycle(MARKERS)))}
    fig = Figure(figsize=(3.8 * len(panels) + 1.6, 4.4), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    for ax, (title, rows) in zip(axes, panels, strict=True):
        for name in arms:
            line = rows[rows[arm] == name].sort_values(test)
            if line.empty:
                continue
            x = [where[v] for v in line[test]]
            ax.plot(x, line["mean"], label=str(name), linewidth=1.6, **styles[name])
            band = line[["ci_low", "ci_high"]].clip(0.0, 1.0)
            ax.fill_between(x, band["ci_low"], band["ci_high"], color=styles[name]["color"], alpha=0.15, linewidth=0)
        ax.axvline(where[rows[factor].iloc[0]], color="0.4", linestyle=":", linewidth=1.2)
        if named:
            ax.set_xticks(list(where.values()), [level_text(v) for v in where])
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(f"test {factor}")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test Dice (mean over seeds)")
    axes[-1].legend(title=arm, fontsize="small", loc="best")
    fig.suptitle(f"Dice as the test {factor} moves away from the training {factor}")
    fig.supxlabel(
        f"dotted line: the training level; band: 95% Student-t interval over seeds ({_counts(table[SEEDS])}), cut to 0-1",
        fontsize="x-small", color="0.35",
    )
    return _save(fig, out)


def _panels(table: pd.DataFrame, columns: list[str], label=None) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per combination of `columns`, in sorted order."""
    name = label or (lambda c, v: str(v) if len(columns) == 1 else f"{c}={v}")
    return [
        (", ".join(name(c, v) for c, v in zip(columns, key, strict=True)), rows)
        for key, rows in table.groupby(columns, sort=True)
    ]


def _numeric(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _counts(n: pd.Series) -> str:
    return f"n = {n.min()} seeds" if n.min() == n.max() else f"n = {n.min()}-{n.max()} seeds"


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


__all__ = ["plot_shift_degradation", "plot_shift_heatmaps"]
