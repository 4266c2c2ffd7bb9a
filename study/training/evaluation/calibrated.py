"""The test stage of a confirm trial: calibrate on the calib split, then score and bound the test split.

Both splits go through the same conditions (clean and every perturbation x severity), so each
test stratum is bounded by its own calibration stratum (Mondrian) and coverage is measured per
stratum rather than assumed. The shifted test splits (`evaluation.shift`) have no calibration
stratum of their own: they are bounded with the clean one, as a deployed model calibrated where it
was trained would be, so their measured coverage shows how far that calibration carries.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study import metrics_names as M
from study.conformal import Calibration, coverage_table, false_negative_rate, fit_stratum, lower_bound, measure
from study.conformal.calibrate import BOUND, COVERED, FNR_AT_LAMBDA, QUALITY
from study.data import LevelData
from study.spec import StudySpec
from study.training.evaluation.conditions import Predict, shifted_variants, variants
from study.training.evaluation.evaluate import dice_per_image, evaluate_split


@dataclass
class BoundedResult:
    per_image: pd.DataFrame  # PER_IMAGE_COLUMNS + perturbation params + calibration columns
    calibration: Calibration
    coverage: pd.DataFrame  # one row per stratum (coverage_table)


def calibrate_model(predict: Predict, level: LevelData, spec: StudySpec) -> Calibration:
    """Per stratum of the calib split: residual quantile, FNR threshold, ranges seen."""
    threshold, cf = spec.evaluation.threshold, spec.conformal
    strata = {}
    for condition, split, _ in variants(level.calib, spec):
        probs = predict(split)
        strata[condition] = fit_stratum(
            measure(probs, split, threshold=threshold),
            dice_per_image(probs, split, threshold=threshold),
            probs,
            [split.volume(i)[1] for i in range(len(split))],
            alpha=cf.alpha,
            fnr_alpha=cf.fnr_alpha,
        )
    return Calibration(alpha=cf.alpha, fnr_alpha=cf.fnr_alpha, threshold=threshold, strata=strata)


def evaluate_with_bounds(predict: Predict, level: LevelData, spec: StudySpec) -> BoundedResult:
    """Calibrate, then score every test image under every condition, and every shifted test split,
    with its Dice bound (inference only: nothing is calibrated on shifted data)."""
    ev = spec.evaluation
    calibration = calibrate_model(predict, level, spec)
    frames = []
    for condition, split, params in itertools.chain(variants(level.test, spec), shifted_variants(level)):  # lazily
        probs = predict(split)
        frame = evaluate_split(probs, split, threshold=ev.threshold, nsd_tolerance=ev.nsd_tolerance, condition=condition)
        frame[M.PERTURBATION_PARAMS] = params
        measures = measure(probs, split, threshold=ev.threshold)
        stratum = calibration.stratum(M.CLEAN if M.is_shift(condition) else condition)
        for column in measures.columns:
            frame[column] = measures[column].to_numpy()
        frame[BOUND] = [lower_bound(s, stratum.q) for s in measures[QUALITY]]
        frame[COVERED] = frame["dice"].to_numpy() >= frame[BOUND].to_numpy() - 1e-12
        frame[FNR_AT_LAMBDA] = [
            false_negative_rate(p, split.volume(i)[1], threshold=stratum.fnr_threshold)
            if stratum.fnr_threshold is not None
            else np.nan
            for i, p in enumerate(probs)
        ]
        frames.append(frame)
    per_image = pd.concat(frames, ignore_index=True)
    coverage = coverage_table(per_image, alpha=spec.conformal.alpha, fnr_alpha=spec.conformal.fnr_alpha)
    return BoundedResult(per_image, calibration, coverage)


def coverage_metrics(coverage: pd.DataFrame) -> dict[str, float]:
    """Coverage and FNR per stratum as metrics, e.g. coverage/clean, coverage/gaussian_noise/3."""
    out: dict[str, float] = {}
    for row in coverage.itertuples():
        suffix = M.condition_path(str(row.condition))
        out[f"{M.COVERAGE_PREFIX}{suffix}"] = float(row.coverage)
        out[f"{M.FNR_PREFIX}{suffix}"] = float(row.fnr)
    return out
