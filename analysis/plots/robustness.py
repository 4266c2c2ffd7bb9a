"""Robustness figures for the study report: Dice vs severity, accuracy vs robustness, who wins where.

Each figure is meant to be read without the report around it: titles say what is plotted and how
it was averaged, axes carry units and the direction of "better", and every mark that colour
encodes is also written as text. Figures are built on `matplotlib.figure.Figure` (Agg canvas), so
plotting never switches the process-wide backend nor leaves figures open in a long-lived service.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.plots.trade_offs import MARKERS
from analysis.stats.describe.robustness import parse_condition
from analysis.stats.describe.summary import level_text
from study import metrics_names as M
from study.errors import SegstudyError

WINNER_COLUMNS = ("condition", "perturbation", "severity", "winner", "runner_up", "margin", "p_adjusted", "significant")


def plot_dice_vs_severity(
    conditions: pd.DataFrame,
    out: Path,
    *,
    arm: str = "architecture",
    parameters: Mapping[str, tuple[str, Sequence[float]]] | None = None,
    pooled_over: str = "",
) -> Path:
    """Small multiples, one panel per perturbation: mean Dice per arm vs severity, 0 = clean.

    Args:
        conditions: `condition_summary` rows with one "mean" row per (arm, condition), i.e.
            computed with `within=[]` (strata pooled).
        out: the PNG to write; parent folders are created.
        arm: the column naming the arms (one line each).
        parameters: perturbation -> (physical parameter, levels for severities 1..5), printed
            under the severity ticks so the x axis has units.
        pooled_over: what the means average over, for the title (e.g. "alpha levels").

    Raises:
        SegstudyError: no perturbed condition, or several rows per arm and condition.
    """
    means = conditions[conditions["statistic"] == "mean"]
    names = sorted(p for p in means["perturbation"].dropna().unique())
    if not names:
        raise SegstudyError("plot_dice_vs_severity: no perturbed condition; the study evaluated clean images only")
    if means.duplicated([arm, "condition"]).any():
        raise SegstudyError(
            "plot_dice_vs_severity: several rows per arm and condition; pass condition_summary(within=[])"
        )
    arms = sorted(means[arm].unique())
    colours = arm_colours(arms)
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.6 * rows + 0.9), dpi=110, layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    clean = means[means["condition"] == M.CLEAN]
    for ax, name in zip(axes, names, strict=False):
        for a, marker in zip(arms, itertools.cycle(MARKERS), strict=False):
            curve = pd.concat([clean[clean[arm] == a], means[(means["perturbation"] == name) & (means[arm] == a)]])
            curve = curve.sort_values("severity")
            ax.plot(curve["severity"], curve["value"], marker=marker, color=colours[a], label=str(a), linewidth=1.6)
            ax.fill_between(curve["severity"], curve["ci_low"], curve["ci_high"], color=colours[a], alpha=0.18, lw=0)
        severities = sorted({0, *means.loc[means["perturbation"] == name, "severity"].astype(int)})
        ax.set_xticks(severities)
        parameter, levels = (parameters or {}).get(name, ("", ()))
        if levels:
            ax.set_xticklabels([f"{s}\n{'clean' if s == 0 else level_text(levels[s - 1])}" for s in severities])
        ax.set_xlabel("severity   (harder \u2192)" + (f"\n{parameter}" if parameter else ""), fontsize="small")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("mean test Dice")
    axes[0].legend(title=arm, fontsize="small")
    over = f", averaged over {pooled_over}" if pooled_over else ""
    fig.suptitle(f"Dice vs perturbation severity per {arm} (severity 0 = clean){over}\n"
                 "bands: 95% bootstrap CI over seeds and images", fontsize=10)
    return _save(fig, out)


def pareto_front(points: Mapping[Hashable, tuple[float, float]]) -> list[Hashable]:
    """Arms no other arm beats on both axes: (clean Dice, degradation), high clean and low degradation.

    Example:
        >>> pareto_front({"a": (0.9, 0.2), "b": (0.8, 0.1), "c": (0.7, 0.3)})
        ['a', 'b']
    """
    def dominated(c: float, d: float) -> bool:
        return any(c2 >= c and d2 <= d and (c2 > c or d2 < d) for c2, d2 in points.values())

    front = [a for a, (c, d) in points.items() if not (math.isnan(c) or math.isnan(d)) and not dominated(c, d)]
    return sorted(front, key=lambda a: -points[a][0])


def plot_accuracy_robustness(
    clean: pd.DataFrame, degradation: pd.DataFrame, out: Path, *, arm: str = "architecture", pooled_over: str = ""
) -> Path:
    """In-domain (clean) Dice vs degradation under perturbation per arm, with the Pareto front.

    Args:
        clean: one row per arm: `arm`, value, ci_low, ci_high (clean mean Dice, condition_summary).
        degradation: `robustness_summary(within=[])` rows of summary "degradation": `arm`,
            perturbation, value, ci_low, ci_high.
        out: the PNG to write.
        arm: the column naming the arms.
        pooled_over: what the numbers average over, for the title.

    Returns:
        `out`. Small marks: one perturbation each (with CI); large marks: the mean over perturbations.
    """
    clean = clean.set_index(arm)
    mean_deg = degradation.groupby(arm)["value"].mean()
    arms = sorted(set(clean.index) & set(mean_deg.index))
    if not arms:
        raise SegstudyError("plot_accuracy_robustness: no arm has both a clean score and a degradation")
    colours = arm_colours(arms)
    markers = dict(zip(sorted(degradation["perturbation"].unique()), itertools.cycle(MARKERS[1:]), strict=False))
    fig = Figure(figsize=(8.0, 5.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for a in arms:
        c = clean.loc[a]
        rows = degradation[degradation[arm] == a]
        for row in rows.itertuples(index=False):
            ax.errorbar(c["value"], row.value, yerr=_half_widths(row.value, row.ci_low, row.ci_high),
                        marker=markers[row.perturbation], color=colours[a],
                        alpha=0.45, markersize=6, capsize=2, linestyle="none")
        xerr = _half_widths(c["value"], c["ci_low"], c["ci_high"])
        ax.errorbar(c["value"], mean_deg[a], xerr=xerr, marker="o", markersize=11, color=colours[a], capsize=3)
        ax.annotate(str(a), (c["value"], mean_deg[a]), xytext=(8, 6), textcoords="offset points", fontsize=9)
    front = pareto_front({a: (float(clean.loc[a, "value"]), float(mean_deg[a])) for a in arms})
    ax.plot([clean.loc[a, "value"] for a in front], [mean_deg[a] for a in front], "k--", lw=1.2, zorder=0)
    ax.scatter([clean.loc[a, "value"] for a in front], [mean_deg[a] for a in front], s=260, facecolors="none",
               edgecolors="black", linewidths=1.3, zorder=3)
    handles = [Line2D([], [], color=colours[a], marker="o", ls="none", label=str(a)) for a in arms]
    handles += [Line2D([], [], color="0.5", marker=m, ls="none", alpha=0.6, label=p) for p, m in markers.items()]
    handles.append(Line2D([], [], color="black", ls="--", marker="o", mfc="none", ms=12, label="Pareto front"))
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_xlabel("clean (in-domain) mean test Dice   (better \u2192)")
    ax.set_ylabel("degradation: weighted clean \u2212 perturbed Dice   (better \u2193)")
    ax.grid(alpha=0.3)
    over = f", averaged over {pooled_over}" if pooled_over else ""
    fig.suptitle(f"Accuracy vs robustness per {arm}{over}\nlarge marks: mean over perturbations (bars: clean "
                 "95% CI); small marks: one perturbation\n(bars: 95% bootstrap CI); ringed: Pareto front, "
                 "not beaten on both axes", fontsize=10)
    return _save(fig, out)


def winners(
    conditions: pd.DataFrame,
    pairwise: pd.DataFrame,
    *,
    arm: str = "architecture",
    within: Sequence[str] = (),
) -> pd.DataFrame:
    """Per stratum and condition: the arm with the highest mean Dice, and whether it beats the runner-up.

    Args:
        conditions: `condition_summary` (with the same `within`); its "mean" rows are used.
        pairwise: `pairwise_tests` over the same frame and `within`.
        arm, within: the arm column and the stratifying factors.

    Returns:
        Columns `within`..., condition, perturbation, severity, winner, runner_up (None with one
        arm), margin (winner minus runner-up mean), p_adjusted (their pair, the table's
        false-discovery-rate procedure), significant (resolved and the pair's difference favours the winner).
    """
    tests = {
        (*(r[w] for w in within), r["condition"], frozenset((r["a"], r["b"]))): r for r in pairwise.to_dict("records")
    }
    rows = []
    means = conditions[conditions["statistic"] == "mean"]
    for key, group in means.groupby([*within, "condition"], sort=False, dropna=False):
        ranked = group.sort_values("value", ascending=False)
        winner, first = ranked[arm].iloc[0], ranked["value"].iloc[0]
        runner = ranked[arm].iloc[1] if len(ranked) > 1 else None
        test = tests.get((*key, frozenset((winner, runner))), {})
        p = float(test.get("p_adjusted", np.nan))
        favours = test.get("diff", 0.0) * (1 if test.get("a") == winner else -1) > 0
        perturbation, severity = parse_condition(key[-1])
        rows.append({
            **dict(zip(within, key[:-1], strict=True)), "condition": key[-1], "perturbation": perturbation,
            "severity": severity, "winner": winner, "runner_up": runner,
            "margin": first - ranked["value"].iloc[1] if runner is not None else np.nan,
            "p_adjusted": p, "significant": bool(test.get("significant", False) and favours),
        })
    return pd.DataFrame(rows, columns=[*within, *WINNER_COLUMNS])


def plot_winner_map(table: pd.DataFrame, out: Path, *, within: Sequence[str] = (), q: float = 0.05) -> Path:
    """Which arm wins where: one panel per perturbation, stratum (e.g. alpha) x severity, colour = winner.

    Args:
        table: `winners(...)` with the same `within`.
        out: the PNG to write.
        within: the stratifying factors; their combinations are the columns (one column if none).
        q: the false-discovery rate the pairwise table was decided at, for the legend.
    """
    arms = sorted(set(table["winner"]) | set(table["runner_up"].dropna()))  # every arm: stable colours
    colours = arm_colours(arms)
    strata = sorted({tuple(r) for r in table[list(within)].itertuples(index=False)}) if within else [()]
    labels = [_stratum_label(within, s) for s in strata]
    names = sorted(p for p in table["perturbation"].dropna().unique()) or [None]
    cols = min(len(names), 3)
    rows_of_panels = math.ceil(len(names) / cols)
    width = max(3.6, 1.2 + 0.9 * len(strata))
    fig = Figure(figsize=(width * cols + 1.6, 4.0 * rows_of_panels + 0.6), dpi=110, layout="constrained")
    axes = fig.subplots(rows_of_panels, cols, squeeze=False).ravel()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes, names, strict=False):
        rows = table[(table["perturbation"] == name) | (table["condition"] == M.CLEAN)]
        severities = sorted(rows["severity"].astype(int).unique())
        grid = np.full((len(severities), len(strata)), np.nan)
        for r in rows.to_dict("records"):
            i, j = severities.index(int(r["severity"])), strata.index(tuple(r[w] for w in within))
            grid[i, j] = arms.index(r["winner"])
            text = f"{r['winner']}{'*' if r['significant'] else ''}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white", fontweight="bold")
        ax.imshow(np.ma.masked_invalid(grid), cmap=ListedColormap([colours[a] for a in arms]), vmin=-0.5,
                  vmax=len(arms) - 0.5, origin="lower", aspect="auto")
        ax.set_xticks(range(len(strata)), labels, rotation=30 if len(strata) > 4 else 0)
        ax.set_yticks(range(len(severities)), ["0 clean" if s == 0 else str(s) for s in severities])
        ax.set_xlabel(", ".join(within) or "(no other factor)")
        ax.set_ylabel("severity   (harder \u2191)")
        ax.set_title(name or "clean only (no perturbations)")
    handles = [Patch(color=colours[a], label=str(a)) for a in arms]
    fig.legend(handles=handles, loc="outside right center", title="winning arm", fontsize="small")
    fig.suptitle(f"Highest mean Dice per cell; * = resolved better than the runner-up (training seeds the "
                 f"replicates; false-discovery rate {q:g} over the table)", fontsize=10)
    return _save(fig, out)


def arm_colours(arms: Sequence[Hashable]) -> dict[Hashable, str]:
    """The same arm gets the same colour in every figure of a report (arms sorted by the caller)."""
    return {a: f"C{i % 10}" for i, a in enumerate(arms)}


def _half_widths(value: float, low: float, high: float) -> list[list[float]] | None:
    """Error-bar lengths; a percentile interval need not contain the point estimate, so clip at 0."""
    if np.isnan(low) or np.isnan(high):
        return None
    return [[max(value - low, 0.0)], [max(high - value, 0.0)]]


def _stratum_label(within: Sequence[str], values: tuple) -> str:
    if not within:
        return "all"
    if len(within) == 1:
        return f"{values[0]:g}" if isinstance(values[0], float) else str(values[0])
    return ", ".join(f"{k}={v}" for k, v in zip(within, values, strict=True))


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


__all__ = [
    "WINNER_COLUMNS", "arm_colours", "pareto_front", "plot_accuracy_robustness", "plot_dice_vs_severity",
    "plot_winner_map", "winners",
]
