"""The tracking outbox when the server comes back between two writes of one run."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from study import metrics_names as M
from study.tracking import StudyTracker


class Flaky:
    """A real MLflow client whose every call fails as a refused connection while `down` is set."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.down = client, False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise ConnectionError("connection refused")
            return method(*args, **kwargs)

        return call


def test_a_run_created_offline_gets_its_later_writes_once_the_server_is_back(tmp_path):
    """The creation is delivered by the same write that needs its real id: that write must use it
    (it used the stand-in and failed with RESOURCE_DOES_NOT_EXIST, crashing the driver)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "outage", retry_interval_s=0.0)
    tracker.use_outbox(tmp_path / "outbox")
    flaky = Flaky(tracker.client)
    tracker.client = flaky  # type: ignore[assignment]
    tracker.experiment_id()  # known before the outage, as in a study (the driver resolves it at the start)
    flaky.down = True  # the server goes away before the study run and the trial's run are created
    parent = tracker.start_study(params={"n_cells": 1}, tags={}, spec_file=None)
    run_id = tracker.start_trial(cell="a=1", phase="confirm", seed=0, factors=["a"], params={"lr": 0.1}, trial_id="t0")
    assert run_id.startswith("offline-") and parent.startswith("offline-")
    flaky.down = False  # the server is back
    tracker.log_metrics(run_id, {M.TEST_DICE: 0.9})
    tracker.finish(run_id)
    assert tracker.deliver() == 0
    real = tracker.real_id(run_id)
    run = MlflowClient(tracking_uri=uri).get_run(real)
    assert run.info.status == "FINISHED" and run.data.metrics[M.TEST_DICE] == 0.9
    assert run.data.params["lr"] == "0.1"
    assert run.data.tags[M.PARENT_TAG] == tracker.real_id(parent) != parent


def test_resume_deletes_the_registry_versions_of_the_runs_it_discards(tmp_path):
    """A driver killed after registering a model but before closing its run: resume deletes the run
    and its version, so the registry never serves a model whose run is gone."""
    from study.run.record.reconcile import reconcile

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "killed")
    parent = tracker.start_study(params={}, tags={}, spec_file=None)
    run_id = tracker.start_trial(cell="a=1", phase="confirm", seed=0, factors=["a"], params={}, trial_id="t0",
                                 extra_tags={M.TRIAL_KEY_TAG: "confirm|a=1|seed=0"})
    tracker.register_model(run_id, name="killed.a-1", artifact_path="model", tags={M.SEED_TAG: "0"})
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert len(client.search_model_versions("name = 'killed.a-1'")) == 1
    state = reconcile(tracker, parent, outcome_of=lambda key: None)  # the run was left RUNNING
    assert state.interrupted == 1
    assert client.search_model_versions("name = 'killed.a-1'") == []
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"


def test_an_outbox_written_by_an_older_segstudy_still_replays(tmp_path):
    """ops.jsonl keeps each operation's kind as a plain string (the values of `Op`): a file kept
    before the operations were typed is delivered, artifacts and stand-in ids included."""
    import json

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "old_outbox", retry_interval_s=0.0)
    kept = tmp_path / "outbox" / "files" / "x"
    kept.mkdir(parents=True)
    (kept / "note.txt").write_text("kept while offline")
    ops = [
        {"kind": "create_run", "args": {"experiment_id": tracker.experiment_id(), "run_name": "r", "tags": {"k": "v"},
                                        "offline_id": "offline-1"}},
        {"kind": "log_batch", "args": {"run_id": "offline-1", "metrics": [[M.TEST_DICE, 0.5, 0, 0]]}},
        {"kind": "log_artifact", "args": {"run_id": "offline-1", "path": str(kept / "note.txt")}},
        {"kind": "set_terminated", "args": {"run_id": "offline-1", "status": "FINISHED"}},
    ]
    (tmp_path / "outbox" / "ops.jsonl").write_text("".join(json.dumps(op) + "\n" for op in ops))
    tracker.use_outbox(tmp_path / "outbox")
    assert tracker.deliver() == 0
    real = tracker.real_id("offline-1")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(real)
    assert run.info.status == "FINISHED" and run.data.metrics[M.TEST_DICE] == 0.5
    assert [a.path for a in client.list_artifacts(real)] == ["note.txt"]
