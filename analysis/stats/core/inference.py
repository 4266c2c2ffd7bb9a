"""One inference for every comparison: training seeds are the replicates, test images repeated measures.

A study's per-image scores have two sources of variation that a comparison must both carry: the
training run (seed: initialisation, batch order; Bouthillier et al., "Accounting for Variance in
Machine Learning Benchmarks", MLSys 2021) and the test image. Every cell of a study is scored on
the same test images, so images are crossed with cells and seeds are nested in cells. The model is

    y[c, s, i] = mu[c] + a[c, s] + b[i] + g[c, i] + e[c, s, i]

with a seed effect ``a`` (variance per cell), an image effect ``b`` shared by every cell, an image x
cell interaction ``g`` and noise ``e``. A comparison is a contrast ``sum_c w_c mu_c`` (arm minus
reference: w = (+1, -1); how the skip effect changes with complexity: w = (+1, -1, -1, +1); a
cell's own mean: w = (1,)). Its estimate is the same contrast of the cell means. Its variance is
estimated by the moments of the two ways the data can be resampled (docs/ARCHITECTURE.md 5):

* over seeds, per cell: ``w_c^2 var_s(m[c, s]) / n_c`` with ``m[c, s]`` the seed's mean over images,
  on ``n_c - 1`` degrees of freedom; it carries the seed effect (and the noise of each seed's mean);
* over images: ``var_i(d_i) / n_i`` with ``d_i = sum_c w_c mean_s y[c, s, i]``, on ``n_i - 1`` degrees of
  freedom; it carries the image x cell interaction (the image effect cancels in any contrast whose
  weights sum to 0, and stays in a single cell's mean, which is meant to generalise to new images).

The noise term enters both, so the variance is slightly conservative. The interval and the p-value
are the same Student-t statement, with Welch-Satterthwaite degrees of freedom for the sum of the
components: ``estimate +- t_{df, 0.975} se`` and ``p = 2 P(T_df > |estimate / se|)``. An interval
contains 0 exactly when p >= 0.05: they never disagree. With 3 seeds per cell the seed component has
few degrees of freedom, so the intervals are wide where training runs disagree, which is the honest
answer (more seeds narrow them; treating images as replicates would not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ESTIMATE_COLUMNS = ("estimate", "ci_low", "ci_high", "p", "se", "df", "n_seeds", "n_images")


@dataclass(frozen=True)
class Estimate:
    """A contrast's estimate with its interval and p-value from one t statement.

    Attributes:
        estimate: the contrast of the cell means.
        ci_low, ci_high: the `confidence` interval (NaN when a cell has fewer than 2 seeds).
        p: two-sided p-value of "the contrast is 0" (NaN likewise).
        se: standard error; df: Welch-Satterthwaite degrees of freedom.
        n_seeds: the fewest seeds of any cell in the contrast; n_images: images used.
        seed_variance, image_variance: the two parts of se**2 (what more seeds would shrink, and
            what they would not), for projecting the interval to more seeds.
    """

    estimate: float
    ci_low: float
    ci_high: float
    p: float
    se: float
    df: float
    n_seeds: int
    n_images: int
    seed_variance: float = float("nan")  # the between-seed part of se**2 (sum over cells of w^2 var / n)
    image_variance: float = float("nan")  # the between-image part of se**2

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def at(self, confidence: float) -> Estimate:
        """The same statement with its interval at another level (p unchanged); a multiple-testing
        procedure gives each statement the level that matches its decision
        (`analysis.stats.core.multiplicity`)."""
        if not (np.isfinite(self.se) and np.isfinite(confidence)):
            return self
        half = float(stats.t.ppf(0.5 + confidence / 2, self.df)) * self.se
        return replace(self, ci_low=self.estimate - half, ci_high=self.estimate + half)

    @property
    def significant(self) -> bool:
        """p < 1 - confidence, i.e. the interval excludes 0."""
        return bool(np.isfinite(self.p) and self.p < 1 - CONFIDENCE)


def contrast(cells: Sequence[np.ndarray], weights: Sequence[float], *, confidence: float = CONFIDENCE) -> Estimate:
    """Estimate ``sum_c w_c mean(cells[c])`` with seeds as replicates and images as repeated measures.

    Args:
        cells: one seeds x images array per cell, the columns the same images in the same order
            for every cell (NaN: not scored). Images missing from any cell are left out.
        weights: one weight per cell.
        confidence: the interval's coverage.

    Returns:
        The `Estimate`; interval, se and p are NaN when a cell has fewer than 2 seeds (a single
        training run says nothing about how much training runs differ), or fewer than 2 images.

    Raises:
        ValueError: cells and weights differ in number, or cells differ in their number of images.

    Example:
        >>> a = np.array([[0.90, 0.80], [0.92, 0.84], [0.88, 0.82]])
        >>> b = a - 0.05
        >>> round(contrast([a, b], [1, -1]).estimate, 3)
        0.05
    """
    arrays = [np.atleast_2d(np.asarray(c, dtype=float)) for c in cells]
    w = np.asarray(weights, dtype=float)
    if len(arrays) != len(w) or not arrays:
        raise ValueError(f"contrast: {len(arrays)} cells but {len(w)} weights")
    if len({a.shape[1] for a in arrays}) != 1:
        raise ValueError(f"contrast: cells differ in their images: {[a.shape[1] for a in arrays]}")
    # Per cell: drop seeds with no score at all, then keep the images every remaining seed of every cell scored.
    arrays = [a[~np.isnan(a).all(axis=1)] for a in arrays]
    if any(a.size == 0 for a in arrays):
        return _undefined(arrays, n_images=0)
    known = np.logical_and.reduce([~np.isnan(a).any(axis=0) for a in arrays])
    arrays = [a[:, known] for a in arrays]
    n_seeds = np.array([a.shape[0] for a in arrays], dtype=float)
    n_images = int(known.sum())
    seed_means = [a.mean(axis=1) for a in arrays]
    estimate = float(sum(wc * m.mean() for wc, m in zip(w, seed_means, strict=True)))
    if n_seeds.min() < 2 or n_images < 2:
        return _undefined(arrays, n_images=n_images, estimate=estimate)
    seed_parts = np.array([wc**2 * m.var(ddof=1) / len(m) for wc, m in zip(w, seed_means, strict=True)])
    per_image = sum(wc * a.mean(axis=0) for wc, a in zip(w, arrays, strict=True))
    image_part = float(np.var(per_image, ddof=1) / n_images)
    variance = float(seed_parts.sum() + image_part)
    if variance <= 0:  # identical scores everywhere: no evidence of any difference beyond the estimate itself
        exact = 1.0 if estimate == 0 else 0.0
        return Estimate(estimate, estimate, estimate, exact, 0.0, np.inf, int(n_seeds.min()), n_images, 0.0, 0.0)
    # Welch-Satterthwaite: df of a sum of independent scaled chi-squares.
    denominator = float((seed_parts**2 / (n_seeds - 1)).sum() + image_part**2 / (n_images - 1))
    df = variance**2 / denominator if denominator > 0 else np.inf
    se = float(np.sqrt(variance))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    return Estimate(estimate, estimate - half, estimate + half, min(p, 1.0), se, float(df), int(n_seeds.min()), n_images,
                    float(seed_parts.sum()), image_part)


def combine(estimates: Sequence[Estimate], *, confidence: float = CONFIDENCE) -> Estimate:
    """The sum of contrasts over disjoint sets of test images, e.g. a difference between levels of a
    factor whose levels are other images (a site): each part pairs its cells on its own images,
    no image is shared across parts, so their image components are independent.

    The estimate is the sum; the variance the sum of the parts' (their seed components are
    treated as independent, as `contrast` treats its cells: conservative where the same models
    score every part); one t statement with Welch-Satterthwaite degrees of freedom over the parts.

    Example:
        >>> a = contrast([np.array([[0.9, 0.8], [0.92, 0.84], [0.88, 0.82]])], [1])
        >>> round(combine([a, a]).estimate, 3)
        1.72
    """
    est = float(sum(e.estimate for e in estimates))
    seeds = min((e.n_seeds for e in estimates), default=0)
    images = int(sum(e.n_images for e in estimates))
    if not estimates or any(not np.isfinite(e.se) for e in estimates):
        nan = float("nan")
        return Estimate(est, nan, nan, nan, nan, nan, seeds, images)
    variance = float(sum(e.se**2 for e in estimates))
    parts = (float(sum(e.seed_variance for e in estimates)), float(sum(e.image_variance for e in estimates)))
    if variance <= 0:
        exact = 1.0 if est == 0 else 0.0
        return Estimate(est, est, est, exact, 0.0, np.inf, seeds, images, *parts)
    denominator = float(sum(e.se**4 / e.df for e in estimates if np.isfinite(e.df) and e.df > 0))
    df = variance**2 / denominator if denominator > 0 else np.inf
    se = float(np.sqrt(variance))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(est) / se, df))
    return Estimate(est, est - half, est + half, min(p, 1.0), se, float(df), seeds, images, *parts)


def _undefined(arrays: Sequence[np.ndarray], *, n_images: int, estimate: float = float("nan")) -> Estimate:
    seeds = min((a.shape[0] for a in arrays), default=0)
    nan = float("nan")
    return Estimate(estimate, nan, nan, nan, nan, nan, int(seeds), n_images)


__all__ = ["CONFIDENCE", "ESTIMATE_COLUMNS", "Estimate", "combine", "contrast"]
