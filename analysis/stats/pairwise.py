"""Comparisons between arms: every pair per stratum and condition, with Holm correction; Friedman ranks.

Arms are compared on the same seeded test images, and every pair's difference, interval and
p-value come from one procedure, `analysis.stats.inference.contrast`: the training seed is the
unit of replication and test images are repeated measures within it (docs/ARCHITECTURE.md 5).
Each (stratum of the other factors, condition) is one family: the Holm correction (statsmodels)
runs over the arm pairs of one family, in `p_holm`; `p` is the pair's own p-value, the one its
interval agrees with. Friedman's mean ranks (scipy) only draw the critical-difference diagram.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.read.runs import factor_names
from analysis.stats.contrasts import seeds_by_images
from analysis.stats.inference import contrast
from study.errors import SegstudyError, unknown_name
from study.metrics_names import LOWER_IS_BETTER as _LOWER, MIN_SEEDS

LOWER_IS_BETTER = _LOWER  # hd95 and assd: surface distances
PAIRWISE_COLUMNS = (
    "condition", "a", "b", "diff", "ci_low", "ci_high", "p", "p_holm", "significant", "n_seeds", "n_images", "se", "df",
)


def pairwise_tests(
    per_image: pd.DataFrame,
    *,
    by: str = "architecture",
    metric: str = "dice",
    within: Sequence[str] | None = None,
    condition: str | Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every pair of `by` values, per stratum and condition: mean difference a - b, its 95% interval
    and p-value (`analysis.stats.inference.contrast`), and Holm's correction over the family.

    Only images that both arms scored are compared.

    Args:
        per_image: one row per (trial, image, condition), e.g. `analysis.read.runs.load_per_image`.
        by: the column whose values (arms) are compared.
        metric: the per-image score column.
        within: the other factor columns; each combination is tested separately. None: every
            factor named by the `cell` column except `by` (none without a `cell` column).
        condition: one condition, a list, or None for every condition in the frame.
        alpha: family-wise error rate for `significant` (p_holm < alpha).

    Returns:
        Columns `within`..., condition, a, b, diff (a - b), ci_low, ci_high, p, p_holm,
        significant, n_seeds (the fewer of the two arms'), n_images, se, df.

    Raises:
        SegstudyError: a missing column or condition, or mixed phases.

    Example:
        >>> pairwise_tests(per_image, condition="clean")  # doctest: +SKIP
    """
    within = resolve_within(per_image, by=by, within=within)
    rows = []
    families = _families(per_image, by=by, metric=metric, within=within, condition=condition, where="pairwise_tests")
    for key, arms in families:
        family = []
        for a, b in itertools.combinations(sorted(arms), 2):
            left, right = arms[a], arms[b]
            images = left.columns.intersection(right.columns)
            est = contrast([left[images].to_numpy(), right[images].to_numpy()], [1.0, -1.0])
            family.append({**key, "a": a, "b": b, "diff": est.estimate, "ci_low": est.ci_low, "ci_high": est.ci_high,
                           "p": est.p, "n_seeds": est.n_seeds, "n_images": est.n_images, "se": est.se, "df": est.df})
        for row, corrected in zip(family, holm([row["p"] for row in family]), strict=True):
            row["p_holm"] = corrected
            row["significant"] = bool(corrected < alpha)
        rows.extend(family)
    return pd.DataFrame(rows, columns=[*within, *PAIRWISE_COLUMNS])


def friedman(
    per_image: pd.DataFrame,
    *,
    by: str = "architecture",
    metric: str = "dice",
    within: Sequence[str] | None = None,
    condition: str | Sequence[str] | None = None,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """Friedman test across the `by` values (blocks = images) and each value's mean rank.

    Only images scored for every arm are used (complete blocks). Rank 1 is the best arm on an
    image (ties share the mean rank). The test needs at least 3 arms and 2 images; otherwise its
    statistic and p are NaN but the ranks are still given.

    Args:
        per_image, by, metric, within, condition: as `pairwise_tests`.
        higher_is_better: rank direction; None: False for LOWER_IS_BETTER metrics (hd95, assd), else True.

    Returns:
        One row per arm and family: `within`..., condition, `by`, mean_rank, statistic, p,
        n_blocks (images), k (arms).

    Example:
        >>> ranks = friedman(per_image, condition="clean").set_index("architecture")["mean_rank"]  # doctest: +SKIP
    """
    within = resolve_within(per_image, by=by, within=within)
    higher = metric not in LOWER_IS_BETTER if higher_is_better is None else higher_is_better
    rows = []
    for key, table in _image_means(per_image, by=by, metric=metric, within=within, condition=condition, where="friedman"):
        complete = table.dropna()
        n, k = complete.shape
        values = complete.to_numpy(dtype=float)
        ranks = stats.rankdata(-values if higher else values, axis=1).mean(axis=0) if n else np.full(k, np.nan)
        statistic, p = (np.nan, np.nan)
        if k >= 3 and n >= 2:
            statistic, p = stats.friedmanchisquare(*values.T)
        for arm, rank in zip(complete.columns, ranks, strict=True):
            rows.append({**key, by: arm, "mean_rank": float(rank), "statistic": float(statistic), "p": float(p),
                         "n_blocks": n, "k": k})
    return pd.DataFrame(rows, columns=[*within, "condition", by, "mean_rank", "statistic", "p", "n_blocks", "k"])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (statsmodels); NaN entries stay NaN and do not count."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    known = ~np.isnan(p)
    if known.any():
        adjusted[known] = multipletests(p[known], method="holm")[1]
    return adjusted.tolist()


def pairwise_p_matrix(pairwise: pd.DataFrame, *, column: str = "p_holm") -> pd.DataFrame:
    """Square, symmetric matrix of `column` from one family of `pairwise_tests` (diagonal 1).

    Missing p-values are 1 (no evidence of a difference), as the CD diagram expects.

    Raises:
        SegstudyError: the frame holds several conditions or strata, or lacks a, b or `column`.
    """
    check_frame(pairwise, ["a", "b", "condition", column], where="pairwise_p_matrix")
    extra = [c for c in pairwise.columns if c not in PAIRWISE_COLUMNS]
    if len(pairwise.drop_duplicates(subset=["condition", *extra])) > 1:
        raise SegstudyError("pairwise_p_matrix: the frame holds several conditions or strata; select one family first")
    arms = sorted(set(pairwise["a"]) | set(pairwise["b"]))
    matrix = pd.DataFrame(1.0, index=arms, columns=arms)
    for a, b, p in pairwise[["a", "b", column]].itertuples(index=False):
        matrix.loc[a, b] = matrix.loc[b, a] = 1.0 if pd.isna(p) else float(p)
    return matrix


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


def _frame(
    per_image: pd.DataFrame, *, by: str, metric: str, within: list[str], condition: str | Sequence[str] | None, where: str
) -> pd.DataFrame:
    """The rows to compare: columns checked, the wanted conditions, warned when seeds are few."""
    check_frame(per_image, [by, metric, *within, "seed", "image_id", "condition"], where=where)
    frame = per_image.dropna(subset=[by])
    if condition is not None:
        wanted = [condition] if isinstance(condition, str) else list(condition)
        for c in wanted:
            if c not in set(frame["condition"]):
                raise unknown_name("condition", c, map(str, frame["condition"].unique()), where=where)
        frame = frame[frame["condition"].isin(wanted)]
    warn_few_seeds(frame, by=[*within, by], where=where)
    return frame


def _families(
    per_image: pd.DataFrame,
    *,
    by: str,
    metric: str,
    within: list[str],
    condition: str | Sequence[str] | None,
    where: str,
) -> Iterator[tuple[dict[str, Hashable], dict[str, pd.DataFrame]]]:
    """Per (stratum, condition): each arm's seeds x images table."""
    frame = _frame(per_image, by=by, metric=metric, within=within, condition=condition, where=where)
    keys = [*within, "condition"]
    for key, block in frame.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        arms = {str(arm): seeds_by_images(rows, metric) for arm, rows in block.groupby(by, sort=True)}
        yield dict(zip(keys, key, strict=True)), arms


def _image_means(
    per_image: pd.DataFrame,
    *,
    by: str,
    metric: str,
    within: list[str],
    condition: str | Sequence[str] | None,
    where: str,
) -> Iterator[tuple[dict[str, Hashable], pd.DataFrame]]:
    """Per (stratum, condition): seed-averaged scores, one row per image, one column per arm (Friedman's blocks)."""
    frame = _frame(per_image, by=by, metric=metric, within=within, condition=condition, where=where)
    keys = [*within, "condition"]
    image_means = frame.groupby([*keys, by, "image_id"], dropna=False)[metric].mean()
    for key, block in image_means.groupby(level=keys, dropna=False):
        table = block.droplevel(keys).unstack(by)
        yield dict(zip(keys, key, strict=True)), table


__all__ = [
    "LOWER_IS_BETTER", "MIN_SEEDS", "PAIRWISE_COLUMNS", "check_frame", "friedman", "holm",
    "pairwise_p_matrix", "pairwise_tests", "resolve_within", "warn_few_seeds",
]
