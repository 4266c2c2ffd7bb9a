"""examples/own_study end to end, as a researcher meets it: segstudy built as a wheel and installed
into a fresh venv, the example copied to a folder of their own outside this repository, its two
NIfTI sites made by its script, `segstudy run spec.yaml` there, and `segstudy submit spec.yaml`
to a real Ray head, the folder (my_nets.py, data/) travelling as the job's working_dir.

Kept lean for `make test`: the fresh venv gets segstudy from the wheel and finds its dependencies
in this venv's site-packages through a .pth file (segstudy's own entries left out), so nothing is
downloaded or unpacked; `pip install --no-index` and `pip check` still resolve every dependency the
wheel declares (torchio beside torch 2.13.0 among them). The study is two arms x one seed x three
epochs on 12 images per site.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import ROOT
from study import metrics_names as M

EXAMPLE = ROOT / "examples" / "own_study"
BIN = Path(sys.executable).parent
SHIFT_CLAIM = "(b) out of domain, trained at site A, tested at B (mean) (other images: paired within a level, not across)"


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with segstudy installed from a wheel built from this repository; its bin folder."""
    base = tmp_path_factory.mktemp("user_venv")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("study", "analysis"):  # what the wheel ships; a copy keeps build/ out of the repository
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    built = _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(base / "dist"),
                  str(source)], cwd=base)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (base / "dist").glob("segstudy-*.whl")
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    deps = base / "deps"  # this venv's packages, segstudy's own (its editable install) left out
    deps.mkdir()
    here = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for entry in here.iterdir():
        if "segstudy" not in entry.name.lower():
            (deps / entry.name).symlink_to(entry)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "_segstudy_test_deps.pth").write_text(f"{deps}\n")
    python = venv / "bin" / "python"
    installed = _run([*pip, "--python", str(python), "install", "-q", "--no-index", str(wheel)], cwd=base)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    checked = _run([*pip, "--python", str(python), "check"], cwd=base)
    assert checked.returncode == 0, checked.stdout  # every declared dependency is there, torchio beside torch
    where = _run([str(python), "-c", "import study, torch; print(study.__file__, torch.__version__)"], cwd=base)
    assert where.stdout.startswith(str(site)) and "2.13.0" in where.stdout, where.stdout + where.stderr
    return venv / "bin"


@pytest.fixture(scope="module")
def project(user_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example copied to a folder of the user's, its sites made by its own script, the spec cut down."""
    folder = tmp_path_factory.mktemp("my_project")
    for name in ("my_nets.py", "make_sites.py", "spec.yaml", ".rayignore"):
        shutil.copy(EXAMPLE / name, folder / name)
    made = _run([str(user_venv / "python"), "make_sites.py", "--cases", "12", "--size", "32"], cwd=folder)
    assert made.returncode == 0, made.stderr
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    spec["data"]["slice_size"] = 32
    spec["factors"]["architecture"] = ["unet", "tiny"]
    spec["seeds"] = [0]
    spec["training"]["epochs"] = 3
    spec["evaluation"]["perturbations"] = ["ghosting", "spikes"]  # built-in TorchIO, and one by _target_
    spec["evaluation"]["severities"] = [5]
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def _trials(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("own_study")
    return client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")


def _check_study(uri: str, tmp: Path) -> None:
    """Both arms trained and were tested clean, under both perturbations and at site B."""
    runs = _trials(uri)
    assert sorted(r.data.params["architecture"] for r in runs) == ["tiny", "unet"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    tiny = next(r for r in runs if r.data.params["architecture"] == "tiny")
    assert "test_dice/shift_site/B" in tiny.data.metrics
    path = MlflowClient(tracking_uri=uri).download_artifacts(tiny.info.run_id, M.PER_IMAGE_FILE, str(tmp))
    rows = pd.read_csv(path)
    assert set(rows["condition"]) == {M.CLEAN, "ghosting:5", "spikes:5", "shift:site=B"}
    ids = rows.groupby("condition")["image_id"].agg(lambda s: {str(i).split(":")[0] for i in s})
    assert ids[M.CLEAN] == {"A"} and ids["shift:site=B"] == {"B"}  # each site's own test images


@pytest.mark.slow
def test_own_study_from_a_wheel_runs_locally_and_on_a_ray_head(user_venv, project, ray_head, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{user_venv}{os.pathsep}{env.get('PATH', '')}"
    segstudy = str(user_venv / "segstudy")

    # Locally, from the user's folder: the network and the sites come from there.
    local = f"sqlite:///{tmp_path / 'local.db'}"
    proc = _run([segstudy, "run", "spec.yaml", "--tracking-uri", local, "--storage", str(tmp_path / "local")],
                cwd=project, env=env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2/2 trials finished" in proc.stdout
    assert SHIFT_CLAIM in proc.stdout
    _check_study(local, tmp_path / "a")

    # On a Ray head, submitted from the same folder: it travels as the job's working_dir.
    jobs = f"sqlite:///{tmp_path / 'jobs.db'}"
    proc = _run([segstudy, "submit", "spec.yaml", "--address", ray_head.dashboard_url, "--tracking-uri", jobs,
                 "--storage", str(tmp_path / "jobs")], cwd=project, env={**env, "RAY_AUTH_MODE": "disabled"}, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SUCCEEDED" in proc.stdout and "2/2 trials finished" in proc.stdout
    _check_study(jobs, tmp_path / "b")
