"""Real NIfTI data through a spec: validate checks the files, a patch trial trains and tests on it."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from study.cli import app
from study.spec import load_spec
from study.training.study_data import build_study_data
from study.training.trial import run_plan
from study.training import TrialPlan
from test_msd import write_msd

runner = CliRunner()


def msd_spec(tmp_path: Path, root: Path) -> Path:
    spec = {
        "name": "msd_tiny",
        "data": {"dataset": "msd", "root": str(root), "label": "spleen", "spacing": [1.5, 1.5, 3.0],
                 "split": {"train": 0.25, "val": 0.25, "calib": 0.25, "test": 0.25}},
        "model": {"unet": {"channels": [4, 8], "strides": [2]}},
        "factors": {"architecture": ["unet"], "patch_size": [8], "pos_fraction": [0.5]},
        "patches": {"samples_per_volume": 2},
        "hyperparameters": {"lr": 0.01, "batch_size": 1},
        "training": {"epochs": 2},
        "seeds": [0],
    }
    path = tmp_path / "msd.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_validate_checks_the_nifti_files(tmp_path):
    root = write_msd(tmp_path / "Task00_Tiny")
    path = msd_spec(tmp_path, root)
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
    broken = root / "labelsTr" / "case_1.nii.gz"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated download
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "case_1.nii.gz" in line, line


def test_patch_trial_on_real_nifti_volumes(tmp_path):
    root = write_msd(tmp_path / "Task00_Tiny")
    spec = load_spec(msd_spec(tmp_path, root))
    data = build_study_data(spec)
    plan = TrialPlan.from_config(spec, TrialPlan.config({"architecture": "unet", "patch_size": 8, "pos_fraction": 0.5},
                                                        seed=0, phase="confirm"))
    result = run_plan(plan, spec=spec, data=data)
    table = result.per_image
    assert list(table["image_id"]) == list(data[()].test.ids) and len(table) == 1
    assert 0.0 <= result.metrics["test_dice"] <= 1.0 and table["hd95"].notna().all()
    assert len(result.patch_foreground) == 2 * 2  # 1 training case x 2 crops x 2 epochs
