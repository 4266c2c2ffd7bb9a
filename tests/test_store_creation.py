"""Creating a fresh SQLite store from several processes at once: one migration, a usable store."""

from __future__ import annotations

import subprocess
import sys

from mlflow.tracking import MlflowClient

SNIPPET = """
import sys, time
from study.tracking import StudyTracker
start = float(sys.argv[2])
while time.time() < start:
    pass
tracker = StudyTracker(sys.argv[1], "same_name")
tracker.check_reachable()
print(tracker.experiment_id())
"""


def test_three_processes_create_one_store_at_once(tmp_path):
    import time

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    start = str(time.time() + 6)  # after every interpreter has imported MLflow: the first accesses collide
    procs = [
        subprocess.Popen([sys.executable, "-c", SNIPPET, uri, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-1500:]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment, found by all three
    client = MlflowClient(tracking_uri=uri)  # and the store works afterwards
    run = client.create_run(outs[0][0].strip())
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def schema_and_rows(db) -> tuple[set, list, list]:
    """Tables, indexes and every table's columns; the migration version; the experiments. Not the
    DDL text: MLflow's own migrations write a CHECK's IN list in an order that varies by process."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        objects = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
        columns = [(table, tuple(conn.execute(f"PRAGMA table_info('{table}')").fetchall()))
                   for kind, table in objects if kind == "table"]
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = conn.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments").fetchall()
    return set(objects) | set(columns), version, experiments


def test_a_seeded_store_is_the_store_mlflow_makes(tmp_path, monkeypatch):
    """A new SQLite store is a copy of a template MLflow migrated once: the same schema, migration
    version and Default experiment (its artifact location that of this folder) as one MLflow
    makes here, and the template is made once and reused."""
    from study.tracking import StudyTracker
    from study.tracking.sqlite_seed import template_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    made = tmp_path / "made.db"
    MlflowClient(tracking_uri=f"sqlite:///{made}").search_experiments()

    seeded = tmp_path / "seeded.db"
    StudyTracker(f"sqlite:///{seeded}", "x").client.search_experiments()
    template = template_path()
    assert template.is_file() and template.parent == tmp_path / "cache" / "segstudy"
    assert schema_and_rows(seeded) == schema_and_rows(made)
    assert schema_and_rows(seeded)[2][0][2] == str(tmp_path / "mlruns" / "0")

    made_at = template.stat().st_mtime_ns
    again = tmp_path / "again.db"
    tracker = StudyTracker(f"sqlite:///{again}", "y")
    run_id = tracker.client.create_run(tracker.experiment_id()).info.run_id  # a usable store
    assert template.stat().st_mtime_ns == made_at  # copied, not made again
    assert MlflowClient(tracking_uri=f"sqlite:///{again}").get_run(run_id).info.experiment_id == tracker.experiment_id()
    assert not list(tmp_path.glob(".*.seeding"))


def test_without_a_writable_cache_mlflow_makes_the_store(tmp_path, monkeypatch):
    from study.tracking import StudyTracker
    from study.tracking.sqlite_seed import seed_sqlite_store

    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")  # the cache folder would have to be made inside a file
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert seed_sqlite_store(tmp_path / "a.db") is False and not (tmp_path / "a.db").exists()
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'b.db'}", "z")
    assert tracker.experiment_id()  # MLflow made it
    assert schema_and_rows(tmp_path / "b.db")[1]


def test_a_damaged_template_is_dropped_and_mlflow_makes_the_store(tmp_path, monkeypatch):
    from study.tracking import StudyTracker
    from study.tracking.sqlite_seed import seed_sqlite_store, template_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = template_path()
    template.parent.mkdir(parents=True)
    template.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)  # cut short
    assert seed_sqlite_store(tmp_path / "a.db") is False
    assert not template.exists() and not (tmp_path / "a.db").exists() and not list(tmp_path.glob(".*.seeding"))
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'b.db'}", "z")  # a fresh template, then a copy
    assert tracker.experiment_id() and template.is_file()
