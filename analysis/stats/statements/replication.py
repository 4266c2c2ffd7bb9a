"""A replication check: do a study's statements hold when its confirm phase is run again with new seeds?

A reader trusts a finding that survives a rerun more than any p-value (Bouthillier et al.,
"Accounting for Variance in Machine Learning Benchmarks", MLSys 2021: new seeds are the variation a
claim has to survive). `segstudy replicate` trains every cell's chosen configuration again under
new seeds; this module lines up the two studies' statements (each decided under its own study's
error control, the same declared family) and says, per statement, where it was resolved:

* `both`: resolved in the original and again in the replicate, the same way;
* `contradiction`: resolved in both, in opposite directions (or a difference in one and "no
  difference beyond the margin" in the other);
* `original only`, `replicate only`, `neither`.

`agreement_summary` counts them: of the statements the original resolved, the share resolved again,
and the contradictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.stats.core.statement import RESOLVED

BOTH, CONTRADICTION, ORIGINAL_ONLY, REPLICATE_ONLY, NEITHER = (
    "both", "contradiction", "original only", "replicate only", "neither",
)
AGREEMENT_COLUMNS = (
    "family", "statement", "original", "original_estimate", "original_p_adjusted", "replicate", "replicate_estimate",
    "replicate_p_adjusted", "agreement",
)


@dataclass(frozen=True)
class AgreementSummary:
    """How far a replicate bears out the original's resolved statements."""

    resolved_original: int
    resolved_again: int
    contradictions: int
    replicate_only: int
    statements: int

    @property
    def share_again(self) -> float:
        return self.resolved_again / self.resolved_original if self.resolved_original else float("nan")

    def line(self) -> str:
        """'7 of 8 statements the original resolved were resolved again (88%), 0 contradictions, 2 resolved in the
        replicate only, of 27 statements'."""
        share = f" ({100 * self.share_again:.0f}%)" if self.resolved_original else ""
        return (f"{self.resolved_again} of {self.resolved_original} statements the original resolved were resolved again"
                f"{share}, {self.contradictions} contradiction{'s' * (self.contradictions != 1)}, "
                f"{self.replicate_only} resolved in the replicate only, of {self.statements} statements")


def direction(outcome: str, estimate: float) -> str:
    """'+' or '-' for a resolved difference, '=' for no difference beyond the margin, '' unresolved."""
    if not str(outcome).startswith(RESOLVED):
        return ""
    if str(outcome) != RESOLVED:  # "resolved, within +-margin"
        return "="
    return "+" if estimate > 0 else "-"


def agreement(original: pd.DataFrame, replicate: pd.DataFrame) -> pd.DataFrame:
    """Line up two studies' decided statements (`statement_table`) by their identity.

    Args:
        original, replicate: rows with family (declared claim, exploratory claim, finding), key,
            label, estimate, outcome and p_adjusted.

    Returns:
        One row per statement either study made (AGREEMENT_COLUMNS); `original` and `replicate` are
        the directions ('+', '-', '=' or '' for unresolved).
    """
    left = original.set_index("key")
    right = replicate.set_index("key")
    rows = []
    for key in list(dict.fromkeys([*left.index, *right.index])):
        a = left.loc[key] if key in left.index else None
        b = right.loc[key] if key in right.index else None
        first = a if a is not None else b
        da = direction(a["outcome"], a["estimate"]) if a is not None else ""
        db = direction(b["outcome"], b["estimate"]) if b is not None else ""
        rows.append({
            "family": first["family"], "statement": first["label"],
            "original": da, "original_estimate": a["estimate"] if a is not None else np.nan,
            "original_p_adjusted": a["p_adjusted"] if a is not None else np.nan,
            "replicate": db, "replicate_estimate": b["estimate"] if b is not None else np.nan,
            "replicate_p_adjusted": b["p_adjusted"] if b is not None else np.nan,
            "agreement": _verdict(da, db),
        })
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def agreement_summary(table: pd.DataFrame) -> AgreementSummary:
    verdicts = table["agreement"].value_counts()
    return AgreementSummary(
        resolved_original=int(verdicts.get(BOTH, 0) + verdicts.get(CONTRADICTION, 0) + verdicts.get(ORIGINAL_ONLY, 0)),
        resolved_again=int(verdicts.get(BOTH, 0)), contradictions=int(verdicts.get(CONTRADICTION, 0)),
        replicate_only=int(verdicts.get(REPLICATE_ONLY, 0)), statements=len(table),
    )


def statement_table(claims: pd.DataFrame, findings: pd.DataFrame) -> pd.DataFrame:
    """A study's decided claims and findings as one table with a key that is the same in any study
    of the same spec: (claim, arm, about) for a claim, (level, arm) for a finding."""
    rows = []
    for row in claims.to_dict("records") if not claims.empty else []:
        versus = f"{row['arm']} - {row['reference']}" if row.get("reference") else str(row["arm"])
        rows.append({"family": f"{row['family']} claim", "key": f"claim|{row['claim']}|{row['arm']}|{row['about']}",
                     "label": f"({row['claim']}) {versus}, {row['about']}", **_numbers(row)})
    for row in findings.to_dict("records") if not findings.empty else []:
        rows.append({"family": "finding", "key": f"finding|{row['level']}|{row['arm']}",
                     "label": f"{row['level']}: {row['arm']} - {row['reference']}", **_numbers(row)})
    return pd.DataFrame(rows, columns=["family", "key", "label", "estimate", "outcome", "p_adjusted"])


def agreement_lines(table: pd.DataFrame) -> list[str]:
    """One line per statement resolved in either study: both directions and the verdict."""
    shown = table[table["agreement"] != NEITHER]
    return [
        f"{r.statement} [{r.family}]: original {_said(r.original, r.original_estimate)}, replicate "
        f"{_said(r.replicate, r.replicate_estimate)}: {r.agreement}"
        for r in shown.itertuples()
    ]


def _numbers(row: dict) -> dict:
    estimate = row["estimate"] if "estimate" in row and row["estimate"] == row["estimate"] else row.get("diff", np.nan)
    return {"estimate": estimate, "outcome": row["outcome"], "p_adjusted": row["p_adjusted"]}


def _said(way: str, estimate: float) -> str:
    words = {"+": "resolved", "-": "resolved", "=": "resolved as no difference beyond the margin", "": "unresolved"}
    return f"{estimate:+.3f} {words[way]}" if np.isfinite(estimate) else "not made"


def _verdict(a: str, b: str) -> str:
    if a and b:
        return BOTH if a == b else CONTRADICTION
    if a:
        return ORIGINAL_ONLY
    return REPLICATE_ONLY if b else NEITHER


__all__ = [
    "AGREEMENT_COLUMNS", "AgreementSummary", "BOTH", "CONTRADICTION", "NEITHER", "ORIGINAL_ONLY", "REPLICATE_ONLY",
    "agreement", "agreement_lines", "agreement_summary", "direction", "statement_table",
]
