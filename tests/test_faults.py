"""Trial faults on a real Ray cluster: a killed worker is retried, a diverged loss is a FAILED
trial that Optuna sees as a failure, out-of-memory is named as such."""

from __future__ import annotations

import os
import signal
import threading
import time

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import trial_workers
from study import metrics_names as M
from study.run.driver.engine import run_study
from study.spec import load_spec
from study.training.inputs.study_data import build_study_data
from study.spec.cells import expand_cells
from study.training.trial import TrialOutOfMemoryError, train_plan
from study.training import TrialPlan

pytestmark = pytest.mark.filterwarnings("ignore:.*confirmation seed")
EPOCHS = 100  # long enough that the kill lands before the trial ends on a fast CPU


def runs_of(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")


def test_killed_worker_is_retried_and_the_attempt_stays_failed(ray_head, write_spec, tmp_path):
    spec = write_spec(
        name="faults",
        factors={"architecture": ["unet"], "alpha": [0.5]},
        training__epochs=EPOCHS,
        evaluation__perturbations=[],
        resources__max_failures=1,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["result"] = run_study(spec, address=ray_head.gcs_address, tracking_uri=uri, storage=tmp_path / "r")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        # Kill as soon as the trial's MLflow run exists and its actor runs: the trial is then in
        # set-up or training. Waiting for a sign of progress races the end on a fast CPU (a confirm
        # trial reports its epochs every 5 s, and this one may train for less).
        workers = trial_workers(ray_head.pid)
        if workers and runs_of(uri, "faults"):
            victim = workers[0]
        else:
            time.sleep(0.05)
    assert victim is not None, "no trial worker process found to kill"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.ok and result.n_trials == 1 and result.n_failed == 0

    runs = runs_of(uri, "faults")
    by_status = {r.info.status: r for r in runs}
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    failed = by_status["FAILED"]
    assert failed.data.tags[M.RETRIED_TAG] == "true"
    assert failed.data.tags[M.ERROR_TAG].startswith("worker process died")
    finished = by_status["FINISHED"]
    assert finished.data.tags[M.TRIAL_KEY_TAG] == failed.data.tags[M.TRIAL_KEY_TAG]
    client = MlflowClient(tracking_uri=uri)
    steps = [m.step for m in client.get_metric_history(finished.info.run_id, M.VAL_DICE)]
    assert sorted(steps) == list(range(1, EPOCHS + 1))  # the retry trained from the start, every epoch logged
    assert M.TEST_DICE in finished.data.metrics


def test_diverged_trial_is_failed_in_mlflow_and_optuna(ray_head, write_spec, tmp_path):
    # lr 1e38 with SGD overflows the weights in the first step: a real NaN loss, no mock.
    spec = write_spec(
        name="diverge",
        factors={"architecture": ["unet"], "alpha": [0.5]},
        hyperparameters={"lr": {"choice": [0.01, 1.0e38]}, "batch_size": 6, "optimizer": "sgd"},
        training__epochs=4,
        training__loss="dice_ce",
        tuning={"trials_per_cell": 2, "sampler": "grid", "seed": 0, "early_stopping": {"kind": "none"}},
        evaluation__perturbations=[],
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(spec, address=ray_head.gcs_address, tracking_uri=uri, storage=tmp_path / "r")
    runs = runs_of(uri, "diverge")
    tune_runs = [r for r in runs if r.data.tags[M.PHASE_TAG] == M.PHASE_TUNE]
    assert len(tune_runs) == 2  # the diverged trial was not retried
    failed = [r for r in tune_runs if r.info.status == "FAILED"]
    assert len(failed) == 1
    assert failed[0].data.params["lr"] == "1e+38"
    assert failed[0].data.tags[M.ERROR_TAG] == "LossDivergedError: loss diverged at epoch 1"
    study = optuna.load_study(study_name="diverge/alpha=0.5,architecture=unet", storage=f"sqlite:///{result.storage_path / 'optuna.db'}")
    states = {t.params["lr"]: t.state for t in study.trials}
    assert states == {0.01: optuna.trial.TrialState.COMPLETE, 1.0e38: optuna.trial.TrialState.FAIL}
    confirm = [r for r in runs if r.data.tags[M.PHASE_TAG] == M.PHASE_CONFIRM]
    assert [r.data.params["lr"] for r in confirm] == ["0.01"] and confirm[0].info.status == "FINISHED"
    assert result.n_failed == 1 and not result.ok


def test_out_of_memory_is_reported_as_such(write_spec, monkeypatch):
    spec = load_spec(write_spec(factors={"architecture": ["unet"], "alpha": [0.5]}, training__epochs=3))
    data = build_study_data(spec)
    plan = TrialPlan.from_config(spec, TrialPlan.config(expand_cells(spec)[0], seed=0, phase="confirm"))
    calls = {"n": 0}

    def exhausted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 0.5

    monkeypatch.setattr("study.training.trial.train_one_epoch", exhausted)
    with pytest.raises(TrialOutOfMemoryError, match=r"out of memory on cpu at epoch 2 \(CUDA out of memory"):
        train_plan(plan, spec=spec, data=data)
