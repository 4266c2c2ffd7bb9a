"""Conformal risk control (Angelopoulos et al. 2022) of the pixel false-negative rate.

A pixel is called foreground when its probability exceeds lambda; the per-image loss is the
share of true foreground pixels missed (FNR = 1 - recall). MAPIE's CRC picks the largest
lambda whose corrected calibration risk (n R(lambda) + 1) / (n + 1) is at most alpha, so that on
a new exchangeable image E[FNR] <= alpha. FNR is undefined without foreground: those images are
left out (MAPIE refuses them), which controls the risk over images that have foreground.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

LAMBDAS = np.round(np.arange(0.0, 1.0, 0.01), 2)  # candidate thresholds, MAPIE's default grid


def fnr_threshold(probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], *, alpha: float) -> float | None:
    """The risk-controlling threshold from calibration probabilities and masks (None: no foreground).

    Images are passed to MAPIE one at a time, so volumes of different shapes are fine and memory
    stays at one image x len(LAMBDAS).
    """
    from mapie.risk_control import SemanticSegmentationController

    kept = [(p, m) for p, m in zip(probs, masks) if np.any(m)]
    if not kept:
        return None
    controller = SemanticSegmentationController(
        predict_function=lambda X: np.stack([np.asarray(kept[int(i)][0], dtype=np.float64) for i in np.ravel(X)]),
        risk="recall",
        method="crc",
        target_level=1.0 - alpha,
        predict_params=LAMBDAS,
    )
    for i, (_, mask) in enumerate(kept):
        controller.compute_risks(np.array([[i]]), (np.asarray(mask) > 0).reshape(1, -1).astype(int))
    with warnings.catch_warnings():
        # "The risk cannot be controlled" when even lambda = 0 misses too much: MAPIE then
        # returns the smallest lambda, the most inclusive mask, which is what we want too.
        warnings.simplefilter("ignore", UserWarning)
        controller.compute_best_predict_param()
    return float(np.ravel(controller.best_predict_param)[0])


def false_negative_rate(prob: np.ndarray, mask: np.ndarray, *, threshold: float) -> float:
    """Share of foreground pixels of `mask` not above `threshold` in `prob` (NaN without foreground)."""
    truth = np.asarray(mask) > 0
    if not truth.any():
        return float("nan")
    return float(np.count_nonzero(truth & ~(np.asarray(prob) > threshold)) / np.count_nonzero(truth))
