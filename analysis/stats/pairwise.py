"""Paired tests between arms: Wilcoxon signed-rank with Holm correction, and Friedman ranks.

Arms are compared image by image (every arm is scored on the same seeded test images) and the
training seed is blocked by averaging: each image's score is first averaged over an arm's seeds,
so seed-to-seed noise shrinks instead of posing as extra images (docs/ARCHITECTURE.md 5). Each
(stratum of the other factors, condition) is one family: the Holm correction runs over the arm
pairs of one family. The tests are scipy's; Holm is statsmodels'.
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
from study.errors import SegstudyError, unknown_name
from study.metrics_names import LOWER_IS_BETTER as _LOWER, MIN_SEEDS

LOWER_IS_BETTER = _LOWER  # hd95 and assd: surface distances
PAIRWISE_COLUMNS = ("condition", "a", "b", "n", "statistic", "p", "p_holm", "effect_size", "median_diff", "significant")


def pairwise_wilcoxon(
    per_image: pd.DataFrame,
    *,
    by: str = "architecture",
    metric: str = "dice",
    within: Sequence[str] | None = None,
    condition: str | Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Wilcoxon signed-rank test for every pair of `by` values, per stratum and condition.

    Differences are a - b per image (after averaging each arm's seeds); images missing for either
    arm are left out of that pair. Pairs with no non-zero difference get statistic 0, p 1 and
    effect size 0 (scipy would return NaN: identical arms are simply not different).

    Args:
        per_image: one row per (trial, image, condition), e.g. `analysis.read.runs.load_per_image`.
        by: the column whose values (arms) are compared.
        metric: the per-image score column.
        within: the other factor columns; each combination is tested separately. None: every
            factor named by the `cell` column except `by` (none without a `cell` column).
        condition: one condition, a list, or None for every condition in the frame.
        alpha: family-wise error rate for `significant`.

    Returns:
        Columns `within`..., condition, a, b, n (paired images), statistic (scipy's, min of the
        signed rank sums), p, p_holm, effect_size (matched-pairs rank-biserial correlation,
        +1 when a beats b on every image), median_diff (median of a - b), significant
        (p_holm < alpha).

    Raises:
        SegstudyError: a missing column or condition, or mixed phases.

    Example:
        >>> pairwise_wilcoxon(per_image, condition="clean")  # doctest: +SKIP
    """
    within = resolve_within(per_image, by=by, within=within)
    rows = []
    families = _families(per_image, by=by, metric=metric, within=within, condition=condition, where="pairwise_wilcoxon")
    for key, table in families:
        family = [
            {**key, "a": a, "b": b, **_wilcoxon(table[a].to_numpy(), table[b].to_numpy())}
            for a, b in itertools.combinations(table.columns, 2)
        ]
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
        per_image, by, metric, within, condition: as `pairwise_wilcoxon`.
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
    for key, table in _families(per_image, by=by, metric=metric, within=within, condition=condition, where="friedman"):
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
    """Square, symmetric matrix of `column` from one family of `pairwise_wilcoxon` (diagonal 1).

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


def _families(
    per_image: pd.DataFrame,
    *,
    by: str,
    metric: str,
    within: list[str],
    condition: str | Sequence[str] | None,
    where: str,
) -> Iterator[tuple[dict[str, Hashable], pd.DataFrame]]:
    """Per (stratum, condition): a table of seed-averaged scores, one row per image, one column per arm."""
    check_frame(per_image, [by, metric, *within, "seed", "image_id", "condition"], where=where)
    frame = per_image.dropna(subset=[by])
    if condition is not None:
        wanted = [condition] if isinstance(condition, str) else list(condition)
        for c in wanted:
            if c not in set(frame["condition"]):
                raise unknown_name("condition", c, map(str, frame["condition"].unique()), where=where)
        frame = frame[frame["condition"].isin(wanted)]
    warn_few_seeds(frame, by=[*within, by], where=where)
    keys = [*within, "condition"]
    image_means = frame.groupby([*keys, by, "image_id"], dropna=False)[metric].mean()  # block the seed by averaging
    for key, block in image_means.groupby(level=keys, dropna=False):
        table = block.droplevel(keys).unstack(by)
        yield dict(zip(keys, key, strict=True)), table


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    known = ~(np.isnan(a) | np.isnan(b))
    diff = a[known] - b[known]
    nonzero = diff[diff != 0]
    if diff.size == 0:
        return {"n": 0, "statistic": np.nan, "p": np.nan, "effect_size": np.nan, "median_diff": np.nan}
    if nonzero.size == 0:
        return {"n": int(diff.size), "statistic": 0.0, "p": 1.0, "effect_size": 0.0, "median_diff": 0.0}
    result = stats.wilcoxon(a[known], b[known], zero_method="wilcox")
    # Matched-pairs rank-biserial r = (T+ - T-) / (T+ + T-) over the non-zero differences (Kerby 2014).
    ranks = stats.rankdata(np.abs(nonzero))
    plus, minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    return {
        "n": int(diff.size), "statistic": float(result.statistic), "p": float(result.pvalue),
        "effect_size": float((plus - minus) / (plus + minus)), "median_diff": float(np.median(diff)),
    }


__all__ = [
    "LOWER_IS_BETTER", "MIN_SEEDS", "PAIRWISE_COLUMNS", "check_frame", "friedman", "holm",
    "pairwise_p_matrix", "pairwise_wilcoxon", "resolve_within", "warn_few_seeds",
]
