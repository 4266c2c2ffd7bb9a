"""analysis.stats.describe.robustness, analysis.stats.statements.pairwise, analysis.plots.critical_difference: synthetic per-image tables with known answers."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats.describe.robustness import condition_summary, parse_condition, robustness_summary
from analysis.stats.core.frames import resolve_within
from analysis.stats.core.multiplicity import fdr_decisions, holm_decisions
from analysis.stats.statements.pairwise import mean_ranks, pairwise_p_matrix, pairwise_tests
from analysis.plots.critical_difference import plot_critical_difference
from study.errors import SegstudyError

NOISE = "gaussian_noise"
# Mean Dice at severities 0 (clean) .. 5; deliberately not monotone, so the worst case is severity 4.
UNET = (0.90, 0.85, 0.70, 0.60, 0.30, 0.40)
NOSKIP = tuple(m - 0.10 for m in UNET)  # 0.1 worse on every image, condition and seed
OFFSETS = (-0.09, -0.03, 0.03, 0.09)  # per-image spread around the mean; sums to 0


def _conditions() -> list[str]:
    return ["clean", *(f"{NOISE}:{s}" for s in range(1, 6))]


def _frame(
    curves: dict[str, tuple[float, ...]], *, seeds: int = 3, offsets: tuple[float, ...] = OFFSETS
) -> pd.DataFrame:
    """One row per (arm, seed, image, condition): dice = the curve's mean + the image's offset."""
    rows = [
        {"run_id": f"{arm}-{seed}", "phase": "confirm", "seed": seed, "architecture": arm,
         "image_id": f"img{i}", "condition": condition, "dice": mean + offset}
        for arm, curve in curves.items()
        for seed in range(seeds)
        for i, offset in enumerate(offsets)
        for condition, mean in zip(_conditions(), curve, strict=True)
    ]
    return pd.DataFrame(rows)


def _pick(table: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.logical_and.reduce([table[k] == v for k, v in where.items()])
    found = table[mask]
    assert len(found) == 1, found
    return found.iloc[0]


# ---- conditions -----------------------------------------------------------------------------------


def test_parse_condition() -> None:
    assert parse_condition("clean") == (None, 0)
    assert parse_condition("gaussian_noise:3") == ("gaussian_noise", 3)
    assert parse_condition("speckle:5") == ("speckle", 5)
    for bad in ("gaussian_noise", "noise:x", "noise:-1", ":3"):
        with pytest.raises(SegstudyError, match="accepted forms"):
            parse_condition(bad)


# ---- robustness summaries ---------------------------------------------------------------------------


def test_rood_auc_worst_case_on_hand_computed_numbers() -> None:
    table = robustness_summary(_frame({"unet": UNET}), n_boot=0)
    row = lambda name: _pick(table, architecture="unet", perturbation=NOISE, summary=name)  # noqa: E731
    # w_s = (2/3)^s = 162/243, 108/243, 72/243, 48/243, 32/243; sum w = 422/243.
    # sum w m = (0.85*162 + 0.7*108 + 0.6*72 + 0.3*48 + 0.4*32)/243 = 283.7/243.
    assert row("rood_overall")["value"] == pytest.approx((0.9 * 243 + 283.7) / (243 + 422), abs=1e-12)
    # sum w (clean - m) = (0.05*162 + 0.2*108 + 0.3*72 + 0.6*48 + 0.5*32)/243 = 96.1/243.
    assert row("degradation")["value"] == pytest.approx(96.1 / 422, abs=1e-12)
    # Trapezoids: 0.875 + 0.775 + 0.65 + 0.45 + 0.35 = 3.1 over a range of 5 severities.
    assert row("auc")["value"] == pytest.approx(0.62, abs=1e-12)
    assert row("worst_case")["value"] == pytest.approx(0.30, abs=1e-12)
    assert math.isnan(row("corruption_error")["value"])  # no reference arm given
    assert row("auc")["n_images"] == 4 and row("auc")["n_seeds"] == 3
    assert math.isnan(row("auc")["ci_low"])  # n_boot=0: no interval


def test_failure_rate_and_condition_means() -> None:
    per_image = _frame({"unet": UNET})
    default = condition_summary(per_image, n_boot=0)
    strict = condition_summary(per_image, tau=0.6, n_boot=0)
    rate = lambda t, c: _pick(t, condition=c, statistic="failure_rate")["value"]  # noqa: E731
    # Severity 3 images score 0.51, 0.57, 0.63, 0.69; severity 4: 0.21 .. 0.39; severity 5: 0.31 .. 0.49.
    assert [rate(default, f"{NOISE}:{s}") for s in range(1, 6)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert rate(strict, f"{NOISE}:3") == 0.5
    assert rate(default, "clean") == 0.0
    mean = _pick(default, condition=f"{NOISE}:2", statistic="mean")
    assert mean["value"] == pytest.approx(0.70) and mean["severity"] == 2 and mean["perturbation"] == NOISE
    assert list(default["condition"].unique()) == _conditions()  # clean first, then by severity


def test_corruption_error_and_paired_differences() -> None:
    per_image = _frame({"unet": UNET, "noskip": NOSKIP})
    table = robustness_summary(per_image, reference="unet", n_boot=200, seed=3)
    ce = _pick(table, architecture="noskip", summary="corruption_error")
    # Errors 1 - m over severities 1..5: unet 0.15+0.3+0.4+0.7+0.6 = 2.15, noskip 2.65.
    assert ce["value"] == pytest.approx(2.65 / 2.15, abs=1e-12)
    assert _pick(table, architecture="unet", summary="corruption_error")["value"] == pytest.approx(1.0)
    # noskip is 0.1 lower on every image: every paired draw sees the same -0.1, so the CI collapses.
    overall = _pick(table, architecture="noskip", summary="rood_overall")
    assert overall["diff_vs_reference"] == pytest.approx(-0.1, abs=1e-12)
    assert overall["diff_ci_low"] == pytest.approx(-0.1, abs=1e-12)
    assert overall["diff_ci_high"] == pytest.approx(-0.1, abs=1e-12)
    assert overall["ci_high"] - overall["ci_low"] > 0.01  # while the level itself varies over draws
    degradation = _pick(table, architecture="noskip", summary="degradation")
    assert degradation["diff_vs_reference"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(SegstudyError, match="did you mean 'unet'"):
        robustness_summary(per_image, reference="unte", n_boot=0)


def test_bootstrap_ci_contains_true_mean_and_shrinks_with_more_images() -> None:
    rng = np.random.default_rng(7)
    widths = {}
    for n_images in (20, 200):
        offsets = tuple(rng.normal(0.0, 0.1, size=n_images))
        per_image = _frame({"unet": UNET}, offsets=offsets)
        seed_shift = per_image["seed"].map({0: -0.01, 1: 0.0, 2: 0.01})  # seed effects that cancel
        per_image["dice"] += seed_shift
        per_image = per_image[per_image["condition"] == "clean"]
        row = _pick(condition_summary(per_image, n_boot=400, seed=0), statistic="mean")
        true_mean = 0.9 + float(np.mean(offsets))
        assert row["ci_low"] < true_mean < row["ci_high"]
        assert row["ci_low"] < 0.9 < row["ci_high"]  # the generating mean, too
        widths[n_images] = row["ci_high"] - row["ci_low"]
    assert widths[200] < 0.5 * widths[20]
    again = condition_summary(per_image, n_boot=400, seed=0)
    assert again.equals(condition_summary(per_image, n_boot=400, seed=0))  # seeded: reproducible


def test_strata_pair_images_within_other_factors() -> None:
    easy, hard = _frame({"unet": UNET, "noskip": NOSKIP}), _frame({"unet": UNET, "noskip": NOSKIP})
    easy["alpha"], hard["alpha"] = 0.1, 0.9
    hard["image_id"] = "h" + hard["image_id"]  # each complexity level has its own test images
    for frame in (easy, hard):
        frame["cell"] = "alpha=" + frame["alpha"].astype(str) + ",architecture=" + frame["architecture"]
    per_image = pd.concat([easy, hard], ignore_index=True)
    assert resolve_within(per_image, by="architecture", within=None) == ["alpha"]
    table = robustness_summary(per_image, reference="unet", n_boot=20)
    assert sorted(table["alpha"].unique()) == [0.1, 0.9]
    assert (table["n_images"] == 4).all()
    tests = pairwise_tests(per_image, condition="clean")
    assert list(tests["alpha"]) == [0.1, 0.9] and (tests["n_images"] == 4).all()


def test_bad_inputs_fail_with_one_line() -> None:
    per_image = _frame({"unet": UNET})
    with pytest.raises(SegstudyError, match="accept dice, nsd"):
        robustness_summary(per_image, metric="hd95", n_boot=0)
    mixed = per_image.assign(phase=np.where(per_image["seed"] == 0, "tune", "confirm"))
    with pytest.raises(SegstudyError, match="phases confirm, tune"):
        robustness_summary(mixed, n_boot=0)
    with pytest.raises(SegstudyError, match="unknown condition 'fog:1'"):
        pairwise_tests(per_image, condition="fog:1")
    with pytest.raises(SegstudyError, match="no 'clean' condition"):
        robustness_summary(per_image[per_image["condition"] != "clean"], n_boot=0)


# ---- statistics -----------------------------------------------------------------------------------


def _three_arms(n_images: int = 12, *, seeds: int = 3) -> pd.DataFrame:
    """Arm 'a' beats 'b' by exactly 0.05 on every image and seed; 'c' equals 'b'."""
    base = np.random.default_rng(0).uniform(0.5, 0.8, size=(seeds, n_images))
    rows = [
        {"seed": s, "architecture": arm, "image_id": i, "condition": "clean", "dice": base[s, i] + shift}
        for arm, shift in (("a", 0.05), ("b", 0.0), ("c", 0.0))
        for s in range(seeds)
        for i in range(n_images)
    ]
    return pd.DataFrame(rows)


def test_pairwise_constant_advantage_and_identical_arms() -> None:
    tests = pairwise_tests(_three_arms())
    ab, ac, bc = (_pick(tests, a=a, b=b) for a, b in (("a", "b"), ("a", "c"), ("b", "c")))
    assert ab["n_images"] == 12 and ab["n_seeds"] == 3
    assert ab["diff"] == pytest.approx(0.05, abs=1e-12)
    # The images' differences are all 0.05 (no image term), so the variance is each arm's seed-mean
    # variance over 3 seeds, twice, on 2 + 2 = 4 Welch-Satterthwaite degrees of freedom.
    seed_means = _three_arms().query("architecture == 'b'").groupby("seed")["dice"].mean()
    se = math.sqrt(2 * seed_means.var(ddof=1) / 3)
    assert ab["se"] == pytest.approx(se) and ab["df"] == pytest.approx(4.0)
    assert ab["p"] == pytest.approx(2 * stats.t.sf(0.05 / se, 4))
    # The table is one exploratory family: Benjamini-Hochberg over (p, p, 1) gives p * 3/2 to both
    # (the second-smallest of three times 3/2 caps the first), and each interval sits at the level
    # that matches: 1 - R * 0.05 / 3 with R resolved.
    assert ab["p_adjusted"] == pytest.approx(min(1.0, 1.5 * ab["p"])) and ac["p_adjusted"] == pytest.approx(ab["p_adjusted"])
    resolved = int(tests["significant"].sum())
    assert ab["confidence"] == pytest.approx(1 - max(resolved, 1) * 0.05 / 3)
    assert ab["ci_low"] == pytest.approx(0.05 - stats.t.ppf(0.5 + ab["confidence"] / 2, 4) * se)
    assert bc["diff"] == 0.0 and bc["p"] == pytest.approx(1.0) and not bc["significant"]
    for row in tests.itertuples():
        assert (row.ci_low > 0 or row.ci_high < 0) == row.significant == (row.p_adjusted < 0.05)
    flipped = pairwise_tests(_three_arms().replace({"architecture": {"a": "z"}}))
    assert _pick(flipped, a="b", b="z")["diff"] == pytest.approx(-0.05)  # sign follows a - b


def test_holm_textbook_values_and_intervals_that_agree_with_each_decision() -> None:
    # Sorted 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, max(0.06, 1*0.04): back in input order.
    decided = holm_decisions([0.01, 0.04, 0.03], alpha=0.05)
    assert decided.adjusted == pytest.approx([0.03, 0.06, 0.06]) and decided.resolved == [True, False, False]
    # The rejected one at its step's level (alpha/3); the rest at the level Holm stopped at (alpha/2).
    assert decided.confidence == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 2, 1 - 0.05 / 2])
    assert holm_decisions([0.01, 0.02, 0.03], alpha=0.05).adjusted == pytest.approx([0.03, 0.04, 0.04])
    adjusted = holm_decisions([0.2, float("nan"), 0.01], alpha=0.05).adjusted
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    # Looks: a statement looked at 4 times enters as 4p, its interval at 1 - spent/4.
    looked = holm_decisions([0.01, 0.2], alpha=0.05, looks=[4, 1])
    assert looked.adjusted[0] == pytest.approx(0.08) and not looked.resolved[0]
    assert looked.confidence[0] == pytest.approx(1 - 0.05 / 2 / 4)


def test_fdr_textbook_values_and_levels() -> None:
    # BH on 0.01, 0.02, 0.03, 0.5 (m = 4): k q/m = 0.0125, 0.025, 0.0375 -> the first three resolved.
    decided = fdr_decisions([0.01, 0.02, 0.03, 0.5], q=0.05)
    assert decided.resolved == [True, True, True, False]
    assert decided.adjusted == pytest.approx([0.04, 0.04, 0.04, 0.5])
    assert decided.confidence == pytest.approx([1 - 3 * 0.05 / 4] * 4)  # FCR level 1 - R q / m
    # BY: q' = q / (1 + 1/2 + 1/3 + 1/4) = 0.024; k q'/m = 0.006, 0.012, 0.018 -> only 0.001 resolved.
    by = fdr_decisions([0.001, 0.02, 0.03, 0.5], q=0.05, method="by")
    assert by.resolved == [True, False, False, False]
    assert by.confidence == pytest.approx([1 - 0.05 / (25 / 12) / 4] * 4)
    assert fdr_decisions([0.3, 0.6], q=0.05).confidence == pytest.approx([1 - 0.05 / 2] * 2)  # none resolved: R = 1


def test_mean_ranks_on_a_fixed_ordering_are_a_description_without_a_test() -> None:
    per_image = _three_arms(10)
    per_image.loc[per_image["architecture"] == "c", "dice"] -= 0.05  # now a > b > c on every image
    table = mean_ranks(per_image)
    assert dict(zip(table["architecture"], table["mean_rank"], strict=True)) == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert (table["n_images"] == 10).all() and (table["k"] == 3).all()
    assert not {"statistic", "p"} & set(table.columns)  # images are not replicates: no test over them
    lower = mean_ranks(per_image.rename(columns={"dice": "hd95"}), metric="hd95")
    assert dict(zip(lower["architecture"], lower["mean_rank"], strict=True)) == {"a": 3.0, "b": 2.0, "c": 1.0}


def test_fewer_than_three_seeds_warns() -> None:
    with pytest.warns(UserWarning, match="only 2 seed"):
        pairwise_tests(_three_arms(seeds=2))
    with pytest.warns(UserWarning, match="at least 3"):
        mean_ranks(_three_arms(seeds=2))
    with pytest.warns(UserWarning, match="only 1 seed"):
        robustness_summary(_frame({"unet": UNET}, seeds=1), n_boot=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairwise_tests(_three_arms(seeds=3))


def test_critical_difference_png(tmp_path: Path) -> None:
    per_image = _three_arms(10)
    per_image.loc[per_image["architecture"] == "c", "dice"] -= 0.05
    ranks = mean_ranks(per_image).set_index("architecture")["mean_rank"]
    tests = pairwise_tests(per_image)
    matrix = pairwise_p_matrix(tests)
    assert matrix.loc["a", "a"] == 1.0
    assert matrix.loc["b", "a"] == matrix.loc["a", "b"] == _pick(tests, a="a", b="b")["p_adjusted"]
    out = plot_critical_difference(ranks, tests, tmp_path / "plots" / "cd.png")
    image = matplotlib.image.imread(out)
    assert out.is_file() and image.shape[0] > 100 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # something was drawn
    with pytest.raises(SegstudyError, match="same arms"):
        plot_critical_difference(ranks.drop("c"), matrix, tmp_path / "bad.png")


def test_mean_ranks_both_surface_distances_lower_is_better():
    """ASSD, like HD95, is a distance: the arm with the smaller one must rank first."""
    rows = []
    for image in range(6):
        for arch, assd in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
            rows.append({"image_id": image, "seed": 0, "condition": "clean", "architecture": arch, "assd": assd + 0.01 * image})
    ranks = mean_ranks(pd.DataFrame(rows), by="architecture", metric="assd", condition="clean")
    assert ranks.set_index("architecture")["mean_rank"].to_dict() == {"a": 1.0, "b": 2.0, "c": 3.0}
