"""A real `mlflow server` on loopback: studies log over HTTP, survive the server going away,
refuse an unreachable one up front, and never write credentials anywhere."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import BackgroundStudy, TrackingServer, free_port, run_app, run_cli, two_cell_spec
from study import metrics_names as M
from study.tracking.server import server_command

pytestmark = pytest.mark.filterwarnings("ignore:.*confirmation seed")

SECRET = "hunter2-do-not-log"


@pytest.fixture
def server(tmp_path):
    srv = TrackingServer(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def test_study_survives_the_tracking_server_going_away(ray_head, write_spec, server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    epochs = 40
    spec = two_cell_spec(write_spec, "outage", epochs=epochs)
    study = BackgroundStudy(spec, address=ray_head.gcs_address, tracking_uri=server.uri, storage=tmp_path / "r")
    with study.training("outage", 2, head_pid=ray_head.pid):
        server.stop()  # both trials are training; their epochs now have nowhere to go
    time.sleep(3)
    server.start()
    result = study.result()

    client = MlflowClient(tracking_uri=server.uri)
    exp = client.get_experiment_by_name("outage")
    runs = client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, M.VAL_DICE))
        assert steps == list(range(1, epochs + 1)), "an epoch metric was lost"
        assert M.TEST_DICE in run.data.metrics and "test_dice/gaussian_noise/2" in run.data.metrics
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert M.PER_IMAGE_FILE in names
        assert json.loads(run.data.tags[M.VERSIONS_TAG])["torch"]
    # Credentials came from the environment and went nowhere else.
    study = client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_STUDY}'")
    for run in [*runs, *study]:
        text = json.dumps([run.data.params, run.data.tags, run.data.metrics])
        assert SECRET not in text and "alice" not in text
        local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id)))
        for path in local.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    for path in result.storage_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in server.log.read_text()


def test_unreachable_server_is_refused_before_anything_starts(write_spec, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = run_cli("run", str(write_spec()), "--tracking-uri", uri, "--storage", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: tracking URI '{uri}' is not reachable: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_credentials_in_the_uri_are_refused_without_echoing_them(write_spec, tmp_path):
    proc = run_cli("run", str(write_spec()), "--tracking-uri", f"http://alice:{SECRET}@127.0.0.1:5000", cwd=tmp_path)
    assert proc.returncode == 2
    assert "embeds credentials" in proc.stderr and "MLFLOW_TRACKING_PASSWORD" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_server_binds_loopback_unless_told(tmp_path):
    cmd = server_command(backend=f"sqlite:///{tmp_path / 'x.db'}", artifacts=tmp_path / "a")
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    proc = run_app("tracking", "serve", "--backend-store-uri", "file:///tmp/mlruns", cwd=tmp_path)
    assert proc.returncode == 2 and "accepted are sqlite:///PATH and postgresql://" in proc.stderr
    proc = run_cli("tracking", "serve", "--backend-store-uri", f"postgresql://u:{SECRET}@db/mlflow", cwd=tmp_path)
    assert proc.returncode == 2 and "PGPASSWORD" in proc.stderr and SECRET not in proc.stderr


def test_killed_serve_leaves_no_server_behind_and_restarts(tmp_path):
    """SIGKILL of `segstudy tracking serve` (a real process) frees the port; a taken port is refused."""
    srv = TrackingServer(tmp_path)
    srv.start()
    try:
        busy = run_cli(*srv.args[1:], cwd=tmp_path)  # a second server on the live port
        assert busy.returncode == 2 and f"--port {srv.port}: 127.0.0.1:{srv.port} is in use" in busy.stderr
        os.kill(srv.proc.pid, signal.SIGKILL)  # the supervisor only: no chance to clean up
        srv.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{srv.uri}/health", timeout=1).read()
                time.sleep(0.3)
            except OSError:
                break
        else:
            raise AssertionError("the MLflow server kept serving after its supervisor was killed")
        srv.start()  # the same port, at once
    finally:
        srv.stop()
