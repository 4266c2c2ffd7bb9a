"""Conformal Dice bounds and FNR risk control on data whose quality distribution is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from study.conformal import (
    Calibration,
    conformal_quantile,
    coverage_table,
    false_negative_rate,
    fnr_threshold,
    lower_bound,
    quality_score,
)
from study.conformal.calibrate import BOUND, COVERED, FNR_AT_LAMBDA
from study.conformal.risk import LAMBDAS
from study.data import Split
from study.errors import SegstudyError
from study.spec import StudySpec
from study.training.evaluation.calibrated import evaluate_with_bounds
from study.data.base import LevelData

ALPHA = 0.1


def test_conformal_quantile_takes_the_finite_sample_rank():
    r = np.array([0.5, 0.1, 0.4, 0.2, 0.3, 0.9, 0.8, 0.7, 0.6])  # n = 9: rank ceil(10 * 0.9) = 9
    assert conformal_quantile(r, 0.1) == 0.9
    assert conformal_quantile(r, 0.2) == 0.8  # rank ceil(10 * 0.8) = 8
    assert conformal_quantile(r[:8], 0.1) == math.inf  # 8 images cannot certify 90 %
    assert lower_bound(0.8, math.inf) == 0.0 and lower_bound(0.8, 0.1) == pytest.approx(0.7)
    assert lower_bound(0.8, -0.5) == 1.0  # clipped to a Dice


def _score_dice(rng: np.random.Generator, n: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Known quality distribution: Dice = score - |N(0, spread)| + N(0, spread / 4)."""
    score = rng.uniform(0.5, 1.0, n)
    dice = np.clip(score - np.abs(rng.normal(0, spread, n)) + rng.normal(0, spread / 4, n), 0, 1)
    return score, dice


def test_marginal_coverage_reaches_the_level_within_sampling_tolerance():
    rng = np.random.default_rng(0)
    n_cal, n_test, repeats = 50, 200, 400
    coverage = []
    for _ in range(repeats):
        s_cal, d_cal = _score_dice(rng, n_cal, 0.1)
        s_test, d_test = _score_dice(rng, n_test, 0.1)
        q = conformal_quantile(s_cal - d_cal, ALPHA)
        coverage.append(np.mean(d_test >= np.clip(s_test - q, 0, 1)))
    mean = float(np.mean(coverage))
    # Theory: 1 - alpha <= E[coverage] <= 1 - alpha + 1 / (n + 1); the mean of 400 repeats has a
    # standard error below 0.003.
    assert 1 - ALPHA - 0.01 <= mean <= 1 - ALPHA + 1 / (n_cal + 1) + 0.01
    assert np.std(coverage) > 0  # not vacuous: the bound is tight enough to miss sometimes


def test_mondrian_calibration_covers_each_stratum_where_pooled_does_not():
    rng = np.random.default_rng(1)
    strata = {"clean": 0.02, "gaussian_noise:5": 0.2}  # the noisy stratum's scores are far more optimistic
    pooled_cov, mondrian_cov = {}, {}
    cal = {k: _score_dice(rng, 400, spread) for k, spread in strata.items()}
    test = {k: _score_dice(rng, 4000, spread) for k, spread in strata.items()}
    q_pooled = conformal_quantile(np.concatenate([s - d for s, d in cal.values()]), ALPHA)
    for k in strata:
        s, d = test[k]
        q_own = conformal_quantile(cal[k][0] - cal[k][1], ALPHA)
        pooled_cov[k] = np.mean(d >= np.clip(s - q_pooled, 0, 1))
        mondrian_cov[k] = np.mean(d >= np.clip(s - q_own, 0, 1))
    assert pooled_cov["gaussian_noise:5"] < 1 - ALPHA - 0.05  # marginal validity hides a failing stratum
    for k in strata:
        assert mondrian_cov[k] >= 1 - ALPHA - 0.02, k


def _soft_predictions(rng: np.random.Generator, n: int, size: int = 24) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Discs and probability maps that are right on average but blurred by per-image noise."""
    yy, xx = np.mgrid[:size, :size]
    probs, masks = [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(8, 16), rng.uniform(8, 16), rng.uniform(3, 7)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)[None]
        logits = 4.0 * (2.0 * mask - 1.0) + rng.normal(0, rng.uniform(1.0, 5.0), mask.shape)
        probs.append(1.0 / (1.0 + np.exp(-logits)))
        masks.append(mask)
    return probs, masks


def test_fnr_threshold_bounds_the_fnr_on_held_out_images():
    rng = np.random.default_rng(2)
    FNR_ALPHA = 0.05  # noqa: N806 - below the 0.5 threshold's FNR on this data
    probs, masks = _soft_predictions(rng, 100)
    lam = fnr_threshold(probs, masks, alpha=FNR_ALPHA)
    # The CRC rule computed by hand: the largest lambda with (n R(lambda) + 1) / (n + 1) <= alpha.
    risks = np.array([[false_negative_rate(p, m, threshold=t) for t in LAMBDAS] for p, m in zip(probs, masks)])
    n = len(probs)
    ok = (n * risks.mean(axis=0) + 1) / (n + 1) <= FNR_ALPHA
    assert lam == pytest.approx(LAMBDAS[ok].max())
    held_probs, held_masks = _soft_predictions(rng, 2000)
    held = np.mean([false_negative_rate(p, m, threshold=lam) for p, m in zip(held_probs, held_masks)])
    assert held <= FNR_ALPHA + 0.01  # 2000 images: standard error ~0.002
    assert held > FNR_ALPHA / 3  # and not vacuous: the threshold is not simply 0
    at_half = np.mean([false_negative_rate(p, m, threshold=0.5) for p, m in zip(held_probs, held_masks)])
    assert at_half > FNR_ALPHA  # the plain threshold misses more than the target: control was needed


def test_fnr_threshold_ignores_images_without_foreground():
    rng = np.random.default_rng(3)
    probs, masks = _soft_predictions(rng, 30)
    with_empty = fnr_threshold([*probs, np.full_like(probs[0], 0.9)], [*masks, np.zeros_like(masks[0])], alpha=ALPHA)
    assert with_empty == fnr_threshold(probs, masks, alpha=ALPHA)
    assert fnr_threshold([probs[0]], [np.zeros_like(masks[0])], alpha=ALPHA) is None
    assert math.isnan(false_negative_rate(probs[0], np.zeros_like(masks[0]), threshold=0.5))


def test_quality_score_rewards_confident_predictions():
    confident = np.array([[0.0, 0.02, 0.98, 1.0]])
    hesitant = np.array([[0.3, 0.45, 0.55, 0.7]])
    assert quality_score(confident, threshold=0.5) > 0.98
    assert quality_score(hesitant, threshold=0.5) < 0.75
    assert quality_score(np.zeros((1, 4)), threshold=0.5) == 1.0  # confident background


def _level(rng: np.random.Generator, n: int, size: int = 24) -> Split:
    _, masks = _soft_predictions(rng, n, size)
    images = np.stack([(0.3 + 0.4 * m + rng.normal(0, 0.05, m.shape)).astype(np.float32) for m in masks])
    ids = tuple(f"img{i:04d}" for i in range(n))
    return Split(images, np.stack(masks), ids, np.full(n, np.nan), (1.0, 1.0))


def test_evaluate_with_bounds_covers_every_stratum_of_exchangeable_data():
    rng = np.random.default_rng(4)
    level = LevelData(train=_level(rng, 4), val=_level(rng, 4), calib=_level(rng, 200), test=_level(rng, 400))
    spec = StudySpec.model_validate(
        {
            "name": "cov",
            "data": {"dataset": "synthetic2d"},
            "factors": {"architecture": ["unet"], "alpha": [0.5]},
            "evaluation": {"perturbations": ["gaussian_noise"], "severities": [2]},
            "conformal": {"alpha": 0.2, "fnr_alpha": 0.1},
        }
    )
    noise = np.random.default_rng(5)

    def predict(split: Split) -> list[np.ndarray]:
        # A stand-in model whose confidence drops with image noise, as a real one's does.
        out = []
        for i in range(len(split)):
            image, _ = split.volume(i)
            logits = 12.0 * (image - 0.5) + noise.normal(0, 2.0, image.shape)
            out.append(1.0 / (1.0 + np.exp(-logits)))
        return out

    result = evaluate_with_bounds(predict, level, spec)
    table = result.per_image
    assert set(table["condition"]) == {"clean", "gaussian_noise:2"} and len(table) == 800
    assert (table[BOUND] >= 0).all() and (table[BOUND] <= 1).all() and (table[BOUND] > 0).any()
    assert list(table[COVERED]) == list(table["dice"] >= table[BOUND] - 1e-12)
    cov = result.coverage.set_index("condition")
    assert list(cov.index) == ["clean", "gaussian_noise:2"] and (cov["n"] == 400).all()
    for condition, row in cov.iterrows():
        assert row["coverage"] >= 0.8 - 0.05, condition  # 400 test images: standard error 0.02
        assert not row["exchangeability_warning"], condition
        assert row["fnr"] <= 0.1 + 0.03, condition
    strata = result.calibration.strata
    assert set(strata) == {"clean", "gaussian_noise:2"} and strata["clean"].n == 200
    assert strata["gaussian_noise:2"].noise_range[1] > strata["clean"].noise_range[1]  # noise measured


def test_coverage_table_warns_when_a_stratum_falls_short():
    per_image = pd.DataFrame(
        {
            "condition": ["clean"] * 100 + ["blur:5"] * 100,
            COVERED: [True] * 92 + [False] * 8 + [True] * 60 + [False] * 40,
            BOUND: 0.5,
            FNR_AT_LAMBDA: 0.05,
        }
    )
    table = coverage_table(per_image, alpha=0.1, fnr_alpha=0.1).set_index("condition")
    assert table.loc["clean", "coverage"] == 0.92 and not table.loc["clean", "exchangeability_warning"]
    assert table.loc["blur:5", "coverage"] == 0.6 and table.loc["blur:5", "exchangeability_warning"]
    assert table.loc["blur:5", "p_value"] < 1e-6


def test_calibration_json_round_trip_and_errors():
    cal = Calibration.model_validate(
        {
            "alpha": 0.1,
            "fnr_alpha": 0.1,
            "threshold": 0.5,
            "strata": {
                "clean": {
                    "n": 9, "quantile": 0.1, "fnr_threshold": 0.3, "score_range": [0.5, 1.0], "noise_range": [0.0, 0.1],
                }
            },
        }
    )
    again = Calibration.from_json(cal.model_dump_json(), where="calibration.json")
    assert again == cal and again.bound(0.9, "clean") == pytest.approx(0.8) and again.level == pytest.approx(0.9)
    with pytest.raises(SegstudyError, match="calibration.json: not a segstudy calibration"):
        Calibration.from_json('{"alpha": 2}', where="calibration.json")
    with pytest.raises(SegstudyError, match="no stratum 'blur:1'; accepted: clean"):
        cal.bound(0.9, "blur:1")


def test_study_coverage_summary_pools_seeds_and_names_short_strata():
    from analysis.stats.describe.coverage import coverage_summary, shortfalls

    rows = []
    for arm, hit_rate in (("unet", 0.95), ("noskip_unet", 0.5)):
        for seed in (0, 1):
            for i in range(50):
                rows.append({"alpha": 0.2, "architecture": arm, "seed": seed, "condition": "clean",
                             COVERED: i < hit_rate * 50, BOUND: 0.4, FNR_AT_LAMBDA: 0.08, "dice": 0.5})
    summary = coverage_summary(pd.DataFrame(rows), arm="architecture", within=["alpha"], alpha=0.1, fnr_alpha=0.1)
    table = summary.set_index("architecture")
    assert table.loc["unet", "n"] == 100 and table.loc["unet", "coverage"] == pytest.approx(0.96)
    assert not table.loc["unet", "exchangeability_warning"] and table.loc["noskip_unet", "exchangeability_warning"]
    lines = shortfalls(summary, arm="architecture", within=["alpha"])
    assert len(lines) == 1 and lines[0].startswith("noskip_unet (alpha=0.2), clean: coverage 0.50 < target 0.90")
    assert coverage_summary(pd.DataFrame(rows).drop(columns=[COVERED]), arm="architecture", within=[], alpha=0.1,
                            fnr_alpha=0.1) is None
