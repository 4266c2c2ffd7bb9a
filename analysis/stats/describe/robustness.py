"""Robustness summaries of per-image scores under perturbations, with paired bootstrap CIs.

Each perturbation is evaluated at severities 1..5 of one physical parameter, and severity 0 is the
clean image (docs/ARCHITECTURE.md 5, after ROOD-MRI and ImageNet-C). Per arm and perturbation this
module reduces the Dice-severity curve to: the ROOD-MRI overall score and degradation, the
normalised area under the curve, the worst case, and the corruption error relative to a reference
arm; per condition it gives the mean and the failure rate (share of images below `tau`).

Every number comes with a percentile bootstrap interval that resamples seeds, then images, with
replacement. The image draw is shared by every arm of a stratum (same other factors) and every
condition, so differences between arms and summaries over severities stay paired. Draws are
weights: draw b's mean is sum_{s,i} w_bs w_bi x_si / sum_{s,i} w_bs w_bi over known values, which
is exactly the mean over the resampled (seed, image) grid and costs two small tensor contractions.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.stats.core.frames import check_frame, resolve_within, warn_few_seeds
from study import metrics_names as M
from study.errors import SegstudyError, unknown_name

SCORE_METRICS = ("dice", "nsd")  # higher is better and in [0, 1]: what every formula here assumes
ROOD_BASE = 2 / 3  # ROOD-MRI severity weight w_s = (2/3)^s: mild corruptions count most
SUMMARIES = ("rood_overall", "degradation", "auc", "worst_case", "corruption_error")
CONDITION_STATS = ("mean", "failure_rate")
# Re-exported: `from analysis import parse_condition` is public; the format is defined once in
# study/metrics_names.py, next to the per_image.csv columns.
parse_condition = M.parse_condition


def condition_summary(
    per_image: pd.DataFrame,
    *,
    arm: str = "architecture",
    within: Sequence[str] | None = None,
    metric: str = "dice",
    tau: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean score and failure rate (share of images with score < `tau`) per arm and condition.

    Args: as `robustness_summary`.

    Returns:
        Columns `within`..., `arm`, condition, perturbation (None for clean), severity, metric,
        statistic ("mean" or "failure_rate"), value, ci_low, ci_high, n_images, n_seeds.
    """
    strata = _strata(
        per_image, arm=arm, within=within, metric=metric, tau=tau, n_boot=n_boot, seed=seed, confidence=confidence
    )
    rows = []
    for stratum in strata:
        for c, condition in enumerate(stratum.conditions):
            perturbation, severity = parse_condition(condition)
            for name, draws in (("mean", stratum.means), ("failure_rate", stratum.fails)):
                for a, arm_value in enumerate(stratum.arms):
                    rows.append({
                        **stratum.key, arm: arm_value, "condition": condition, "perturbation": perturbation,
                        "severity": severity, "metric": metric, "statistic": name,
                        **_estimate(draws[:, a, c], confidence), **stratum.counts(a),
                    })
    return pd.DataFrame(rows)


def robustness_summary(
    per_image: pd.DataFrame,
    *,
    arm: str = "architecture",
    within: Sequence[str] | None = None,
    metric: str = "dice",
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per arm and perturbation: ROOD-MRI overall and degradation, AUC, worst case, corruption error.

    With m_s the mean score at severity s (m_0 = clean) and w_s = (2/3)^s over the severities
    1..5 present: overall = (m_0 + sum w_s m_s) / (1 + sum w_s); degradation =
    sum w_s (m_0 - m_s) / sum w_s; auc = trapezoid of m over severities 0..S divided by S;
    worst_case = min over severities 0..S of m_s; corruption_error = sum_s (1 - m_s) of the arm
    over the same sum of the `reference` arm in the same stratum (s >= 1, ImageNet-C).

    Args:
        per_image: one row per (trial, image, condition) with seed, image_id, condition, the arm
            and factor columns (`analysis.read.runs.load_per_image`), one phase only (confirm).
        arm: the column whose values are compared (paired images within each stratum).
        within: the other factor columns; each combination is a stratum. None: every factor named
            by the `cell` column except `arm`, or none when there is no `cell` column.
        metric: "dice" or "nsd" (higher is better, in [0, 1]).
        reference: the `arm` value that corruption errors and the diff columns are relative to;
            None leaves them NaN.
        n_boot: bootstrap draws (0: no intervals).
        seed: seeds the bootstrap's numpy Generator.
        confidence: central coverage of the percentile intervals.

    Returns:
        Columns `within`..., `arm`, perturbation, metric, summary (one of SUMMARIES), value, ci_low,
        ci_high, diff_vs_reference, diff_ci_low, diff_ci_high (value minus the reference arm's,
        from the same paired draws), n_images, n_seeds.

    Raises:
        SegstudyError: a missing column, an unsupported metric, an unknown reference arm, no clean
            condition, mixed phases or no image shared by every arm of a stratum.

    Example:
        >>> robustness_summary(per_image, reference="unet", n_boot=1000)  # doctest: +SKIP
    """
    strata = _strata(
        per_image, arm=arm, within=within, metric=metric, tau=0.5, n_boot=n_boot, seed=seed, confidence=confidence
    )
    known = {value for stratum in strata for value in stratum.arms}
    if reference is not None and reference not in known:
        raise unknown_name(arm, reference, map(str, known), where="robustness_summary: reference")
    rows = []
    for stratum in strata:
        if M.CLEAN not in stratum.conditions:
            raise SegstudyError(
                f"robustness_summary: stratum {stratum.key or 'all'} has no '{M.CLEAN}' condition; "
                "severity 0 is the clean score"
            )
        # A stratum without the reference arm (e.g. it was not run there) gets NaN relative values.
        ref = stratum.arms.index(reference) if reference in stratum.arms else None
        for perturbation, columns, severities in _curves(stratum.conditions):
            for name, draws in _summaries(stratum.means[:, :, columns], severities, ref).items():
                diffs = draws - draws[:, [ref]] if ref is not None else np.full_like(draws, np.nan)
                for a, arm_value in enumerate(stratum.arms):
                    diff = _estimate(diffs[:, a], confidence)
                    rows.append({
                        **stratum.key, arm: arm_value, "perturbation": perturbation, "metric": metric,
                        "summary": name, **_estimate(draws[:, a], confidence), "diff_vs_reference": diff["value"],
                        "diff_ci_low": diff["ci_low"], "diff_ci_high": diff["ci_high"], **stratum.counts(a),
                    })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class _Stratum:
    """One combination of the `within` factors: its arms' per-condition means, point then draws."""

    key: dict[str, Hashable]
    arms: list[Hashable]
    conditions: list[str]
    means: np.ndarray  # (1 + n_boot, arms, conditions); row 0 is the point estimate
    fails: np.ndarray  # same shape: share of images below tau
    n_images: int
    n_seeds: list[int]

    def counts(self, arm_index: int) -> dict[str, int]:
        """How much data an arm's estimates rest on: paired images and distinct seeds."""
        return {"n_images": self.n_images, "n_seeds": self.n_seeds[arm_index]}


def _strata(
    per_image: pd.DataFrame,
    *,
    arm: str,
    within: Sequence[str] | None,
    metric: str,
    tau: float,
    n_boot: int,
    seed: int,
    confidence: float,
) -> list[_Stratum]:
    if metric not in SCORE_METRICS:
        accepted = ", ".join(SCORE_METRICS)
        raise SegstudyError(f"metric '{metric}': robustness summaries accept {accepted} (higher is better, in [0, 1])")
    if not 0 < confidence < 1:
        raise SegstudyError(f"confidence={confidence}: accepted values lie strictly between 0 and 1, e.g. 0.95")
    if int(n_boot) != n_boot or n_boot < 0:
        raise SegstudyError(f"n_boot={n_boot}: accepted values are integers >= 0 (0: no intervals)")
    within = resolve_within(per_image, by=arm, within=within)
    check_frame(per_image, [arm, *within, "seed", "image_id", "condition", metric], where="robustness")
    frame = per_image.dropna(subset=[arm])
    if frame[metric].isna().any():
        warnings.warn(
            f"robustness: {int(frame[metric].isna().sum())} row(s) have no {metric} and are left out of the means; "
            "score missed structures as 0 upstream so failures are not skipped",
            stacklevel=3,
        )
    warn_few_seeds(frame, by=[*within, arm], where="robustness")
    rng = np.random.default_rng(seed)
    seeds = sorted(frame["seed"].unique())
    seed_w = _weights(len(seeds), n_boot, rng)  # one seed draw for the whole table: every arm shares it
    conditions = sorted(frame["condition"].unique(), key=_condition_order)
    groups = frame.groupby(list(within), sort=True, dropna=False) if within else [((), frame)]
    strata = []
    for key, sub in groups:
        arms = sorted(sub[arm].unique())
        images = _paired_images(sub, arm=arm, key=key)
        grid = pd.MultiIndex.from_product([arms, seeds, images, conditions])
        values = (
            sub[sub["image_id"].isin(images)]
            .groupby([arm, "seed", "image_id", "condition"], sort=False)[metric].mean()
            .reindex(grid).to_numpy(dtype=float)
            .reshape(len(arms), len(seeds), len(images), len(conditions))
        )
        image_w = _weights(len(images), n_boot, rng)  # one image draw for every arm and condition
        fails = np.where(np.isnan(values), np.nan, values < tau)
        strata.append(_Stratum(
            key=dict(zip(within, key, strict=True)), arms=arms, conditions=conditions,
            means=_weighted_mean(values, seed_w, image_w), fails=_weighted_mean(fails, seed_w, image_w),
            n_images=len(images), n_seeds=[int(n) for n in sub.groupby(arm)["seed"].nunique().reindex(arms)],
        ))
    return strata


def _paired_images(sub: pd.DataFrame, *, arm: str, key: tuple) -> list[Hashable]:
    """Images every arm of the stratum was scored on: comparisons stay paired image by image."""
    per_arm = [set(images) for images in sub.groupby(arm)["image_id"].unique()]
    shared = set.intersection(*per_arm)
    if not shared:
        raise SegstudyError(
            f"robustness: stratum {key or 'all'} has no image scored for every {arm}; arms must share a test set"
        )
    dropped = set.union(*per_arm) - shared
    if dropped:
        warnings.warn(
            f"robustness: stratum {key or 'all'}: {len(dropped)} image(s) not scored for every {arm} are left out",
            stacklevel=4,
        )
    return sorted(shared)


def _weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Row 0 all ones (the point estimate), then n_boot multinomial counts of n draws from n items."""
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    return np.vstack([np.ones((1, n)), draws]).astype(float)


def _weighted_mean(values: np.ndarray, seed_w: np.ndarray, image_w: np.ndarray) -> np.ndarray:
    """(arms, seeds, images, conditions) values -> (draws, arms, conditions) means over known values."""
    known = ~np.isnan(values)
    total = np.einsum("bs,bi,asic->bac", seed_w, image_w, np.where(known, values, 0.0), optimize=True)
    count = np.einsum("bs,bi,asic->bac", seed_w, image_w, known.astype(float), optimize=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _curves(conditions: list[str]) -> list[tuple[str, list[int], np.ndarray]]:
    """Per perturbation: the condition columns of its curve (clean first) and their severities."""
    clean = conditions.index(M.CLEAN)
    by_name: dict[str, list[tuple[int, int]]] = {}
    for column, condition in enumerate(conditions):
        name, severity = parse_condition(condition)
        if name is not None and severity >= 1:  # severity 0 is the clean image itself
            by_name.setdefault(name, []).append((severity, column))
    curves = []
    for name, points in sorted(by_name.items()):
        points.sort()
        severities = np.array([0, *(s for s, _ in points)], dtype=float)
        curves.append((name, [clean, *(c for _, c in points)], severities))
    return curves


def _summaries(curve: np.ndarray, severities: np.ndarray, ref: int | None) -> dict[str, np.ndarray]:
    """(draws, arms, 1 + severities) curve -> each summary as (draws, arms); NaN where data is missing."""
    clean, perturbed, w = curve[..., 0], curve[..., 1:], ROOD_BASE ** severities[1:]
    error = (1.0 - perturbed).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corruption = error / error[:, [ref]] if ref is not None else np.full_like(clean, np.nan)
    return {
        "rood_overall": (clean + (perturbed * w).sum(axis=-1)) / (1.0 + w.sum()),
        "degradation": ((clean[..., None] - perturbed) * w).sum(axis=-1) / w.sum(),
        "auc": np.trapezoid(curve, severities, axis=-1) / (severities[-1] - severities[0]),
        "worst_case": curve.min(axis=-1),
        "corruption_error": corruption,
    }


def _estimate(draws: np.ndarray, confidence: float) -> dict[str, float]:
    """Row 0 is the point estimate; the rest give the percentile interval (NaN without draws)."""
    boot = draws[1:][~np.isnan(draws[1:])]
    if boot.size == 0:
        return {"value": float(draws[0]), "ci_low": np.nan, "ci_high": np.nan}
    tail = 50 * (1 - confidence)
    low, high = np.percentile(boot, [tail, 100 - tail])
    return {"value": float(draws[0]), "ci_low": float(low), "ci_high": float(high)}


def _condition_order(condition: str) -> tuple[int, str, int]:
    name, severity = parse_condition(condition)
    return (0, "", 0) if name is None else (1, name, severity)


__all__ = [
    "CONDITION_STATS", "ROOD_BASE", "SCORE_METRICS", "SUMMARIES",
    "condition_summary", "parse_condition", "robustness_summary",
]
