"""A real full disk (a small tmpfs holding the study folder): at mid tune and at mid confirm the
study stops as interrupted and resumable with one line naming the path and its free space;
`resume` on the still-full disk says so; once space is freed, `resume` completes the study.
`run` refuses a disk with less free space than the study is estimated to write."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, held, run_app
from study import disk
from study import metrics_names as M
from study.run.driver.engine import resume_study
from study_drivers import CELLS, TRIALS_PER_CELL, WHEN, Store, resume_driver, stands, start_study

pytestmark = pytest.mark.filterwarnings("ignore:.*confirmation seed")

SIZE_MB = 48


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of SIZE_MB mounted at tmp_path/disk (as root), unmounted after the test."""
    mount = shutil.which("mount")
    folder = tmp_path / "disk"
    folder.mkdir()
    proc = subprocess.run([mount or "mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(folder)],
                          capture_output=True, text=True) if mount else None
    if proc is None or proc.returncode != 0:
        reason = proc.stderr.strip() if proc is not None else "no mount command"
        pytest.skip(f"a real full disk needs a tmpfs mounted here, which was refused ({reason}): run as root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(disk: Path) -> None:
    """Write a filler file until the disk has no byte left."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                continue
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free == 0


def free(disk: Path) -> None:
    (disk / "filler").unlink()


def fill_when(driver, ready) -> None:
    """Fill the disk at the moment `ready()` says, with the trial workers paused while the moment
    is checked again and the disk filled (`conftest.held`): the next write of the study meets it."""
    while True:
        driver.wait_for(ready)
        with held(driver.workers()):
            if ready():
                fill(driver.disk)
                return


def stopped_for_full_disk(store: Store, driver, disk: Path) -> None:
    """Exit 75 and one line naming a path on the full disk and its free space; no traceback; the
    study run KILLED and tagged interrupted by it; `status` says so."""
    assert driver.wait() == 75, driver.output()
    err = driver.stderr.read_text()
    assert "Traceback" not in err and "Logging error" not in err, err
    folder = store.folder()
    line = driver.last_line()
    assert re.fullmatch(rf"interrupted: no space left on device: {re.escape(str(disk))}/\S+ \(0 B free\); free space, "
                        rf"then `segstudy resume {re.escape(str(folder))}` continues", line), line
    assert "stopping (no space left on device: " in driver.stdout.read_text()
    run = store.study_run()
    assert run.info.status == "KILLED" and run.data.tags[M.STATE_TAG] == M.STATE_INTERRUPTED
    assert run.data.tags[M.STOP_SIGNAL_TAG].startswith(f"no space left on device: {disk}/")
    stands(store, rf"interrupted by no space left on device: {re.escape(str(disk))}/\S+ \(0 B free\) at {WHEN}; "
                  rf"free space, then `segstudy resume {re.escape(str(folder))}` continues")


@pytest.mark.slow
def test_a_full_disk_at_mid_tune_and_mid_confirm_stops_the_study_and_resume_completes_it(ray_head, small_disk, tmp_path):
    # The study folder on the small disk; the MLflow store beside the test, so it records the stop.
    store, env, run = start_study(ray_head, tmp_path, "diskfull", storage=small_disk / "r")
    run.disk = small_disk

    # 1. Mid tune: one tune trial ended, another running.
    fill_when(run, lambda: store.trials(M.PHASE_TUNE, "FINISHED") and store.trials(M.PHASE_TUNE, "RUNNING"))
    stopped_for_full_disk(store, run, small_disk)
    assert "chosen" not in store.manifest() and store.trials(M.PHASE_CONFIRM) == []

    # 2. resume while the disk is still full: one line, nothing started or changed.
    full = run_app("resume", str(store.folder()), "--address", ray_head.gcs_address, "--tracking-uri", store.uri, cwd=ROOT)
    assert full.returncode == 75, full.stdout + full.stderr
    assert full.stderr.strip() == (f"error: {store.folder()}: its disk is still full (0 B free); free space, then run "
                                   "segstudy resume again")
    assert store.study_run().info.status == "KILLED"

    # 3. Space freed: resume, and the disk fills again mid confirm.
    free(small_disk)
    again = resume_driver(store, ray_head, env, tmp_path / "resume")
    again.disk = small_disk
    fill_when(again, lambda: store.trials(M.PHASE_CONFIRM, "RUNNING"))
    stopped_for_full_disk(store, again, small_disk)
    assert "chosen" in store.manifest()

    # 4. Space freed: resume completes every cell's tuning budget and every cell x seed.
    free(small_disk)
    done = resume_study(store.folder(), address=ray_head.gcs_address, tracking_uri=store.uri)
    assert done.ok and store.study_run().info.status == "FINISHED"
    for cell in CELLS:
        assert len([r for r in store.trials(M.PHASE_TUNE, "FINISHED") if r.data.tags[M.CELL_TAG] == cell]) == TRIALS_PER_CELL
    confirm = sorted(r.data.tags[M.TRIAL_KEY_TAG] for r in store.trials(M.PHASE_CONFIRM, "FINISHED"))
    assert confirm == sorted(f"confirm|{cell}|seed={seed}" for cell in CELLS for seed in (0, 1))
    for run in store.runs(M.ROLE_TRIAL):  # a failed attempt is one whose own writes met the full disk, run again since
        assert run.info.status == "FINISHED" or (run.data.tags[M.FAULT_TAG], run.data.tags[M.RETRIED_TAG]) == (
            M.FAULT_MACHINE, "true"), run.data.tags
    stands(store, rf"finished at {WHEN}")

    # 5. The report of the finished study written to a full disk: one line naming the path, exit 75.
    fill(small_disk)
    report = run_app("report", "--experiment", store.name, "--tracking-uri", store.uri, "--out", str(small_disk / "report"),
                     cwd=ROOT)
    assert report.returncode == 75, report.stdout + report.stderr
    assert re.fullmatch(rf"error: no space left on device: {re.escape(str(small_disk))}/\S+ \(0 B free\)",
                        report.stderr.strip()), report.stderr
    assert store.study_run().info.status == "FINISHED"


def test_run_refuses_a_disk_without_room_for_the_study(ray_head, small_disk, write_spec, tmp_path):
    """Checked after the preflight (it knows the networks' sizes), before any folder or store."""
    fill(small_disk)
    free_mb = 4
    os.truncate(small_disk / "filler", os.path.getsize(small_disk / "filler") - free_mb * 2**20)
    spec = write_spec()
    proc = run_app("run", str(spec), "--address", ray_head.gcs_address, "--storage", str(small_disk / "r"),
                   "--tracking-uri", f"sqlite:///{small_disk / 'mlflow.db'}", cwd=tmp_path)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert re.fullmatch(rf"error: {re.escape(str(small_disk / 'r'))}: 4\.\d MB free on its disk, but the study writes "
                        r"about \d+\.\d MB there \(checkpoints, models, per-image tables and logs, and its MLflow store\); "
                        r"free space or choose another disk", line), line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no study folder, no store


def test_a_copy_onto_a_full_disk_names_the_destination_not_the_source(small_disk):
    """shutil's copy names its source first and the destination second; the line names the file on
    the full disk (a copy of a source file into a model folder once named the source)."""
    fill(small_disk)
    source = ROOT / "study" / "disk.py"
    with pytest.raises(OSError) as caught:
        shutil.copyfile(source, small_disk / "copy.py")
    cause = disk.no_space_cause(caught.value, where=[ROOT])
    assert cause == f"no space left on device: {small_disk / 'copy.py'} (0 B free)", cause


def test_a_two_path_error_on_one_disk_names_the_destination(tmp_path):
    err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "src"), None, str(tmp_path / "dst"))
    cause = disk.no_space_cause(err, where=[])
    assert cause is not None and cause.startswith(f"no space left on device: {tmp_path / 'dst'} ("), cause
