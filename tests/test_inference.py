"""analysis.stats.core.inference: one interval and one p-value per comparison, seeds the replicates.

The simulations draw whole studies from the model the inference assumes (a seed effect per
training run, an image effect shared by the arms, an arm x image interaction and noise) and count
how often it calls a difference: with none, at most 7% of 400 studies; with one, the share found
is printed (`pytest -s`), so the price of 3 seeds is on record.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats.core.contrasts import frame_contrast
from analysis.stats.statements.findings import findings
from analysis.stats.core.inference import contrast

N_STUDIES = 400


def simulated_cells(
    rng: np.random.Generator,
    means: list[float],
    *,
    seeds: int = 3,
    images: int = 20,
    seed_sd: float = 0.05,
    image_sd: float = 0.10,
    interaction_sd: float = 0.03,
    noise_sd: float = 0.03,
) -> list[np.ndarray]:
    """One seeds x images array per cell, every cell scored on the same images."""
    image = rng.normal(0.0, image_sd, images)
    cells = []
    for mean in means:
        seed = rng.normal(0.0, seed_sd, (seeds, 1))
        cells.append(mean + seed + image + rng.normal(0.0, interaction_sd, images) + rng.normal(0.0, noise_sd, (seeds, images)))
    return cells


def rejection_rate(delta: float, *, seeds: int, seed_sd: float, rng: np.random.Generator) -> float:
    hits = [
        contrast(simulated_cells(rng, [0.8 + delta, 0.8], seeds=seeds, seed_sd=seed_sd), [1.0, -1.0]).p < 0.05
        for _ in range(N_STUDIES)
    ]
    return float(np.mean(hits))


@pytest.mark.parametrize("seed_sd", [0.02, 0.08])
def test_null_rate_at_most_7_percent_and_power_printed(seed_sd: float) -> None:
    rng = np.random.default_rng(20261202)
    null = rejection_rate(0.0, seeds=3, seed_sd=seed_sd, rng=rng)
    power = {seeds: rejection_rate(0.05, seeds=seeds, seed_sd=seed_sd, rng=rng) for seeds in (3, 10)}
    print(
        f"\nbetween-seed sd {seed_sd}: p < 0.05 in {null:.1%} of {N_STUDIES} studies with no difference; "
        f"a true +0.05 Dice found in {power[3]:.1%} with 3 seeds, {power[10]:.1%} with 10"
    )
    assert null <= 0.07
    assert power[10] > power[3] > null  # more seeds find more


def test_difference_of_differences_null_rate() -> None:
    """(a - b at one level) - (a - b at another): the contrast the complexity claim uses."""
    rng = np.random.default_rng(7)
    hits = [
        contrast(simulated_cells(rng, [0.7, 0.75, 0.9, 0.95]), [1.0, -1.0, -1.0, 1.0]).p < 0.05 for _ in range(N_STUDIES)
    ]
    assert np.mean(hits) <= 0.07


def test_interval_and_p_value_never_disagree() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        est = contrast(simulated_cells(rng, [0.8 + rng.normal(0, 0.05), 0.8]), [1.0, -1.0])
        contains_zero = est.ci_low <= 0.0 <= est.ci_high
        assert contains_zero == (est.p >= 0.05), est


def test_known_values_of_a_two_cell_contrast() -> None:
    a = np.array([[0.9, 0.7], [0.8, 0.6], [1.0, 0.8]])  # seed means 0.8, 0.7, 0.9
    b = np.array([[0.6, 0.6], [0.6, 0.6]])  # no spread at all
    est = contrast([a, b], [1.0, -1.0])
    assert est.estimate == pytest.approx(0.2)
    seed_part = np.var([0.8, 0.7, 0.9], ddof=1) / 3  # b contributes 0
    image_part = np.var([0.9 - 0.6, 0.7 - 0.6], ddof=1) / 2
    se = math.sqrt(seed_part + image_part)
    df = (seed_part + image_part) ** 2 / (seed_part**2 / 2 + image_part**2 / 1)
    assert est.se == pytest.approx(se) and est.df == pytest.approx(df)
    assert est.p == pytest.approx(2 * stats.t.sf(0.2 / se, df))
    assert (est.n_seeds, est.n_images) == (2, 2)


def test_one_seed_gives_no_interval_and_missing_images_are_left_out() -> None:
    one = contrast([np.array([[0.9, 0.8]]), np.array([[0.7, 0.6], [0.8, 0.7]])], [1.0, -1.0])
    assert one.estimate == pytest.approx(0.85 - 0.7)  # the estimate stands; its uncertainty cannot be told
    assert math.isnan(one.p) and math.isnan(one.ci_low) and one.n_seeds == 1
    gap = np.array([[0.9, np.nan, 0.7], [0.8, 0.5, 0.6]])
    est = contrast([gap, gap - 0.1], [1.0, -1.0])
    assert est.n_images == 2 and est.estimate == pytest.approx(0.1)


def test_findings_lines_come_from_the_same_contrast() -> None:
    rng = np.random.default_rng(11)
    rows = []
    for alpha, means in ((0.1, (0.95, 0.94)), (0.9, (0.70, 0.80))):
        cells = simulated_cells(rng, list(means), seed_sd=0.06)
        for arm, cell in zip(("noskip_unet", "unet"), cells, strict=True):
            for seed in range(cell.shape[0]):
                for image in range(cell.shape[1]):
                    rows.append({"architecture": arm, "alpha": alpha, "seed": seed, "image_id": f"img{image}",
                                 "condition": "clean", "dice": cell[seed, image], "run_id": f"{arm}{alpha}{seed}"})
    per_image = pd.DataFrame(rows)
    trials = pd.DataFrame(columns=["run_id", "cell", "seed", "learned", "learning_issue"])
    table = findings(per_image, trials, levels=["alpha"]).set_index("level")
    hard = table.loc["alpha 0.9"]
    est = frame_contrast(per_image[per_image["alpha"] == 0.9], [({"architecture": "noskip_unet"}, 1.0), ({"architecture": "unet"}, -1.0)])
    # The findings are one exploratory family: the interval is the same t statement at the level
    # that matches its false-discovery-rate decision (here 2 findings: 1 - R * 0.05 / 2).
    at = est.at(hard["confidence"])
    assert (hard["diff"], hard["ci_low"], hard["ci_high"], hard["p"]) == pytest.approx((est.estimate, at.ci_low, at.ci_high, est.p))
    assert hard["confidence"] in (pytest.approx(1 - 0.05 / 2), pytest.approx(1 - 0.05))
    assert f"[{at.ci_low:+.3f}, {at.ci_high:+.3f}]" in hard["line"] and "3 seeds x 20 images" in hard["line"]
    assert "Benjamini-Hochberg p" in hard["line"] and hard["line"].count("resolved") == 1
    for row in table.itertuples():
        assert (row.ci_low <= 0 <= row.ci_high) == (not row.resolved) == (row.p_adjusted >= 0.05)
