"""analysis.stats.describe.context and its plots: a real MLflow SQLite store of a patch-based study with known
per-volume Dice, test FBRs and training-patch foreground quantiles -> hand-computed shifts and bins."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis import (
    analyze,
    dice_by_fbr_bin,
    fbr_shift,
    load_per_image,
    load_trials,
    plot_dice_vs_fbr,
    plot_dice_vs_patch_size,
    plot_patch_pos_heatmap,
    summarise,
    with_patch_metrics,
)
from study import metrics_names as M
from study.errors import SegstudyError

T_DF1 = 12.7062  # Student t_{0.975, 1}: 2 seeds

ARCHES, PATCHES, POSITIONS, SEEDS = ("unet", "unetr"), (32, 64), (0.25, 0.75), (0, 1)
# Training-patch foreground fractions q05, q25, q50, q75, q95 per (patch_size, pos_fraction).
# As FBR f/(1-f): (32, .25) -> 0, 0, 1/4, 1, 3; (32, .75) -> 0, 1/4, 1, 3, 4;
#                 (64, .25) -> 1/19, 1/9, 1/4, 1, 1.5; (64, .75) -> 1/9, 1/4, 1, 1.5, 3.
PATCH_FG = {
    (32, 0.25): (0.0, 0.0, 0.2, 0.5, 0.75),
    (32, 0.75): (0.0, 0.2, 0.5, 0.75, 0.8),
    (64, 0.25): (0.05, 0.1, 0.2, 0.5, 0.6),
    (64, 0.75): (0.1, 0.2, 0.5, 0.6, 0.75),
}
TEST_FBR = (0.02, 0.25, 2.0, 5.0)  # the same four test volumes for every trial (paired)
BASE = {("unet", 32): 0.70, ("unet", 64): 0.80, ("unetr", 32): 0.50, ("unetr", 64): 0.70}
POS_BONUS = {0.25: 0.0, 0.75: 0.02}
IMAGE_OFFSET = (-0.20, 0.0, 0.05, -0.10)
SEED_OFFSET = (-0.02, 0.02)


def _dice(arch: str, patch: int, pos: float, seed: int) -> list[float]:
    return [BASE[arch, patch] + POS_BONUS[pos] + off + SEED_OFFSET[seed] for off in IMAGE_OFFSET]


def _trial(client: MlflowClient, exp: str, parent: str, tmp: Path, *, arch: str, patch: int, pos: float, seed: int) -> None:
    factors = {"architecture": arch, "patch_size": patch, "pos_fraction": pos}
    tags = {M.PARENT_TAG: parent, M.ROLE_TAG: M.ROLE_TRIAL, M.PHASE_TAG: M.PHASE_CONFIRM, M.SEED_TAG: str(seed),
            M.CELL_TAG: ",".join(f"{k}={v}" for k, v in sorted(factors.items())), M.FACTORS_TAG: json.dumps(sorted(factors))}
    run_id = client.create_run(exp, tags=tags).info.run_id
    dice = _dice(arch, patch, pos, seed)
    metrics = {M.TEST_DICE: float(np.mean(dice)), M.TEST_HD95: 2.0, M.TEST_NSD: 0.9, M.PEAK_MEMORY: patch**3 / 1000}
    fg = PATCH_FG[patch, pos]
    metrics.update({f"patch_fg_q{round(q * 100):02d}": f for q, f in zip(M.PATCH_FG_QUANTILES, fg, strict=True)})
    metrics[M.PATCH_FG_MEAN] = float(np.mean(fg))
    params = {**{k: str(v) for k, v in factors.items()}, "lr": "0.0003", "seed": str(seed)}
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param(k, v) for k, v in params.items()])
    table = pd.DataFrame({
        "image_id": [f"vol{i}" for i in range(len(TEST_FBR))], "condition": M.CLEAN, "dice": dice, "hd95": 2.0,
        "nsd": 0.9, "td": np.nan, "empty_gt": False, "empty_pred": False, "missed": False, "fbr": TEST_FBR,
    })
    path = tmp / run_id / M.PER_IMAGE_FILE
    path.parent.mkdir(parents=True)
    table.to_csv(path, index=False)
    client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status="FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """'context': 2 archs x 2 patch sizes x 2 pos_fractions x 2 seeds; 'one_pos': pos_fraction 0.75 only."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    for name, positions in (("context", POSITIONS), ("one_pos", (0.75,))):
        exp = client.create_experiment(name, artifact_location=(root / name).as_uri())
        parent = client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_STUDY}).info.run_id
        for arch in ARCHES:
            for patch in PATCHES:
                for pos in positions:
                    for seed in SEEDS:
                        _trial(client, exp, parent, root, arch=arch, patch=patch, pos=pos, seed=seed)
    return uri


@pytest.fixture(scope="module")
def frames(store: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = with_patch_metrics(load_trials("context", tracking_uri=store), experiment="context", tracking_uri=store)
    return trials, load_per_image(trials, tracking_uri=store)


def test_with_patch_metrics_adds_logged_patch_statistics(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    trials, _ = frames
    assert len(trials) == 16 and trials.attrs["factors"] == ["architecture", "patch_size", "pos_fraction"]
    row = trials[(trials["patch_size"] == 64) & (trials["pos_fraction"] == 0.25)].iloc[0]
    assert [row[f"patch_fg_q{q}"] for q in ("05", "25", "50", "75", "95")] == pytest.approx(PATCH_FG[64, 0.25])
    assert row["patch_fg_mean"] == pytest.approx(0.29) and row["peak_memory_mb"] == pytest.approx(262.144)


# (patch_size, pos_fraction) -> per test volume (position, quantile), from the FBR quantiles in PATCH_FG's comment.
EXPECTED_SHIFT = {
    (32, 0.25): [("inside", 0.25 + 0.02 / 0.25 * 0.25), ("inside", 0.5), ("inside", 0.75 + 0.5 * 0.2), ("above", 0.95)],
    (32, 0.75): [("inside", 0.05 + 0.02 / 0.25 * 0.2), ("inside", 0.25), ("inside", 0.5 + 0.5 * 0.25), ("above", 0.95)],
    (64, 0.25): [("below", 0.05), ("inside", 0.5), ("above", 0.95), ("above", 0.95)],
    (64, 0.75): [("below", 0.05), ("inside", 0.25), ("inside", 0.75 + 0.5 / 1.5 * 0.2), ("above", 0.95)],
}
TRAIN_RANGE = {(32, 0.25): (0.0, 3.0), (32, 0.75): (0.0, 4.0), (64, 0.25): (1 / 19, 1.5), (64, 0.75): (1 / 9, 3.0)}


def test_fbr_shift_places_test_volumes_by_training_patch_quantiles(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    trials, per_image = frames
    shift = fbr_shift(per_image, trials)
    assert len(shift) == 64 and list(shift.columns[: len(per_image.columns)]) == list(per_image.columns)
    for (patch, pos), expected in EXPECTED_SHIFT.items():
        for arch in ARCHES:
            for seed in SEEDS:
                rows = shift[(shift["architecture"] == arch) & (shift["patch_size"] == patch)
                             & (shift["pos_fraction"] == pos) & (shift["seed"] == seed)].sort_values("image_id")
                assert rows["fbr_position"].tolist() == [p for p, _ in expected]
                assert rows["fbr_quantile"].tolist() == pytest.approx([q for _, q in expected])
                assert rows["train_fbr_q05"].tolist() == pytest.approx([TRAIN_RANGE[patch, pos][0]] * 4)
                assert rows["train_fbr_q95"].tolist() == pytest.approx([TRAIN_RANGE[patch, pos][1]] * 4)
    assert shift["fbr_position"].value_counts().to_dict() == {"inside": 36, "above": 20, "below": 8}


def test_fbr_shift_ties_all_foreground_patches_and_missing_values() -> None:
    trials = pd.DataFrame({
        "run_id": ["tied", "full"],
        "patch_fg_q05": [0.0, 0.1], "patch_fg_q25": [0.0, 0.2], "patch_fg_q50": [0.2, 0.5],
        "patch_fg_q75": [0.5, 0.9], "patch_fg_q95": [0.75, 1.0],  # q95 = 1: an all-foreground crop, FBR inf
    })
    per_image = pd.DataFrame({
        "run_id": ["tied", "tied", "full", "full", "full", "gone"],
        "fbr": [0.0, np.nan, 50.0, 1e9, 0.05, 1.0],
    })
    shift = fbr_shift(per_image, trials)
    # 0 equals the tied q05 = q25: their mean level; above q75 = 9 with q95 = inf: still q75's level.
    assert shift["fbr_quantile"].tolist()[:1] + shift["fbr_quantile"].tolist()[2:5] == pytest.approx([0.15, 0.75, 0.75, 0.05])
    assert shift["fbr_position"].tolist()[:1] + shift["fbr_position"].tolist()[2:5] == ["inside", "inside", "inside", "below"]
    assert shift["fbr_position"].isna().tolist() == [False, True, False, False, False, True]  # no FBR / unknown trial
    assert math.isinf(shift["train_fbr_q95"].iloc[2]) and math.isnan(shift["train_fbr_q05"].iloc[5])
    with pytest.raises(SegstudyError, match="trials: missing column\\(s\\) patch_fg_q05.*with_patch_metrics"):
        fbr_shift(per_image, trials[["run_id"]])


def test_dice_by_fbr_bin_means_and_intervals_over_seeds(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, per_image = frames
    table = dice_by_fbr_bin(per_image, bins=[0.01, 0.1, 1.0, 10.0], by=["architecture"])
    assert list(table.columns) == ["architecture", "fbr_low", "fbr_high", "fbr_centre", "metric", "mean", "std", "n",
                                   "ci_low", "ci_high", "n_volumes", "fbr_median"]
    assert len(table) == 6 and set(table["n"]) == {2} and set(table["metric"]) == {"dice"}
    unet = table[(table["architecture"] == "unet") & (table["fbr_low"] == 1.0)].iloc[0]
    # volumes 2 and 3 of the 4 unet cells: 0.75 (patch) + 0.01 (pos) - 0.025 (volumes) -/+ 0.02 (seed)
    assert unet["mean"] == pytest.approx(0.735) and unet["std"] == pytest.approx(0.04 / math.sqrt(2))
    assert unet["ci_low"] == pytest.approx(0.735 - T_DF1 * 0.02, abs=1e-4)
    assert unet["ci_high"] == pytest.approx(0.735 + T_DF1 * 0.02, abs=1e-4)
    assert unet["n_volumes"] == 16 and unet["fbr_high"] == 10.0 and unet["fbr_centre"] == pytest.approx(math.sqrt(10))
    assert unet["fbr_median"] == pytest.approx(3.5)  # volumes at FBR 2 and 5
    unetr = table[(table["architecture"] == "unetr") & (table["fbr_low"] == 0.01)].iloc[0]
    assert unetr["mean"] == pytest.approx(0.60 + 0.01 - 0.20) and unetr["n_volumes"] == 8


def test_dice_by_fbr_bin_default_log_bins_per_cell(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, per_image = frames
    table = dice_by_fbr_bin(per_image, bins=3)
    assert list(table.columns[:3]) == ["architecture", "patch_size", "pos_fraction"]
    edges = np.geomspace(0.02, 5.0, 4)  # log-spaced over the observed test FBRs; 5.0 falls in the closed last bin
    assert sorted(set(table["fbr_low"])) == pytest.approx(edges[:3])
    assert len(table) == 8 * 3
    cell = table[(table["architecture"] == "unetr") & (table["patch_size"] == 64) & (table["pos_fraction"] == 0.75)]
    assert cell["mean"].tolist() == pytest.approx([0.52, 0.72, 0.72 - 0.025])
    assert cell["n_volumes"].tolist() == [2, 2, 4]
    assert cell["ci_high"].iloc[0] == pytest.approx(0.52 + T_DF1 * 0.02, abs=1e-4)
    with pytest.raises(SegstudyError, match="bins=0: accepted are a positive number of bins"):
        dice_by_fbr_bin(per_image, bins=0)
    with pytest.raises(SegstudyError, match="bins=\\[1.0, 0.5\\]: accepted"):
        dice_by_fbr_bin(per_image, bins=[1.0, 0.5])


def _assert_png(path: Path, *, min_width: int) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > min_width
    assert image[..., :3].std() > 0.05  # lines, cells and text, not a blank canvas


def test_analyze_writes_every_context_file(store: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="8 of 8 cells have fewer than 3 seeds"):
        paths = analyze("context", out_dir=tmp_path, tracking_uri=store)
    assert set(paths) == {"trials", "per_image", "summary", "findings", "fbr_shift", "dice_by_fbr", "dice_vs_patch_size",
                          "patch_pos_heatmap", "dice_vs_fbr", "claims", "breakdown"}
    # Claims: (c), patch size per arm (no complexity factor, no perturbation, and test ids that
    # do not pair one object across volume sizes), averaged over both pos_fraction levels; and (e),
    # each arm's models that broke down against the reference arm's.
    every = pd.read_csv(paths["claims"])
    assert set(every["claim"]) == {"c", "e"}
    claimed = every[every["claim"] == "c"].set_index("arm")
    assert claimed.loc["unet", "estimate"] == pytest.approx(0.80 - 0.70)
    assert claimed.loc["unetr", "estimate"] == pytest.approx(0.70 - 0.50)
    assert "averaged over 2 levels of pos_fraction" in claimed.loc["unet", "line"]
    assert all(p.is_file() and p.parent == tmp_path for p in paths.values())
    trials = pd.read_csv(paths["trials"])
    assert len(trials) == 16 and {"patch_fg_q05", "patch_fg_q95", "peak_memory_mb"} <= set(trials.columns)
    summary = pd.read_csv(paths["summary"])
    memory = summary[(summary["metric"] == "peak_memory_mb") & (summary["patch_size"] == 32)]
    assert len(memory) == 4 and memory["mean"].tolist() == pytest.approx([32.768] * 4)
    dice = summary[(summary["metric"] == "test_dice") & (summary["architecture"] == "unet")
                   & (summary["patch_size"] == 64) & (summary["pos_fraction"] == 0.75)]
    assert dice["mean"].item() == pytest.approx(0.82 - 0.0625)
    shift = pd.read_csv(paths["fbr_shift"])
    assert len(shift) == 64 and shift["fbr_position"].value_counts().to_dict() == {"inside": 36, "above": 20, "below": 8}
    assert len(pd.read_csv(paths["dice_by_fbr"])) > 8
    for name in ("dice_vs_patch_size", "patch_pos_heatmap", "dice_vs_fbr"):
        _assert_png(paths[name], min_width=600)


def test_analyze_skips_the_heatmap_with_one_pos_fraction(store: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="fewer than 3 seeds"):
        paths = analyze("one_pos", out_dir=tmp_path, tracking_uri=store)
    assert "patch_pos_heatmap" not in paths and not (tmp_path / "patch_pos_heatmap.png").exists()
    assert {"fbr_shift", "dice_by_fbr", "dice_vs_patch_size", "dice_vs_fbr"} <= set(paths)
    _assert_png(paths["dice_vs_patch_size"], min_width=400)


def test_plots_called_directly(frames: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    trials, per_image = frames
    by_arch_patch = summarise(trials, by=["architecture", "patch_size"])  # no pos_fraction: one panel
    _assert_png(plot_dice_vs_patch_size(by_arch_patch, tmp_path / "a" / "lines.png"), min_width=400)
    _assert_png(plot_patch_pos_heatmap(summarise(trials, by=["architecture", "patch_size", "pos_fraction"]),
                                       tmp_path / "heat.png"), min_width=600)
    _assert_png(plot_dice_vs_fbr(per_image, fbr_shift(per_image, trials), tmp_path / "fbr.png"), min_width=600)
    with pytest.raises(SegstudyError, match="plot_patch_pos_heatmap: missing column\\(s\\) pos_fraction"):
        plot_patch_pos_heatmap(by_arch_patch, tmp_path / "nope.png")
