"""How many trials a spec starts, counted without expanding its grid, and the limit on that.

A grid is the product of its factors' value lists, times the seeds and the tuning budget: a few
long lists make thousands of trials, each a training run. Above `max_trials` (the spec's, or
`DEFAULT_MAX_TRIALS`) a study only starts when asked for explicitly (`--allow-large-grid`), and
the refusal comes before any data is built. Each level of `evaluation.shift` is a test set every
confirm model is tested on and the study renders once, so these count towards the limit too
(1000 levels made one trial take 15x as long and log 6000 metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from study.errors import SegstudyError
from study.spec.schema import StudySpec, same_level

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
    shift_tests: int = 0  # shifted test sets over every confirm model (evaluation.shift): each a test run

    @property
    def total(self) -> int:
        return self.tune + self.confirm

    @property
    def weight(self) -> int:
        """What the large-grid limit counts: every trial, and every shifted test set of a confirm model."""
        return self.total + self.shift_tests

    def describe(self) -> str:
        """'130 trials (10 cells x 10 tune trials + 10 cells x 3 seeds)'; with a seed budget
        'up to 100 trials (10 cells x 3-10 seeds, sequential)'."""
        tune = f"{self.cells} cells x {self.tune // max(self.cells, 1)} tune trials + " if self.tune else ""
        shift = f" and {self.shift_tests} shifted test sets (evaluation.shift)" if self.shift_tests else ""
        if self.min_seeds is None:
            return f"{self.total} trials ({tune}{self.cells} cells x {self.seeds} seeds){shift}"
        return f"up to {self.total} trials ({tune}{self.cells} cells x {self.min_seeds}-{self.seeds} seeds, sequential){shift}"


def count_trials(spec: StudySpec, *, tuned: bool = False) -> TrialCount:
    """The trial counts of `spec`, by arithmetic (a 10^8-cell grid is counted, never listed);
    `tuned`: the tune phase is over (a resumed study past it, a replicate), so none are counted.

    Example:
        >>> count_trials(load_spec("search_spaces/smoke.yaml")).describe()  # doctest: +SKIP
        '4 trials (4 cells x 1 seeds)'
    """
    cells = math.prod(len(values) for values in spec.factors.values())
    seeds = len(spec.confirm_seeds)
    tune = cells * spec.tuning.trials_per_cell if spec.tuning is not None and not tuned else 0
    budget = spec.confirm.budget
    return TrialCount(cells=cells, tune=tune, confirm=cells * seeds, seeds=seeds,
                      min_seeds=budget.min if budget is not None else None,
                      shift_tests=seeds * shifted_per_seed(spec, cells))


def shifted_per_seed(spec: StudySpec, cells: int) -> int:
    """Shifted test sets of one seed's confirm models over all cells: each `evaluation.shift` level
    but a model's own training level (`study.training.inputs.study_data`), counted by arithmetic."""
    total = 0
    for factor, levels in spec.evaluation.shift.items():
        grid = spec.factors.get(factor, [])
        own = sum(1 for g in grid if any(same_level(g, level) for level in levels))  # grid levels also shift levels
        total += cells * len(levels) - (cells // max(len(grid), 1)) * own
    return total


def check_grid_size(spec: StudySpec, *, allow_large: bool) -> TrialCount:
    """The spec's trial count, after refusing a grid larger than its limit unless `allow_large`.

    Raises:
        SegstudyError: more trials than `max_trials` (default DEFAULT_MAX_TRIALS) without the flag.
    """
    count = count_trials(spec)
    limit = spec.max_trials or DEFAULT_MAX_TRIALS
    if count.weight > limit and not allow_large:
        source = "max_trials of the spec" if spec.max_trials else "the default limit; raise it with max_trials in the spec"
        what = f"{count.describe()}, {count.weight} in all, are" if count.shift_tests else f"{count.describe()} is"
        raise SegstudyError(
            f"study '{spec.name}': {what} more than {limit} ({source}); pass {LARGE_GRID_FLAG} to run them "
            "all, or shrink the factors, seeds, tuning.trials_per_cell or evaluation.shift"
        )
    return count


__all__ = ["DEFAULT_MAX_TRIALS", "LARGE_GRID_FLAG", "TrialCount", "check_grid_size", "count_trials"]
