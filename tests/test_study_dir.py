"""The study folder: a fingerprint of what it must hold, a lock held by the live driver."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import SMOKE, run_app
from study.errors import SegstudyError
from study.run.record.study_dir import LOCK, MANIFEST, OPTUNA_DB, StudyDir


@pytest.fixture
def study(tmp_path) -> StudyDir:
    return StudyDir.create(tmp_path / "storage", name="smoke", spec_file=SMOKE, tracking_uri=f"sqlite:///{tmp_path}/x.db")


def test_a_fresh_study_folder_passes_its_own_check(study):
    assert StudyDir.find("smoke", storage=study.path.parent) == study.checked()


@pytest.mark.parametrize("cut", [10, 200, 400])
def test_a_truncated_spec_copy_is_refused(study, cut):
    """A truncation can still parse as a valid but different spec (other seeds, factors): the hash catches it."""
    text = study.spec_file.read_bytes()
    study.spec_file.write_bytes(text[:cut])
    with pytest.raises(SegstudyError, match=r"spec.yaml: changed or damaged since the study started"):
        StudyDir.find("smoke", storage=study.path.parent)


@pytest.mark.parametrize("manifest", ["[]", "{}", '"smoke"', '{"name": "smoke"}', "{not json"])
def test_a_damaged_manifest_is_one_line(study, manifest):
    (study.path / MANIFEST).write_text(manifest)
    with pytest.raises(SegstudyError, match=r"study.json: (not a|unreadable|not a complete) study manifest"):
        StudyDir.find(study.path, storage=study.path.parent)


def test_a_lost_optuna_storage_after_tuning_began_is_refused(study):
    study.update(tune_started=True)
    with pytest.raises(SegstudyError, match=rf"{OPTUNA_DB}: missing, but the tune phase had started"):
        study.checked()
    study.update(chosen={"cell": {}})  # tuning over: Optuna's record is no longer needed
    assert study.checked() == study


def test_a_corrupt_optuna_storage_is_refused(study):
    (study.path / OPTUNA_DB).write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SegstudyError, match=rf"{OPTUNA_DB}: not an SQLite database"):
        study.checked()


def test_one_damaged_study_does_not_block_another(tmp_path, study):
    other = StudyDir.create(study.path.parent, name="other", spec_file=SMOKE, tracking_uri=f"sqlite:///{tmp_path}/x.db")
    (other.path / MANIFEST).write_text("[]")
    assert StudyDir.find("smoke", storage=study.path.parent) == study
    proc = run_app("sync", "smoke", "--storage", str(study.path.parent), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "delivered 0 kept tracking write(s); 0 still waiting" in proc.stdout


def test_a_live_driver_holds_the_lock_and_a_dead_one_does_not(study):
    """A real second process holds the lock; once it is SIGKILLed, the kernel releases it."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from study.run.record.study_dir import StudyDir\n"
         f"with StudyDir(Path({str(study.path)!r})).driving():\n    print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SegstudyError, match=rf"a live driver is running this study \(pid {holder.pid} on "):
            with study.driving():
                pass
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with study.driving():  # taken over from the dead holder, no manual cleanup
        assert (study.path / LOCK).read_text().startswith(f"pid {os.getpid()} on ")
