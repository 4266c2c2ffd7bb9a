"""Calibrated confidence for confirmed models: conformal Dice lower bounds and risk control.

- `quality`: per-image quality score and image features from a soft prediction.
- `dice_bound`: split-conformal lower bounds on Dice, Mondrian by stratum (perturbation x severity).
- `risk`: conformal risk control of the pixel false-negative rate (MAPIE).
- `calibrate`: fit both on the calib split and measure coverage on the test split.
"""

from study.conformal.calibrate import coverage_table, fit_stratum, measure
from study.conformal.dice_bound import Calibration, StratumCalibration, conformal_quantile, lower_bound
from study.conformal.quality import image_noise, quality_score
from study.conformal.risk import fnr_threshold, false_negative_rate

__all__ = [
    "Calibration",
    "StratumCalibration",
    "conformal_quantile",
    "coverage_table",
    "fit_stratum",
    "false_negative_rate",
    "fnr_threshold",
    "image_noise",
    "lower_bound",
    "measure",
    "quality_score",
]
