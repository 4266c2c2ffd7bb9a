"""Sequential confirm: seeds where a comparison is not yet resolved, valid under optional stopping.

A study with a seed budget (`confirm: {seeds: {min, max, step}, resolve: {margin, alpha}}`) trains
every cell under seeds 0..min-1, then looks at its findings (each arm minus the reference arm at
each level of the other factors, clean test Dice; `analysis.stats.findings`). A comparison is
resolved when its interval excludes 0 (a difference) or lies inside [-margin, +margin] (no
difference that matters). The cells of the comparisons still open get `step` more seeds, a round
at a time, until every comparison is resolved or the cells have `max` seeds. Training seeds are the
main source of variance in such benchmarks (Bouthillier et al., "Accounting for Variance in Machine
Learning Benchmarks", MLSys 2021), so runs are spent where that variance hides the answer.

Why the decisions stay valid although the data are looked at after every round and the looking
stops when they look resolved (docs/ARCHITECTURE.md 5, "Sequential confirm"):

* The looks are fixed before any result: at n = min, min+step, ..., max seeds per cell
  (`Design.looks`, K of them). The look at n uses seeds 0..n-1 of the comparison's two cells and
  nothing else, so its interval is the fixed-n interval of `analysis.stats.inference.contrast`
  whatever happened at earlier looks (seed s of a cell is the same training run whether or not the
  procedure asked for it).
* Each look's interval has coverage 1 - alpha/K (Bonferroni). By the union bound all K intervals
  of a comparison cover its true difference at once with probability >= 1 - alpha. On that event
  no declaration is wrong: "difference" needs an interval without 0, "no difference beyond the
  margin" an interval inside +-margin, and an interval that covers the true value cannot do
  either wrongly. So any rule for stopping, this one included, errs on a comparison with
  probability <= alpha (per comparison; Holm across the comparisons of a level is the findings'
  business).
* A comparison is decided at the first look that resolves it and keeps that decision and interval
  (later seeds its cells get for other comparisons do not reopen it).
* The learning gate (docs/ARCHITECTURE.md 6): a comparison one of whose cells has a seed that did
  not learn among the seeds of a look is closed as "not learned": its numbers compare noise, and
  more seeds cannot undo a model that failed, so it gets no more seeds and stays unresolved.

The state after any set of finished trials is `replay`: a deterministic function of which trials
ended and their scores, so a resumed study re-derives its round and the seeds it still needs.

Example:
    >>> design = Design(looks=(3, 4, 5), margin=0.01)
    >>> round(design.confidence, 4)
    0.9833
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.stats.contrasts import seeds_by_images
from analysis.stats.findings import level_text, reference_arm
from analysis.stats.inference import Estimate, contrast
from study import metrics_names as M
from study.spec.tuning import Confirm

ARM = "architecture"
DIFFERENCE, NO_DIFFERENCE, OPEN, UNRESOLVED, NOT_LEARNED = (
    "difference", "no difference beyond the margin", "open", "unresolved at max seeds", "not learned",
)
RESOLVED = (DIFFERENCE, NO_DIFFERENCE)


@dataclass(frozen=True)
class Design:
    """The looks (seeds per cell at each) and what resolves a comparison; fixed before any result."""

    looks: tuple[int, ...]
    margin: float
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not self.looks or list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 2:
            raise ValueError(f"looks must be increasing seed counts >= 2, got {self.looks}")

    @property
    def confidence(self) -> float:
        """Each look's interval level: 1 - alpha/K, so the K looks together err at most alpha."""
        return 1.0 - self.alpha / len(self.looks)

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def describe(self) -> str:
        """How the decisions were made, for the report and the console."""
        return (
            f"looks at {', '.join(map(str, self.looks))} seeds per cell; each look's interval at "
            f"{100 * self.confidence:.2f}% (alpha {self.alpha:g} / {len(self.looks)} looks, Bonferroni), so every "
            f"decision holds at {100 * (1 - self.alpha):g}% whenever the study stopped; resolved: interval "
            f"excludes 0, or lies inside +-{self.margin:g} Dice"
        )


def design_of(confirm: Confirm) -> Design | None:
    """The `Design` of a spec's confirm section; None for a fixed seed list."""
    budget = confirm.budget
    if budget is None:
        return None
    resolution = confirm.resolution
    return Design(looks=budget.looks, margin=resolution.margin, alpha=resolution.alpha)


@dataclass(frozen=True)
class Comparison:
    """One finding: `arm` minus `reference` at one level; `cell`/`reference_cell` name their cells."""

    level: str
    arm: str
    reference: str
    cell: str
    reference_cell: str

    @property
    def label(self) -> str:
        """'alpha 0.93: noskip_unet - unet'."""
        return f"{self.level + ': ' if self.level else ''}{self.arm} - {self.reference}"

    @property
    def cells(self) -> tuple[str, str]:
        return (self.cell, self.reference_cell)


def comparisons(cells: Mapping[str, Mapping[str, Any]], *, reference: str | None = None) -> list[Comparison]:
    """The findings' comparisons of a grid: at each level of the other factors, each arm minus the
    reference arm (`analysis.stats.findings.reference_arm`).

    Args:
        cells: cell key -> its factor values (the architecture among them).
        reference: the preferred reference arm (the spec's evaluation.reference_arm).
    """
    arms = sorted({str(values[ARM]) for values in cells.values()})
    if len(arms) < 2:
        return []
    ref = reference_arm(arms, reference)
    levels: dict[tuple, dict[str, str]] = {}
    for key, values in cells.items():
        where = {k: v for k, v in sorted(values.items()) if k != ARM}
        levels.setdefault(tuple(where.items()), {})[str(values[ARM])] = key
    out = []
    for where, by_arm in sorted(levels.items(), key=lambda kv: [(k, _order(v)) for k, v in kv[0]]):
        if ref not in by_arm:
            continue
        out.extend(
            Comparison(level_text(dict(where)), arm, ref, by_arm[arm], by_arm[ref]) for arm in arms if arm != ref and arm in by_arm
        )
    return out


@dataclass(frozen=True)
class Observed:
    """What the finished confirm trials say: each cell's clean Dice as a seeds x images table, the
    seeds that ended (finished or failed for good) and those whose model did not learn."""

    scores: Mapping[str, pd.DataFrame]
    ended: Mapping[str, frozenset[int]]
    not_learned: Mapping[str, frozenset[int]] = field(default_factory=dict)

    @classmethod
    def from_rows(
        cls, per_image: pd.DataFrame, *, ended: Iterable[tuple[str, int]], not_learned: Iterable[tuple[str, int]] = (),
        metric: str = "dice",
    ) -> Observed:
        """From per-image rows (`cell`, `seed`, `image_id`, `condition`, `metric`) of the finished
        trials, and (cell, seed) pairs of every ended trial and of those that did not learn."""
        clean = per_image[per_image["condition"] == M.CLEAN]
        scores = {str(cell): seeds_by_images(rows, metric) for cell, rows in clean.groupby("cell", sort=True)}
        return cls(scores, _by_cell(ended), _by_cell(not_learned))

    def seeds_ended(self, cell: str) -> frozenset[int]:
        return self.ended.get(cell, frozenset())


@dataclass(frozen=True)
class Decision:
    """Where a comparison stands: its outcome, at which round (look) and how many seeds per cell,
    and the interval at the design's level (None before its first look)."""

    comparison: Comparison
    outcome: str
    round: int
    seeds: int
    estimate: Estimate | None

    def line(self, design: Design) -> str:
        """'alpha 0.93: noskip_unet - unet = -0.066 Dice [-0.120, -0.012] (99.38% interval), 7 seeds x 20
        images, round 5: difference'."""
        est = self.estimate
        if est is None:
            return f"{self.comparison.label}: not yet looked at"
        if not np.isfinite(est.estimate):
            return f"{self.comparison.label}: a cell has no scored seed (its trials failed), round {self.round}: {self.outcome}"
        interval = "no interval (needs >= 2 seeds per arm)"
        if np.isfinite(est.ci_low):
            interval = f"[{est.ci_low:+.3f}, {est.ci_high:+.3f}] ({100 * design.confidence:.2f}% interval)"
        return (
            f"{self.comparison.label} = {est.estimate:+.3f} Dice {interval}, {est.n_seeds} seeds x {est.n_images} "
            f"images, round {self.round}: {self.outcome}"
        )


@dataclass(frozen=True)
class SequentialState:
    """A sequential confirm phase after the trials that ended so far (`replay`).

    Attributes:
        round: the round in progress (its trials not all ended), or the last one when `finished`.
        finished: every comparison decided, or the last look taken.
        missing: cell -> seeds the round in progress still needs (empty when finished).
        decisions: one per comparison, in `comparisons` order.
        due: cell -> seeds the procedure asked of it so far.
        kept_by: cell -> labels of the open comparisons that asked for its latest seeds (empty for
            a cell that got the first round's seeds only).
    """

    design: Design
    round: int
    finished: bool
    missing: dict[str, tuple[int, ...]]
    decisions: tuple[Decision, ...]
    due: dict[str, int]
    kept_by: dict[str, tuple[str, ...]]
    ended: Mapping[str, frozenset[int]] = field(default_factory=dict)

    @property
    def open(self) -> list[Decision]:
        """Comparisons that still want seeds (or, when finished, stayed unresolved at max)."""
        return [d for d in self.decisions if d.outcome in (OPEN, UNRESOLVED)]

    @property
    def resolved(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome in RESOLVED]

    def next_trials(self, *, slots: int = 1) -> list[tuple[str, int]]:
        """(cell, seed) to run in the round in progress: the missing ones, then, while fewer than
        `slots` (trials the cluster runs at once), the next looks' seeds of the same cells, so a
        round leaves no slot idle that a later look of an open comparison could use. The extra
        seeds change no decision: each look reads its first n seeds only."""
        wanted = [(cell, seed) for cell, seeds in sorted(self.missing.items()) for seed in seeds]
        asked = self.design.looks[self.round - 1]
        # Round 1 asks every cell (nothing is open yet); later rounds the cells of open comparisons.
        cells = [cell for cell in sorted(self.due) if self.kept_by[cell] and self.due[cell] == asked] if self.round > 1 else []
        later = {cell: [s for s in range(self.due[cell], self.design.max_seeds) if s not in self.ended.get(cell, ())]
                 for cell in cells}
        while len(wanted) < slots and any(later.values()):
            for cell in cells:
                if len(wanted) < slots and later[cell]:
                    wanted.append((cell, later[cell].pop(0)))
        return wanted

    def summary(self) -> str:
        """'after round 1 of up to 8 (3 seeds): 4 of 6 comparisons resolved, 2 open' (the round in
        progress is the next), or 'finished after round 5 of up to 8 (7 seeds): ...'."""
        looks = self.design.looks
        if self.finished:
            text = f"finished after round {self.round} of up to {len(looks)} ({looks[self.round - 1]} seeds)"
        elif self.round == 1:
            return f"round 1 of up to {len(looks)} ({looks[0]} seeds): nothing looked at yet"
        else:
            text = f"after round {self.round - 1} of up to {len(looks)} ({looks[self.round - 2]} seeds)"
        text += f": {len(self.resolved)} of {len(self.decisions)} comparisons resolved"
        closed = sum(d.outcome == NOT_LEARNED for d in self.decisions)
        if closed:
            text += f", {closed} closed (a model did not learn)"
        if self.open:
            text += f", {len(self.open)} {'unresolved at max seeds' if self.finished else 'open'}"
        return text


def replay(design: Design, comps: Sequence[Comparison], observed: Observed, *, cells: Sequence[str]) -> SequentialState:
    """Run the sequential procedure over the trials that ended so far: round 1 asks every cell for
    `looks[0]` seeds; after each complete round the open comparisons are looked at, and the next
    round asks their cells for the next look's seeds. Stops at the first round with trials not yet
    ended (the round in progress) or when nothing is open.

    Args:
        design: the looks and what resolves a comparison.
        comps: the study's comparisons (`comparisons`).
        observed: the ended trials.
        cells: every cell key of the study (round 1 asks them all, compared or not).
    """
    decisions: dict[Comparison, Decision] = {c: Decision(c, OPEN, 0, 0, None) for c in comps}
    aligned: dict[Comparison, Aligned] = {}
    open_ = list(comps)
    due = {cell: 0 for cell in cells}
    kept_by: dict[str, tuple[str, ...]] = {cell: () for cell in cells}
    for k, n in enumerate(design.looks, start=1):
        asked = list(cells) if k == 1 else sorted({cell for c in open_ for cell in c.cells})
        for cell in asked:
            due[cell] = n
            if k > 1:
                kept_by[cell] = tuple(c.label for c in open_ if cell in c.cells)
        missing = {cell: tuple(s for s in range(n) if s not in observed.seeds_ended(cell)) for cell in asked}
        missing = {cell: seeds for cell, seeds in missing.items() if seeds}
        if missing:
            return SequentialState(design, k, False, missing, tuple(decisions.values()), due, kept_by, observed.ended)
        for c in open_:
            if c not in aligned:
                aligned[c] = _aligned(c, observed)
            decisions[c] = _look(design, c, aligned[c], observed, n=n, round_=k)
        open_ = [c for c in open_ if decisions[c].outcome == OPEN]
        if not open_:
            return SequentialState(design, k, True, {}, tuple(decisions.values()), due, kept_by, observed.ended)
    for c in open_:
        decisions[c] = Decision(c, UNRESOLVED, decisions[c].round, decisions[c].seeds, decisions[c].estimate)
    return SequentialState(design, len(design.looks), True, {}, tuple(decisions.values()), due, kept_by, observed.ended)


def look(design: Design, comparison: Comparison, observed: Observed, *, n: int, round_: int) -> Decision:
    """The comparison at n seeds per cell: seeds 0..n-1 of both cells, interval at the design's level."""
    return _look(design, comparison, _aligned(comparison, observed), observed, n=n, round_=round_)


Aligned = list[tuple[np.ndarray, np.ndarray]]  # per cell of a comparison: (seed of each row, seeds x common images)


def _aligned(comparison: Comparison, observed: Observed) -> Aligned:
    """Both cells' tables over the images both scored, once per replay (each look then slices rows)."""
    tables = [observed.scores.get(cell, pd.DataFrame()) for cell in comparison.cells]
    images = tables[0].columns.intersection(tables[1].columns)
    return [(t.index.to_numpy(), t.reindex(columns=images).to_numpy(dtype=float)) for t in tables]


def _look(design: Design, comparison: Comparison, aligned: Aligned, observed: Observed, *, n: int, round_: int) -> Decision:
    est = contrast([values[seeds < n] for seeds, values in aligned], [1.0, -1.0], confidence=design.confidence)
    failed = any(seed < n for cell in comparison.cells for seed in observed.not_learned.get(cell, ()))
    return Decision(comparison, NOT_LEARNED if failed else outcome(est, margin=design.margin), round_, n, est)


def outcome(est: Estimate, *, margin: float) -> str:
    """DIFFERENCE (interval excludes 0), NO_DIFFERENCE (inside +-margin) or OPEN."""
    if not (np.isfinite(est.ci_low) and np.isfinite(est.ci_high)):
        return OPEN
    if est.ci_low > 0 or est.ci_high < 0:
        return DIFFERENCE
    if -margin <= est.ci_low and est.ci_high <= margin:
        return NO_DIFFERENCE
    return OPEN


def decision_table(state: SequentialState) -> pd.DataFrame:
    """One row per comparison: level, arm, reference, outcome, round, seeds, estimate and interval
    at the design's level, and the sentence (`Decision.line`)."""
    rows = []
    for d in state.decisions:
        est = d.estimate
        rows.append({
            "level": d.comparison.level, "arm": d.comparison.arm, "reference": d.comparison.reference,
            "outcome": d.outcome, "round": d.round, "seeds": d.seeds,
            "diff": est.estimate if est else np.nan, "ci_low": est.ci_low if est else np.nan,
            "ci_high": est.ci_high if est else np.nan, "confidence": state.design.confidence,
            "line": d.line(state.design),
        })
    return pd.DataFrame(rows, columns=["level", "arm", "reference", "outcome", "round", "seeds", "diff", "ci_low",
                                       "ci_high", "confidence", "line"])


def seeds_table(state: SequentialState, observed: Observed) -> pd.DataFrame:
    """One row per cell: seeds that ended, seeds the procedure asked for, and why."""
    rows = []
    for cell in sorted(state.due):
        why = "round 1 (every cell)"
        if state.kept_by[cell]:
            why = f"kept to {state.due[cell]} for {'; '.join(state.kept_by[cell])}"
        rows.append({"cell": cell, "seeds": len(observed.seeds_ended(cell)), "asked": state.due[cell], "why": why})
    return pd.DataFrame(rows, columns=["cell", "seeds", "asked", "why"])


def _order(value: Any) -> tuple[int, float, str]:
    """Numbers by value (0.85 before 0.9 before 10), then text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _by_cell(pairs: Iterable[tuple[str, int]]) -> dict[str, frozenset[int]]:
    out: dict[str, set[int]] = {}
    for cell, seed in pairs:
        out.setdefault(str(cell), set()).add(int(seed))
    return {cell: frozenset(seeds) for cell, seeds in out.items()}


__all__ = [
    "DIFFERENCE", "NOT_LEARNED", "NO_DIFFERENCE", "OPEN", "RESOLVED", "UNRESOLVED", "Comparison", "Decision", "Design",
    "Observed", "SequentialState", "comparisons", "decision_table", "design_of", "look", "outcome", "replay",
    "seeds_table",
]
