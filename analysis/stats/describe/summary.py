"""Per-group summaries of a trial metric: mean, spread and a 95% confidence interval over seeds.

Confirm trials repeat each cell's chosen configuration over seeds, so the seeds are the
replicates: the interval is Student's t, mean +- t_{0.975, n-1} * sd / sqrt(n), which is honest for
the 3-5 seeds a study can afford (a normal 1.96 would be far too narrow at n = 3). For a score that
lives in [0, 1] (Dice, surface Dice) the interval is cut to [0, 1]: with 3 seeds that disagree,
mean +- t sd / sqrt(n) runs past 1, and no mean of Dice values can.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from study import metrics_names as M
from study.errors import unknown_name

CONFIDENCE = 0.95
# Scores in [0, 1] whatever the model does: their intervals are cut to that range.
UNIT_INTERVAL = frozenset({"dice", "nsd", M.score_key("dice"), M.score_key("nsd"), M.VAL_DICE, M.BEST_VAL_DICE})
STAT_COLUMNS = ("metric", "mean", "std", "n", "ci_low", "ci_high")


def level_text(value: object) -> str:
    """A factor level or a perturbation level as text: numbers compact ('0.5', '1e-05'), anything
    else as written (a site 'A', a custom perturbation's 'intensity=0.4')."""
    is_number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return f"{value:g}" if is_number else str(value)


def summarise(trials: pd.DataFrame, *, by: list[str], metric: str = M.TEST_DICE) -> pd.DataFrame:
    """Mean, sample sd, n and 95% t-interval of `metric` per group of `by` columns.

    NaN metric values (e.g. a failed trial kept with `include_failed`) are left out of n. The
    interval bounds are NaN when a group has fewer than 2 values: one seed says nothing about
    seed-to-seed spread.

    Args:
        trials: one row per trial, e.g. from `analysis.read.runs.load_trials`.
        by: grouping columns, e.g. ["architecture", "alpha"]; [] summarises all rows as one group.
        metric: the column to summarise.

    Returns:
        Columns `by`..., metric (its name), mean, std, n, ci_low, ci_high; one row per group,
        sorted by `by`.

    Raises:
        SegstudyError: a `by` column or the metric is not in the frame.

    Example:
        >>> frame = pd.DataFrame({"arch": ["unet"] * 3, "test_dice": [0.8, 0.9, 1.0]})
        >>> row = summarise(frame, by=["arch"]).iloc[0]
        >>> float(round(row["mean"], 3)), float(round(row["ci_low"], 3)), int(row["n"])
        (0.9, 0.652, 3)
    """
    for column in [*by, metric]:
        if column not in trials.columns:
            raise unknown_name("column", column, map(str, trials.columns), where="summarise")
    values = pd.to_numeric(trials[metric], errors="coerce")
    if by:
        grouped = values.groupby([trials[c] for c in by], dropna=False, sort=True)
        table = grouped.agg(["mean", "std", "count"]).reset_index()
    else:
        table = pd.DataFrame({"mean": [values.mean()], "std": [values.std()], "count": [values.count()]})
    table = table.rename(columns={"count": "n"})
    n = table["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n >= 2, stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(n - 1, 1)), np.nan)
        half = t * table["std"].to_numpy(dtype=float) / np.sqrt(n)
    table["ci_low"] = table["mean"] - half
    table["ci_high"] = table["mean"] + half
    if metric in UNIT_INTERVAL:
        table["ci_low"] = table["ci_low"].clip(lower=0.0)
        table["ci_high"] = table["ci_high"].clip(upper=1.0)
    table["n"] = table["n"].astype("int64")
    table.insert(len(by), "metric", metric)
    return table[[*by, *STAT_COLUMNS]]


__all__ = ["CONFIDENCE", "STAT_COLUMNS", "UNIT_INTERVAL", "summarise"]
