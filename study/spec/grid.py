"""How many trials a spec starts, counted without expanding its grid, and the limit on that.

A grid is the product of its factors' value lists, times the seeds and the tuning budget: a few
long lists make thousands of trials, each a training run. Above `max_trials` (the spec's, or
`DEFAULT_MAX_TRIALS`) a study only starts when asked for explicitly (`--allow-large-grid`), and
the refusal comes before any data is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from study.errors import SegstudyError
from study.spec.schema import StudySpec

DEFAULT_MAX_TRIALS = 1000
LARGE_GRID_FLAG = "--allow-large-grid"


@dataclass(frozen=True)
class TrialCount:
    """The trials of a study: cells of the grid, tune trials (an upper bound: early stopping ends
    some sooner) and confirm trials (every cell x every confirm seed)."""

    cells: int
    tune: int
    confirm: int
    seeds: int
    min_seeds: int | None = None  # a seed budget (sequential confirm): seeds every cell gets; `seeds` is its max

    @property
    def total(self) -> int:
        return self.tune + self.confirm

    def describe(self) -> str:
        """'130 trials (10 cells x 10 tune trials + 10 cells x 3 seeds)'; with a seed budget
        'up to 100 trials (10 cells x 3-10 seeds, sequential)'."""
        tune = f"{self.cells} cells x {self.tune // max(self.cells, 1)} tune trials + " if self.tune else ""
        if self.min_seeds is None:
            return f"{self.total} trials ({tune}{self.cells} cells x {self.seeds} seeds)"
        return f"up to {self.total} trials ({tune}{self.cells} cells x {self.min_seeds}-{self.seeds} seeds, sequential)"


def count_trials(spec: StudySpec) -> TrialCount:
    """The trial counts of `spec`, by arithmetic (a 10^8-cell grid is counted, never listed).

    Example:
        >>> count_trials(load_spec("search_spaces/smoke.yaml")).describe()  # doctest: +SKIP
        '4 trials (4 cells x 1 seeds)'
    """
    cells = math.prod(len(values) for values in spec.factors.values())
    seeds = len(spec.confirm_seeds)
    tune = cells * spec.tuning.trials_per_cell if spec.tuning is not None else 0
    budget = spec.confirm.budget
    return TrialCount(cells=cells, tune=tune, confirm=cells * seeds, seeds=seeds,
                      min_seeds=budget.min if budget is not None else None)


def check_grid_size(spec: StudySpec, *, allow_large: bool) -> TrialCount:
    """The spec's trial count, after refusing a grid larger than its limit unless `allow_large`.

    Raises:
        SegstudyError: more trials than `max_trials` (default DEFAULT_MAX_TRIALS) without the flag.
    """
    count = count_trials(spec)
    limit = spec.max_trials or DEFAULT_MAX_TRIALS
    if count.total > limit and not allow_large:
        source = "max_trials of the spec" if spec.max_trials else "the default limit; raise it with max_trials in the spec"
        raise SegstudyError(
            f"study '{spec.name}': {count.describe()} is more than {limit} ({source}); pass {LARGE_GRID_FLAG} to run them "
            "all, or shrink the factors, seeds or tuning.trials_per_cell"
        )
    return count


__all__ = ["DEFAULT_MAX_TRIALS", "LARGE_GRID_FLAG", "TrialCount", "check_grid_size", "count_trials"]
