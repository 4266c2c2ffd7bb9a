"""Checks and shapes of per-image frames that every statistic of the analysis shares."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pandas as pd

from analysis.read.runs import factor_names
from study.errors import SegstudyError, unknown_name
from study.metrics_names import MIN_SEEDS


def resolve_within(frame: pd.DataFrame, *, by: str, within: Sequence[str] | None) -> list[str]:
    """The stratifying factor columns: given, or every factor of the `cell` strings except `by`."""
    if within is not None:
        return [w for w in within if w != by]
    if "cell" not in frame.columns:
        return []
    return [name for name in factor_names(frame) if name != by and name in frame.columns]


def check_frame(frame: pd.DataFrame, columns: Sequence[str], *, where: str) -> None:
    """Fail on a missing column, or on trials of several phases (tune rows are not seed repeats)."""
    for column in columns:
        if column not in frame.columns:
            raise unknown_name("column", column, map(str, frame.columns), where=where)
    if "phase" in frame.columns and frame["phase"].nunique() > 1:
        phases = ", ".join(sorted(map(str, frame["phase"].dropna().unique())))
        raise SegstudyError(
            f"{where}: per-image rows of phases {phases}; pass one phase, e.g. frame[frame.phase == 'confirm']"
        )


def warn_few_seeds(frame: pd.DataFrame, *, by: Sequence[str], where: str) -> None:
    """Warn when some group of `by` columns has fewer than MIN_SEEDS distinct seeds."""
    if not by:
        fewest, label = frame["seed"].nunique(), "the data"
    else:
        seeds = frame.groupby(list(by), dropna=False)["seed"].nunique()
        fewest, worst = int(seeds.min()), seeds.idxmin()
        label = ",".join(f"{k}={v}" for k, v in zip(by, worst if isinstance(worst, tuple) else (worst,), strict=True))
    if fewest < MIN_SEEDS:
        warnings.warn(
            f"{where}: only {fewest} seed(s) for {label}; at least {MIN_SEEDS} seeds are needed to tell "
            "an arm's effect from seed luck (docs/ARCHITECTURE.md 5)",
            stacklevel=4,  # past this helper and the private stage: the public function's caller
        )


__all__ = ["check_frame", "resolve_within", "warn_few_seeds"]
