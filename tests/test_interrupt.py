"""Stopping a study with SIGINT, SIGTERM or SIGHUP (docs/ARCHITECTURE.md 3, "Stopping"): real
`segstudy` drivers, real signals at several moments (each held while the signal lands:
`study_drivers.Driver.signal_when`), `status` after each stop, then `resume` to the end and a
comparison with the same study run without interruption."""

from __future__ import annotations

import os
import re
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.entities import ViewType

from conftest import ROOT, free_port, held, run_cli, trial_workers
from study import metrics_names as M
from study.run.driver.engine import run_study
from study.run.tune.searcher import CellSearcher
from study_drivers import CELLS, SPEC, TRIALS_PER_CELL, WHEN, Driver, Store, resume_driver, stands, start_study, write_spec

pytestmark = pytest.mark.filterwarnings("ignore:.*confirmation seed")


@pytest.fixture(scope="module")
def reference(ray_head, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Per-image results of the confirm trials of the study run once, uninterrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = run_study(write_spec(tmp, "stopref"), address=ray_head.gcs_address, tracking_uri=uri, storage=tmp / "r")
    assert result.ok
    tables = Store(uri, "stopref", tmp / "r").confirm_results(tmp)
    assert len(tables) == len(CELLS) * 2
    return tables


def interrupted_as(store: Store, driver: Driver, sig: int) -> None:
    """What every stop leaves: its exit code and one line, a KILLED study run tagged interrupted,
    no trial run RUNNING, and no chosen hyperparameters unless the tune phase had finished."""
    rc = driver.wait()
    assert rc == 128 + sig, driver.output()
    assert driver.last_line() == f"interrupted; `segstudy resume {store.folder()}` continues"
    run = store.study_run()
    assert run.info.status == "KILLED", driver.output()
    assert run.data.tags[M.STATE_TAG] == M.STATE_INTERRUPTED
    assert run.data.tags[M.STOP_SIGNAL_TAG] == signal.Signals(sig).name
    assert [r.info.status for r in store.runs(M.ROLE_TRIAL) if r.info.status == "RUNNING"] == []
    if "chosen" in store.manifest():  # the tune phase had ended: every cell's budget spent
        assert len(store.trials(M.PHASE_TUNE, "FINISHED")) == len(CELLS) * TRIALS_PER_CELL
    stands(store, rf"interrupted by {signal.Signals(sig).name} at {WHEN}; `segstudy resume {store.folder()}` continues")


def resumed_to_the_end(store: Store, ray_head, tmp: Path, reference: dict[str, pd.DataFrame], env: dict) -> None:
    """`resume` completes every cell's tuning budget and the confirm trials, with the numbers of
    the uninterrupted study; runs a stop cut are KILLED and deleted, never a second result."""
    done = run_cli("resume", str(store.folder()), "--address", ray_head.gcs_address, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    total = len(CELLS) * (TRIALS_PER_CELL + 2)
    assert f"{total}/{total} trials finished" in done.stdout
    run = store.study_run()
    assert run.info.status == "FINISHED" and run.data.tags[M.STATE_TAG] == "finished"
    tune = store.trials(M.PHASE_TUNE)
    for cell in CELLS:
        assert sorted(r.info.status for r in tune if r.data.tags[M.CELL_TAG] == cell) == ["FINISHED"] * TRIALS_PER_CELL
    for cell, states in store.optuna_states().items():  # the cut trials were re-run, not counted as pruned
        assert states.count("COMPLETE") == TRIALS_PER_CELL and "RUNNING" not in states and "PRUNED" not in states, cell
    assert {r.info.status for r in store.runs(M.ROLE_TRIAL)} == {"FINISHED"}
    assert {r.info.status for r in store.runs(M.ROLE_TRIAL, ViewType.DELETED_ONLY)} <= {"KILLED"}
    results = store.confirm_results(tmp)
    assert set(results) == set(reference)
    for key, table in results.items():
        pd.testing.assert_frame_equal(table, reference[key])


@pytest.mark.slow
def test_stops_in_tune_between_phases_in_confirm_and_in_the_summary_then_resume_gives_the_uninterrupted_result(
        ray_head, reference, tmp_path):
    """One study stopped at every phase in turn, each stop by a fresh driver (`run`, then `resume`),
    and resumed to the end: the numbers of the uninterrupted study."""
    # 1. Ctrl-C in the tune phase: one tune trial ended, another running.
    store, env, run = start_study(ray_head, tmp_path, "stopa")
    run.wait_for(lambda: store.trials(M.PHASE_TUNE, "RUNNING"))
    with held(run.workers()):  # a live driver, which cannot end meanwhile: `status` names it
        stands(store, rf"running: pid {run.proc.pid} on {re.escape(socket.gethostname())} since {WHEN} \(run\)")
    run.signal_when(lambda: store.trials(M.PHASE_TUNE, "FINISHED") and store.trials(M.PHASE_TUNE, "RUNNING"), signal.SIGINT)
    interrupted_as(store, run, signal.SIGINT)
    assert "chosen" not in store.manifest() and store.trials(M.PHASE_CONFIRM) == []  # no confirm phase started
    assert "stopping (SIGINT): no new trials" in run.stdout.read_text()
    killed = store.trials(M.PHASE_TUNE, "KILLED")
    assert killed and all(r.data.tags[M.ERROR_TAG].startswith("interrupted") for r in killed)
    for states in store.optuna_states().values():  # the cut trials stay open for resume, never PRUNED
        assert "PRUNED" not in states
    assert sum(s.count("RUNNING") for s in store.optuna_states().values()) >= len(killed)

    # 2. SIGHUP (its terminal closed) as the confirm phase begins in the resumed study: every tune
    # trial finished, no confirm trial (the driver and the trial workers paused while that is checked
    # and the signal sent). A stop like SIGTERM's, not a kill without clean-up.
    hangup = resume_driver(store, ray_head, env, tmp_path / "hangup")
    hangup.signal_while_paused(lambda: "confirm phase" in hangup.stdout.read_text()
                               and not store.trials(M.PHASE_CONFIRM, "FINISHED"), signal.SIGHUP, workers=True)
    interrupted_as(store, hangup, signal.SIGHUP)
    assert len(store.trials(M.PHASE_TUNE, "FINISHED")) == len(CELLS) * TRIALS_PER_CELL
    assert store.trials(M.PHASE_CONFIRM, "FINISHED") == []

    # 3. SIGTERM (`ray job stop`, a pod deletion) in the confirm phase.
    again = resume_driver(store, ray_head, env, tmp_path / "resume")
    again.signal_when(lambda: store.trials(M.PHASE_CONFIRM, "RUNNING"), signal.SIGTERM)
    interrupted_as(store, again, signal.SIGTERM)
    assert "chosen" in store.manifest()
    assert len(store.trials(M.PHASE_CONFIRM, "FINISHED")) < len(CELLS) * 2

    # 4. Ctrl-C twice in the confirm phase: the second ends the driver at once, skipping the clean-up.
    twice = resume_driver(store, ray_head, env, tmp_path / "twice")
    twice.signal_when(lambda: store.trials(M.PHASE_CONFIRM, "RUNNING"), signal.SIGINT, again_after=1.0)
    assert twice.wait() == 130
    assert twice.last_line() == f"interrupted again: ending at once; `segstudy resume {store.folder()}` continues"
    assert store.study_run().info.status != "FINISHED"
    stands(store, rf"driver gone without clean-up \(killed, or its machine lost\); resumable: `segstudy resume {store.folder()}` continues")

    # 5. Ctrl-C while the finished study writes its summary: the study stays finished.
    summary = resume_driver(store, ray_head, env, tmp_path / "summary")
    summary.signal_while_paused(lambda: "trials finished;" in summary.stdout.read_text()
                                and "report:" not in summary.stdout.read_text(), signal.SIGINT)
    assert summary.wait() == 130, summary.output()
    assert summary.last_line() == f"interrupted; `segstudy resume {store.folder()}` continues"
    assert "report:" not in summary.stdout.read_text()  # the summary was cut ...
    assert store.study_run().info.status == "FINISHED"  # ... the study was complete

    resumed_to_the_end(store, ray_head, tmp_path, reference, env)


@pytest.mark.slow
def test_stop_before_the_study_folder_exists_leaves_nothing(ray_head, tmp_path):
    store, _, run = start_study(ray_head, tmp_path, "stopc")
    # segstudy owns the signal now, and the folder is not made yet (checked with the driver paused)
    run.signal_while_paused(lambda: catches(run.proc.pid, signal.SIGTERM) and not store.storage.exists(), signal.SIGTERM)
    assert run.wait() == 143, run.output()
    assert run.last_line() == "interrupted before the study folder was made; nothing to resume"
    assert not store.storage.exists() and store.runs(M.ROLE_STUDY) == []


def catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler installed for `sig` (SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@pytest.mark.slow
def test_a_study_without_address_starts_its_own_ray_even_beside_a_ray_start(ray_head):
    """A `ray start` records its cluster in <ray temp>/ray_current_cluster, which a bare
    `ray.init()` joins; a study without --address must start its own Ray instead."""
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    (temp / "ray").mkdir()
    (temp / "ray" / "ray_current_cluster").write_text(ray_head.gcs_address)
    code = ("import ray; from study.run.cluster.connect import connect_ray; started = connect_ray(None); "
            "print(started, ray.get_runtime_context().gcs_address); ray.shutdown()")
    env = {**ray_head.env, "RAY_TMPDIR": str(temp)}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    started, address = proc.stdout.split()[-2:]
    assert started == "True" and address != ray_head.gcs_address


@pytest.mark.slow
def test_submitted_study_stopped_with_ray_job_stop_is_reported_stopped(ray_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = Store(uri, "stopd", tmp_path / "r")
    spec = ROOT / "search_spaces" / f".stopd-{free_port()}.yaml"  # submit uploads the project: the spec lives in it
    spec.write_text(SPEC.format(name="stopd").replace("epochs: 12", "epochs: 400"))
    try:
        submit = Driver(["submit", str(spec.relative_to(ROOT)), "--address", ray_head.dashboard_url, "--tracking-uri", uri,
                         "--storage", str(store.storage)], env=ray_head.env, out=tmp_path / "submit")
        client = JobSubmissionClient(ray_head.dashboard_url)
        submit.wait_for(lambda: bool(store.trials(M.PHASE_TUNE, "RUNNING")))
        (job,) = [j for j in client.list_jobs() if (j.submission_id or "").startswith("segstudy-stopd-")]
        with held(trial_workers(ray_head.pid)):  # the job still running a trial when it is stopped
            assert store.trials(M.PHASE_TUNE, "RUNNING") and client.get_job_status(job.submission_id) == JobStatus.RUNNING
            client.stop_job(job.submission_id)
        assert submit.wait() == 1, submit.output()
        assert submit.stdout.read_text().strip().splitlines()[-1] == f"job {job.submission_id}: STOPPED"
    finally:
        spec.unlink()


# The stop record itself (study.process_state), in a small real process sending itself signals.
STOP_SCRIPT = """
import os, signal, sys, time
from study import process_state as ps

def kill(sig, wait=0.3):
    os.kill(os.getpid(), sig)
    time.sleep(wait)

try:
    with ps.stop_on_signals():
        ps.name_stopped_study("results/x-1")
{body}
        print("not raised", flush=True)
except ps.Interrupted as exc:
    print(f"raised {{exc.exit_code}}: {{exc}}", flush=True)
    ps.end_at_once_on_signals()
    time.sleep(0.5)  # on its way out: a signal now ends it at once, never with a traceback
    sys.exit(exc.exit_code)
"""

STOP_CASES = {
    # outside a deferred block the first signal raises at once, like KeyboardInterrupt
    "immediate": ("        kill(signal.SIGINT)", 130, "raised 130: interrupted; `segstudy resume results/x-1` continues", ""),
    # a full disk met by a hook (a Tune callback, the study log) is a stop too: raised where a signal's would be
    "full disk": ("        with ps.defer_stop():\n            ps.stop_on_full_disk('no space left on device: /x (0 B free)')\n"
                  "            print('block ended', ps.stop_requested())", 75,
                  "block ended True\nraised 75: interrupted: no space left on device: /x (0 B free); free space, then "
                  "`segstudy resume results/x-1` continues", ""),
    # a signal landing where Python can only report its exception as "ignored" (here a __del__; in a
    # driver, an import a C extension runs): the stop holds, is raised at the next block's end, and
    # nothing is printed (the driver went on into Tune and waited there for ever)
    "swallowed": ("        class Slow:\n            def __del__(self):\n                kill(signal.SIGINT)\n"
                  "        Slow()\n        print('went on', ps.stop_requested())\n        with ps.defer_stop():\n"
                  "            pass", 130, "went on True\nraised 130: interrupted; `segstudy resume results/x-1` continues", ""),
    # a closed terminal (SIGHUP) stops the study as SIGTERM does
    "hangup": ("        kill(signal.SIGHUP)", 129, "raised 129: interrupted; `segstudy resume results/x-1` continues", ""),
    # inside one it is raised when the block ends, and the block runs to its end
    "deferred": ("        with ps.defer_stop():\n            kill(signal.SIGTERM)\n            print('block ended', ps.stop_requested())",
                 143, "block ended True\nraised 143: interrupted; `segstudy resume results/x-1` continues", ""),
    # a second signal ends the process at once, with the first signal's code
    "twice": ("        with ps.defer_stop():\n            kill(signal.SIGINT, 0.7)\n            kill(signal.SIGINT)", 130, "",
              "interrupted again: ending at once; `segstudy resume results/x-1` continues"),
    # the same signal again within ECHO_S is one Ctrl-C seen twice (a wrapper that forwards it)
    "echo": ("        with ps.defer_stop():\n            kill(signal.SIGINT, 0.05)\n            kill(signal.SIGINT)", 130,
             "raised 130: interrupted; `segstudy resume results/x-1` continues", ""),
    # a library's own SIGTERM handler that calls sys.exit(15) (ray.init's) inside a deferred block
    "library": ("        with ps.defer_stop():\n            signal.signal(signal.SIGTERM, lambda s, f: sys.exit(s))\n"
                "            kill(signal.SIGTERM)", 143,
                "raised 143: interrupted; `segstudy resume results/x-1` continues", ""),
    # after the stop, on the way out: a second signal ends it at once instead of a traceback
    "exiting": ("        kill(signal.SIGINT)", 130, "raised 130: interrupted; `segstudy resume results/x-1` continues",
                "interrupted again: ending at once"),
}


@pytest.mark.parametrize("case", sorted(STOP_CASES))
def test_stop_record_in_a_real_process(case):
    body, code, out, err = STOP_CASES[case]
    proc = subprocess.Popen([sys.executable, "-c", STOP_SCRIPT.format(body=body)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if case == "exiting":
        time.sleep(0.4)
        while "raised" not in (line := proc.stdout.readline()):
            pass
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = line + proc.stdout.read(), proc.stderr.read()
        proc.wait()
    else:
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stdout + stderr
    assert stdout.strip() == out and err in stderr and "Traceback" not in stderr


def make_searcher(storage: str) -> CellSearcher:
    from optuna.distributions import FloatDistribution

    return CellSearcher(
        cells=[{"architecture": "unet"}], space={"lr": FloatDistribution(1e-4, 1e-1, log=True)}, trials_per_cell=3,
        storage=storage, prefix="s", sampler="random", seed=3, trial_seed=0, metric="m", max_t=5, epoch_key="epoch",
    )


def test_requeue_cut_half_way_neither_loses_nor_doubles_a_trial(tmp_path):
    """A driver stopped between queueing a cut trial's copy and failing it: the next requeue
    fails the original and queues nothing twice, so the cell runs its budget exactly."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = make_searcher(storage)
    first.suggest("t0")
    first.on_trial_complete("t0", {"m": 0.5, "epoch": 5})
    cut = first.suggest("t1")["trial"]
    study = first.studies[0]
    study.enqueue_trial(cut["hparams"], user_attrs={"segstudy_requeued_from": 1})  # the first half of a requeue

    second = make_searcher(storage)
    assert second.requeue_interrupted() == 1
    states = [t.state.name for t in optuna.load_study(study_name="s/architecture=unet", storage=storage).trials]
    assert states == ["COMPLETE", "FAIL", "WAITING"]
    assert second.remaining() == 2
    assert second.suggest("r0")["trial"]["hparams"] == cut["hparams"]


def test_searcher_asks_no_trial_once_a_stop_came(tmp_path):
    """Tune may ask for a trial in the step where it notices the stop: nothing is asked that would only be cut."""
    from study import process_state

    searcher = make_searcher(f"sqlite:///{tmp_path / 'optuna.db'}")
    with pytest.raises(process_state.Interrupted), process_state.stop_on_signals(), process_state.defer_stop():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        assert searcher.suggest("t0") == searcher.FINISHED  # not None: Tune would wait for a trial
    assert searcher.remaining() == 3 and searcher.studies[0].trials == []
