"""Sequential confirm: seeds for the declared claims, valid under optional stopping.

A study with a seed budget (`confirm: {seeds: {min, max, step}, resolve: {margin}}`) trains every
cell under seeds 0..min-1, then looks at its declared claims (`statistics.claims`; each one contrast
of cell means, `analysis.stats.statements.claims`). A claim is resolved when its interval excludes
0 (a difference) or lies inside [-margin, +margin] (no difference that matters). The cells a claim
still open rests on get `step` more seeds, a round at a time, until every declared claim is decided
or its cells have `max` seeds. Training seeds are the main source of variance in such benchmarks
(Bouthillier et al., "Accounting for Variance in Machine Learning Benchmarks", MLSys 2021), so runs
are spent where that variance hides the answer the study is for.

Why the decisions stay valid although the data are looked at after every round and the looking
stops when they look resolved (docs/ARCHITECTURE.md 5, "Sequential confirm"):

* The looks are fixed before any result: at n = min, min+step, ..., max seeds per cell
  (`Design.looks`, K of them). The look at n uses seeds 0..n-1 of the claim's cells and nothing
  else, so its interval is the fixed-n interval of `analysis.stats.core.inference.contrast`
  whatever happened at earlier looks (seed s of a cell is the same training run whether or not the
  procedure asked for it).
* At every look the m declared claims are one family under Holm's step-down at alpha, each with
  p-value min(1, K p) at the look where it stands (Bonferroni over its own K looks; a claim closed
  at an earlier look keeps that look's p, a void one and a count claim not yet decided enter at 1).
  min(1, K p) is a valid p-value for a claim whatever the stopping rule (the union bound over its
  looks), and Holm over valid p-values controls the chance of any false claim. A later look
  changes only the p-values of open claims, which Holm had not rejected; for every i up to the r
  rejected, the i-th smallest p-value is then at most the i-th smallest rejected one, so those r
  stay rejected: what a look resolved stays resolved. Each claim's interval is at the level matching its Holm decision
  (`analysis.stats.core.multiplicity`).
* When the looking ends, the count claims (breakdown, an exact test on every seed) enter with their
  p-values and the family is decided once more: that is the verdict the sequential lines and the
  study's claims section both print, so one claim never gets two.
* A claim is decided at the first look that resolves it and keeps that decision and estimate.
* Futility: a claim whose interval could not exclude 0 nor fit inside the margin by `max` seeds,
  even if its estimate were 1.5 standard errors more favourable (`HOPE`), gets no more seeds
  (`FUTILE`). The projection keeps the between-image variance and shrinks the between-seed variance
  by n / max. Stopping for futility never declares anything, so it cannot add an error; it only gives
  up power the budget could not buy (simulated, tests/test_sequential.py: a true +0.05 Dice found in
  61.5% of studies against 62.5% without futility, with 13% fewer seeds; +0.03: 18.5% against 19%,
  32% fewer).
* The learning gate (docs/ARCHITECTURE.md 6): a claim with a seed that did not learn among the
  seeds of a look is closed as "not learned": its numbers compare noise, and more seeds cannot undo
  a model that failed.

The state after any set of finished trials is `replay`: a deterministic function of which trials
ended and their scores, so a resumed study re-derives its round and the seeds it still needs.

Example:
    >>> Design(looks=(3, 4, 5), margin=0.01).max_seeds
    5
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats.core.inference import Estimate
from analysis.stats.core.multiplicity import holm_decisions
from analysis.stats.core.statement import EXACT, flagged
from study.spec.tuning import Confirm

DIFFERENCE, NO_DIFFERENCE, OPEN, UNRESOLVED, NOT_LEARNED, CENSORED, FUTILE = (
    "difference", "no difference beyond the margin", "open", "unresolved at max seeds", "not learned",
    "at the trivial answer", "futile (cannot be resolved by max seeds)",
)
RESOLVED = (DIFFERENCE, NO_DIFFERENCE)
CLOSED = (NOT_LEARNED, CENSORED, FUTILE)
Key = tuple[str, str, str]  # (claim letter, arm, about): a claim's identity across looks and studies
HOPE = 1.5  # futility: how many standard errors more favourable the estimate may yet turn out


@dataclass(frozen=True)
class Design:
    """The looks (seeds per cell at each), the margin and the family's error rate; fixed before any result."""

    looks: tuple[int, ...]
    margin: float
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not self.looks or list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 2:
            raise ValueError(f"looks must be increasing seed counts >= 2, got {self.looks}")

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def describe(self, statements: int | None = None) -> str:
        """How the decisions were made, for the report and the console."""
        m = f"the {statements} declared claim{'s are' if statements != 1 else ' is'}" if statements else "the declared claims are"
        return (
            f"looks at {', '.join(map(str, self.looks))} seeds per cell; at every look {m} decided by Holm at "
            f"alpha {self.alpha:g}, each p-value times the {len(self.looks)} looks (Bonferroni over looks), so every "
            f"decision holds whenever the study stopped and the claims section decides the same; resolved: the interval "
            f"at the claim's Holm level excludes 0, or lies inside +-{self.margin:g} Dice"
        )


def design_of(confirm: Confirm, *, alpha: float = 0.05) -> Design | None:
    """The `Design` of a spec's confirm section (alpha: `resolve.alpha` if given, else the study's
    `statistics.alpha`); None for a fixed seed list."""
    budget = confirm.budget
    if budget is None:
        return None
    resolution = confirm.resolution
    return Design(looks=budget.looks, margin=resolution.margin, alpha=resolution.alpha if resolution.alpha else alpha)


@dataclass(frozen=True)
class Statement:
    """One declared claim: its identity, a short label, and the cells whose seeds it rests on."""

    key: Key
    label: str
    cells: tuple[str, ...]


@dataclass(frozen=True)
class Observed:
    """What the ended confirm trials say.

    Attributes:
        rows: per-image rows of the finished trials (cell, seed, run_id, image_id, condition, dice,
            the factor columns, and the test level and FBR columns where the study has them).
        ended: cell -> seeds that ended (finished, or failed for good).
        not_learned: cell -> seeds whose model the learning gate rejected.
        patches: per run_id the training-patch foreground quantiles (3D studies; else empty).
    """

    rows: pd.DataFrame
    ended: Mapping[str, frozenset[int]]
    not_learned: Mapping[str, frozenset[int]] = field(default_factory=dict)
    patches: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def of(cls, rows: pd.DataFrame, *, ended: Iterable[tuple[str, int]], not_learned: Iterable[tuple[str, int]] = (),
           patches: pd.DataFrame | None = None) -> Observed:
        """From per-image rows and the (cell, seed) pairs of every ended trial and of those that did not learn."""
        return cls(rows, by_cell(ended), by_cell(not_learned), patches if patches is not None else pd.DataFrame())

    def seeds_ended(self, cell: str) -> frozenset[int]:
        return self.ended.get(cell, frozenset())

    def upto(self, n: int) -> Observed:
        """The rows of seeds 0..n-1 only (a look at n seeds)."""
        return replace(self, rows=self.rows[self.rows["seed"] < n])


# The declared claims of a set of rows, undecided (analysis.stats.statements.study.declared_claims).
ClaimsAt = Callable[[Observed], pd.DataFrame]


@dataclass(frozen=True)
class Decision:
    """Where a declared claim stands: its outcome, at which round (look) and how many seeds per cell,
    and its estimate with the interval at the looking level (None before its first look)."""

    statement: Statement
    outcome: str
    round: int
    seeds: int
    estimate: Estimate | None
    row: Mapping | None = None  # the claim's row at that look (text, tail, cells, ...)
    confidence: float = float("nan")  # the interval's level: the claim's Holm level in its family

    def line(self) -> str:
        """'(a) nested_unet - unet, alpha 0.1 -> 0.93 = +0.222 [-0.110, +0.554] at 99.38%, 6 seeds x 20
        images, round 4: open'."""
        est = self.estimate
        if est is None:
            return f"{self.statement.label}: not yet looked at"
        if not np.isfinite(est.estimate):
            return f"{self.statement.label}: a cell has no scored seed (its trials failed), round {self.round}: {self.outcome}"
        interval = "no interval (needs >= 2 seeds per cell)"
        if np.isfinite(est.ci_low):
            interval = f"[{est.ci_low:+.3f}, {est.ci_high:+.3f}]"
            if np.isfinite(self.confidence):
                interval += f" at {100 * self.confidence:.2f}%"
        return (f"{self.statement.label} = {est.estimate:+.3f} {interval}, {est.n_seeds} seeds x {est.n_images} images, "
                f"round {self.round}: {self.outcome}")


@dataclass(frozen=True)
class SequentialState:
    """A sequential confirm phase after the trials that ended so far (`replay`).

    Attributes:
        round: the round in progress (its trials not all ended), or the last one when `finished`.
        finished: every declared claim decided or closed, or the last look taken.
        missing: cell -> seeds the round in progress still needs (empty when finished).
        decisions: one per declared claim (empty before round 1 ended).
        due: cell -> seeds the procedure asked of it so far.
        kept_by: cell -> labels of the open claims that asked for its latest seeds (empty for a cell
            that got the first round's seeds only).
        statements: m, the declared claims of the Holm family (0 before round 1 ended), count claims
            (breakdown) among them although only contrasts are looked at.
    """

    design: Design
    round: int
    finished: bool
    missing: dict[str, tuple[int, ...]]
    decisions: tuple[Decision, ...]
    due: dict[str, int]
    kept_by: dict[str, tuple[str, ...]]
    ended: Mapping[str, frozenset[int]] = field(default_factory=dict)
    statements: int = 0

    @property
    def open(self) -> list[Decision]:
        """Claims that still want seeds (or, when finished, stayed unresolved at max)."""
        return [d for d in self.decisions if d.outcome in (OPEN, UNRESOLVED)]

    @property
    def resolved(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome in RESOLVED]

    def next_trials(self, *, slots: int = 1) -> list[tuple[str, int]]:
        """(cell, seed) to run in the round in progress: the missing ones, then, while fewer than
        `slots` (trials the cluster runs at once), the next looks' seeds of the same cells, so a
        round leaves no slot idle that a later look of an open claim could use. The extra seeds
        change no decision: each look reads its first n seeds only."""
        wanted = [(cell, seed) for cell, seeds in sorted(self.missing.items()) for seed in seeds]
        asked = self.design.looks[self.round - 1]
        # Round 1 asks every cell (nothing is open yet); later rounds the cells of open claims.
        cells = [cell for cell in sorted(self.due) if self.kept_by[cell] and self.due[cell] == asked] if self.round > 1 else []
        later = {cell: [s for s in range(self.due[cell], self.design.max_seeds) if s not in self.ended.get(cell, ())]
                 for cell in cells}
        while len(wanted) < slots and any(later.values()):
            for cell in cells:
                if len(wanted) < slots and later[cell]:
                    wanted.append((cell, later[cell].pop(0)))
        return wanted

    def summary(self) -> str:
        """'after round 1 of up to 8 (3 seeds): 4 of 6 declared claims resolved, 2 open' (the round in
        progress is the next), or 'finished after round 5 of up to 8 (7 seeds): ...'."""
        looks = self.design.looks
        if self.finished:
            text = f"finished after round {self.round} of up to {len(looks)} ({looks[self.round - 1]} seeds)"
        elif self.round == 1:
            return f"round 1 of up to {len(looks)} ({looks[0]} seeds): nothing looked at yet"
        else:
            text = f"after round {self.round - 1} of up to {len(looks)} ({looks[self.round - 2]} seeds)"
        text += f": {len(self.resolved)} of {len(self.decisions)} declared claims resolved"
        for outcome, what in ((NOT_LEARNED, "closed (a model did not learn)"),
                              (CENSORED, "closed (a model at the trivial answer out of domain)"), (FUTILE, "closed as futile")):
            closed = sum(d.outcome == outcome for d in self.decisions)
            if closed:
                text += f", {closed} {what}"
        if self.open:
            text += f", {len(self.open)} {'unresolved at max seeds' if self.finished else 'open'}"
        return text


def replay(design: Design, observed: Observed, claims_at: ClaimsAt, *, cells: Sequence[str]) -> SequentialState:
    """Run the sequential procedure over the trials that ended so far: round 1 asks every cell for
    `looks[0]` seeds; after each complete round the open declared claims are looked at, and the next
    round asks their cells for the next look's seeds. Stops at the first round with trials not yet
    ended (the round in progress) or when nothing is open.

    Args:
        design: the looks, the margin and alpha.
        observed: the ended trials.
        claims_at: the declared claims of a set of rows, undecided (`Observed.upto(n)` is passed).
        cells: every cell key of the study (round 1 asks them all).
    """
    decisions: dict[Key, Decision] = {}
    statements: dict[Key, Statement] = {}
    counts: list[Key] = []
    m = 0
    due = {cell: 0 for cell in cells}
    kept_by: dict[str, tuple[str, ...]] = {cell: () for cell in cells}
    open_: list[Key] = []
    for k, n in enumerate(design.looks, start=1):
        asked = list(cells) if k == 1 else sorted({cell for key in open_ for cell in statements[key].cells})
        for cell in asked:
            due[cell] = n
            if k > 1:
                kept_by[cell] = tuple(statements[key].label for key in open_ if cell in statements[key].cells)
        missing = {cell: tuple(s for s in range(n) if s not in observed.seeds_ended(cell)) for cell in asked}
        missing = {cell: seeds for cell, seeds in missing.items() if seeds}
        if missing:
            return _state(design, k, False, missing, decisions, due, kept_by, observed, m)
        table = claims_at(observed.upto(n))
        rows = {claim_key(r): r for r in table.to_dict("records")}
        if k == 1:
            # Every declared claim is in the Holm family, but only the contrasts are looked at: a count
            # claim (breakdown, an exact test) is decided once, at the end, on every seed.
            m = len(rows)
            statements = {key: statement_of(row, cells) for key, row in rows.items() if row.get("kind") != EXACT}
            counts = [key for key in rows if key not in statements]
            open_ = list(statements)
        standing = {key: d.row for key, d in decisions.items()} | {key: rows.get(key) for key in open_}
        family = _holm(design, standing, counts={key: None for key in counts})
        for key in open_:
            decisions[key] = _look(design, statements[key], rows.get(key), observed, n=n, round_=k, decided=family[key])
        open_ = [key for key in open_ if decisions[key].outcome == OPEN]
        if not open_ or k == len(design.looks):
            for key in open_:
                decisions[key] = replace(decisions[key], outcome=UNRESOLVED)
            final = {claim_key(r): r for r in claims_at(observed).to_dict("records")} if counts else {}
            settled = _settle(design, decisions, counts={key: final.get(key) for key in counts})
            return _state(design, k, True, {}, settled, due, kept_by, observed, m)
    raise AssertionError("unreachable: the last look always ends the replay")


def _holm(design: Design, standing: Mapping[Key, Mapping | None], *,
          counts: Mapping[Key, Mapping | None]) -> dict[Key, tuple[bool, float]]:
    """Holm over the declared family: key -> (resolved, the interval's level). A contrast's p-value
    is multiplied by the K looks; a void row (a model that did not learn, or at the trivial answer),
    a missing one and a count claim not yet decided (`counts` value None) enter at p = 1."""
    keys = [*standing, *counts]
    p, looks = [], []
    for key in keys:
        row = standing[key] if key in standing else counts[key]
        value = float(row["p"]) if row is not None else np.nan
        void = row is None or flagged(row, "not_learned") or flagged(row, "censored") or not np.isfinite(value)
        p.append(1.0 if void else value)
        looks.append(len(design.looks) if key in standing else 1)
    decided = holm_decisions(p, alpha=design.alpha, looks=looks)
    return {key: (bool(r), float(c)) for key, r, c in zip(keys, decided.resolved, decided.confidence, strict=True)}


def _settle(design: Design, decisions: Mapping[Key, Decision], *, counts: Mapping[Key, Mapping | None]) -> dict[Key, Decision]:
    """The family decided once more when the looking ends, with the count claims' p-values on every
    seed: a claim it resolves is resolved (Holm only resolves more as p-values fall), and every
    interval is at its final level, the level the study's claims section prints."""
    family = _holm(design, {key: d.row for key, d in decisions.items()}, counts=counts)
    out = {}
    for key, d in decisions.items():
        resolved, level = family[key]
        if d.row is None or d.outcome in (NOT_LEARNED, CENSORED):
            out[key] = replace(d, confidence=level)
            continue
        est = _estimate(d.row).at(level)
        result = outcome(est, resolved=resolved, margin=design.margin)
        out[key] = replace(d, outcome=result if result != OPEN else d.outcome, estimate=est, confidence=level)
    return out


def claim_key(row: Mapping) -> Key:
    return (str(row["claim"]), str(row["arm"]), str(row["about"]))


def statement_of(row: Mapping, cells: Sequence[str]) -> Statement:
    """A claim row as a statement: its label and the study cells it rests on."""
    versus = f"{row['arm']} - {row['reference']}" if row.get("reference") else str(row["arm"])
    own = [c for c in str(row.get("cells") or "").split(";") if c in set(cells)]
    return Statement(claim_key(row), f"({row['claim']}) {versus}, {row['about']}", tuple(own))


def _look(design: Design, statement: Statement, row: Mapping | None, observed: Observed, *, n: int, round_: int,
          decided: tuple[bool, float]) -> Decision:
    """The claim at n seeds per cell, its interval at its Holm level in the family at this look."""
    resolved, level = decided
    if row is None:  # its rows are gone at this look (every seed of a cell failed)
        nan = float("nan")
        return Decision(statement, OPEN, round_, n, Estimate(nan, nan, nan, nan, nan, nan, 0, 0), None)
    est = _estimate(row).at(level)
    failed = any(seed < n for cell in statement.cells for seed in observed.not_learned.get(cell, ()))
    if failed:
        return Decision(statement, NOT_LEARNED, round_, n, est, row, level)
    if flagged(row, "censored"):  # more seeds cannot make a loss at the trivial answer mean robustness
        return Decision(statement, CENSORED, round_, n, est, row, level)
    result = outcome(est, resolved=resolved, margin=design.margin)
    if result == OPEN and futile(est, n=n, max_seeds=design.max_seeds, level=level, margin=design.margin):
        result = FUTILE
    return Decision(statement, result, round_, n, est, row, level)


def outcome(est: Estimate, *, resolved: bool, margin: float) -> str:
    """DIFFERENCE (Holm resolved it: its interval at its level excludes 0), NO_DIFFERENCE (that
    interval lies inside +-margin) or OPEN; the same rule as the claims section
    (`analysis.stats.core.decisions`)."""
    if resolved:
        return DIFFERENCE
    if np.isfinite(est.ci_low) and np.isfinite(est.ci_high) and -margin <= est.ci_low and est.ci_high <= margin:
        return NO_DIFFERENCE
    return OPEN


def futile(est: Estimate, *, n: int, max_seeds: int, level: float, margin: float) -> bool:
    """Whether the claim could not be resolved by `max_seeds` even with an estimate `HOPE` standard
    errors more favourable: the projected interval at max still holds 0 and is wider than the margin."""
    if n >= max_seeds or not (np.isfinite(est.se) and np.isfinite(est.seed_variance) and np.isfinite(est.df)):
        return False
    half = projected_half_width(est, n=n, max_seeds=max_seeds, level=level)
    hopeful = abs(est.estimate) + HOPE * est.se
    cannot_differ = hopeful <= half
    cannot_match = max(abs(est.estimate) - HOPE * est.se, 0.0) + half > margin
    return bool(cannot_differ and cannot_match)


def projected_half_width(est: Estimate, *, n: int, max_seeds: int, level: float) -> float:
    """The interval's half-width at `max_seeds` per cell, were the variances as estimated now: the
    between-seed part shrinks by n / max, the between-image part stays; degrees of freedom grow with
    the seeds (scaled as the seed part's, which dominates where seeds disagree)."""
    variance = est.seed_variance * n / max_seeds + est.image_variance
    df = est.df * (max_seeds - 1) / max(n - 1, 1)
    return float(stats.t.ppf(0.5 + level / 2, df)) * float(np.sqrt(variance))


def final_claims(state: SequentialState) -> pd.DataFrame:
    """The declared claims as the procedure left them: each at the look that decided it (or its last
    look), with `looks` (K, what its p-value is multiplied by) and its sequential outcome in `sequential`."""
    rows = []
    for d in state.decisions:
        if d.row is None:
            continue
        rows.append({**d.row, "looks": len(state.design.looks), "sequential": d.outcome, "round": d.round, "seeds": d.seeds})
    return pd.DataFrame(rows)


def decision_table(state: SequentialState) -> pd.DataFrame:
    """One row per declared claim: its label, outcome, round, seeds, estimate and interval at the
    looking level, and the sentence (`Decision.line`)."""
    rows = []
    for d in state.decisions:
        est = d.estimate
        rows.append({
            "claim": d.statement.key[0], "arm": d.statement.key[1], "about": d.statement.key[2], "label": d.statement.label,
            "outcome": d.outcome, "round": d.round, "seeds": d.seeds,
            "diff": est.estimate if est else np.nan, "ci_low": est.ci_low if est else np.nan,
            "ci_high": est.ci_high if est else np.nan, "confidence": d.confidence, "line": d.line(),
        })
    return pd.DataFrame(rows, columns=["claim", "arm", "about", "label", "outcome", "round", "seeds", "diff", "ci_low",
                                       "ci_high", "confidence", "line"])


def seeds_table(state: SequentialState) -> pd.DataFrame:
    """One row per cell: seeds that ended, seeds the procedure asked for, and why."""
    rows = []
    for cell in sorted(state.due):
        why = "round 1 (every cell)"
        if state.kept_by[cell]:
            why = f"kept to {state.due[cell]} for {'; '.join(state.kept_by[cell])}"
        rows.append({"cell": cell, "seeds": len(state.ended.get(cell, ())), "asked": state.due[cell], "why": why})
    return pd.DataFrame(rows, columns=["cell", "seeds", "asked", "why"])


def by_cell(pairs: Iterable[tuple[str, int]]) -> dict[str, frozenset[int]]:
    out: dict[str, set[int]] = {}
    for cell, seed in pairs:
        out.setdefault(str(cell), set()).add(int(seed))
    return {cell: frozenset(seeds) for cell, seeds in out.items()}


def _estimate(row: Mapping) -> Estimate:
    return Estimate(float(row["estimate"]), float(row["ci_low"]), float(row["ci_high"]), float(row["p"]),
                    float(row["se"]), float(row["df"]), int(row["n_seeds"]), int(row["n_images"]),
                    float(row.get("seed_variance", np.nan)), float(row.get("image_variance", np.nan)))


def _state(design: Design, round_: int, finished: bool, missing: dict, decisions: Mapping[Key, Decision], due: dict,
           kept_by: dict, observed: Observed, m: int) -> SequentialState:
    return SequentialState(design, round_, finished, missing, tuple(decisions.values()), due, kept_by, observed.ended, m)


__all__ = [
    "CENSORED", "CLOSED", "DIFFERENCE", "FUTILE", "NOT_LEARNED", "NO_DIFFERENCE", "OPEN", "RESOLVED", "UNRESOLVED", "ClaimsAt",
    "Decision", "Design", "Observed", "SequentialState", "Statement", "by_cell", "claim_key", "decision_table",
    "design_of", "final_claims", "futile", "outcome", "projected_half_width", "replay", "seeds_table", "statement_of",
]
