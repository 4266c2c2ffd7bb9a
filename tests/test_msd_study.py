"""Real NIfTI data through a spec: validate checks the files, a patch trial trains and tests on it."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from study.cli import app
from study.spec import load_spec
from study.training.inputs.study_data import build_study_data
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


def test_validate_refuses_mixed_channels_as_run_would(tmp_path):
    """A 2-channel case among 1-channel ones: validate says so (exit 2, the file named), where run
    used to start Ray and fail the trials that met it ("expected 1 channels, but got 2")."""
    import nibabel as nib
    import numpy as np

    root = write_msd(tmp_path / "Task00_Tiny")
    case = root / "imagesTr" / "case_3.nii.gz"
    image = nib.load(case)
    data = np.asarray(image.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), image.affine), case)
    result = runner.invoke(app, ["validate", str(msd_spec(tmp_path, root))])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "case_3.nii.gz: 2 channel(s)" in line and "has 1" in line


def test_preflight_predicts_every_image_layout(tmp_path):
    """Whole 3D volumes: one test case two voxels narrower than the rest cannot pass the U-Net (its
    skip connection no longer lines up). The preflight meets it, not a trial: exit 2 naming it."""
    import yaml

    from study.data import MSDConfig, build_msd
    from study.data.base import SplitConfig

    quarters = SplitConfig(train=0.25, val=0.25, calib=0.25, test=0.25)
    root = write_msd(tmp_path / "probe")
    test_case = build_msd(MSDConfig(root=root, split=quarters)).test.ids[0]
    shapes = [(22, 24, 12) if f"case_{i}" == test_case else (24, 24, 12) for i in range(4)]
    root = write_msd(tmp_path / "Task00_Tiny", shapes=shapes)
    path = msd_spec(tmp_path, root)
    spec = yaml.safe_load(path.read_text())
    spec["data"].pop("spacing")
    spec["factors"] = {"architecture": ["unet"]}  # whole volumes, no patches
    spec.pop("patches")
    spec["model"] = {"unet": {"channels": [4, 8, 16], "strides": [2, 2]}}
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and f"one training step on the study's data fails on test image {test_case}" in line
    assert "shape [22, 24, 12]" in line
