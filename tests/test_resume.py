"""Resume after the driver is SIGKILLed: finished trials kept, nothing duplicated, same numbers."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pandas as pd
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution

from study import metrics_names as M
from study.run.driver.engine import run_study
from study.errors import SegstudyError
from study.run.tune.searcher import CellSearcher
from conftest import BIN, ROOT, held, run_cli, trial_workers

pytestmark = pytest.mark.filterwarnings("ignore:.*confirmation seed")


def trial_runs(uri: str, view: int = ViewType.ACTIVE_ONLY) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("resume")
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'", run_view_type=view
    )


def by_key(uri: str, tmp_path) -> dict[str, tuple[dict, pd.DataFrame]]:
    client = MlflowClient(tracking_uri=uri)
    out = {}
    for run in trial_runs(uri):
        key = run.data.tags[M.TRIAL_KEY_TAG]
        assert key not in out, f"duplicated run for {key}"
        table = pd.read_csv(client.download_artifacts(run.info.run_id, M.PER_IMAGE_FILE, str(tmp_path / run.info.run_id)))
        out[key] = (run, table)
    return out


def test_driver_killed_mid_study_resumes_to_the_same_result(ray_head, write_spec, tmp_path):
    spec = write_spec(
        name="resume",
        factors={"architecture": ["unet", "noskip_unet"], "alpha": [0.5]},
        seeds=[0, 1],
        training__epochs=25,
        evaluation__perturbations=["gaussian_noise"],
        evaluation__severities=[3],
    )
    reference_uri = f"sqlite:///{tmp_path / 'reference.db'}"
    run_study(spec, address=ray_head.gcs_address, tracking_uri=reference_uri, storage=tmp_path / "ref")

    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    storage = tmp_path / "killed"
    env = {**ray_head.env, "MLFLOW_TRACKING_URI": uri}
    driver = subprocess.Popen(
        [str(BIN / "segstudy"), "run", str(spec), "--address", ray_head.gcs_address, "--storage", str(storage)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    killed = False
    while not killed and time.monotonic() < deadline and driver.poll() is None:
        statuses = [r.info.status for r in trial_runs(uri)]
        if "FINISHED" in statuses and "RUNNING" in statuses:
            with held(trial_workers(ray_head.pid)):  # the moment checked again with the trials paused
                statuses = [r.info.status for r in trial_runs(uri)]
                if "FINISHED" in statuses and "RUNNING" in statuses:
                    os.killpg(driver.pid, signal.SIGKILL)
                    killed = True
        time.sleep(0.3)
    assert killed, "the study ended before it could be interrupted"
    driver.wait(timeout=30)
    before = {r.data.tags[M.TRIAL_KEY_TAG]: r.info.run_id for r in trial_runs(uri) if r.info.status == "FINISHED"}

    resumed = run_cli("resume", "resume", "--address", ray_head.gcs_address, "--storage", str(storage), cwd=ROOT, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "4/4 trials finished" in resumed.stdout

    reference, result = by_key(reference_uri, tmp_path / "a"), by_key(uri, tmp_path / "b")
    assert set(result) == set(reference) and len(result) == 4
    for key, (run, table) in result.items():
        ref_run, ref_table = reference[key]
        assert run.info.status == "FINISHED"
        assert run.data.metrics[M.TEST_DICE] == ref_run.data.metrics[M.TEST_DICE]
        pd.testing.assert_frame_equal(table, ref_table)
        steps = [m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, M.VAL_DICE)]
        assert sorted(steps) == list(range(1, 26))
    # Trials that had finished before the kill were not run again: their result is the same
    # MLflow run as before the kill, not a new one.
    assert before and all(result[key][0].info.run_id == run_id for key, run_id in before.items())
    # The interrupted attempt is kept out of sight: KILLED and deleted, not a second result.
    deleted = trial_runs(uri, ViewType.DELETED_ONLY)
    assert deleted and all(r.info.status == "KILLED" for r in deleted)
    assert all(r.data.tags[M.TRIAL_KEY_TAG] not in before for r in deleted)
    client = MlflowClient(tracking_uri=uri)
    studies = client.search_runs([client.get_experiment_by_name("resume").experiment_id],
                                 filter_string=f"tags.`{M.ROLE_TAG}` = '{M.ROLE_STUDY}'")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"


def test_a_second_driver_on_a_live_study_is_refused(ray_head, write_spec, tmp_path):
    """Two real drivers: `resume` while the first is alive would run every trial again; it is refused."""
    spec = write_spec(name="twice", factors={"architecture": ["unet"], "alpha": [0.5]}, seeds=[0],
                      training__epochs=400, evaluation__perturbations=[])
    storage = tmp_path / "storage"
    env = {**ray_head.env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'twice.db'}"}
    driver = subprocess.Popen(
        [str(BIN / "segstudy"), "run", str(spec), "--address", ray_head.gcs_address, "--storage", str(storage)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(p.stat().st_size for p in storage.glob("*/driver.lock")):
            assert driver.poll() is None, "the first driver ended early"
            time.sleep(0.3)
        # The first driver paused while the second asks: alive (its lock held) however fast it trains.
        with held([driver.pid], settle_s=0):
            assert driver.poll() is None, "the first driver ended before the second asked: the check proves nothing"
            second = run_cli("resume", "twice", "--address", ray_head.gcs_address, "--storage", str(storage),
                             cwd=ROOT, env=env)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"a live driver is running this study (pid {driver.pid} on " in second.stderr
        assert second.stderr.strip().count("\n") == 0
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)


def test_resume_of_unknown_study_is_a_clear_error(tmp_path):
    proc = run_cli("resume", "nosuch", "--storage", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: no study named 'nosuch' under {tmp_path.resolve()} (looked for */study.json); "
        "pass the study directory or --storage where it ran"
    )


def make_searcher(storage: str) -> CellSearcher:
    return CellSearcher(
        cells=[{"architecture": "unet"}], space={"lr": FloatDistribution(1e-4, 1e-1, log=True)}, trials_per_cell=4,
        storage=storage, prefix="s", sampler="tpe", seed=3, trial_seed=0, metric="m", max_t=5, epoch_key="epoch",
    )


def test_searcher_requeues_trials_a_dead_driver_left_running(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = make_searcher(storage)
    asked = [first.suggest(f"t{i}")["trial"] for i in range(3)]
    first.on_trial_complete("t0", {"m": 0.5, "epoch": 5})
    # t1 and t2 were running when the driver died.
    uninterrupted = make_searcher(f"sqlite:///{tmp_path / 'other.db'}")
    fresh = [uninterrupted.suggest(f"u{i}")["trial"]["hparams"] for i in range(4)]

    second = make_searcher(storage)
    assert second.requeue_interrupted() == 2
    assert second.remaining() == 3  # t0 counts; t1 and t2 run again; one never asked
    again = [second.suggest(f"r{i}")["trial"]["hparams"] for i in range(3)]
    assert again[:2] == [asked[1]["hparams"], asked[2]["hparams"]]  # same parameters as before
    assert second.suggest("r3") is second.FINISHED
    study = optuna.load_study(study_name="s/architecture=unet", storage=storage)
    assert [t.state.name for t in study.trials[:3]] == ["COMPLETE", "FAIL", "FAIL"]
    assert fresh[:3] == [a["hparams"] for a in asked]  # per-ask seeding: same draws as an uninterrupted run


def test_a_trial_whose_run_finished_but_whose_telling_was_cut_is_told_not_run_again(tmp_path):
    """The worker ends a trial's MLflow run, then the driver tells Optuna; a stop between the two (a
    full disk under optuna.db) leaves the trial RUNNING in Optuna with a FINISHED run. Resume tells
    Optuna the run's outcome (its value, or pruned) instead of running the trial a second time."""
    from types import SimpleNamespace

    from study.run.tune.searcher import finished_in_mlflow

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = make_searcher(storage)
    for i in range(4):
        first.suggest(f"t{i}")  # all four running when the driver stopped

    def run(value, pruned="false"):
        return SimpleNamespace(data=SimpleNamespace(metrics={"m": value}, tags={"segstudy.stopped_early": pruned}))

    cell = "architecture=unet"
    finished = finished_in_mlflow({f"tune|{cell}|optuna=0": run(0.7), f"tune|{cell}|optuna=2": run(0.4, "true"),
                                   f"confirm|{cell}|seed=0": run(0.9)}, "m")
    assert set(finished) == {(cell, 0), (cell, 2)}  # confirm trials are not Optuna's
    second = make_searcher(storage)
    assert second.requeue_interrupted(finished) == 2  # t1 and t3 run again, t0 and t2 do not
    assert second.remaining() == 2
    study = optuna.load_study(study_name="s/architecture=unet", storage=storage)
    assert [t.state.name for t in study.trials[:4]] == ["COMPLETE", "FAIL", "PRUNED", "FAIL"]
    assert study.trials[0].value == 0.7


def test_searcher_state_is_json_data_not_code(tmp_path):
    """The study folder is data: the searcher's state is JSON, and a pickle planted there is refused."""
    searcher = make_searcher(f"sqlite:///{tmp_path / 'optuna.db'}")
    searcher.set_search_properties("m", "max", {})
    first = searcher.suggest("t1")
    assert first is not None
    path = tmp_path / "searcher-state.json"
    searcher.save(str(path))
    again = make_searcher(f"sqlite:///{tmp_path / 'optuna.db'}")
    again.restore(str(path))
    assert again.live == searcher.live and again.asked == searcher.asked
    import pickle

    path.write_bytes(pickle.dumps({"asked": [0], "live": {}}))
    with pytest.raises(SegstudyError, match="not a segstudy searcher state"):
        again.restore(str(path))


def test_reconcile_runs_again_what_the_machine_failed_and_with_retry_failed_everything(tmp_path):
    """On a real store: a FAILED run tagged the machine's fault is run again (tagged retried, kept);
    one that failed by its own doing stays failed unless --retry-failed; a tune trial whose phase
    has ended is not run again (`retry` says no)."""
    from study.run.record.reconcile import reconcile
    from study.tracking import StudyTracker

    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "reconcile")
    study = tracker.start_study(params={}, tags={}, spec_file=None)

    def trial(key: str, status: str, **tags: str) -> str:
        run = tracker.start_trial(cell="a=1", phase=key.split("|")[0], seed=0, factors=["a"], params={}, trial_id=key,
                                  extra_tags={M.TRIAL_KEY_TAG: key, **tags})
        tracker.finish(run, failed_reason=None if status == "FINISHED" else "x")
        return run

    machine = trial("confirm|a=1|seed=0", "FAILED", **{M.FAULT_TAG: M.FAULT_MACHINE})
    trial("confirm|a=1|seed=1", "FAILED")  # diverged: its own doing
    trial("confirm|a=1|seed=2", "FINISHED")
    trial("tune|a=1|optuna=3", "FAILED", **{M.FAULT_TAG: M.FAULT_MACHINE})
    asked: list[str] = []

    def retry(key: str) -> bool:
        asked.append(key)
        return not key.startswith("tune")  # the tune phase has ended: its choice is made

    done = reconcile(tracker, study, outcome_of=lambda key: None, retry=retry)
    assert done.finished == {"confirm|a=1|seed=2"} and done.failed == {"confirm|a=1|seed=1", "tune|a=1|optuna=3"}
    assert done.retried == 1 and sorted(asked) == ["confirm|a=1|seed=0", "tune|a=1|optuna=3"]
    assert tracker.client.get_run(machine).data.tags[M.RETRIED_TAG] == "true"

    again = reconcile(tracker, study, outcome_of=lambda key: None, retry=retry, retry_failed=True)
    assert again.failed == {"tune|a=1|optuna=3"} and again.retried == 1  # seed=1 now; seed=0 was already retried


def test_a_failed_tune_trial_is_queued_again_once_with_its_parameters(tmp_path):
    """`requeue_failed` gives a failed trial's budget back and queues its parameters, never twice;
    a trial Optuna does not hold as failed is not queued."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = make_searcher(storage)
    first.suggest("t0")
    first.on_trial_complete("t0", {"m": 0.5, "epoch": 5})
    lost = first.suggest("t1")["trial"]
    first.on_trial_complete("t1", error=True)
    assert first.remaining() == 2  # of 4: the failed trial spent its budget

    second = make_searcher(storage)
    assert second.requeue_failed("architecture=unet", 0) is False  # COMPLETE: not a failure
    assert second.requeue_failed("architecture=unet", 1) is True and second.remaining() == 3
    assert second.requeue_failed("architecture=unet", 1) is True and second.remaining() == 3  # queued once
    assert second.suggest("r0")["trial"]["hparams"] == lost["hparams"]
