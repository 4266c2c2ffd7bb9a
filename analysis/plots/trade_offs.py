"""Trade-off plots that can be read without the paper around them.

Figures are built with the object-oriented `matplotlib.figure.Figure` (Agg canvas) rather than
pyplot, so plotting never switches the process-wide backend nor leaks open figures in a service.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.stats.describe.summary import STAT_COLUMNS
from study.errors import SegstudyError

MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_KEYS = ["_series", "_x"]


def plot_dice_vs_complexity(
    summary_alpha: pd.DataFrame,
    summary_td: pd.DataFrame,
    out: Path,
    *,
    x: str = "alpha",
) -> Path:
    """One PNG, two panels: test Dice vs complexity level, and vs measured texture disparity.

    Args:
        summary_alpha: `summarise(trials, by=[..., x], metric="test_dice")`; every column other
            than `x` and the statistics (e.g. architecture) makes one line.
        summary_td: `summarise(trials, by=<same columns>, metric="test_td")`: the mean measured TD
            of each point, placed on the second panel's x axis (with its own 95% CI).
        out: the PNG to write; parent folders are created.
        x: the complexity factor (larger = harder).

    Returns:
        `out`.

    Raises:
        SegstudyError: `x` is not a column of `summary_alpha`.
    """
    if x not in summary_alpha.columns:
        raise SegstudyError(f"plot_dice_vs_complexity: x='{x}' is not a column; columns: {', '.join(summary_alpha.columns)}")
    series = [c for c in summary_alpha.columns if c not in STAT_COLUMNS and c != x]
    dice = _keyed(summary_alpha, series, x)
    td = _keyed(summary_td, series, x) if x in summary_td.columns else dice.iloc[0:0]
    both = dice.merge(td, on=_KEYS, how="left", suffixes=("", "_td"))
    # t-intervals over 2-3 seeds can reach past Dice's [0, 1] and TD's [0, inf): draw the valid part.
    both[["ci_low", "ci_high"]] = both[["ci_low", "ci_high"]].clip(0.0, 1.0)
    both["ci_low_td"] = both["ci_low_td"].clip(lower=0.0)

    fig = Figure(figsize=(11.5, 4.8), dpi=120, layout="constrained")
    by_level, by_td = fig.subplots(1, 2, sharey=True)
    styles = dict(zip(both["_series"].unique(), itertools.cycle(MARKERS), strict=False))
    colours = {name: f"C{i % 10}" for i, name in enumerate(styles)}
    for name, rows in both.groupby("_series", sort=False):
        rows = rows.sort_values("_x")
        style = {"marker": styles[name], "color": colours[name], "label": name, "linewidth": 1.6}
        by_level.plot(rows["_x"], rows["mean"], **style)
        by_level.fill_between(rows["_x"], rows["ci_low"], rows["ci_high"], color=colours[name], alpha=0.18, linewidth=0)
        _td_panel(by_td, rows, style)

    n = both["n"]
    counts = f"n = {n.min()}" if n.min() == n.max() else f"n = {n.min()}-{n.max()}"
    fig.suptitle(f"Test Dice vs task complexity: mean over seeds with 95% CI ({counts} per point)")
    by_level.set_title(f"by complexity level ({x})")
    by_level.set_xlabel(f"{x}: texture mixing level   (harder \u2192)")
    by_level.set_ylabel("test Dice")
    by_level.legend(title=", ".join(series) or None, loc="best", fontsize="small")
    by_td.set_title("by measured texture disparity (TD)")
    by_td.set_xlabel("mean test texture disparity TD, LBP KL in bits   (easier \u2192)")
    if not both["mean_td"].notna().any():
        by_td.text(0.5, 0.5, "test_td was not logged", ha="center", va="center", transform=by_td.transAxes)
    for ax in (by_level, by_td):
        ax.grid(alpha=0.3)
    note = "band / bars: 95% Student-t interval over seeds, cut to the valid range (Dice 0-1, TD >= 0)"
    if (n < 2).any():
        note += "; none where a point has a single seed"
    fig.supxlabel(note, fontsize="x-small", color="0.35")  # constrained layout keeps it off the labels

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _keyed(summary: pd.DataFrame, series: list[str], x: str) -> pd.DataFrame:
    """The summary with one `_series` label per line ("unet", or "arch=unet, patch=64") and `_x`."""
    frame = summary.copy()
    if len(series) == 1:
        frame["_series"] = frame[series[0]].astype(str)
    elif series:
        frame["_series"] = frame[series].astype(str).apply(lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1)
    else:
        frame["_series"] = "all trials"
    frame["_x"] = frame[x]
    return frame[[*_KEYS, "mean", "n", "ci_low", "ci_high"]]


def _td_panel(ax: Axes, rows: pd.DataFrame, style: dict) -> None:
    rows = rows.dropna(subset=["mean_td"]).sort_values("mean_td")
    if rows.empty:
        return
    ax.errorbar(
        rows["mean_td"],
        rows["mean"],
        xerr=_half_widths(rows, "_td"),
        yerr=_half_widths(rows, ""),
        capsize=3,
        elinewidth=1.0,
        **style,
    )


def _half_widths(rows: pd.DataFrame, suffix: str) -> np.ndarray:
    mean = rows[f"mean{suffix}"].to_numpy(dtype=float)
    low = mean - rows[f"ci_low{suffix}"].to_numpy(dtype=float)
    high = rows[f"ci_high{suffix}"].to_numpy(dtype=float) - mean
    return np.nan_to_num(np.vstack([low, high]), nan=0.0)


__all__ = ["plot_dice_vs_complexity"]
