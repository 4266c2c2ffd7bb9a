"""analysis/stats/statements/claims.py: the four robustness claims on per-image tables with known numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.stats.statements.claims import claims, fbr_losses
from analysis.stats.core.contrasts import frame_contrast

SEEDS, IMAGES = 3, 10
OFFSETS = np.linspace(-0.05, 0.05, IMAGES)
# Per-seed wobble, different in every cell, so the seed variance is known and non-zero.
WOBBLE = {0: -0.01, 1: 0.0, 2: 0.01}
# Clean Dice per (arm, alpha): noskip 0.01 better when easy, 0.09 worse when hard.
CLEAN = {("unet", 0.1): 0.95, ("noskip_unet", 0.1): 0.96, ("unet", 0.9): 0.80, ("noskip_unet", 0.9): 0.71}
# Dice lost under speckle at severity 1 and 5: noskip loses 0.04 more at 5.
SPECKLE = {("unet", 1): 0.01, ("unet", 5): 0.10, ("noskip_unet", 1): 0.02, ("noskip_unet", 5): 0.14}


def _two_d() -> pd.DataFrame:
    rows = []
    for (arm, alpha), base in CLEAN.items():
        for seed in range(SEEDS):
            scale = 1.0 if arm == "unet" else 2.0  # a different seed spread per arm
            for condition, drop in (("clean", 0.0), ("speckle:1", SPECKLE[arm, 1]), ("speckle:5", SPECKLE[arm, 5])):
                for i, offset in enumerate(OFFSETS):
                    rows.append({"run_id": f"{arm}-{alpha}-{seed}", "phase": "confirm",
                                 "cell": f"alpha={alpha},architecture={arm}", "seed": seed, "alpha": alpha,
                                 "architecture": arm, "image_id": f"img{i}", "condition": condition,
                                 "dice": base + scale * WOBBLE[seed] + offset - drop})
    return pd.DataFrame(rows)


def test_complexity_and_out_of_domain_claims_have_the_known_estimates() -> None:
    table = claims(_two_d(), reference="unet").set_index("claim")
    a = table.loc["a"]
    assert a["arm"] == "noskip_unet" and a["estimate"] == pytest.approx((0.71 - 0.80) - (0.96 - 0.95))
    assert a["line"].startswith("(a) complexity: noskip_unet - unet went from +0.010 Dice at alpha 0.1 to -0.090 at alpha 0.9")
    assert "3 seeds x 10 images" in a["line"]
    b = table.loc["b"]  # only the highest severity, averaged over both alphas
    assert b["about"] == "speckle:5" and b["estimate"] == pytest.approx(0.14 - 0.10)
    assert "noskip_unet loses 0.140 Dice, unet 0.100" in b["line"] and "averaged over 2 levels of alpha" in b["line"]
    for row in table.itertuples():  # interval and p-value are one statement
        assert (row.ci_low <= 0 <= row.ci_high) == (row.p >= 0.05)
        assert f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]" in row.line
    assert "c" not in table.index and "d" not in table.index  # no patch-size factor


def test_a_claim_equals_the_contrast_it_names() -> None:
    frame = _two_d()
    clean = frame[frame["condition"] == "clean"]
    direct = frame_contrast(clean, [
        ({"architecture": "noskip_unet", "alpha": 0.9}, 1.0), ({"architecture": "unet", "alpha": 0.9}, -1.0),
        ({"architecture": "noskip_unet", "alpha": 0.1}, -1.0), ({"architecture": "unet", "alpha": 0.1}, 1.0),
    ])
    row = claims(frame, reference="unet").set_index("claim").loc["a"]
    assert (row["estimate"], row["ci_low"], row["p"]) == pytest.approx((direct.estimate, direct.ci_low, direct.p))
    # Every cell's seeds differ only by the known wobble: seed variance (scale^2 * 1e-4) / 3 per cell.
    seed_var = sum(s**2 * 1e-4 / 3 for s in (2.0, 1.0, 2.0, 1.0))
    assert direct.se == pytest.approx(np.sqrt(seed_var))


def test_one_arm_study_makes_no_comparison_claims() -> None:
    frame = _two_d()
    assert claims(frame[frame["architecture"] == "unet"], reference="unet").empty


def _three_d() -> pd.DataFrame:
    """Objects in 48- and 64-voxel volumes at two patch sizes; the 64 volume is below the training
    FBR range, the 48 one inside. attention_unet loses 0.20 there, unet 0.05."""
    loss = {"unet": 0.05, "attention_unet": 0.20}
    gain = {("unet", 16): 0.0, ("unet", 32): 0.06, ("attention_unet", 16): 0.0, ("attention_unet", 32): 0.10}
    rows = []
    for arm in loss:
        for patch in (16, 32):
            for seed in range(SEEDS):
                for obj in range(4):
                    for size, position in ((48, "inside"), (64, "below")):
                        dice = 0.9 + gain[arm, patch] + WOBBLE[seed] + 0.01 * obj - (loss[arm] if position == "below" else 0.0)
                        rows.append({"run_id": f"{arm}{patch}{seed}", "phase": "confirm", "seed": seed,
                                     "cell": f"architecture={arm},patch_size={patch}", "architecture": arm,
                                     "patch_size": patch, "image_id": f"test{obj:04d}_s{size}", "condition": "clean",
                                     "dice": dice, "fbr_position": position})
    return pd.DataFrame(rows)


def test_context_and_fbr_claims_on_paired_objects() -> None:
    frame = _three_d()
    losses = fbr_losses(frame, factors=["patch_size"])
    assert len(losses) == 2 * 2 * SEEDS * 4 and set(losses["image_id"]) == {f"test{o:04d}" for o in range(4)}
    table = claims(frame, reference="unet", fbr_positions=frame)
    c = table[table["claim"] == "c"].set_index("arm")
    assert c.loc["unet", "estimate"] == pytest.approx(0.06) and c.loc["attention_unet", "estimate"] == pytest.approx(0.10)
    assert c.loc["unet", "line"].startswith("(c) context: unet Dice at patch 32 minus at patch 16 = +0.060")
    d = table[table["claim"] == "d"].iloc[0]
    assert d["arm"] == "attention_unet" and d["estimate"] == pytest.approx(0.15)
    assert "attention_unet loses 0.200 Dice, unet 0.050" in d["line"] and "3 seeds x 8 objects" in d["line"]
    assert "pooled over 2 levels of patch_size" in d["line"]


def test_an_fbr_claim_whose_models_miss_the_objects_outside_the_range_is_censored() -> None:
    """Claim (d) is a loss too: where attention_unet scores Dice 0.02 on the 64-voxel volumes outside
    the training range (every voxel foreground scores about 0.03 there), its loss is its Dice inside."""
    frame = _three_d().assign(fbr=lambda t: np.where(t["image_id"].str.endswith("_s64"), 0.015, 0.05))
    assert claims(frame, reference="unet", fbr_positions=frame).set_index("claim").loc["d", "censored"] == ""
    missed = frame["image_id"].str.endswith("_s64") & (frame["architecture"] == "attention_unet") & (frame["patch_size"] == 16)
    frame.loc[missed, "dice"] = 0.02
    d = claims(frame, reference="unet", fbr_positions=frame).set_index("claim").loc["d"]
    assert d["censored"].split("; ") == [f"architecture=attention_unet,patch_size=16 seed={s} under FBR outside the training "
                                         f"range: Dice 0.020, trivial 0.029" for s in range(SEEDS)]


def test_fbr_claim_holds_when_levels_have_different_objects_outside_the_range() -> None:
    """The training range moves with the level, so each level has its own objects on both sides;
    pooled (level, object) pairs keep an interval where a per-level average would keep no object."""
    frame = _three_d()
    inside_at = {16: ("test0002_s64", "test0003_s64"), 32: ("test0000_s64", "test0001_s64")}
    for patch, ids in inside_at.items():
        frame.loc[(frame["patch_size"] == patch) & frame["image_id"].isin(ids), "fbr_position"] = "inside"
    d = claims(frame, reference="unet", fbr_positions=frame).query("claim == 'd'").iloc[0]
    assert d["estimate"] == pytest.approx(0.15) and d["n_images"] == 4 and np.isfinite(d["ci_low"])
    assert d["ci_low"] < 0.15 < d["ci_high"] and d["p"] < 0.05


def test_fbr_position_is_agreed_per_level_so_arms_share_the_volumes() -> None:
    frame = _three_d()
    flipped = frame.copy()
    # One trial sees the 64 volume of object 0 as inside: the level's majority still says below.
    odd = (flipped["run_id"] == "unet160") & (flipped["image_id"] == "test0000_s64")
    flipped.loc[odd, "fbr_position"] = "inside"
    assert len(fbr_losses(flipped, factors=["patch_size"])) == len(fbr_losses(frame, factors=["patch_size"]))


def test_shift_claim_averages_the_loss_over_every_other_test_level() -> None:
    """Trained at alpha 0.1 (the easiest), tested at 0.5 and 0.9: unet loses 0.1 and 0.3, noskip 0.2
    and 0.6; the mean losses 0.2 and 0.4 differ by 0.2. Rows trained at 0.9 are not part of it."""
    from study import metrics_names as M

    drop = {("unet", 0.5): 0.1, ("unet", 0.9): 0.3, ("noskip_unet", 0.5): 0.2, ("noskip_unet", 0.9): 0.6}
    rows = []
    for arm in ("unet", "noskip_unet"):
        for trained in (0.1, 0.9):
            for seed in range(SEEDS):
                tests = [(trained, "clean")] + [(level, M.shift_condition("alpha", level)) for level in (0.1, 0.5, 0.9)
                                               if level != trained]
                for level, condition in tests:
                    lost = drop.get((arm, level), 0.0) if trained == 0.1 else 0.5
                    for i, offset in enumerate(OFFSETS):
                        rows.append({"run_id": f"{arm}{trained}{seed}", "cell": f"alpha={trained},architecture={arm}",
                                     "seed": seed, "alpha": trained, "test_alpha": level, "architecture": arm,
                                     "image_id": f"img{i}", "condition": condition,
                                     "dice": 0.9 + (2.0 if arm == "unet" else 1.0) * WOBBLE[seed] + offset - lost})
    shift = pd.DataFrame(rows)
    in_domain = shift[shift["condition"] == "clean"]
    table = claims(in_domain, reference="unet", shift_rows=shift)
    b = table[(table["claim"] == "b")].iloc[0]
    assert b["about"] == "alpha 0.1 -> 0.5, 0.9" and b["estimate"] == pytest.approx(0.4 - 0.2)
    assert "noskip_unet loses 0.400 Dice, unet 0.200" in b["line"]


def test_a_claim_on_a_model_that_did_not_learn_says_so() -> None:
    frame = _two_d()
    trials = frame.drop_duplicates("run_id")[["run_id", "cell", "seed"]].assign(learned=True, learning_issue="")
    bad = trials["run_id"] == "noskip_unet-0.9-2"
    trials.loc[bad, ["learned", "learning_issue"]] = [False, "below_floor"]
    table = claims(frame, reference="unet", trials=trials).set_index("claim")
    assert table.loc["a", "not_learned"] == "alpha=0.9,architecture=noskip_unet seed=2"
    assert table.loc["a", "line"].endswith("[NOT LEARNED: alpha=0.9,architecture=noskip_unet seed=2; this claim means nothing]")
    assert table.loc["b", "not_learned"] != ""  # (b) averages over both alphas, the bad cell among them
    clean = claims(frame, reference="unet", trials=trials.assign(learned=True))
    assert (clean["not_learned"] == "").all() and not clean["line"].str.contains("NOT LEARNED").any()


def test_breakdown_per_cell_and_claim_e_by_an_exact_stratified_test():
    """noskip breaks down in 3 of 4 models at alpha 0.9 and in none at 0.1, unet in none: counted per
    cell with the worst seed, and (e) is the exact conditional test over both levels."""
    from scipy.stats import fisher_exact

    from analysis.stats.statements.breakdown import breakdown_claims, breakdown_table, stratified_exact_p

    dice = {("unet", 0.1): [0.95, 0.94, 0.96, 0.95], ("unet", 0.9): [0.81, 0.83, 0.80, 0.82],
            ("noskip", 0.1): [0.93, 0.94, 0.92, 0.93], ("noskip", 0.9): [0.31, 0.45, 0.82, 0.25]}
    trials = pd.DataFrame([
        {"run_id": f"{a}{lv}{s}", "cell": f"alpha={lv},architecture={a}", "seed": s, "architecture": a, "alpha": lv,
         "test_dice": d, "learned": d > 0.3} for (a, lv), values in dice.items() for s, d in enumerate(values)])
    trials.attrs["factors"] = ["alpha", "architecture"]
    table = breakdown_table(trials, threshold=0.6, levels=["alpha"]).set_index("cell")
    hard = table.loc["alpha=0.9,architecture=noskip"]
    assert (hard["models"], hard["broke_down"], hard["worst_dice"], hard["not_learned"]) == (4, 3, 0.25, 1)
    assert table.loc["alpha=0.9,architecture=unet", "broke_down"] == 0
    (row,) = breakdown_claims(trials, reference="unet", threshold=0.6, levels=["alpha"])
    assert row["claim"] == "e" and row["estimate"] == pytest.approx(3 / 8)  # 3 of 8 against 0 of 8
    # Nothing breaks down at alpha 0.1, so the stratified test is Fisher's on the hard level's table.
    assert row["p"] == pytest.approx(fisher_exact([[3, 1], [0, 4]]).pvalue)
    assert row["p"] == pytest.approx(stratified_exact_p([(3, 4, 0, 4), (0, 4, 0, 4)]))
    assert "noskip broke down in 3 of 8 models (most at alpha 0.9: 3 of 4), unet in 0 of 8" in row["line"]
    # Two levels each with a split: the exact null is the convolution of both hypergeometrics.
    assert stratified_exact_p([(2, 4, 0, 4), (2, 4, 0, 4)]) < fisher_exact([[2, 2], [0, 4]]).pvalue


def test_a_shift_claim_whose_models_predict_nothing_at_a_test_level_is_censored() -> None:
    """Models trained at alpha 0.1 segment at 0.5 (they lose 0.1-0.2) and predict empty masks at 0.9
    (Dice 0): there the loss is each model's clean Dice, and the claim says nothing about robustness.
    Tested at 0.5 alone, the same models make a claim."""
    from study import metrics_names as M

    rows = []
    for arm, lost in (("unet", 0.1), ("noskip_unet", 0.2)):
        for seed in range(SEEDS):
            for level, condition in ((0.1, "clean"), (0.5, M.shift_condition("alpha", 0.5)), (0.9, M.shift_condition("alpha", 0.9))):
                for i, offset in enumerate(OFFSETS):
                    dice = 0.0 if level == 0.9 else 0.9 + WOBBLE[seed] + offset - (lost if level == 0.5 else 0.0)
                    rows.append({"run_id": f"{arm}{seed}", "cell": f"alpha=0.1,architecture={arm}", "seed": seed, "alpha": 0.1,
                                 "test_alpha": level, "architecture": arm, "image_id": f"img{i}", "condition": condition,
                                 "dice": dice, "fbr": 0.1})
    shift = pd.DataFrame(rows)
    in_domain = shift[shift["condition"] == "clean"]
    b = claims(in_domain, reference="unet", shift_rows=shift).set_index("claim").loc["b"]
    assert b["about"] == "alpha 0.1 -> 0.5, 0.9"
    assert b["censored"].split("; ") == [f"alpha=0.1,architecture={arm} seed={s} under shift:alpha=0.9: Dice 0.000, trivial 0.167"
                                         for arm in ("noskip_unet", "unet") for s in range(SEEDS)]
    assert ("[AT THE TRIVIAL ANSWER: alpha=0.1,architecture=noskip_unet seed=0 under shift:alpha=0.9: Dice 0.000, trivial 0.167 "
            "and 5 more (claims.csv, column censored)") in b["line"]
    segmenting = shift[shift["test_alpha"] < 0.9]
    kept = claims(in_domain, reference="unet", shift_rows=segmenting).set_index("claim").loc["b"]
    assert kept["censored"] == "" and kept["estimate"] == pytest.approx(0.2 - 0.1) and "TRIVIAL" not in kept["line"]
