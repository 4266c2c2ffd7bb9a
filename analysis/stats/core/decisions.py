"""A study's decisions: which statements are resolved under the study's error control.

Statements come as rows of a table (claims or findings) with their estimate, standard error,
degrees of freedom and p-value from the one inference (`analysis.stats.core.inference`). A family's
multiple-testing procedure (`analysis.stats.core.multiplicity`) turns them into decisions, and each row
gets the interval at the level that matches its decision, the adjusted p-value, the outcome and a
new sentence (`analysis.stats.core.statement`):

* `decide_claims`: the declared claims (`study.spec.statistics`) are one family under Holm at the
  study's alpha; claims not declared are exploratory, under the false-discovery-rate procedure;
* `decide_exploratory`: findings and pairwise tables, under BH or BY at the study's q.

With a margin (a seed budget's `resolve.margin`), an unresolved statement whose interval lies inside
+-margin is resolved as "no difference beyond the margin" (the interval at its level covers the
truth with the family's guarantee, so an interval inside the margin rules out a difference that
matters). A statement resting on a model the learning gate rejected stays in its family (so the
others are not favoured) but is never resolved and shows no interval: it compares a model that
never learned the task. So is a claim censored at the trivial answer (`censored`: a model it rests on
fell to predicting every pixel foreground out of domain, analysis.stats.statements.claims), whose
"loss" is that model's in-domain Dice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from analysis.stats.core.inference import Estimate
from analysis.stats.core.multiplicity import HOLM, METHOD_NAMES, Decided, fdr_decisions, holm_decisions
from analysis.stats.core.statement import RESOLVED, UNRESOLVED, flagged, statement_line
from study.spec.statistics import Declared

DECLARED, EXPLORATORY = "declared", "exploratory"
NOT_LEARNED = f"{UNRESOLVED} (a model it rests on did not learn)"
CENSORED = f"{UNRESOLVED} (a model it rests on is at the trivial answer out of domain)"
DECISION_COLUMNS = ("family", "method", "family_level", "p_adjusted", "confidence", "resolved", "outcome")


def within_margin(margin: float) -> str:
    return f"{RESOLVED}, within +-{margin:g}"


def decide_claims(
    table: pd.DataFrame,
    declared: Declared | None,
    *,
    alpha: float,
    q: float,
    fdr_method: str = "bh",
    margin: float | None = None,
    looks: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Decide every claim: the declared ones as one Holm family, the rest as one FDR family.

    Args:
        table: `analysis.stats.statements.claims.claims` rows.
        declared: the study's declared claims (None: none declared, every claim exploratory).
        alpha, q, fdr_method: the two families' error rates and the FDR procedure.
        margin: resolve an interval inside +-margin as no difference that matters (None: never).
        looks: per row, the looks a sequential confirm spent its alpha over (None: one each).
    """
    if table.empty:
        return _empty(table)
    is_declared = np.array([declared is not None and declared.covers(k, a) for k, a in zip(table["kind"], table["arm"])])
    out = table.copy()
    out["family"] = np.where(is_declared, DECLARED, EXPLORATORY)
    k = np.ones(len(table)) if looks is None else np.asarray(looks, dtype=float)
    parts = []
    for mask, decide in ((is_declared, lambda p, n: holm_decisions(p, alpha=alpha, looks=n)),
                         (~is_declared, lambda p, n: fdr_decisions(p, q=q, method=fdr_method, looks=n))):
        if mask.any():
            parts.append(_apply(out[mask], decide, margin=margin, looks=k[mask]))
    return pd.concat(parts).loc[out.index]


def decide_exploratory(
    table: pd.DataFrame, *, q: float, method: str = "bh", margin: float | None = None, measure: str = "",
    noun: str = "comparison",
) -> pd.DataFrame:
    """Decide one exploratory family (findings, a pairwise table) under BH or BY at q."""
    if table.empty:
        return _empty(table)
    out = table.copy()
    out["family"] = EXPLORATORY
    return _apply(out, lambda p, n: fdr_decisions(p, q=q, method=method, looks=n), margin=margin,
                  looks=np.ones(len(out)), measure=measure, noun=noun)


def _apply(
    table: pd.DataFrame, decide: Callable[[list[float], list[float]], Decided], *, margin: float | None,
    looks: np.ndarray, measure: str = "", noun: str = "claim",
) -> pd.DataFrame:
    # A void row (a model it rests on did not learn, or is at the trivial answer) keeps its place in
    # the family, so the family's size is what was declared, but enters the procedure at p = 1: its
    # p-value compares in-domain Dice, and a step-down procedure that rejected it would relax the
    # thresholds of the others.
    void = [flagged(r, "not_learned") or flagged(r, "censored") for r in table.to_dict("records")]
    decided = decide([1.0 if v else float(p) for v, p in zip(void, table["p"], strict=True)], looks.tolist())
    out = table.copy()
    out["method"] = decided.method
    out["family_level"] = decided.level
    out["p_adjusted"] = decided.adjusted
    out["confidence"] = decided.confidence
    lows, highs, outcomes = [], [], []
    for row, level, resolved in zip(out.to_dict("records"), decided.confidence, decided.resolved, strict=True):
        est = _estimate(row).at(level) if np.isfinite(level) else _estimate(row)
        void = NOT_LEARNED if flagged(row, "not_learned") else CENSORED if flagged(row, "censored") else None
        if void:  # it compares models that never learned the task, or lost all of it: no interval, no decision
            lows.append(np.nan)
            highs.append(np.nan)
            outcomes.append(void)
            continue
        lows.append(est.ci_low)
        highs.append(est.ci_high)
        outcomes.append(_outcome(est, resolved, margin))
    out["ci_low"], out["ci_high"], out["outcome"] = lows, highs, outcomes
    out["resolved"] = [o not in (UNRESOLVED, NOT_LEARNED, CENSORED) for o in outcomes]
    if "line" in out.columns:
        out["line"] = [statement_line(r, measure=measure, noun=noun) for r in out.to_dict("records")]
    return out


def _outcome(est: Estimate, resolved: bool, margin: float | None) -> str:
    if resolved:
        return RESOLVED
    if margin is not None and np.isfinite(est.ci_low) and -margin <= est.ci_low and est.ci_high <= margin:
        return within_margin(margin)
    return UNRESOLVED


def _estimate(row: dict) -> Estimate:
    return Estimate(float(row["estimate"]), float(row["ci_low"]), float(row["ci_high"]), float(row["p"]), float(row["se"]),
                    float(row["df"]), int(row["n_seeds"]), int(row["n_images"]))


def _empty(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(**{c: pd.Series(dtype=object) for c in DECISION_COLUMNS})


def family_heading(table: pd.DataFrame) -> str:
    """How one family of a decided table was decided: 'Holm over 9 declared claims, chance of any false
    claim <= 5%' / 'Benjamini-Hochberg over 15 statements, expected share of false ones among the
    resolved <= 5%' ('' for an undecided or empty table)."""
    if table.empty or "method" not in table.columns:
        return ""
    method, level = str(table["method"].iloc[0]), float(table["family_level"].iloc[0])
    count = int(table["p"].notna().sum())
    if method == HOLM:
        return f"Holm over {count} declared claim{'s' * (count != 1)}, chance of any false claim <= {100 * level:g}%"
    return (f"{METHOD_NAMES[method]} over {count} statement{'s' * (count != 1)}, expected share of false ones among the "
            f"resolved <= {100 * level:g}%")


__all__ = ["DECISION_COLUMNS", "DECLARED", "EXPLORATORY", "decide_claims", "decide_exploratory", "family_heading", "within_margin"]
