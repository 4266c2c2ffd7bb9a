"""Sections 3-6: the perturbations used, per-condition tables, the statistics and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.commands.report_sections.blocks import ARM, ReportFigure, Table, table_of, wide_table, write_csv
from analysis.plots.critical_difference import plot_critical_difference
from analysis.plots.robustness import plot_accuracy_robustness, plot_dice_vs_severity, plot_winner_map, winners
from analysis.plots.trade_offs import plot_dice_vs_complexity
from analysis.read.runs import factor_names
from analysis.stats.core.frames import resolve_within
from analysis.stats.core.multiplicity import METHOD_NAMES
from analysis.stats.statements.pairwise import mean_ranks, pairwise_tests
from study.metrics_names import MIN_SEEDS
from analysis.stats.describe.robustness import condition_summary, parse_condition, robustness_summary
from analysis.stats.describe.summary import level_text, summarise
from study import metrics_names as M
from study.errors import SegstudyError
from study.perturbations import describe
from study.spec import Evaluation

COMPLEXITY = "alpha"
DEFAULT_TAU = float(Evaluation.model_fields["failure_threshold"].default)  # when the spec is missing


def result_sections(
    per_image: pd.DataFrame, trials: pd.DataFrame, *, evaluation: dict, n_boot: int, out_dir: Path, q: float = 0.05,
    method: str = "bh", own: dict | None = None,
) -> dict[str, Any]:
    """Sections 3-6: perturbations, per-condition tables, statistics and plots; the pairwise tables
    decided at false-discovery rate q (`method`: bh, by); `own` is the spec's ``perturbations:``
    section (perturbations by import path)."""
    registry = {row["name"]: row for row in describe(own or {})}
    figures = [_complexity_figure(trials, out_dir)]
    if per_image.empty or per_image["dice"].isna().all():
        why = "no confirm trial logged per-image Dice (per_image.csv)"
        figures.append(ReportFigure("Robustness plots", note=why))
        return {"perturbations": None, "tau": DEFAULT_TAU, "reference": None, "why_empty": why, "conditions": None,
                "statistics": None, "figures": figures}
    within = resolve_within(per_image, by=ARM, within=None)
    tau = float(evaluation.get("failure_threshold", DEFAULT_TAU))
    reference = evaluation.get("reference_arm")
    reference = reference if reference in set(per_image[ARM]) else None
    perturbed = sorted({parse_condition(c)[0] for c in per_image["condition"].unique()} - {None})
    cond = condition_summary(per_image, arm=ARM, tau=tau, n_boot=n_boot)
    robust, robust_note = None, "no perturbations in this study, so there is no severity curve to summarise"
    if perturbed:
        try:
            robust = robustness_summary(per_image, arm=ARM, reference=reference, n_boot=n_boot)
        except SegstudyError as exc:  # e.g. a stratum without clean scores: the rest of the report still stands
            robust_note = str(exc)
    pairwise = pairwise_tests(per_image, by=ARM, q=q, method=method)
    ranks = mean_ranks(per_image, by=ARM)
    write_csv(out_dir, condition_summary=cond, robustness_summary=robust, pairwise_tests=pairwise, mean_ranks=ranks)
    rows = [*within, ARM]
    conditions = {
        "mean": wide_table(cond[cond["statistic"] == "mean"], rows, "condition"),
        "failure_rate": wide_table(cond[cond["statistic"] == "failure_rate"], rows, "condition"),
        "robustness": wide_table(robust, [*rows, "perturbation"], "summary") if robust is not None else None,
        "robustness_note": robust_note,
    }
    seeds = per_image.groupby([*within, ARM])["seed"].nunique()
    statistics = {
        "pairwise": table_of(pairwise, mark="significant"),
        "ranks": _ranks_table(ranks, within),
        "q": q, "method": METHOD_NAMES[method],
        "few_seeds": int(seeds.min()) if seeds.min() < MIN_SEEDS else None,
        "cd": _cd_figures(per_image, within, perturbed, out_dir, q=q, method=method),
    }
    win = winners(cond, pairwise, arm=ARM, within=within)
    write_csv(out_dir, winners=win)
    figures += _robustness_figures(per_image, within, perturbed, tau=tau, n_boot=n_boot, win=win, q=q, out_dir=out_dir,
                                   registry=registry)
    return {
        "perturbations": _perturbation_table(per_image, perturbed, registry), "tau": tau, "reference": reference,
        "why_empty": "", "conditions": conditions, "statistics": statistics, "figures": figures,
    }


def _perturbation_table(per_image: pd.DataFrame, names: list[str], registry: dict[str, dict]) -> Table | None:
    """Each perturbation used: its physical parameter, levels, severities run and one realised example."""
    if not names:
        return None
    rows = []
    for name in names:
        info = registry.get(name, {"parameter": "not in this segstudy's registry", "levels": []})
        mine = per_image[per_image["condition"].map(lambda c: parse_condition(c)[0] == name)]
        severities = sorted({parse_condition(c)[1] for c in mine["condition"]})
        example = ""
        if M.PERTURBATION_PARAMS in mine.columns and mine[M.PERTURBATION_PARAMS].notna().any():
            row = mine.dropna(subset=[M.PERTURBATION_PARAMS]).iloc[-1]
            example = f"{row['condition']}, image {row['image_id']}: {row[M.PERTURBATION_PARAMS]}"
        rows.append([name, info["parameter"], "; ".join(map(level_text, info["levels"])),
                     ", ".join(map(str, severities)), example or "not recorded"])
    return Table(["perturbation", "physical parameter", "levels (severity 1-5)", "severities evaluated",
                  "example of realised parameters"], rows)


def _ranks_table(ranks: pd.DataFrame, within: list[str]) -> Table:
    rows = []
    for key, group in ranks.groupby([*within, "condition"], sort=False, dropna=False):
        order = "; ".join(f"{a}: {r:.2f}" for a, r in sorted(zip(group[ARM], group["mean_rank"]), key=lambda t: t[1]))
        rows.append([*map(str, key), order, str(group["n_images"].iloc[0])])
    return Table([*within, "condition", "mean rank over images (1 = best)", "images"], rows)


def _cd_figures(
    per_image: pd.DataFrame, within: list[str], perturbed: list[str], out_dir: Path, *, q: float, method: str,
) -> list[ReportFigure]:
    """One critical-difference diagram per condition group: clean, then each perturbation (severities
    pooled). The arms sit at their mean rank over images (a description of these models); a bar joins
    arms whose difference the one inference (training seeds the replicates) did not resolve."""
    if per_image[ARM].nunique() < 2:
        return [ReportFigure("Critical difference", note=f"one {ARM} only: nothing to rank")]
    frame = _pooled(per_image, within)
    frame["image_id"] = frame["image_id"] + "|" + frame["condition"]
    frame["condition"] = [parse_condition(c)[0] or M.CLEAN for c in frame["condition"]]
    figures = []
    for group in [M.CLEAN, *perturbed]:
        ranks = mean_ranks(frame, by=ARM, within=[], condition=group)
        tests = pairwise_tests(frame, by=ARM, within=[], condition=group, q=q, method=method)
        path = plot_critical_difference(ranks.set_index(ARM)["mean_rank"], tests, out_dir / f"cd_{group}.png", alpha=q,
                                        title=f"{group}{'' if group == M.CLEAN else ' (severities pooled)'}: "
                                              f"mean rank per {ARM} over images (1 = best); bars join arms not "
                                              f"resolved apart (seeds the replicates, {METHOD_NAMES[method]} q = {q:g})")
        blocks = "images" if group == M.CLEAN else "image x severity pairs"
        figures.append(ReportFigure(
            f"Critical difference: {group}",
            f"Positions: mean rank over {ranks['n_images'].iloc[0]} {blocks}"
            f"{' over every ' + ', '.join(within) + ' level' if within else ''}, a description of these particular "
            "models. Bars: the pairwise comparisons of the one inference, training seeds the replicates, at the "
            "table's false-discovery rate; no test here treats images as replicates.", path))
    return figures


def _complexity_figure(trials: pd.DataFrame, out_dir: Path) -> ReportFigure:
    title = "(a) Dice vs task complexity"
    factors = factor_names(trials)
    if COMPLEXITY not in factors:
        return ReportFigure(title, note=f"skipped: the study has no '{COMPLEXITY}' (complexity) factor")
    dice, td = (summarise(trials, by=factors, metric=m) for m in (M.TEST_DICE, M.TEST_TD))
    return ReportFigure(title, "Mean test Dice over seeds with 95% t-interval, against the complexity level and the "
                  "measured texture disparity.", plot_dice_vs_complexity(dice, td, out_dir / "dice_vs_complexity.png"))


def _robustness_figures(
    per_image: pd.DataFrame, within: list[str], perturbed: list[str], *, tau: float, n_boot: int,
    win: pd.DataFrame, q: float, out_dir: Path, registry: dict[str, dict],
) -> list[ReportFigure]:
    """Plots (b)-(d); (b) and (c) pool the strata so each arm is one line or point."""
    over = f"{', '.join(within)} levels" if within else ""
    titles = ("(b) Dice vs severity", "(c) Accuracy vs robustness")
    figures = [ReportFigure(t, note="skipped: no perturbations in this study") for t in titles]
    if perturbed:
        pooled = _pooled(per_image, within)
        cond = condition_summary(pooled, arm=ARM, within=[], tau=tau, n_boot=n_boot)
        robust = robustness_summary(pooled, arm=ARM, within=[], n_boot=n_boot)
        parameters = {p["name"]: (p["parameter"], p["levels"]) for p in registry.values()}
        clean = cond[(cond["condition"] == M.CLEAN) & (cond["statistic"] == "mean")]
        figures = [
            ReportFigure(titles[0], "One panel per perturbation; severity 0 is the clean image.",
                   plot_dice_vs_severity(cond, out_dir / "dice_vs_severity.png", arm=ARM, parameters=parameters,
                                         pooled_over=over)),
            ReportFigure(titles[1], "Clean Dice against ROOD-MRI degradation; ringed arms form the Pareto front.",
                   plot_accuracy_robustness(clean, robust[robust["summary"] == "degradation"],
                                            out_dir / "accuracy_vs_robustness.png", arm=ARM, pooled_over=over)),
        ]
    figures.append(ReportFigure("(d) Which arm wins where", "Winner per (stratum, severity); table in winners.csv.",
                          plot_winner_map(win, out_dir / "winner_map.png", within=within, q=q)))
    return figures


def _pooled(per_image: pd.DataFrame, within: list[str]) -> pd.DataFrame:
    """Strata folded into the image id, so `within=[]` pools them without merging different images."""
    frame = per_image.copy()
    frame["image_id"] = frame["image_id"].astype(str)
    for name in within:
        frame["image_id"] = f"{name}=" + frame[name].astype(str) + "|" + frame["image_id"]
    return frame


__all__ = ["DEFAULT_TAU", "result_sections"]
