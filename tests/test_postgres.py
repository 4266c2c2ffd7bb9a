"""The team set-up for real: `segstudy tracking serve` on a PostgreSQL server (started by the
`postgres` fixture in a temporary folder), studies logging through it, two at once, and one that
outlives a PostgreSQL restart. The database password travels in PGPASSWORD only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from mlflow.tracking import MlflowClient

from conftest import BIN, ROOT, BackgroundStudy, TrackingServer, run_app, two_cell_spec
from study import metrics_names as M
from study.run.driver.engine import run_study
from study.serving.mlflow_model import registered_model_name
from study.tracking import StudyTracker
from study.tracking.outbox import Outbox

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*confirmation seed")]

CELLS = {"alpha=0.2,architecture=unet", "alpha=0.8,architecture=unet"}


@pytest.fixture
def pg_server(postgres, tmp_path):
    """`segstudy tracking serve` on this test's PostgreSQL database, artifacts under tmp_path."""
    server = TrackingServer(tmp_path, backend=postgres)
    server.start()
    yield server
    server.stop()


def check_study(client: MlflowClient, name: str, *, studies: int = 1, epochs: int | None = None, cells=CELLS) -> list:
    """Every study and trial run FINISHED with its metrics, per-image table and registered model;
    with `epochs`, every epoch's validation Dice is there. Returns the trial runs."""
    exp = client.get_experiment_by_name(name)
    study_runs = client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_STUDY}'")
    assert len(study_runs) == studies and {r.info.status for r in study_runs} == {"FINISHED"}
    trials = client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")
    assert sorted(r.data.tags[M.CELL_TAG] for r in trials) == sorted(cells) * studies
    assert {r.data.tags[M.PARENT_TAG] for r in trials} == {r.info.run_id for r in study_runs}
    for run in trials:
        assert run.info.status == "FINISHED"
        assert 0 <= run.data.metrics[M.TEST_DICE] <= 1 and "test_dice/gaussian_noise/2" in run.data.metrics
        if epochs is not None:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, M.VAL_DICE))
            assert steps == list(range(1, epochs + 1)), "an epoch metric was lost"
        assert M.PER_IMAGE_FILE in {a.path for a in client.list_artifacts(run.info.run_id)}
        versions = client.search_model_versions(f"name = '{registered_model_name(name, run.data.tags[M.CELL_TAG])}'")
        assert run.info.run_id in {v.run_id for v in versions}
    return trials


def kept_writes(storage: Path) -> int:
    """Writes waiting in the outboxes of the study folders under `storage`."""
    return sum(len(Outbox(ops.parent)) for ops in storage.glob("*/outbox/ops.jsonl"))


def rows(uri: str, sql: str) -> list[tuple]:
    """Ask PostgreSQL itself (the password from PGPASSWORD, as the server got it)."""
    with psycopg.connect(uri) as conn:
        return conn.execute(sql).fetchall()


def test_two_studies_at_once_through_one_server(ray_head, write_spec, pg_server, tmp_path):
    """Two real drivers of one study name start together: one experiment, two study runs, each
    cell's registered model gets a version from each; nothing is lost to the race."""
    env = {k: v for k, v in ray_head.env.items() if k != "PGPASSWORD"}  # studies need no database credentials
    spec = two_cell_spec(write_spec, "pgpair", alphas=(0.2,))
    procs = [
        subprocess.Popen(
            [str(BIN / "segstudy"), "run", str(spec), "--address", ray_head.gcs_address, "--tracking-uri", pg_server.uri,
             "--storage", str(tmp_path / f"r{i}")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "1/1 trials finished" in out
    client = MlflowClient(tracking_uri=pg_server.uri)
    trials = check_study(client, "pgpair", studies=2, cells={"alpha=0.2,architecture=unet"})
    versions = client.search_model_versions(f"name = '{registered_model_name('pgpair', 'alpha=0.2,architecture=unet')}'")
    assert sorted(v.version for v in versions) == ["1", "2"] and {v.run_id for v in versions} == {r.info.run_id for r in trials}


def test_study_through_a_server_on_postgresql_outlives_a_restart(ray_head, write_spec, postgres, postgres_server,
                                                                 pg_server, tmp_path):
    """A study logs through the server into PostgreSQL. PostgreSQL goes down while trials train;
    the MLflow server stays up and answers 5xx, which the writer takes as "away": writes wait in
    the outbox and arrive, in order, once it is back."""
    epochs = 25
    spec = two_cell_spec(write_spec, "pgrestart", epochs=epochs)
    study = BackgroundStudy(spec, address=ray_head.gcs_address, tracking_uri=pg_server.uri, storage=tmp_path / "r")
    with study.training("pgrestart", 2, head_pid=ray_head.pid):
        postgres_server.stop()  # both trials are training; the server is up, its database is not
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not kept_writes(tmp_path / "r") and study.thread.is_alive():
            time.sleep(0.2)
        assert kept_writes(tmp_path / "r"), f"no write was kept during the outage: {study.outcome}"
        assert pg_server.proc.poll() is None
    finally:
        postgres_server.start()
    result = study.result()
    # The server itself answered, 5xx, without its database (503, or 500 where the rollback failed too).
    assert re.search(r'"POST /api/2\.0/mlflow/\S+ HTTP/1\.1" 5\d\d ', pg_server.log.read_text())
    client = MlflowClient(tracking_uri=pg_server.uri)
    trials = check_study(client, "pgrestart", epochs=epochs)
    per_image = Path(client.download_artifacts(trials[0].info.run_id, M.PER_IMAGE_FILE, str(tmp_path / "dl")))
    assert len(per_image.read_text().splitlines()) > 1
    # The server stored it all in PostgreSQL, and the files in its artifact root.
    assert rows(postgres, "SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'") == [(3,)]
    assert sorted(r[0] for r in rows(postgres, "SELECT run_id FROM model_versions")) == sorted(r.info.run_id for r in trials)
    assert list((tmp_path / "artifacts").rglob(M.PER_IMAGE_FILE))
    # A reading command goes to the database directly: driver installed, URI without password.
    status = run_app("status", "pgrestart", "--tracking-uri", postgres, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "alpha=0.2,architecture=unet" in status.stdout and "alpha=0.8,architecture=unet" in status.stdout
    password = os.environ["PGPASSWORD"]
    assert password not in pg_server.log.read_text()
    for path in result.storage_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert password.encode() not in path.read_bytes(), path


def test_direct_postgresql_store_keeps_writes_while_the_database_restarts(postgres, postgres_server, tmp_path):
    """`--tracking-uri postgresql://...` without a server: a database that is down is "away" too."""
    tracker = StudyTracker(postgres, "direct")
    tracker.use_outbox(tmp_path / "outbox")
    tracker.check_reachable()
    study = tracker.start_study(params={"p": 1}, tags={}, spec_file=None)
    trial = tracker.start_trial(cell="a=1", phase=M.PHASE_CONFIRM, seed=0, factors=["a"], params={}, trial_id="t0")
    tracker.log_metrics(trial, {M.VAL_DICE: 0.1}, step=1)
    postgres_server.stop()
    try:
        tracker.log_metrics(trial, {M.VAL_DICE: 0.2}, step=2)
        tracker.finish(trial)
        assert len(tracker.outbox) == 2
    finally:
        postgres_server.start()
    assert tracker.deliver() == 0  # the database is back: the kept writes arrive, in order
    tracker.finish(study)
    client = MlflowClient(tracking_uri=postgres)
    assert [m.value for m in client.get_metric_history(trial, M.VAL_DICE)] == [0.1, 0.2]
    assert client.get_run(trial).info.status == "FINISHED" and client.get_run(study).info.status == "FINISHED"
    assert json.loads(client.get_run(trial).data.tags[M.FACTORS_TAG]) == ["a"]
