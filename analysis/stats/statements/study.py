"""Every statement of a study, judged the way the study declared before it ran.

`study_statements` is the one place a study's statements are made and decided, for `analyze`, the
report, the end-of-study summary, the sequential confirm's rounds and `replicate`:

* the claims (a)-(d) (`analysis.stats.statements.claims`) and (e) breakdown
  (`analysis.stats.statements.breakdown`), the declared ones one Holm family and the rest
  exploratory (`analysis.stats.core.decisions`); with a seed budget the declared contrasts come
  from the sequential procedure (`analysis.stats.statements.sequential`), each at the look that
  decided it;
* the findings per level (`analysis.stats.statements.findings`), exploratory;
* the breakdown table per cell.

The inputs are the ended trials as `Observed` (per-image rows of every condition, and which seeds
ended or did not learn), built from MLflow (`observed_of`) or, in the driver, from the study
folder's `confirm_scores.jsonl`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.read.runs import factor_names, split_shift
from analysis.read.study_spec import Settings
from analysis.stats.core.decisions import decide_claims
from analysis.stats.core.statement import statement_line
from analysis.stats.describe.context import PATCH_FG_COLUMNS, fbr_shift
from analysis.stats.statements.breakdown import breakdown_claims, breakdown_table
from analysis.stats.statements.claims import CLAIM_COLUMNS, TRIVIAL_GAIN, claims
from analysis.stats.statements.findings import ARM, findings, reference_arm
from analysis.stats.statements.sequential import (
    CENSORED, FUTILE, NOT_LEARNED, Observed, SequentialState, design_of, final_claims, replay,
)
from study import metrics_names as M


@dataclass(frozen=True)
class StudyStatements:
    """A study's claims and findings, decided, its breakdown table and, with a seed budget, where
    the sequential procedure stands."""

    claims: pd.DataFrame
    findings: pd.DataFrame
    breakdown: pd.DataFrame
    reference: str | None
    sequential: SequentialState | None = None

    def declared(self) -> pd.DataFrame:
        return self.claims[self.claims["family"] == "declared"] if not self.claims.empty else self.claims


def observed_of(
    per_image: pd.DataFrame, trials: pd.DataFrame, *, shift_rows: pd.DataFrame | None = None,
    ended: Iterable[tuple[str, int]] | None = None,
) -> Observed:
    """The ended trials as read from MLflow: every per-image row (in domain and shifted), the
    (cell, seed) of every ended trial (default: every trial in `trials`), the models that did not
    learn, and the training-patch quantiles of a patch study."""
    rows = per_image
    if shift_rows is not None and not shift_rows.empty:
        rows = pd.concat([per_image, shift_rows[shift_rows["condition"] != M.CLEAN]], ignore_index=True)
    rows.attrs["factors"] = factor_names(trials) if "cell" in trials.columns else []
    not_learned = trials[trials["learned"] == False] if "learned" in trials.columns else trials.iloc[0:0]  # noqa: E712
    patches = trials[["run_id", *PATCH_FG_COLUMNS]] if set(PATCH_FG_COLUMNS) <= set(trials.columns) else None
    return Observed.of(rows, ended=ended if ended is not None else zip(trials["cell"], trials["seed"]),
                       not_learned=zip(not_learned["cell"], not_learned["seed"]), patches=patches)


def trials_of(observed: Observed) -> pd.DataFrame:
    """A trials frame of the ended trials with scores (cell, seed, run_id, factors, test_dice as
    the mean clean Dice, learned), for the breakdown and the learning gate's marks."""
    rows = observed.rows
    factors = list(rows.attrs.get("factors") or [])
    clean = rows[rows["condition"] == M.CLEAN]
    keys = ["cell", "seed", *(["run_id"] if "run_id" in clean.columns else []), *factors]
    frame = clean.groupby(keys, dropna=False, sort=True)["dice"].mean().rename(M.TEST_DICE).reset_index()
    frame["learned"] = [int(s) not in observed.not_learned.get(str(c), ()) for c, s in zip(frame["cell"], frame["seed"])]
    frame.attrs["factors"] = factors
    return frame


def all_claims(
    observed: Observed, *, reference: str, breakdown: float, trials: pd.DataFrame | None = None,
    design: Mapping[str, Sequence[Any]] | None = None, trivial_gain: float = TRIVIAL_GAIN,
) -> pd.DataFrame:
    """Every claim the rows allow, undecided: (a)-(d) and (e) breakdown; averaged over the `design`'s
    levels (the spec's factors) where given."""
    rows = observed.rows
    if rows.empty or ARM not in rows.columns:
        return pd.DataFrame(columns=list(CLAIM_COLUMNS))
    parts = split_shift(_within(rows, design))
    in_domain = parts.in_domain
    in_domain.attrs["factors"] = rows.attrs.get("factors", [])
    trials = trials if trials is not None else trials_of(observed)
    positions = None
    if not observed.patches.empty and "fbr" in in_domain.columns and in_domain["fbr"].notna().any():
        positions = fbr_shift(in_domain, observed.patches)
    table = claims(in_domain, reference=reference, fbr_positions=positions, shift_rows=parts.shift, trials=trials,
                   design=design, trivial_gain=trivial_gain)
    levels = [f for f in factor_names(trials) if f != ARM] if "cell" in trials.columns else []
    extra = breakdown_claims(trials, reference=reference, threshold=breakdown, levels=levels)
    return pd.concat([table, pd.DataFrame(extra, columns=list(CLAIM_COLUMNS))], ignore_index=True) if extra else table


def _within(rows: pd.DataFrame, design: Mapping[str, Sequence[Any]] | None) -> pd.DataFrame:
    """The rows of models trained at the design's levels (`statistics.claim_levels` may leave a
    breakdown level out of claims (a)-(d)); a shifted row's factor column is its training level."""
    keep = np.ones(len(rows), dtype=bool)
    for factor, levels in (design or {}).items():
        if factor == ARM or factor not in rows.columns or not levels:
            continue
        column = rows[factor]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels) and pd.api.types.is_numeric_dtype(column):
            keep &= np.isclose(column.to_numpy(dtype=float)[:, None], np.asarray(levels, dtype=float)[None, :],
                               rtol=0, atol=1e-9).any(axis=1)
        else:
            keep &= column.isin(levels).to_numpy()
    if keep.all():
        return rows
    out = rows[keep]
    out.attrs = dict(rows.attrs)
    return out


def declared_claims(observed: Observed, *, settings: Settings, reference: str) -> pd.DataFrame:
    """The declared claims of the rows, undecided: what the sequential procedure looks at."""
    table = all_claims(observed, reference=reference, breakdown=settings.breakdown, design=settings.factors,
                       trivial_gain=settings.trivial_gain)
    declared = settings.declared_or_default()
    keep = [declared.covers(k, a) for k, a in zip(table["kind"], table["arm"])]
    return table[keep].reset_index(drop=True)


def study_statements(
    per_image: pd.DataFrame,
    trials: pd.DataFrame,
    *,
    settings: Settings,
    shift_rows: pd.DataFrame | None = None,
    ended: Iterable[tuple[str, int]] | None = None,
) -> StudyStatements:
    """Every statement of the study, decided (module docstring).

    Args:
        per_image: the confirm trials' in-domain per-image rows (`analysis.read.runs.read_per_image`).
        trials: the confirm trials (finished; with patch metrics in a patch study).
        settings: the study's analysis settings (`analysis.read.study_spec.settings_of`).
        shift_rows: the train/test shift rows, if any.
        ended: (cell, seed) of every ended confirm trial, failed ones included (a seed budget's
            replay needs them; default: the trials given).
    """
    observed = observed_of(per_image, trials, shift_rows=shift_rows, ended=ended)
    arms = sorted(per_image[ARM].dropna().unique()) if ARM in per_image.columns else []
    reference = reference_arm(arms, settings.reference) if arms else None
    stats = settings.statistics
    levels = [f for f in factor_names(trials) if f != ARM] if not trials.empty else []
    found = findings(per_image, trials, levels=levels, reference=reference, q=stats.fdr, method=stats.fdr_method,
                     margin=settings.margin) if len(arms) > 1 else pd.DataFrame()
    table = all_claims(observed, reference=reference, breakdown=settings.breakdown, trials=trials,
                       design=settings.factors, trivial_gain=settings.trivial_gain) if reference else pd.DataFrame()
    state = None
    design = design_of(settings.confirm, alpha=stats.alpha)
    looks = None
    if design is not None and reference is not None and not table.empty:
        cells = sorted(set(trials["cell"]) | {c for c, _ in (ended or [])})
        state = replay(design, observed, lambda obs: declared_claims(obs, settings=settings, reference=reference), cells=cells)
        table, looks = _with_sequential(table, state)
    decided = decide_claims(table, settings.declared_or_default(), alpha=stats.alpha, q=stats.fdr,
                            fdr_method=stats.fdr_method, margin=settings.margin, looks=looks) if not table.empty else table
    return StudyStatements(_noted(decided), found, breakdown_table(trials, threshold=settings.breakdown, levels=levels),
                           reference, state)


def _with_sequential(table: pd.DataFrame, state: SequentialState) -> tuple[pd.DataFrame, list[int]]:
    """The claims with the sequential procedure's declared contrasts in place of the all-seed ones:
    each at the look that decided it, its p-value to be multiplied by the looks (K)."""
    frozen = final_claims(state)
    if frozen.empty:
        return table, [1] * len(table)
    keys = set(zip(frozen["claim"], frozen["arm"], frozen["about"]))
    rest = table[[k not in keys for k in zip(table["claim"], table["arm"], table["about"])]]
    merged = pd.concat([frozen, rest], ignore_index=True)
    looks = [int(k) if np.isfinite(k) else 1 for k in merged["looks"].astype(float).fillna(1)]
    return merged, looks


def _noted(table: pd.DataFrame) -> pd.DataFrame:
    """Say in the line why a declared claim the procedure closed got no more seeds."""
    if table.empty or "sequential" not in table.columns:
        return table
    out = table.copy()
    notes = {FUTILE: "futile: could not be resolved by the budget's max seeds", NOT_LEARNED: "closed: a model did not learn",
             CENSORED: "closed: a model at the trivial answer out of domain"}
    for i, row in out.iterrows():
        note = notes.get(row.get("sequential"))
        if note and not row["resolved"]:
            out.at[i, "outcome"] = f"{row['outcome']} ({note}, after round {int(row['round'])})"
            out.at[i, "line"] = statement_line(out.loc[i].to_dict(), noun="claim")
    return out


__all__ = ["StudyStatements", "all_claims", "declared_claims", "observed_of", "study_statements", "trials_of"]
