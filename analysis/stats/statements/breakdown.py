"""Breakdown as an outcome: how many of a cell's training runs gave a model that broke down.

A mean over seeds hides the question a user of an architecture asks first: how often does training
it give a model that fails? Per cell, `breakdown_table` counts the confirm models whose clean test
Dice is below the spec's `evaluation.breakdown`, and gives the worst seed's Dice. Every model counts:
at the edge of what an arm can learn, a training run either finds the cue or stays at the answer a
model gives without looking at the image, and that second kind is the breakdown itself (the
learning gate's rejections, docs/ARCHITECTURE.md 6, are also counted apart, `not_learned`, because
they make every comparison of means that involves them meaningless).

Claim (e), `breakdown_claims`, compares each arm's breakdown count with the reference arm's over
every level of the other factors, by the exact conditional test for stratified 2x2 tables: within
each level the arm labels of that level's models are exchangeable when both arms break down equally
often there, so given the level's total breakdowns the arm's count is hypergeometric; the study's
statistic is the sum over levels, whose exact null distribution is the convolution of those
hypergeometrics. Its two-sided p-value sums the outcomes no more likely than the one seen (with a
single level this is Fisher's exact test). Training runs are the replicates; test images do not enter.

Example:
    >>> round(stratified_exact_p([(3, 10, 0, 10)]), 3)  # 3 of 10 against 0 of 10 at one level
    0.211
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats.statements.findings import level_text
from analysis.stats.core.statement import statement_line
from study import metrics_names as M

ARM = "architecture"
BREAKDOWN_COLUMNS = ("cell", "arm", "level", "models", "broke_down", "share", "worst_dice", "not_learned")


def breakdown_table(trials: pd.DataFrame, *, threshold: float, levels: Sequence[str]) -> pd.DataFrame:
    """Per cell: the confirm models, how many broke down (clean test Dice < threshold), their share,
    the worst seed's test Dice, and how many of them the learning gate rejected."""
    if trials.empty or M.TEST_DICE not in trials.columns:
        return pd.DataFrame(columns=list(BREAKDOWN_COLUMNS))
    learned = _learned(trials)
    rows = []
    for cell, block in trials.groupby("cell", sort=True):
        dice = block[M.TEST_DICE].astype(float)
        first = block.iloc[0]
        rows.append({
            "cell": cell, "arm": first.get(ARM, ""), "level": level_text({f: first[f] for f in levels if f in block.columns}),
            "models": int(len(block)), "broke_down": int((dice < threshold).sum()),
            "share": float((dice < threshold).mean()) if len(block) else np.nan,
            "worst_dice": float(dice.min()) if len(block) else np.nan, "not_learned": int((~learned.loc[block.index]).sum()),
        })
    return pd.DataFrame(rows, columns=list(BREAKDOWN_COLUMNS))


def breakdown_claims(trials: pd.DataFrame, *, reference: str, threshold: float, levels: Sequence[str]) -> list[dict]:
    """Claim (e) per arm: its breakdown count against the reference arm's, over every level (module docstring)."""
    if ARM not in trials.columns or trials[ARM].nunique() < 2 or M.TEST_DICE not in trials.columns:
        return []
    models = trials  # every model: one that never learned the task at a level is what breaking down there means
    broke = models[M.TEST_DICE].astype(float) < threshold
    keys = [f for f in levels if f in trials.columns]
    rows = []
    for arm in sorted(a for a in trials[ARM].dropna().unique() if a != reference):
        strata, worst = [], ""
        for _, block in models.groupby(keys, sort=True) if keys else [((), models)]:
            a = block[ARM] == arm
            r = block[ARM] == reference
            if a.any() and r.any():
                strata.append((int(broke[block.index][a].sum()), int(a.sum()), int(broke[block.index][r].sum()), int(r.sum())))
        if not strata:
            continue
        x1, n1, x2, n2 = (sum(s[i] for s in strata) for i in range(4))
        worst_level = _worst_level(models, broke, arm, keys)
        worst = f" (most at {worst_level})" if worst_level and x1 else ""
        share = x1 / n1 - x2 / n2
        text = (f"(e) breakdown (clean test Dice < {threshold:g}): {arm} broke down in {x1} of {n1} models{worst}, "
                f"{reference} in {x2} of {n2}; difference in share = {share:+.3f}, exact stratified test")
        rows.append({
            "claim": "e", "kind": "breakdown", "arm": arm, "reference": reference, "about": f"Dice < {threshold:g}",
            "estimate": share, "ci_low": np.nan, "ci_high": np.nan, "p": stratified_exact_p(strata), "se": np.nan,
            "df": np.nan, "n_seeds": min(n1, n2), "n_images": 0, "not_learned": "", "censored": "",
            "cells": ";".join(sorted(set(models.loc[models[ARM].isin([arm, reference]), "cell"].astype(str)))),
            "text": text, "tail": f"{len(strata)} level{'s' * (len(strata) != 1)}, training runs the replicates",
        })
    for row in rows:
        row["line"] = statement_line(row, noun="claim")
    return rows


def stratified_exact_p(strata: Sequence[tuple[int, int, int, int]]) -> float:
    """Two-sided exact p-value of "no difference in breakdown" over strata (x1, n1, x2, n2): the
    arm's x1 of n1 models broke down, the reference's x2 of n2 (module docstring)."""
    null = np.array([1.0])
    low = 0
    for x1, n1, x2, n2 in strata:
        total = x1 + x2
        support = np.arange(max(0, total - n2), min(total, n1) + 1)
        pmf = stats.hypergeom.pmf(support, n1 + n2, total, n1)
        null = np.convolve(null, pmf)
        low += int(support[0])
    observed = sum(s[0] for s in strata) - low
    if not 0 <= observed < len(null):
        return float("nan")
    return float(min(1.0, null[null <= null[observed] * (1 + 1e-7)].sum()))


def _learned(trials: pd.DataFrame) -> pd.Series:
    if "learned" not in trials.columns:
        return pd.Series(True, index=trials.index)
    return trials["learned"] != False  # noqa: E712 - None (no verdict) counts as learned


def _worst_level(models: pd.DataFrame, broke: pd.Series, arm: str, keys: Sequence[str]) -> str:
    if not keys:
        return ""
    mine = models[models[ARM] == arm]
    counts = broke[mine.index].groupby([mine[k] for k in keys]).sum()
    if counts.empty or counts.max() == 0:
        return ""
    key = counts.idxmax()
    key = key if isinstance(key, tuple) else (key,)
    total = int((mine[keys].apply(tuple, axis=1) == key).sum())
    return f"{level_text(dict(zip(keys, key)))}: {int(counts.max())} of {total}"


__all__ = ["BREAKDOWN_COLUMNS", "breakdown_claims", "breakdown_table", "stratified_exact_p"]
