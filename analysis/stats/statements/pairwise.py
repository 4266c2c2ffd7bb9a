"""Comparisons between arms: every pair per stratum and condition, exploratory; mean ranks to draw.

Arms are compared on the same seeded test images, and every pair's difference, interval and
p-value come from one procedure, `analysis.stats.core.inference.contrast`: the training seed is the
unit of replication and test images are repeated measures within it (docs/ARCHITECTURE.md 5).
A pairwise table is exploratory: its pairs are one family under the false-discovery-rate
procedure (`analysis.stats.core.decisions`, Benjamini-Hochberg by default), in `p_adjusted`, with each
interval at the level that matches its decision (`confidence`); `p` is the pair's own p-value.
Mean ranks over images (`mean_ranks`) describe these particular models and only place the arms on
the critical-difference diagram; no test treats the images as replicates.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats.core.contrasts import seeds_by_images
from analysis.stats.core.decisions import decide_exploratory
from analysis.stats.core.frames import check_frame, resolve_within, warn_few_seeds
from analysis.stats.core.inference import contrast
from study.errors import SegstudyError, unknown_name
from study.metrics_names import LOWER_IS_BETTER as _LOWER, MIN_SEEDS

LOWER_IS_BETTER = _LOWER  # hd95 and assd: surface distances
PAIRWISE_COLUMNS = (
    "condition", "a", "b", "diff", "ci_low", "ci_high", "confidence", "p", "p_adjusted", "significant", "n_seeds",
    "n_images", "se", "df",
)


def pairwise_tests(
    per_image: pd.DataFrame,
    *,
    by: str = "architecture",
    metric: str = "dice",
    within: Sequence[str] | None = None,
    condition: str | Sequence[str] | None = None,
    q: float = 0.05,
    method: str = "bh",
) -> pd.DataFrame:
    """Every pair of `by` values, per stratum and condition: mean difference a - b with its
    interval and p-value (`analysis.stats.core.inference.contrast`), decided as one exploratory family.

    Only images that both arms scored are compared.

    Args:
        per_image: one row per (trial, image, condition), e.g. `analysis.read.runs.load_per_image`.
        by: the column whose values (arms) are compared.
        metric: the per-image score column.
        within: the other factor columns; each combination is tested separately. None: every
            factor named by the `cell` column except `by` (none without a `cell` column).
        condition: one condition, a list, or None for every condition in the frame.
        q, method: the false-discovery rate over every pair of the table, and its procedure (bh, by).

    Returns:
        Columns `within`..., condition, a, b, diff (a - b), ci_low, ci_high (at `confidence`, the
        level that matches the decision), confidence, p, p_adjusted, significant (resolved),
        n_seeds (the fewer of the two arms'), n_images, se, df.

    Raises:
        SegstudyError: a missing column or condition, or mixed phases.

    Example:
        >>> pairwise_tests(per_image, condition="clean")  # doctest: +SKIP
    """
    within = resolve_within(per_image, by=by, within=within)
    rows = []
    families = _families(per_image, by=by, metric=metric, within=within, condition=condition, where="pairwise_tests")
    for key, arms in families:
        for a, b in itertools.combinations(sorted(arms), 2):
            left, right = arms[a], arms[b]
            images = left.columns.intersection(right.columns)
            est = contrast([left[images].to_numpy(), right[images].to_numpy()], [1.0, -1.0])
            rows.append({**key, "a": a, "b": b, "diff": est.estimate, "estimate": est.estimate, "ci_low": est.ci_low,
                         "ci_high": est.ci_high, "p": est.p, "n_seeds": est.n_seeds, "n_images": est.n_images,
                         "se": est.se, "df": est.df})
    columns = [*within, *PAIRWISE_COLUMNS]
    if not rows:
        return pd.DataFrame(columns=columns)
    decided = decide_exploratory(pd.DataFrame(rows), q=q, method=method)
    decided["significant"] = decided["resolved"].astype(bool)
    return decided[columns]


def mean_ranks(
    per_image: pd.DataFrame,
    *,
    by: str = "architecture",
    metric: str = "dice",
    within: Sequence[str] | None = None,
    condition: str | Sequence[str] | None = None,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """Each arm's mean rank over the test images of its seed-averaged scores: a description of
    these particular models, which places the arms on the critical-difference diagram. No test:
    images are repeated measures, not replicates (a Friedman test over them would count each image
    as an independent study of the arms).

    Only images scored for every arm are used. Rank 1 is the best arm on an image (ties share the
    mean rank).

    Args:
        per_image, by, metric, within, condition: as `pairwise_tests`.
        higher_is_better: rank direction; None: False for LOWER_IS_BETTER metrics (hd95, assd), else True.

    Returns:
        One row per arm and family: `within`..., condition, `by`, mean_rank, n_images, k (arms).

    Example:
        >>> ranks = mean_ranks(per_image, condition="clean").set_index("architecture")["mean_rank"]  # doctest: +SKIP
    """
    within = resolve_within(per_image, by=by, within=within)
    higher = metric not in LOWER_IS_BETTER if higher_is_better is None else higher_is_better
    rows = []
    for key, table in _image_means(per_image, by=by, metric=metric, within=within, condition=condition, where="mean_ranks"):
        complete = table.dropna()
        n, k = complete.shape
        values = complete.to_numpy(dtype=float)
        ranks = stats.rankdata(-values if higher else values, axis=1).mean(axis=0) if n else np.full(k, np.nan)
        for arm, rank in zip(complete.columns, ranks, strict=True):
            rows.append({**key, by: arm, "mean_rank": float(rank), "n_images": n, "k": k})
    return pd.DataFrame(rows, columns=[*within, "condition", by, "mean_rank", "n_images", "k"])


def pairwise_p_matrix(pairwise: pd.DataFrame, *, column: str = "p_adjusted") -> pd.DataFrame:
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
    """Per (stratum, condition): seed-averaged scores, one row per image, one column per arm."""
    frame = _frame(per_image, by=by, metric=metric, within=within, condition=condition, where=where)
    keys = [*within, "condition"]
    image_means = frame.groupby([*keys, by, "image_id"], dropna=False)[metric].mean()
    for key, block in image_means.groupby(level=keys, dropna=False):
        table = block.droplevel(keys).unstack(by)
        yield dict(zip(keys, key, strict=True)), table


__all__ = [
    "LOWER_IS_BETTER", "MIN_SEEDS", "PAIRWISE_COLUMNS", "mean_ranks", "pairwise_p_matrix", "pairwise_tests",
]
