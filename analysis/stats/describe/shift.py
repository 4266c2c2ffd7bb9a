"""Train/test shift along a dataset factor: every model scored at the level it was trained at and at others.

A spec's `evaluation.shift` (e.g. {alpha: [0.1, 0.5, 0.9]}) tests each confirm model on its test
split rendered at other levels of a dataset factor as well: the same images and masks, only what
the factor changes differs. This is the out-of-domain experiment of the skip-connection study
(Kamath et al., MICCAI 2023: trained at one texture blend, tested at harder ones), where the arms
separate most (docs/ARCHITECTURE.md 4.1 and 5). The rows come from
`analysis.read.runs.read_per_image(...).shift`: the training level is the factor column, the test
level the test_<factor> column, and the clean rows are the diagonal (tested where trained).

Example:
    >>> rows = read_per_image(trials, tracking_uri=uri).shift  # doctest: +SKIP
    >>> table = shift_table(rows, factor="alpha")  # doctest: +SKIP
    >>> shift_matrix(table, factor="alpha").to_csv("shift_alpha.csv")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.stats.core.frames import check_frame
from analysis.stats.describe.summary import level_text, summarise
from study import metrics_names as M
from study.conformal.calibrate import COVERED
from study.errors import SegstudyError

SEEDS, IMAGES, COVERAGE = "seeds", "images", "coverage"


def shift_factors(rows: pd.DataFrame) -> list[str]:
    """The factors some row was shifted along (from its 'shift:<factor>=<level>' condition), sorted."""
    found = (M.parse_shift(c) for c in rows["condition"].unique()) if "condition" in rows.columns else ()
    return sorted({parsed[0] for parsed in found if parsed is not None})


def paired_across_levels(rows: pd.DataFrame, *, factor: str) -> bool:
    """True when a model's shifted test images are its own test images at another level (synthetic
    alpha: the same ids re-rendered), False when they are other images (a folder per site: ids
    carry their level). Comparisons across levels pair images only in the first case.
    """
    test = M.test_level_column(factor)
    mine = rows[rows["condition"].map(lambda c: c == M.CLEAN or (M.parse_shift(c) or ("",))[0] == factor)]
    if test not in mine.columns or mine.empty:
        return True
    ids = mine.groupby(test, sort=False)["image_id"].agg(lambda s: frozenset(s.astype(str)))
    return len(set(ids)) <= 1


def shift_table(
    rows: pd.DataFrame,
    *,
    factor: str,
    arm: str = "architecture",
    within: Sequence[str] = (),
    metric: str = "dice",
) -> pd.DataFrame:
    """Mean score per (within..., arm, training level, test level), over seeds, with what is behind it.

    Each seed's score is its mean over the test images, and the mean and its 95% t-interval are over
    seeds (`analysis.stats.describe.summary.summarise`): seeds are the replicates, images are shared by
    every arm at a test level (paired), as in the rest of the analysis; across test levels they
    are the same images only where `paired_across_levels`.

    Args:
        rows: `read_per_image(...).shift` rows (clean rows and 'shift:<factor>=...' rows).
        factor: the shifted factor, e.g. "alpha": its column holds the training level, and
            test_<factor> the level the images were rendered at.
        arm: the column whose values are compared (one heatmap and one line each).
        within: other factor columns that make separate strata (e.g. a hyperparameter factor).
        metric: a per-image score column.

    Returns:
        Columns within..., arm, factor, test_<factor>, metric, mean, std, seeds, ci_low, ci_high,
        images (distinct test images), coverage (share of images whose conformal Dice bound,
        calibrated at the training level, held; NaN without bounds), in_domain (test level =
        training level); sorted by the key columns.

    Raises:
        SegstudyError: a needed column is missing, or no row was shifted along `factor`.

    Example:
        >>> shift_table(rows, factor="alpha")[["alpha", "test_alpha", "mean"]]  # doctest: +SKIP
    """
    test = M.test_level_column(factor)
    check_frame(rows, [*within, arm, factor, test, "seed", "image_id", "condition", metric], where="shift_table")
    if factor not in shift_factors(rows):
        raise SegstudyError(f"shift_table: no row is shifted along '{factor}'; shifted factors: {', '.join(shift_factors(rows)) or 'none'}")
    mine = rows[rows["condition"].map(lambda c: c == M.CLEAN or (M.parse_shift(c) or ("",))[0] == factor)]
    keys = [*within, arm, factor, test]
    per_seed = mine.groupby([*keys, "seed"], sort=True, dropna=False)[metric].mean().reset_index()
    table = summarise(per_seed, by=keys, metric=metric).rename(columns={"n": SEEDS})
    covered = mine[COVERED].astype(float) if COVERED in mine.columns else pd.Series(float("nan"), index=mine.index)
    behind = mine.assign(_covered=covered).groupby(keys, sort=True, dropna=False).agg(
        **{IMAGES: ("image_id", "nunique"), COVERAGE: ("_covered", "mean")}
    )
    table = table.merge(behind.reset_index(), on=keys, how="left")
    table["in_domain"] = table[factor] == table[test]
    return table


def shift_matrix(
    table: pd.DataFrame,
    *,
    factor: str,
    arm: str = "architecture",
    within: Sequence[str] = (),
    value: str = "mean",
) -> pd.DataFrame:
    """The train x test table: one row per (within..., arm, training level), one column per test level.

    Args:
        table: from `shift_table`.
        factor, arm, within: as given to `shift_table`.
        value: which column fills the cells: "mean" (the score) or "coverage".

    Returns:
        Columns within..., arm, factor (the training level), one "test_<factor>=<level>" column per
        test level (NaN where a model was not tested there), then seeds and images: the fewest
        seeds and images behind any cell of the row.

    Example:
        >>> shift_matrix(shift_table(rows, factor="alpha"), factor="alpha").columns.tolist()  # doctest: +SKIP
        ['architecture', 'alpha', 'test_alpha=0.1', 'test_alpha=0.5', 'seeds', 'images']
    """
    test = M.test_level_column(factor)
    check_frame(table, [*within, arm, factor, test, value, SEEDS, IMAGES], where="shift_matrix")
    index = [*within, arm, factor]
    wide = table.pivot_table(index=index, columns=test, values=value, aggfunc="first", dropna=False, sort=True)
    wide.columns = [f"{test}={level_text(v)}" for v in wide.columns]
    behind = table.groupby(index, sort=True, dropna=False)[[SEEDS, IMAGES]].min()
    return wide.join(behind).reset_index()


__all__ = ["COVERAGE", "IMAGES", "SEEDS", "paired_across_levels", "shift_factors", "shift_matrix", "shift_table"]
