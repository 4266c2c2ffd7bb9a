"""The folders dataset: levels of a factor the spec names (sites) are folders of real labelled images
(MSD, or <id>_image/<id>_mask pairs as PNG or NIfTI), each split on its own; validate refuses levels
that differ; a site shift is tested on the other site's test split and analysed unpaired across
levels (claim (b), the train x test table and its plots); `submit` ships the user's folder."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from analysis.plots.shift import plot_shift_degradation, plot_shift_heatmaps
from analysis.stats.statements.claims import claims
from analysis.stats.describe.shift import paired_across_levels, shift_matrix, shift_table
from conftest import ROOT, run_app
from study import metrics_names as M
from study.cli import app
from study.data import FoldersConfig, build_folders
from study.errors import SegstudyError
from study.run.cluster.submit import job_runtime_env
from study.run.driver.engine import prepared_data
from study.spec import load_spec
from study.training.inputs.study_data import build_study_data, summarise_data
from test_msd import write_msd

runner = CliRunner()
_MAKE = importlib.util.spec_from_file_location("own_study_make_sites", ROOT / "examples" / "own_study" / "make_sites.py")
make_sites = importlib.util.module_from_spec(_MAKE)
_MAKE.loader.exec_module(make_sites)  # the example's own script makes the NIfTI sites


def nifti_site(folder, *, seed: int = 1, cases: int = 8, size: int = 24):
    make_sites.write_site(folder, cases=cases, size=size, contrast=0.4, noise=0.05, bias=0.0, seed=seed)
    return folder


def png_site(folder, *, cases: int = 8, size: int = 20, colour: bool = False, labels: tuple[int, ...] = (255,)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(cases):
        mask = np.zeros((size, size), np.uint8)
        mask[4 + i % 4 : 12 + i % 4, 5:13] = labels[0]
        if len(labels) > 1:
            mask[4:6, 5:7] = labels[1]
        grey = (40 + 150 * (mask > 0) + rng.integers(0, 30, mask.shape)).astype(np.uint8)
        image = np.stack([grey] * 3, axis=-1) if colour else grey
        Image.fromarray(image).save(folder / f"p{i}_image.png")
        Image.fromarray(mask).save(folder / f"p{i}_mask.png")
    return folder


def folders_spec(write_spec, levels, **overrides):
    fields = {
        "data": {"dataset": "folders", "levels": {"site": {k: str(v) for k, v in levels.items()}}, "as_2d": True,
                 "slice_size": 24, "split": {"train": 0.5, "val": 0.125, "calib": 0.125, "test": 0.25}},
        "factors": {"architecture": ["unet"], "site": [next(iter(levels))]},
        "evaluation": {"perturbations": [], "shift": {"site": list(levels)}, "reference_arm": "unet"},
    }
    return write_spec(**{**fields, **overrides})


def _one_line(path) -> str:
    result = runner.invoke(app, ["validate", str(path)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


# --- reading and splitting ---------------------------------------------------------------------


def test_each_level_is_split_on_its_own_and_ids_carry_the_level(tmp_path):
    cfg = FoldersConfig(levels={"site": {"A": tmp_path / "a", "B": tmp_path / "b"}}, as_2d=True, slice_size=24,
                        split={"train": 0.5, "val": 0.125, "calib": 0.125, "test": 0.25})
    nifti_site(tmp_path / "a", seed=1)
    png_site(tmp_path / "b")
    a, b = build_folders(cfg, site="A"), build_folders(cfg, site="B")
    for level, prefix in ((a, "A:"), (b, "B:")):
        ids = [i for _, split in level.named_splits() for i in split.ids]
        assert len(ids) == len(set(ids)) == 8 and all(i.startswith(prefix) for i in ids)
        assert [len(split) for _, split in level.named_splits()] == [4, 1, 1, 2]
        for _, split in level.named_splits():
            assert split.images.shape[1:] == (1, 24, 24) and split.images.dtype == np.float32
            assert split.masks.dtype == np.uint8 and set(np.unique(split.masks)) <= {0, 1} and split.masks.any()
            assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert a.test.spacing == (1.0, 1.0)


def test_an_msd_folder_is_a_level(tmp_path):
    write_msd(tmp_path / "task", n=4)
    cfg = FoldersConfig(levels={"scanner": {"s1": tmp_path / "task"}}, label="spleen",
                        split={"train": 0.25, "val": 0.25, "calib": 0.25, "test": 0.25})
    level = build_folders(cfg, scanner="s1")
    assert [i for _, s in level.named_splits() for i in s.ids] and all(
        i.startswith("s1:case_") for _, s in level.named_splits() for i in s.ids)
    assert level.train.images.ndim == 5  # 3D volumes for patch training


# --- validate ----------------------------------------------------------------------------------


def test_a_site_study_validates_and_tests_every_model_on_the_other_site(tmp_path, write_spec):
    spec_path = folders_spec(write_spec, {"A": nifti_site(tmp_path / "a", seed=1), "B": nifti_site(tmp_path / "b", seed=2)})
    result = runner.invoke(app, ["validate", str(spec_path)])
    assert result.exit_code == 0, result.output
    spec = load_spec(spec_path)
    data = build_study_data(spec)
    assert list(data) == [("A",)]
    (shifted,) = data[("A",)].shifted
    assert shifted.factor == "site" and shifted.level == "B"
    assert all(i.startswith("B:") for i in shifted.split.ids) and len(shifted.split) == 2
    summary = summarise_data(spec, data)
    assert summary[summary["split"] == "test"]["site"].tolist() == ["A", "B"]


@pytest.mark.parametrize(
    ("make_b", "expected"),
    [
        (lambda p: png_site(p, colour=True), "data.levels.site.B ({b}): 3 image channel(s), but 1 in level A"),
        (lambda p: write_msd(p, n=4), "data.levels.site.B ({b}): 3D images, but 2D in level A"),
        (lambda p: png_site(p, labels=(1, 2)), "data.levels.site.B ({b}): labels 1, 2, but 255 in level A"),
    ],
)
def test_validate_refuses_levels_that_differ(tmp_path, write_spec, make_b, expected):
    b = tmp_path / "b"
    make_b(b)
    spec = folders_spec(write_spec, {"A": png_site(tmp_path / "a"), "B": b}, data__label=None)
    line = _one_line(spec)
    assert expected.format(b=b) in line and "needs the same channels, dimensionality and labels" in line, line


def test_run_refuses_a_shift_level_the_network_cannot_take_before_any_trial(tmp_path, write_spec):
    """Without validate's comparison, a site of colour images is caught by the preflight's
    prediction on the shifted test split, not by every trial after training."""
    spec = load_spec(folders_spec(write_spec, {"A": png_site(tmp_path / "a"), "B": png_site(tmp_path / "b", colour=True)}))
    with pytest.raises(SegstudyError, match=r"on shift site=B test image B:p\d \(3 channel\(s\), shape \[24, 24\]\)"):
        prepared_data(spec)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"factors": {"architecture": ["unet"]}}, "factors: folders data need the factor(s) site"),
        ({"factors": {"architecture": ["unet"], "site": ["C"]}}, "factors.site[0]: value 'C' is not a level of data.levels.site; accepted: A, B"),
        ({"evaluation__shift": {"site": ["A", "Z"]}}, "evaluation.shift.site[1]: value 'Z' is not a level of data.levels.site"),
        ({"data__levels": {"site": {"1": "x", "B": "y"}}}, "data.levels: site.1: a level name is letters"),
        ({"data__levels": {"site": {"A": "s3://bucket/a"}}}, "data.levels: site.A: 's3://bucket/a' is not a local folder"),
        ({"data__levels": {"site": {"A": "a"}, "scanner": {"x": "b"}}}, "data.levels: name one factor and its levels"),
    ],
)
def test_validate_refuses_a_bad_folders_spec_in_one_line(tmp_path, write_spec, overrides, expected):
    spec = folders_spec(write_spec, {"A": tmp_path / "a", "B": tmp_path / "b"}, **overrides)
    assert expected in _one_line(spec)


def test_a_missing_mask_names_the_file(tmp_path, write_spec):
    a = png_site(tmp_path / "a")
    (a / "p3_mask.png").unlink()
    spec = folders_spec(write_spec, {"A": a, "B": png_site(tmp_path / "b")})
    assert f"{a / 'p3_image.png'}: no mask beside it (expected p3_mask.png)" in _one_line(spec)


# --- analysis of a site shift ------------------------------------------------------------------


def _site_rows() -> pd.DataFrame:
    """Two arms trained at A, tested on A's images (clean) and B's (shift): unet loses 0.1, tiny 0.3."""
    wobble, rows = {0: -0.01, 1: 0.0, 2: 0.01}, []
    for arm, loss in (("unet", 0.1), ("tiny", 0.3)):
        for seed in range(3):
            for site, condition, lost in (("A", M.CLEAN, 0.0), ("B", M.shift_condition("site", "B"), loss)):
                for i, offset in enumerate(np.linspace(-0.05, 0.05, 6 if site == "A" else 4)):
                    rows.append({"run_id": f"{arm}{seed}", "cell": f"architecture={arm},site=A", "seed": seed,
                                 "architecture": arm, "site": "A", "test_site": site, "image_id": f"{site}:c{i}",
                                 "condition": condition, "dice": 0.9 + wobble[seed] + offset - lost})
    return pd.DataFrame(rows)


def test_site_shift_claim_pairs_arms_within_each_site_only(tmp_path):
    rows = _site_rows()
    assert not paired_across_levels(rows, factor="site")
    table = claims(rows[rows["condition"] == M.CLEAN], reference="unet", shift_rows=rows)
    b = table[table["claim"] == "b"].iloc[0]
    assert b["arm"] == "tiny" and b["about"] == "site A -> B" and b["estimate"] == pytest.approx(0.2)
    assert "(other images: paired within a level, not across)" in b["line"] and "tiny loses 0.300 Dice, unet 0.100" in b["line"]
    assert b["n_images"] == 10 and b["ci_low"] < 0.2 < b["ci_high"]
    matrix = shift_matrix(shift_table(rows, factor="site"), factor="site")
    assert list(matrix.columns) == ["architecture", "site", "test_site=A", "test_site=B", "seeds", "images"]
    assert matrix.set_index("architecture").loc["tiny", "test_site=B"] == pytest.approx(0.6)
    table = shift_table(rows, factor="site")
    for plot in (plot_shift_heatmaps, plot_shift_degradation):
        assert plot(table, tmp_path / f"{plot.__name__}.png", factor="site").stat().st_size > 0


# --- submit from the user's folder -------------------------------------------------------------


def test_submit_ships_the_project_folder_and_packages_from_outside_it(tmp_path, monkeypatch, write_spec):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (elsewhere / "segtest_pkg").mkdir(parents=True)
    (elsewhere / "segtest_pkg" / "__init__.py").write_text("from torch.nn import Identity as Net\n")
    (elsewhere / "segtest_single.py").write_text("from torch.nn import Identity as Net\n")
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(elsewhere))
    for name in ("segtest_pkg", "segtest_single"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    arm = {"_target_": "segtest_pkg.Net"}
    spec = load_spec(write_spec(architectures={"mine": arm}, factors={"architecture": ["unet", "mine"], "alpha": [0.2]}))
    env = job_runtime_env(spec, project)
    assert env["working_dir"] == str(project) and "mlflow.db" in env["excludes"] and "ray_results/" in env["excludes"]
    assert env["py_modules"][-1] == str(elsewhere / "segtest_pkg")
    assert {p.rsplit("/", 1)[-1] for p in env["py_modules"][:-1]} == {"study", "analysis"}  # segstudy travels too
    single = load_spec(write_spec("single.yaml", architectures={"mine": {"_target_": "segtest_single.Net"}},
                                  factors={"architecture": ["unet", "mine"], "alpha": [0.2]}))
    with pytest.raises(SegstudyError, match=r"architectures.mine._target_: module 'segtest_single' \(.*\) lies outside the project folder"):
        job_runtime_env(single, project)


def test_submit_refuses_a_spec_outside_the_current_folder(tmp_path, write_spec):
    spec = write_spec()
    (tmp_path / "sub").mkdir()
    proc = run_app("submit", str(spec), "--address", "http://127.0.0.1:1", cwd=tmp_path / "sub")
    assert proc.returncode == 2
    assert "the spec must lie inside the project folder" in proc.stderr and "(the current folder)" in proc.stderr
