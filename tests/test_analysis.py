"""analysis/: a real MLflow SQLite store with known values -> tidy frames, summaries, files, plot."""

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

from analysis import analyze, load_per_image, load_trials, plot_dice_vs_complexity, summarise
from study import metrics_names as M
from study.errors import SegstudyError

# Student t quantiles t_{0.975, df} from any printed table.
T_DF1, T_DF2 = 12.7062, 4.3027

# test_dice per (architecture, alpha) for seeds 0 and 1; TD depends on alpha only (paired test sets).
DICE = {
    ("unet", 0.1): (0.90, 0.80),
    ("unet", 0.5): (0.70, 0.60),
    ("noskip", 0.1): (0.88, 0.84),
    ("noskip", 0.5): (0.50, 0.40),
}
TD = {0.1: (2.0, 2.2), 0.5: (0.5, 0.7)}
IMAGES = 3


def _cell(**factors: object) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(factors.items()))


def _trial(client: MlflowClient, exp: str, parent: str, tmp: Path, *, factors: dict, seed: int, phase: str,
           metrics: dict[str, float], failed: bool = False) -> str:
    tags = {M.PARENT_TAG: parent, M.ROLE_TAG: M.ROLE_TRIAL, M.CELL_TAG: _cell(**factors), M.PHASE_TAG: phase,
            M.SEED_TAG: str(seed), M.FACTORS_TAG: json.dumps(sorted(factors))}
    run_id = client.create_run(exp, tags=tags).info.run_id
    params = {**{k: str(v) for k, v in factors.items()}, "lr": "0.001", "batch_size": "8", "seed": str(seed)}
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()] + [Metric(M.VAL_DICE, 0.5 + e / 10, 0, e) for e in range(3)],
        params=[Param(k, v) for k, v in params.items()],
    )
    if failed:
        client.set_tag(run_id, M.ERROR_TAG, "RuntimeError: out of memory")
    else:  # per-image Dice spread around the trial mean: dice - 0.01, dice, dice + 0.01
        dice = metrics[M.TEST_DICE]
        table = pd.DataFrame({
            "image_id": [f"img{i}" for i in range(IMAGES)], "condition": M.CLEAN,
            "dice": [dice + (i - 1) / 100 for i in range(IMAGES)], "hd95": 3.0, "nsd": 0.9, "assd": 1.5,
            "td": metrics[M.TEST_TD], "empty_gt": False, "empty_pred": False, "missed": False, "fbr": 0.05,
        })
        path = tmp / run_id / M.PER_IMAGE_FILE
        path.parent.mkdir(parents=True)
        table.to_csv(path, index=False)
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
    return run_id


def _metrics(dice: float, td: float) -> dict[str, float]:
    return {M.TEST_DICE: dice, M.TEST_HD95: 4.0, M.TEST_NSD: 0.8, M.TEST_ASSD: 1.5, M.TEST_TD: td, M.TEST_MISSED: 0.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Experiments 'demo' (2 archs x 2 alphas x 2 seeds + 1 failed + 1 tune), 'flat' (no alpha), 'empty'."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("demo", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_STUDY}).info.run_id
    for (arch, alpha), values in DICE.items():
        for seed, dice in enumerate(values):
            _trial(client, exp, parent, root, factors={"architecture": arch, "alpha": alpha}, seed=seed,
                   phase=M.PHASE_CONFIRM, metrics=_metrics(dice, TD[alpha][seed]))
    _trial(client, exp, parent, root, factors={"architecture": "unet", "alpha": 0.1}, seed=2,
           phase=M.PHASE_CONFIRM, metrics={}, failed=True)
    _trial(client, exp, parent, root, factors={"architecture": "unet", "alpha": 0.1}, seed=0,
           phase=M.PHASE_TUNE, metrics=_metrics(0.99, 2.0))

    flat = client.create_experiment("flat", artifact_location=(root / "flat").as_uri())
    flat_parent = client.create_run(flat, tags={M.ROLE_TAG: M.ROLE_STUDY}).info.run_id
    _trial(client, flat, flat_parent, root, factors={"architecture": "unet"}, seed=0, phase=M.PHASE_CONFIRM,
           metrics=_metrics(0.7, 1.0))
    empty = client.create_experiment("empty", artifact_location=(root / "empty").as_uri())
    client.create_run(empty, tags={M.ROLE_TAG: M.ROLE_STUDY})
    return uri


def test_load_trials_keeps_finished_confirm_runs_with_typed_factors(store: str) -> None:
    trials = load_trials("demo", tracking_uri=store)
    assert len(trials) == 8
    assert set(trials["phase"]) == {"confirm"} and set(trials["status"]) == {"FINISHED"}
    assert trials.attrs["factors"] == ["alpha", "architecture"]
    assert trials.attrs["hyperparameters"] == ["batch_size", "lr"]
    assert trials["alpha"].dtype == np.float64 and sorted(set(trials["alpha"])) == [0.1, 0.5]
    assert trials["lr"].dtype == np.float64 and set(trials["lr"]) == {0.001}
    assert set(trials["architecture"]) == {"unet", "noskip"}
    assert trials["seed"].dtype == np.int64 and sorted(trials["seed"]) == [0, 0, 0, 0, 1, 1, 1, 1]
    row = trials[(trials["architecture"] == "noskip") & (trials["alpha"] == 0.5) & (trials["seed"] == 1)].iloc[0]
    assert row["cell"] == "alpha=0.5,architecture=noskip"
    assert row["test_dice"] == pytest.approx(0.40) and row["test_td"] == pytest.approx(0.7)
    assert row["test_missed"] == 0.0 and pd.isna(row["error"])
    assert "val_dice" not in trials.columns and "seed" not in trials.attrs["hyperparameters"]


def test_load_trials_phase_and_failed_filters(store: str) -> None:
    assert len(load_trials("demo", tracking_uri=store, phase=None)) == 9
    assert len(load_trials("demo", tracking_uri=store, phase="tune")) == 1
    with_failed = load_trials("demo", tracking_uri=store, include_failed=True)
    assert len(with_failed) == 9
    failed = with_failed[with_failed["status"] == "FAILED"].iloc[0]
    assert failed["seed"] == 2 and failed["error"] == "RuntimeError: out of memory"
    assert math.isnan(failed["test_dice"])
    assert len(load_trials("demo", tracking_uri=store, phase=None, include_failed=True)) == 10


def test_summarise_gives_exact_means_and_t_intervals(store: str) -> None:
    trials = load_trials("demo", tracking_uri=store)
    table = summarise(trials, by=["architecture", "alpha"])
    assert list(table.columns) == ["architecture", "alpha", "metric", "mean", "std", "n", "ci_low", "ci_high"]
    assert len(table) == 4 and set(table["metric"]) == {"test_dice"} and set(table["n"]) == {2}
    unet = table[(table["architecture"] == "unet") & (table["alpha"] == 0.1)].iloc[0]
    # mean 0.85, sd = 0.1/sqrt(2), half-width = t * sd/sqrt(2) = t * 0.05 = 0.64: past 1, where no
    # mean of Dice values can lie, so the interval is cut there.
    assert unet["mean"] == pytest.approx(0.85)
    assert unet["std"] == pytest.approx(0.1 / math.sqrt(2))
    assert unet["ci_low"] == pytest.approx(0.85 - T_DF1 * 0.05, abs=1e-4)
    assert 0.85 + T_DF1 * 0.05 > 1 and unet["ci_high"] == 1.0
    noskip = table[(table["architecture"] == "noskip") & (table["alpha"] == 0.5)].iloc[0]
    assert noskip["mean"] == pytest.approx(0.45) and noskip["ci_high"] == 1.0  # 0.45 + 0.64 cut at 1
    assert noskip["ci_low"] == 0.0  # 0.45 - 0.64 cut at 0
    td = summarise(trials, by=["alpha"], metric="test_td")  # bits, unbounded above: not cut
    assert td["mean"].tolist() == pytest.approx([2.1, 0.6]) and td["n"].tolist() == [4, 4]
    assert (td["ci_high"] - td["mean"]).to_numpy() == pytest.approx((td["mean"] - td["ci_low"]).to_numpy())


def test_summarise_three_seeds_single_seed_and_nan() -> None:
    frame = pd.DataFrame({"arch": ["a", "a", "a", "b", "c", "c"], "test_dice": [0.8, 0.9, 1.0, 0.7, 0.6, float("nan")]})
    table = summarise(frame, by=["arch"]).set_index("arch")
    assert table.loc["a", "ci_low"] == pytest.approx(0.9 - T_DF2 * 0.1 / math.sqrt(3), abs=1e-4)
    assert table.loc["a", "ci_high"] == 1.0  # 0.9 + 0.25 cut at the top of Dice's range
    assert table.loc["b", "n"] == 1 and math.isnan(table.loc["b", "ci_low"]) and math.isnan(table.loc["b", "ci_high"])
    assert table.loc["c", "n"] == 1 and table.loc["c", "mean"] == pytest.approx(0.6)  # NaN is not a seed
    overall = summarise(frame, by=[]).iloc[0]
    assert overall["n"] == 5 and overall["mean"] == pytest.approx(0.8)


def test_summarise_names_unknown_column() -> None:
    with pytest.raises(SegstudyError, match="unknown column 'archtecture'; did you mean 'architecture'"):
        summarise(pd.DataFrame({"architecture": ["a"], "test_dice": [0.5]}), by=["archtecture"])


def test_load_per_image_joins_factors_in_long_format(store: str) -> None:
    trials = load_trials("demo", tracking_uri=store)
    table = load_per_image(trials, tracking_uri=store)
    assert len(table) == 8 * IMAGES
    assert list(table.columns[:6]) == ["run_id", "phase", "cell", "seed", "alpha", "architecture"]
    assert list(table.columns[6:]) == list(M.PER_IMAGE_COLUMNS)
    rows = table[(table["architecture"] == "unet") & (table["alpha"] == 0.1) & (table["seed"] == 1)]
    assert rows["image_id"].tolist() == ["img0", "img1", "img2"]
    assert rows["dice"].tolist() == pytest.approx([0.79, 0.80, 0.81])
    assert set(rows["condition"]) == {"clean"} and set(rows["td"]) == {2.2}


def test_load_per_image_skips_runs_without_the_artifact(store: str) -> None:
    trials = load_trials("demo", tracking_uri=store, include_failed=True)
    with pytest.warns(UserWarning, match="1 trial run\\(s\\) have no per_image.csv"):
        table = load_per_image(trials, tracking_uri=store)
    assert len(table) == 8 * IMAGES and 2 not in set(table["seed"])


def test_analyze_writes_tables_and_a_real_png(store: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="4 of 4 cells have fewer than 3 seeds"):
        paths = analyze("demo", out_dir=tmp_path / "out", tracking_uri=store)
    assert set(paths) == {"trials", "per_image", "summary", "findings", "dice_vs_complexity", "claims", "breakdown"}
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in paths.values())
    claimed = pd.read_csv(paths["claims"]).set_index("claim")  # complexity, and breakdown: no perturbation, no patch
    assert claimed.index.tolist() == ["a", "e"]
    # No spec logged with these runs: the default declares (a)-(d), so (a) is declared and (e) exploratory.
    assert claimed.loc["a", "family"] == "declared" and claimed.loc["a", "method"] == "holm"
    assert claimed.loc["e", "family"] == "exploratory" and "exact stratified test" in claimed.loc["e", "line"]
    broke = pd.read_csv(paths["breakdown"]).set_index("cell")
    assert broke["models"].sum() == 8 and set(broke.columns) >= {"broke_down", "share", "worst_dice"}
    found = pd.read_csv(paths["findings"])  # one sentence per alpha: noskip against unet
    assert list(found["level"]) == ["alpha 0.1", "alpha 0.5"] and set(found["arm"]) == {"noskip"}
    assert len(pd.read_csv(paths["trials"])) == 8
    assert len(pd.read_csv(paths["per_image"])) == 24
    summary = pd.read_csv(paths["summary"])
    assert len(summary) == 4 * len(M.TEST_METRICS)
    dice = summary[(summary["metric"] == "test_dice") & (summary["architecture"] == "noskip") & (summary["alpha"] == 0.1)]
    assert dice["mean"].item() == pytest.approx(0.86)
    image = matplotlib.image.imread(paths["dice_vs_complexity"])
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05  # lines and text, not a blank canvas


def test_analyze_study_without_alpha_or_patch_size_writes_tables_only(store: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="1 of 1 cells have fewer than 3 seeds"):
        paths = analyze("flat", out_dir=tmp_path / "flat", tracking_uri=store)
    assert set(paths) == {"trials", "per_image", "summary", "breakdown"}
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["breakdown.csv", "per_image.csv", "summary.csv", "trials.csv"]
    summary = pd.read_csv(paths["summary"])
    assert summary.loc[summary["metric"] == "test_dice", "mean"].item() == pytest.approx(0.7)


def test_plot_without_td_values(store: str, tmp_path: Path) -> None:
    summary = summarise(load_trials("demo", tracking_uri=store), by=["architecture", "alpha"])
    out = plot_dice_vs_complexity(summary, summary.iloc[0:0], tmp_path / "sub" / "p.png")
    assert out.is_file() and matplotlib.image.imread(out).shape[1] > 600


def test_user_errors_name_what_is_wrong(store: str, tmp_path: Path) -> None:
    with pytest.raises(SegstudyError, match=r"experiment 'nope' not found in sqlite:////.*; available: .*demo, empty, flat"):
        load_trials("nope", tracking_uri=store)
    with pytest.raises(SegstudyError, match="experiment 'empty' has no trial runs"):
        load_trials("empty", tracking_uri=store)
    with pytest.raises(SegstudyError, match="no trial runs with phase 'tune'.*found 1 trial run"):
        load_trials("flat", tracking_uri=store, phase="tune")
    with pytest.raises(SegstudyError, match="phase 'final': accepted values are tune, confirm"):
        load_trials("demo", tracking_uri=store, phase="final")
    with pytest.raises(SegstudyError, match="no MLflow store at"):
        load_trials("demo", tracking_uri=f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


def test_rerun_of_a_study_reads_only_the_latest_study_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("rerun", artifact_location=(tmp_path / "a").as_uri())
    first = client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_STUDY}).info.run_id
    for seed in (0, 1):
        _trial(client, exp, first, tmp_path, factors={"architecture": "unet", "alpha": 0.1}, seed=seed,
               phase=M.PHASE_CONFIRM, metrics=_metrics(0.5, 1.0))
    second = client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_STUDY}).info.run_id
    _trial(client, exp, second, tmp_path, factors={"architecture": "unet", "alpha": 0.1}, seed=0,
           phase=M.PHASE_CONFIRM, metrics=_metrics(0.9, 1.0))
    latest = load_trials("rerun", tracking_uri=uri)
    assert list(latest["test_dice"]) == [pytest.approx(0.9)]
    assert len(load_trials("rerun", tracking_uri=uri, study="all")) == 3
    assert sorted(load_trials("rerun", tracking_uri=uri, study=first)["seed"]) == [0, 1]
    with pytest.raises(SegstudyError, match="study run 'nope': no trial runs belong to it"):
        load_trials("rerun", tracking_uri=uri, study="nope")
