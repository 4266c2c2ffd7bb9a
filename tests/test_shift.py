"""Train/test shift (evaluation.shift): spec check, data built once, per-image rows and MLflow
metrics of a real study, the train x test table on known numbers, its plots and the report."""

from __future__ import annotations

import re
import warnings

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from analysis.plots.shift import plot_shift_degradation, plot_shift_heatmaps
from analysis.read.runs import split_shift
from analysis.stats.describe.shift import shift_factors, shift_matrix, shift_table
from conftest import DELETE, SMOKE_3D
from study import metrics_names as M
from study.cli import app
from study.conformal.calibrate import COVERED
from study.data import build_synthetic2d
from study.spec import load_spec
from study.training.inputs.study_data import build_study_data, summarise_data

runner = CliRunner()


# --- names -------------------------------------------------------------------------------------


def test_shift_condition_names_round_trip_and_stay_legal_mlflow_names():
    condition = M.shift_condition("alpha", 0.5)
    assert condition == "shift:alpha=0.5" and M.parse_shift(condition) == ("alpha", "0.5")
    assert M.is_shift(condition) and not M.is_shift(M.CLEAN) and not M.is_shift("gaussian_noise:3")
    assert M.parse_shift("gaussian_noise:3") is None
    assert M.condition_metric("dice", condition) == "test_dice/shift_alpha/0.5"
    assert M.condition_metric("hd95", "gaussian_noise:3") == "test_hd95/gaussian_noise/3"
    assert M.condition_path(condition) == "shift_alpha/0.5" and M.test_level_column("alpha") == "test_alpha"
    for level in (0.1, 1e-05, 0, 0.99):  # what MLflow accepts in a metric name
        assert re.fullmatch(r"[\w\-. :/]+", M.condition_metric("dice", M.shift_condition("alpha", level)))
    # A robustness summary reads perturbations only: a shift condition is refused, by name.
    with pytest.raises(Exception, match="'shift:alpha=0.5' is a train/test shift, not a perturbation"):
        M.parse_condition(condition)


# --- spec --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "overrides", "expected"),
    [
        (None, {"evaluation__shift": {"patch_size": [16]}},
         "evaluation.shift: 'patch_size' is not a factor dataset 'synthetic2d' can render at another level; accepted: alpha"),
        (SMOKE_3D, {"evaluation__shift": {"alpha": [0.1]}},
         "evaluation.shift: 'alpha' is not a factor dataset 'synthetic3d' can render at another level; accepted: none"),
        (None, {"evaluation__shift": {"alpha": [0.2, 1.5]}}, "evaluation.shift.alpha[1]: value 1.5 must be a number in [0, 1)"),
        (None, {"evaluation__shift": {"alpha": [0.2, 0.2]}}, "evaluation.shift: alpha[1]: value 0.2 repeats alpha[0]"),
        (None, {"evaluation__shift": {"alpha": []}}, "evaluation.shift: 'alpha' needs at least one level"),
    ],
)
def test_validate_refuses_a_shift_the_dataset_cannot_render(write_spec, base, overrides, expected):
    path = write_spec(**overrides) if base is None else write_spec(_base=base, **overrides)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and expected in lines[0], result.stderr


def test_shift_factor_must_be_in_the_grid(write_spec):
    # synthetic2d cannot be built without alpha at all: that refusal comes first, in one line.
    path = write_spec(factors__alpha=DELETE, evaluation__shift={"alpha": [0.2]})
    result = runner.invoke(app, ["validate", str(path)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "need the factor(s) alpha" in lines[0], result.stderr


# --- data --------------------------------------------------------------------------------------


def test_shifted_test_splits_are_built_once_and_are_the_same_images(write_spec):
    spec = load_spec(write_spec(data__n_images=20, evaluation__shift={"alpha": [0.2, 0.5, 0.0]}))
    data = build_study_data(spec)  # grid alpha: 0.2, 0.8
    low, high = data[(0.2,)], data[(0.8,)]
    assert [(s.factor, s.level) for s in low.shifted] == [("alpha", 0.5), ("alpha", 0.0)]  # its own 0.2 not twice
    assert [(s.factor, s.level) for s in high.shifted] == [("alpha", 0.2), ("alpha", 0.5), ("alpha", 0.0)]
    assert high.shifted[0].split is low.test  # a grid level's test split is shared, not rebuilt
    assert low.shifted[0].split is high.shifted[1].split  # the extra level 0.5: built once
    direct = build_synthetic2d(spec.data, alpha=0.5).test
    extra = low.shifted[0].split
    assert extra.ids == low.test.ids and np.array_equal(extra.masks, low.test.masks)  # same images and masks
    assert np.array_equal(extra.images, direct.images) and not np.array_equal(extra.images, low.test.images)
    summary = summarise_data(spec, data)  # the test-only levels get their test row
    assert sorted(summary[summary["split"] == "test"]["alpha"]) == [0.0, 0.2, 0.5, 0.8]
    assert len(summary) == 2 * 4 + 2

    plain = build_study_data(load_spec(write_spec(data__n_images=20)))
    assert all(level.shifted == () for level in plain.values())


# --- table and plots on known numbers ------------------------------------------------------------

ARMS = ("noskip", "unet")
TRAIN = (0.1, 0.5)
TEST = (0.1, 0.5, 0.9)


def _known_rows() -> pd.DataFrame:
    """Dice = 0.9 - |train - test| (- 0.1 more for noskip off its level) + 0.02 * seed + image offset."""
    offsets = np.array([-0.01, 0.0, 0.01])
    rows = []
    for arm in ARMS:
        for train in TRAIN:
            for seed in (0, 1):
                for test in TEST:
                    condition = M.CLEAN if test == train else M.shift_condition("alpha", test)
                    penalty = abs(train - test) + (0.1 if arm == "noskip" and test != train else 0.0)
                    for i, offset in enumerate(offsets):
                        rows.append({
                            "run_id": f"{arm}{train}{seed}", "phase": "confirm", "seed": seed, "alpha": train,
                            "architecture": arm, "image_id": f"img{i}", "condition": condition,
                            "dice": 0.9 - penalty + 0.02 * seed + offset,
                            "test_alpha": test, COVERED: i != 2 or test == train,
                        })
    # Perturbed rows of the model's own level: in-domain, never part of the shift table.
    rows.append({**rows[0], "condition": "gaussian_noise:3", "dice": 0.0})
    return pd.DataFrame(rows)


def test_split_shift_keeps_shift_rows_from_in_domain_readers():
    rows = _known_rows()
    parts = split_shift(rows)
    assert not parts.in_domain["condition"].map(M.is_shift).any()
    assert set(parts.in_domain["condition"]) == {M.CLEAN, "gaussian_noise:3"}
    assert set(parts.shift["condition"]) == {M.CLEAN, "shift:alpha=0.1", "shift:alpha=0.5", "shift:alpha=0.9"}
    assert len(parts.shift) == 2 * 2 * 2 * 3 * 3 and shift_factors(parts.shift) == ["alpha"]
    # A run that logged no test_alpha column was tested at its own level on its clean rows.
    older = split_shift(rows.drop(columns="test_alpha")).shift
    assert (older[older["condition"] == M.CLEAN]["test_alpha"] == older[older["condition"] == M.CLEAN]["alpha"]).all()
    assert split_shift(rows[~rows["condition"].map(M.is_shift)]).shift.empty


def test_shift_table_and_matrix_on_known_numbers(tmp_path):
    rows = split_shift(_known_rows()).shift
    table = shift_table(rows, factor="alpha")
    assert len(table) == 2 * 2 * 3 and list(table.columns[:4]) == ["architecture", "alpha", "test_alpha", "metric"]
    cell = table[(table["architecture"] == "noskip") & (table["alpha"] == 0.1) & (table["test_alpha"] == 0.9)].iloc[0]
    assert cell["mean"] == pytest.approx(0.9 - 0.8 - 0.1 + 0.01)  # seeds 0 and 1: +0.00 and +0.02
    assert cell["std"] == pytest.approx(0.02 / np.sqrt(2)) and cell["seeds"] == 2 and cell["images"] == 3
    assert cell["coverage"] == pytest.approx(2 / 3) and not cell["in_domain"]
    own = table[(table["architecture"] == "unet") & (table["alpha"] == 0.5) & (table["test_alpha"] == 0.5)].iloc[0]
    assert own["mean"] == pytest.approx(0.91) and own["coverage"] == 1.0 and own["in_domain"]

    matrix = shift_matrix(table, factor="alpha")
    assert list(matrix.columns) == ["architecture", "alpha", "test_alpha=0.1", "test_alpha=0.5", "test_alpha=0.9", "seeds", "images"]
    unet = matrix[matrix["architecture"] == "unet"].set_index("alpha")
    assert unet.loc[0.1, ["test_alpha=0.1", "test_alpha=0.5", "test_alpha=0.9"]].tolist() == pytest.approx([0.91, 0.51, 0.11])
    assert unet.loc[0.5, ["test_alpha=0.1", "test_alpha=0.5", "test_alpha=0.9"]].tolist() == pytest.approx([0.51, 0.91, 0.51])
    assert (matrix["seeds"] == 2).all() and (matrix["images"] == 3).all()
    coverage = shift_matrix(table, factor="alpha", value="coverage").set_index(["architecture", "alpha"])
    assert coverage.loc[("unet", 0.1), "test_alpha=0.1"] == 1.0 and coverage.loc[("unet", 0.1), "test_alpha=0.9"] == pytest.approx(2 / 3)

    for plot, name in ((plot_shift_heatmaps, "heat.png"), (plot_shift_degradation, "curves.png")):
        path = plot(table, tmp_path / name, factor="alpha")
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05  # drawn, not blank


def test_shift_table_names_a_factor_nothing_was_shifted_along():
    rows = split_shift(_known_rows()).shift
    with pytest.raises(Exception, match="no row is shifted along 'beta'; shifted factors: alpha"):
        shift_table(rows.assign(beta=1.0, test_beta=1.0), factor="beta")


# --- a real study ------------------------------------------------------------------------------


@pytest.mark.slow
def test_shift_study_end_to_end(ray_head, write_spec, tmp_path):
    """Train at alpha 0.2 and 0.8, test also at 0.5 (not a grid level): per-image rows for every
    (train, test) pair, the shifted metrics in MLflow, the analyze table and the report section."""
    from analysis.commands.analyze import analyze
    from analysis.commands.report import build_report
    from study.run.driver.engine import run_study

    spec = write_spec(
        name="shiftsmoke", training__epochs=2, evaluation__perturbations=["gaussian_noise"],
        evaluation__severities=[1], evaluation__shift={"alpha": [0.2, 0.5, 0.8]},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(spec, address=ray_head.gcs_address, tracking_uri=uri, storage=tmp_path / "results")
    assert result.ok and result.n_trials == 4
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("shiftsmoke")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")
    frames = {}
    for run in runs:
        own = float(run.data.params["alpha"])
        rows = pd.read_csv(client.download_artifacts(run.info.run_id, M.PER_IMAGE_FILE, str(tmp_path / run.info.run_id)))
        shifted = [level for level in (0.2, 0.5, 0.8) if level != own]
        assert set(rows["condition"]) == {M.CLEAN, "gaussian_noise:1", *(M.shift_condition("alpha", v) for v in shifted)}
        assert (rows.groupby("condition").size() == 8).all()  # every test image at every test level
        in_domain = ~rows["condition"].map(M.is_shift)
        assert (rows.loc[in_domain, "test_alpha"] == own).all()
        for level in shifted:
            mine = rows[rows["condition"] == M.shift_condition("alpha", level)]
            assert (mine["test_alpha"] == level).all() and mine[COVERED].notna().all()
            key = f"test_dice/shift_alpha/{level}"
            assert run.data.metrics[key] == pytest.approx(mine["dice"].mean(), abs=1e-6)
            assert run.data.metrics[f"coverage/shift_alpha/{level}"] == pytest.approx(mine[COVERED].mean())
        assert run.data.metrics[M.TEST_DICE] == pytest.approx(rows[rows["condition"] == M.CLEAN]["dice"].mean(), abs=1e-6)
        frames[(run.data.params["architecture"], own)] = rows
    # Every arm met the very same shifted pixels; the shifted test set at 0.8 is the 0.8 models' own.
    shifted_08 = [frames[(a, 0.2)].query("condition == 'shift:alpha=0.8'") for a in ("unet", "noskip_unet")]
    own_08 = frames[("unet", 0.8)].query("condition == 'clean'")
    assert list(shifted_08[0]["td"]) == list(shifted_08[1]["td"]) == list(own_08["td"])
    assert list(shifted_08[0]["image_id"]) == list(own_08["image_id"])

    with pytest.warns(UserWarning):  # one seed per cell: the few-seeds warning
        paths = analyze("shiftsmoke", out_dir=tmp_path / "analysis", tracking_uri=uri)
    assert not pd.read_csv(paths["per_image"])["condition"].map(M.is_shift).any()
    matrix = pd.read_csv(paths["shift_alpha"])
    assert list(matrix.columns) == ["architecture", "alpha", "test_alpha=0.2", "test_alpha=0.5", "test_alpha=0.8", "seeds", "images"]
    assert len(matrix) == 4 and (matrix["seeds"] == 1).all() and (matrix["images"] == 8).all()
    for row in matrix.itertuples(index=False):
        rows = frames[(row.architecture, row.alpha)]
        for level, value in zip((0.2, 0.5, 0.8), row[2:5], strict=True):
            assert value == pytest.approx(rows[(rows["test_alpha"] == level) & ~rows["condition"].str.contains("noise")]["dice"].mean())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one seed per cell: every statistic says so
        report = build_report("shiftsmoke", out_dir=tmp_path / "report", tracking_uri=uri, n_boot=0, log_to_mlflow=False)
    section = re.search(r'<section id="shift">(.*?)</section>', report.read_text(), flags=re.S).group(1)
    assert 'id="shift-alpha"' in section and 'id="shift-coverage-alpha"' in section and section.count("<img") == 2
    assert pd.read_csv(tmp_path / "report" / "shift_alpha.csv").equals(matrix)
    # The data summary on the study run lists the test-only level 0.5 with its test split alone.
    data = pd.read_csv(client.download_artifacts(result.study_run_id, "data_summary.csv", str(tmp_path / "data")))
    assert data[data["alpha"] == 0.5]["split"].tolist() == ["test"] and len(data) == 2 * 4 + 1
