"""Error control across a study's statements, with intervals that agree with every decision.

A study prints a family of statements, not one. Two kinds of family (docs/ARCHITECTURE.md 5):

* the **declared claims** (the questions the study is for, `statistics.claims` in the spec) are
  confirmatory: Holm's step-down procedure (Holm, "A simple sequentially rejective multiple test
  procedure", Scand. J. Statist. 1979) keeps the chance of any false claim among them at most
  alpha, whatever the claims' dependence;
* the **findings** and pairwise tables are exploratory: the Benjamini-Hochberg procedure
  (J. R. Statist. Soc. B 1995), or Benjamini-Yekutieli's (Ann. Statist. 2001) under arbitrary
  dependence, keeps the expected share of false statements among those resolved at most q.

Each statement also gets an interval at the level that matches its decision, so interval and
decision never disagree:

* Holm: the statement at rank j (by p-value, of m) that is rejected gets its step's level
  1 - alpha/(m - j + 1), which its p-value passed; every statement not rejected gets the level at
  which the procedure stopped, 1 - alpha/(m - r) with r rejected, which none of them passed (the
  compatible bounds of Strassburger & Bretz, Statist. Med. 2008, two-sided);
* BH/BY: every statement gets 1 - R q'/m with R resolved and q' = q (BH) or q / sum_{i<=m} 1/i
  (BY), the false-coverage-rate adjusted intervals of Benjamini & Yekutieli (JASA 2005): a
  statement is rejected exactly when its p-value is at most R q'/m. With R = 0 the level is
  1 - q'/m, which no statement passed.

A statement may carry a multiplicity of its own (`looks`: a sequential confirm looked at it K times
and spent alpha over the looks by Bonferroni): its p-value enters as min(1, K p) and its interval
level as 1 - (1 - level) / K, which keeps both statements in step.

Example:
    >>> decided = holm_decisions([0.001, 0.02, 0.04], alpha=0.05)
    >>> [round(p, 3) for p in decided.adjusted], decided.resolved
    ([0.003, 0.04, 0.04], [True, True, True])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

HOLM, BH, BY = "holm", "bh", "by"
FDR_METHODS = (BH, BY)
METHOD_NAMES = {HOLM: "Holm", BH: "Benjamini-Hochberg", BY: "Benjamini-Yekutieli"}


@dataclass(frozen=True)
class Decided:
    """One family's decisions, in the order of the p-values given.

    Attributes:
        adjusted: adjusted p-values (NaN where the p-value was NaN: not tested, not counted).
        resolved: adjusted p < the family's level.
        confidence: each statement's interval level (NaN where not tested); its interval excludes
            0 exactly when the statement is resolved.
    """

    method: str
    level: float
    adjusted: list[float]
    resolved: list[bool]
    confidence: list[float]


def holm_decisions(p_values: Sequence[float], *, alpha: float, looks: Sequence[int] | None = None) -> Decided:
    """Holm over the family, with each statement's compatible interval level (module docstring)."""
    return _decide(HOLM, p_values, level=alpha, looks=looks)


def fdr_decisions(p_values: Sequence[float], *, q: float, method: str = BH, looks: Sequence[int] | None = None) -> Decided:
    """Benjamini-Hochberg (`bh`) or -Yekutieli (`by`) over the family, with the FCR-adjusted level."""
    if method not in FDR_METHODS:
        raise ValueError(f"method '{method}': accepted values are {', '.join(FDR_METHODS)}")
    return _decide(method, p_values, level=q, looks=looks)


def _decide(method: str, p_values: Sequence[float], *, level: float, looks: Sequence[int] | None) -> Decided:
    raw = np.asarray(p_values, dtype=float)
    k = np.ones_like(raw) if looks is None else np.asarray(looks, dtype=float)
    if len(k) != len(raw):
        raise ValueError(f"{len(raw)} p-values but {len(k)} look counts")
    p = np.minimum(raw * k, 1.0)  # Bonferroni over a statement's own looks
    known = np.isfinite(p)
    m = int(known.sum())
    adjusted = np.full_like(p, np.nan)
    resolved = np.zeros(len(p), dtype=bool)
    confidence = np.full_like(p, np.nan)
    if m == 0:
        return Decided(method, level, adjusted.tolist(), resolved.tolist(), confidence.tolist())
    adj = _holm_adjusted(p[known]) if method == HOLM else stats.false_discovery_control(p[known], method=method)
    reject = adj < level
    adjusted[known], resolved[known] = adj, reject
    spent = _holm_levels(p[known], reject, level) if method == HOLM else _fcr_levels(m, int(reject.sum()), level, method)
    confidence[known] = 1.0 - spent / k[known]
    return Decided(method, level, adjusted.tolist(), resolved.tolist(), confidence.tolist())


def _holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values: sorted ascending, p_(j) (m - j + 1), running maximum, at most 1.
    (statsmodels' multipletests does the same but collects garbage on every call: 1.6 s in a study's
    summary on a busy machine.)"""
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    out = np.empty(m)
    out[order] = stepped
    return out


def _holm_levels(p: np.ndarray, reject: np.ndarray, alpha: float) -> np.ndarray:
    """The error each statement's interval spends: its step's alpha/(m - j + 1) when rejected, the
    stopping step's alpha/(m - r) otherwise."""
    m, r = len(p), int(reject.sum())
    order = np.argsort(p, kind="stable")
    rank = np.empty(m, dtype=int)
    rank[order] = np.arange(1, m + 1)
    return np.where(reject, alpha / (m - rank + 1), alpha / max(m - r, 1))


def _fcr_levels(m: int, resolved: int, q: float, method: str) -> np.ndarray:
    q_eff = q / float(np.sum(1.0 / np.arange(1, m + 1))) if method == BY else q
    return np.full(m, max(resolved, 1) * q_eff / m)


__all__ = ["BH", "BY", "Decided", "FDR_METHODS", "HOLM", "METHOD_NAMES", "fdr_decisions", "holm_decisions"]
