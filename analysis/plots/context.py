"""Plots of the context vs foreground ratio study (docs/ARCHITECTURE.md 4.2), readable without the paper.

Same conventions as `analysis.plots.trade_offs`: object-oriented `Figure` on the Agg canvas (no pyplot, no
process-wide backend switch), 95% Student-t bands over seeds cut to Dice's [0, 1].
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.stats.describe.context import ABOVE, BELOW, INSIDE, dice_by_fbr_bin
from analysis.plots.trade_offs import MARKERS
from analysis.stats.describe.summary import STAT_COLUMNS
from study import metrics_names as M
from study.errors import SegstudyError

PATCH, POS, ARCH = "patch_size", "pos_fraction", "architecture"
POSITION_COLOURS = {BELOW: "C0", INSIDE: "0.55", ABOVE: "C3"}
_PATCH_LABEL = "training patch size (voxels per side)"
_POS_LABEL = "share of foreground-centred crops (pos_fraction)"


def plot_dice_vs_patch_size(summary: pd.DataFrame, out: Path) -> Path:
    """Test Dice vs patch size, one line per architecture (and other factors) with its 95% CI band.

    Args:
        summary: `summarise(trials, by=[architecture, patch_size, pos_fraction, ...], metric="test_dice")`.
            One panel per pos_fraction value (a single panel without that column); every other
            column but the statistics makes its own line.
        out: the PNG to write; parent folders are created.

    Returns:
        `out`.

    Raises:
        SegstudyError: no patch_size column.
    """
    _need(summary, [PATCH], "plot_dice_vs_patch_size")
    panels = sorted(summary[POS].unique()) if POS in summary.columns else [None]
    series = [c for c in summary.columns if c not in STAT_COLUMNS and c not in (PATCH, POS)]
    frame = summary.assign(_series=_labels(summary, series))
    frame[["ci_low", "ci_high"]] = frame[["ci_low", "ci_high"]].clip(0.0, 1.0)

    fig = Figure(figsize=(max(4.2 * len(panels) + 1.5, 6.5), 4.8), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    styles = _styles(frame["_series"].unique())
    for ax, value in zip(axes, panels, strict=True):
        rows = frame if value is None else frame[frame[POS] == value]
        for name, line in rows.groupby("_series", sort=False):
            line = line.sort_values(PATCH)
            ax.plot(line[PATCH], line["mean"], label=name, linewidth=1.6, **styles[name])
            colour = styles[name]["color"]
            ax.fill_between(line[PATCH], line["ci_low"], line["ci_high"], color=colour, alpha=0.18, linewidth=0)
        ax.set_xticks(sorted(frame[PATCH].unique()))
        ax.set_xlabel(_PATCH_LABEL)
        ax.set_title("all trials" if value is None else f"{_POS_LABEL} = {value:g}", fontsize="medium")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test Dice (mean over seeds)")
    axes[-1].legend(title=", ".join(series) or None, fontsize="small", loc="best")
    fig.suptitle(f"Test Dice vs training patch size (context)\nmean over seeds with 95% CI, {_counts(frame['n'])} per point")
    _footnote(fig, frame["n"])
    return _save(fig, out)


def plot_patch_pos_heatmap(summary: pd.DataFrame, out: Path) -> Path:
    """One heatmap per architecture: patch size x pos_fraction, mean test Dice written in each cell.

    Args:
        summary: `summarise(trials, by=[architecture, patch_size, pos_fraction, ...], metric="test_dice")`;
            other factors, if any, are averaged over (the subtitle says so).
        out: the PNG to write; parent folders are created.

    Returns:
        `out`.

    Raises:
        SegstudyError: no patch_size or pos_fraction column.
    """
    _need(summary, [PATCH, POS], "plot_patch_pos_heatmap")
    arches = sorted(summary[ARCH].unique()) if ARCH in summary.columns else [None]
    others = [c for c in summary.columns if c not in STAT_COLUMNS and c not in (PATCH, POS, ARCH)]
    patches, positions = sorted(summary[PATCH].unique()), sorted(summary[POS].unique())
    low, high = float(summary["mean"].min()), float(summary["mean"].max())
    if low == high:
        low, high = low - 0.05, high + 0.05

    fig = Figure(figsize=(3.2 * len(arches) + 1.8, 0.55 * len(patches) + 2.8), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(arches), sharey=True, squeeze=False)[0])
    image = None
    for ax, arch in zip(axes, arches, strict=True):
        rows = summary if arch is None else summary[summary[ARCH] == arch]
        grid = rows.pivot_table(index=PATCH, columns=POS, values="mean", aggfunc="mean")
        grid = grid.reindex(index=patches, columns=positions)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=low, vmax=high, aspect="auto", origin="lower")
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):  # dark text on the bright end of viridis, light on the dark end
                colour = "black" if (value - low) / (high - low) > 0.6 else "white"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour, fontsize="small")
        ax.set_xticks(range(len(positions)), [f"{p:g}" for p in positions])
        ax.set_yticks(range(len(patches)), [f"{p:g}" for p in patches])
        ax.set_xlabel(_POS_LABEL, fontsize="small")
        ax.set_title("all trials" if arch is None else str(arch))
    axes[0].set_ylabel(_PATCH_LABEL)
    fig.colorbar(image, ax=list(axes), label="test Dice (mean over seeds)", shrink=0.9)
    fig.suptitle("Test Dice by patch size and foreground-crop share")
    note = f"cell: mean test Dice over seeds ({_counts(summary['n'])}); one colour scale for all panels"
    if others:
        note += f"; averaged over {', '.join(others)}"
    fig.supxlabel(note, fontsize="x-small", color="0.35")
    return _save(fig, out)


def plot_dice_vs_fbr(per_image: pd.DataFrame, shift: pd.DataFrame, out: Path) -> Path:
    """Per architecture: each test volume's Dice vs its FBR (log x), binned mean, training FBR range.

    Points are coloured by where the volume's FBR falls in its own trial's training-patch FBR
    distribution (`fbr_shift`); the dark band is the median over trials of the training q05-q95
    range, the light band the union of those ranges.

    Args:
        per_image: from `load_per_image` (clean rows are used).
        shift: `fbr_shift(per_image, trials)`.
        out: the PNG to write; parent folders are created.

    Returns:
        `out`.
    """
    _need(per_image, ["run_id", "image_id", "dice", "fbr"], "plot_dice_vs_fbr")
    _need(shift, ["run_id", "image_id", "fbr_position", "train_fbr_q05", "train_fbr_q95"], "plot_dice_vs_fbr")
    clean = per_image[per_image["condition"] == M.CLEAN] if "condition" in per_image.columns else per_image
    keys = ["run_id", "image_id", *(["condition"] if "condition" in clean.columns and "condition" in shift.columns else [])]
    points = clean.merge(shift[[*keys, "fbr_position"]].drop_duplicates(keys), on=keys, how="left")
    fbr = pd.to_numeric(points["fbr"], errors="coerce")
    hidden = int((~(fbr > 0)).sum())  # FBR 0 (no foreground) or missing: no place on a log axis
    points = points[fbr > 0]
    arches = sorted(points[ARCH].unique()) if ARCH in points.columns else [None]
    binned = dice_by_fbr_bin(points, by=[ARCH] if arches[0] is not None else [])
    xlim = (points["fbr"].min() / 1.5, points["fbr"].max() * 1.5) if len(points) else (0.01, 10.0)

    fig = Figure(figsize=(4.4 * len(arches) + 1.0, 4.8), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(arches), sharey=True, squeeze=False)[0])
    for ax, arch in zip(axes, arches, strict=True):
        _training_bands(ax, _of(shift, arch), xlim)
        rows = _of(points, arch)
        colours = rows["fbr_position"].map(POSITION_COLOURS).fillna("0.8").tolist()
        ax.scatter(rows["fbr"], rows["dice"], s=12, c=colours, alpha=0.55, linewidths=0)
        line = _of(binned, arch).sort_values("fbr_median")  # drawn where each bin's volumes lie
        ax.plot(line["fbr_median"], line["mean"], color="black", marker="o", markersize=4, linewidth=1.6)
        band = line[["ci_low", "ci_high"]].clip(0.0, 1.0)
        ax.fill_between(line["fbr_median"], band["ci_low"], band["ci_high"], color="black", alpha=0.12, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title("all trials" if arch is None else str(arch))
        ax.set_xlabel("test-volume FBR: foreground / background voxels (log)")
        ax.grid(alpha=0.3, which="both", linewidth=0.5)
    axes[0].set_ylabel("test Dice per volume")
    axes[-1].legend(handles=_legend_handles(), fontsize="x-small", loc="lower right")
    fig.suptitle("Test Dice vs test-volume foreground/background ratio, against the training-patch FBR range")
    note = "line: mean over seeds per log-spaced FBR bin, with 95% CI; "
    note += "colour: volume FBR vs its own trial's training-patch q05-q95"
    if hidden:
        note += f"; {hidden} volume(s) with FBR 0 or none not shown"
    fig.supxlabel(note, fontsize="x-small", color="0.35")
    return _save(fig, out)


def _training_bands(ax: Axes, shift: pd.DataFrame, xlim: tuple[float, float]) -> None:
    """Light band: union of the trials' training q05-q95; dark: the median trial's range."""
    ranges = shift.drop_duplicates("run_id")[["train_fbr_q05", "train_fbr_q95"]].dropna()
    if ranges.empty:
        return
    # A q05 of 0 (crops without foreground) or a q95 of inf cannot be drawn on a log axis: cut to the view.
    cut = ranges.clip(lower=xlim[0], upper=xlim[1])
    ax.axvspan(cut["train_fbr_q05"].min(), cut["train_fbr_q95"].max(), color="C2", alpha=0.07, linewidth=0)
    ax.axvspan(cut["train_fbr_q05"].median(), cut["train_fbr_q95"].median(), color="C2", alpha=0.16, linewidth=0)


def _of(frame: pd.DataFrame, arch: str | None) -> pd.DataFrame:
    return frame if arch is None else frame[frame[ARCH] == arch]


def _legend_handles() -> list[Artist]:
    dots = [
        Line2D([], [], linestyle="", marker="o", color=POSITION_COLOURS[p], label=f"{p} training range")
        for p in (BELOW, INSIDE, ABOVE)
    ]
    return [
        *dots,
        Line2D([], [], color="black", marker="o", markersize=4, label="binned mean, 95% CI"),
        Patch(color="C2", alpha=0.25, label="training patch FBR q05-q95 (median trial)"),
        Patch(color="C2", alpha=0.10, label="... union over trials"),
    ]


def _labels(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    if not columns:
        return ["all trials"] * len(frame)
    if len(columns) == 1:
        return frame[columns[0]].astype(str).tolist()
    rows = frame[columns].itertuples(index=False)
    return [", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True)) for row in rows]


def _styles(names: np.ndarray) -> dict[str, dict]:
    return {name: {"marker": m, "color": f"C{i % 10}"} for i, (name, m) in enumerate(zip(names, itertools.cycle(MARKERS)))}


def _counts(n: pd.Series) -> str:
    return f"n = {n.min()} seeds" if n.min() == n.max() else f"n = {n.min()}-{n.max()} seeds"


def _footnote(fig: Figure, n: pd.Series) -> None:
    note = "band: 95% Student-t interval over seeds, cut to Dice's 0-1"
    if (n < 2).any():
        note += "; none where a point has a single seed"
    fig.supxlabel(note, fontsize="x-small", color="0.35")


def _need(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        raise SegstudyError(f"{where}: missing column(s) {', '.join(missing)}; columns: {have}")


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


__all__ = ["plot_dice_vs_fbr", "plot_dice_vs_patch_size", "plot_patch_pos_heatmap"]
