"""A statement's sentence: its estimate, interval, p-values and decision, in one format.

Claims (`analysis.stats.statements.claims`) and findings (`analysis.stats.statements.findings`) are rows with the words
around the numbers (`text`, `tail`) and the numbers themselves; `analysis.stats.core.decisions` adds
the family's decision (adjusted p, the interval's level, resolved or not). This module writes the
line from whatever the row holds, so a printed line never shows an interval that disagrees with
the decision beside it.

Example:
    >>> statement_line({"text": "at alpha 0.9, unet2 - unet =", "estimate": 0.05, "ci_low": 0.01, "ci_high": 0.09,
    ...                 "p": 0.01, "tail": "3 seeds x 20 images", "not_learned": ""}, measure=" Dice")
    'at alpha 0.9, unet2 - unet = +0.050 Dice [+0.010, +0.090], p = 0.010, 3 seeds x 20 images'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from analysis.stats.core.multiplicity import METHOD_NAMES
from study.spec.statistics import EXACT_CLAIM

RESOLVED, UNRESOLVED = "resolved", "unresolved"
EXACT = EXACT_CLAIM  # the claim kind decided by an exact test of counts (analysis.stats.statements.breakdown)


def p_text(value: float) -> str:
    """'= 0.004', '< 0.001' or '= n/a' (fewer than 2 seeds or images: nothing to test)."""
    if not np.isfinite(value):
        return "= n/a"
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def statement_line(row: Mapping[str, Any], *, measure: str = "", noun: str = "statement") -> str:
    """The sentence of one claim or finding row (see the module docstring).

    Row keys: text, estimate, ci_low, ci_high, p, tail, not_learned, censored; after a decision also
    confidence, p_adjusted, method (holm, bh, by) and outcome (resolved, resolved within the
    margin, unresolved; futility is said in `outcome` too).
    """
    est = float(row["estimate"])
    low, high = float(row["ci_low"]), float(row["ci_high"])
    if row.get("kind") == EXACT:  # an exact test of counts: its text holds the numbers, no interval
        return _with_warning(f"{row['text']} p {p_text(float(row['p']))}{_decision(row)}, {row['tail']}", row, noun)
    if np.isfinite(low):
        level = row.get("confidence")
        shown = f" ({_percent(level)} interval)" if level is not None and np.isfinite(level) else ""
        inference = f"[{low:+.3f}, {high:+.3f}]{shown}, p {p_text(float(row['p']))}{_decision(row)}"
    elif flagged(row, "not_learned") and row.get("method"):  # decided: no interval for a comparison of models that never learned
        inference = f"(no interval: a model it rests on did not learn), p {p_text(float(row['p']))}{_decision(row)}"
    elif flagged(row, "censored") and row.get("method"):
        inference = f"(no interval: a model it rests on is at the trivial answer there), p {p_text(float(row['p']))}{_decision(row)}"
    else:  # one training run per cell says nothing about how much training runs differ
        inference = "(no interval or p-value: needs >= 2 seeds per cell)"
        if row.get("method"):
            inference += f": {UNRESOLVED}"
    return _with_warning(f"{row['text']} {est:+.3f}{measure} {inference}, {row['tail']}", row, noun)


def _decision(row: Mapping[str, Any]) -> str:
    """', Holm p = 0.021: resolved' once a family's procedure decided the row; '' before."""
    if not row.get("method"):
        return ""
    return f", {METHOD_NAMES[row['method']]} p {p_text(float(row['p_adjusted']))}: {row['outcome']}"


def _with_warning(line: str, row: Mapping[str, Any], noun: str) -> str:
    if flagged(row, "not_learned"):
        line += f"  [NOT LEARNED: {row['not_learned']}; this {noun} means nothing]"
    if flagged(row, "censored"):
        models = str(row["censored"]).split("; ")
        more = f" and {len(models) - 1} more (claims.csv, column censored)" if len(models) > 1 else ""
        line += f"  [AT THE TRIVIAL ANSWER: {models[0]}{more}; this {noun} compares in-domain Dice, not robustness]"
    return line


def flagged(row: Mapping[str, Any], key: str) -> bool:
    """Whether a row's `not_learned` or `censored` names a model (a NaN or '' does not)."""
    value = row.get(key)
    return isinstance(value, str) and bool(value)


def _percent(level: float) -> str:
    """'95%', '99.17%': enough digits to tell adjusted levels apart."""
    text = f"{100 * level:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


__all__ = ["RESOLVED", "UNRESOLVED", "p_text", "statement_line"]
