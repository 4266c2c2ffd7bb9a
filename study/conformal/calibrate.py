"""Fit the conformal calibration of one model on its calib split; measure coverage on test.

The trainable calls `measure` for every (split, stratum) it predicts, `fit_stratum` on each calib
stratum, then `coverage_table` on the scored test images. Strata are the per_image `condition`
values: "clean" and "<perturbation>:<severity>".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from study.conformal.dice_bound import StratumCalibration, conformal_quantile
from study.conformal.quality import image_noise, quality_score
from study.conformal.risk import fnr_threshold
from study.data import Split, texture_disparity

# per_image.csv columns added by calibration (one row per test image and condition)
QUALITY = "quality_score"
BOUND = "dice_lower_bound"
COVERED = "covered"
FNR_AT_LAMBDA = "fnr_at_lambda"
NOISE = "noise_sigma"
TD_PRED = "td_pred"
BOUND_COLUMNS = (QUALITY, NOISE, TD_PRED, BOUND, COVERED, FNR_AT_LAMBDA)  # in per_image.csv order
COVERAGE_ALARM_P = 0.05  # one-sided binomial p below which a shortfall is not sampling noise


def measure(probs: Sequence[np.ndarray], split: Split, *, threshold: float) -> pd.DataFrame:
    """Per image: quality score, noise estimate and (2D texture data) TD of the predicted mask.

    TD uses the predicted mask because a new image has no other: calibrated ranges and
    `segstudy predict` must measure the same thing.
    """
    rows = []
    for i, prob in enumerate(probs):
        image = split.volume(i)[0]
        hard = prob[0] > threshold
        td = float("nan")
        if np.isfinite(split.td[i]) and 0 < hard.sum() < hard.size:
            td = texture_disparity(image[0], hard.astype(np.uint8))
        rows.append({QUALITY: quality_score(prob, threshold=threshold), NOISE: image_noise(image), TD_PRED: td})
    return pd.DataFrame(rows, columns=[QUALITY, NOISE, TD_PRED])


def fit_stratum(
    measures: pd.DataFrame,
    dice: np.ndarray,
    probs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    alpha: float,
    fnr_alpha: float,
) -> StratumCalibration:
    """Residual quantile, risk-controlling threshold and the ranges seen, for one calib stratum."""
    residuals = measures[QUALITY].to_numpy() - np.asarray(dice, dtype=float)
    q = conformal_quantile(residuals, alpha)
    td = measures[TD_PRED].dropna()
    return StratumCalibration(
        n=len(measures),
        quantile=q if np.isfinite(q) else None,
        fnr_threshold=fnr_threshold(probs, masks, alpha=fnr_alpha),
        score_range=_range(measures[QUALITY]),
        noise_range=_range(measures[NOISE]),
        td_range=_range(td) if len(td) else None,
    )


def coverage_table(per_image: pd.DataFrame, *, alpha: float, fnr_alpha: float) -> pd.DataFrame:
    """Per stratum of scored test images: measured coverage of the Dice bound and FNR vs targets.

    `exchangeability_warning` is set where coverage falls below 1 - alpha by more than sampling
    noise explains (one-sided exact binomial test, p < 0.05): calibration and test images of that
    stratum are then not exchangeable and the bound should not be trusted there.
    """
    rows = []
    for condition, group in per_image.groupby("condition", sort=True):
        covered = int(group[COVERED].sum())
        n = len(group)
        p = binomtest(covered, n, 1.0 - alpha, alternative="less").pvalue if n else float("nan")
        rows.append(
            {
                "condition": condition,
                "n": n,
                "target": 1.0 - alpha,
                "coverage": covered / n if n else float("nan"),
                "mean_bound": float(group[BOUND].mean()),
                "p_value": float(p),
                "exchangeability_warning": bool(p < COVERAGE_ALARM_P),
                "fnr_target": fnr_alpha,
                "fnr": float(group[FNR_AT_LAMBDA].mean()),
            }
        )
    return pd.DataFrame(rows)


def _range(values: pd.Series) -> tuple[float, float]:
    return (float(values.min()), float(values.max()))
