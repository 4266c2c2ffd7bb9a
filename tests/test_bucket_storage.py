"""Study folders in a bucket, without Ray, against a real S3-compatible server that checks
signatures (tests/s3_server.py) and a real PostgreSQL: a bucket segstudy cannot use is refused in
one line (exit 2) before anything starts, with no secret printed; a URI is never taken for a local
path by any path option; each state write is in the bucket when it returns; the driver lock is
the database session's (tests/test_bucket_study.py runs a whole study)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SMOKE, run_app


def refused(tmp_path, *args: str, says: str, secrets: tuple[str, ...] = ()) -> str:
    """Run `segstudy ARGS` in an empty folder: exit 2, one line naming the problem, no secret
    printed, and nothing left behind (no `s3:` folder, no store, no study folder)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    proc = run_app(*args, cwd=cwd)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    for secret in secrets:
        assert secret not in proc.stdout + proc.stderr
    assert list(cwd.iterdir()) == [], "a refused command left something behind"
    return lines[0]


def test_a_bucket_that_cannot_be_used_is_refused_in_one_line(bucket, s3_server, postgres, tmp_path, monkeypatch):
    """Checked before the tracking store is even asked (this one would not answer)."""
    spec, secret, tracking = str(SMOKE), s3_server.secret_key, "http://127.0.0.1:9"
    run = ("run", spec, "--state-db", postgres, "--tracking-uri", tracking)
    missing = refused(tmp_path, *run, "--storage", f"s3://{bucket}-missing/studies", says="the bucket does not exist",
                      secrets=(secret,))
    assert f"s3://{bucket}-missing/studies" in missing and s3_server.endpoint in missing
    refused(tmp_path, "status", "smoke", "--storage", f"s3://{bucket}-missing/studies", says="the bucket does not exist")
    refused(tmp_path, "status", "smoke", "--storage", f"s3://{bucket}/studies", says="no study named 'smoke'")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")
    line = refused(tmp_path, *run, "--storage", f"s3://{bucket}/studies", says="access refused",
                   secrets=(secret, "wrong-secret-0123456789"))
    assert "AWS_ACCESS_KEY_ID" in line  # names where credentials come from, never their values
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
    refused(tmp_path, *run, "--storage", f"s3://{bucket}/studies", says="access refused", secrets=("wrong-secret-0123456789",))
    refused(tmp_path, "tracking", "serve", "--artifacts", f"s3://{bucket}/mlflow", says="access refused",
            secrets=("wrong-secret-0123456789",))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)

    # A usable bucket still needs what every node reaches: the state database and a tracking server.
    monkeypatch.delenv("SEGSTUDY_STATE_DB", raising=False)
    refused(tmp_path, "run", spec, "--storage", f"s3://{bucket}/studies", "--tracking-uri", tracking, says="--state-db")
    refused(tmp_path, "run", spec, "--storage", f"s3://{bucket}/studies", "--state-db", postgres.replace("@", ":pw@"),
            "--tracking-uri", tracking, says="carries a password", secrets=(":pw@",))
    refused(tmp_path, "run", spec, "--storage", f"s3://{bucket}/studies", "--state-db", postgres,
            "--tracking-uri", f"sqlite:///{tmp_path / 'x' / 'mlflow.db'}", says="a tracking store every machine reaches")
    assert s3_server.objects(bucket) == {}, "a refused study wrote to the bucket"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", str(SMOKE), "--storage", "gs://bucket/x"), "gs:// is not a storage segstudy writes to"),
        (("run", str(SMOKE), "--storage", "s3://Bad_Bucket/x"), "not a bucket name"),
        (("analyze", "--experiment", "smoke", "--out", "s3://bucket/x"), "--out s3://bucket/x: a URI, not a local folder"),
        (("report", "--experiment", "smoke", "--out", "s3://bucket/x"), "--out s3://bucket/x: a URI, not a local folder"),
        (("data", "synth", str(SMOKE), "--out", "s3://bucket/x"), "a URI, not a local folder"),
        (("recommend", "--experiment", "smoke", "--data", "s3://bucket/x"), "--data s3://bucket/x: a URI"),
        (("predict", "--model", "0" * 32, "--input", "s3://bucket/in.png", "--output", "m.png"), "--input s3://bucket/in.png: a URI"),
        (("predict", "--model", "0" * 32, "--input", str(SMOKE), "--output", "s3://bucket/m.png"), "a URI"),
        (("validate", "s3://bucket/spec.yaml"), "s3://bucket/spec.yaml: a URI, not a local spec file"),
        (("submit", str(SMOKE), "--address", "http://127.0.0.1:9", "--storage", "s3://bucket/x"), "give --state-db"),
        (("submit", str(SMOKE), "--address", "http://127.0.0.1:9", "--storage", "s3://bucket/x", "--state-db",
          "postgresql://u@db/state"), "a tracking store every machine reaches"),
    ],
)
def test_a_uri_is_never_taken_for_a_local_path(args, says, tmp_path, monkeypatch):
    monkeypatch.delenv("SEGSTUDY_STATE_DB", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    refused(tmp_path, *args, says=says)



def test_submit_gives_the_job_the_bucket_and_its_state_database(monkeypatch):
    """The job's `segstudy run` gets the bucket as given (not made a path on this machine) and the
    state database named here; one the cluster's nodes set themselves (SEGSTUDY_STATE_DB) is left
    to them. Whether the cluster reaches both, the job's run checks before any trial starts."""
    import shlex

    from study.run.cluster.submit import build_entrypoint, cluster_storage

    monkeypatch.setenv("SEGSTUDY_STATE_DB", "postgresql://u@db:5432/state")
    tracking = "http://mlflow:5000"
    storage, state_db = cluster_storage("s3://team-bucket/studies/", state_db="postgres://u@db/state", tracking_uri=tracking)
    words = shlex.split(build_entrypoint("spec.yaml", tracking_uri=tracking, storage=storage, state_db=state_db))
    assert words[words.index("--storage") + 1] == "s3://team-bucket/studies"
    assert words[words.index("--state-db") + 1] == "postgresql://u@db/state"
    storage, state_db = cluster_storage("s3://team-bucket/studies", state_db=None, tracking_uri=tracking)
    assert state_db is None and "--state-db" not in build_entrypoint("spec.yaml", tracking_uri=tracking, storage=storage)
    assert cluster_storage("shared/results", state_db=None, tracking_uri=tracking) == (str(Path("shared/results").absolute()), None)

def make_study(bucket: str, state_db: str, tmp_path: Path):
    from study.run.record.bucket_study import create_study
    from study.storage import BucketPath

    return create_study(BucketPath(bucket, "studies"), name="kept", spec_file=SMOKE, tracking_uri="http://127.0.0.1:1",
                        state_db=state_db)


def test_each_state_write_is_in_the_bucket_when_it_returns(bucket, s3_server, postgres, tmp_path, monkeypatch):
    """The outbox, the confirm scores and the manifest of a study in a bucket: in the bucket as soon
    as written, taken over whole by another machine, and what is delivered is gone there too."""
    from study.run.driver.rounds import SCORES_FILE, ConfirmScores, Ended
    from study.run.record.bucket_study import find_study
    from study.tracking.outbox import Op, Outbox

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "first"))
    study = make_study(bucket, postgres, tmp_path)
    prefix = study.location.removeprefix(f"s3://{bucket}/")
    outbox = Outbox(study.outbox, saved=study.save)
    table = tmp_path / "per_image.csv"
    table.write_text("image_id,dice\na,0.5\n")
    outbox.append(Op.LOG_BATCH, {"run_id": "offline-1", "tags": {"a": "b"}})
    outbox.append(Op.LOG_ARTIFACT, {"run_id": "offline-1", "path": str(table)})
    ConfirmScores(study.path, saved=study.save).record(Ended("k", "cell", 0, learned=True))
    study.update(chosen={"cell": {"lr": 0.01}})
    objects = s3_server.objects(bucket)
    assert objects[f"{prefix}/outbox/ops.jsonl"] == (study.outbox / "ops.jsonl").read_bytes()
    assert [k for k in objects if k.endswith("/per_image.csv")] and f"{prefix}/{SCORES_FILE}" in objects
    assert json.loads(objects[f"{prefix}/study.json"])["chosen"] == {"cell": {"lr": 0.01}}
    assert json.loads(objects[f"{prefix}/study.json"])["state_db"] == postgres

    # Another machine takes the study over: its copy is the bucket's, and its delivery reaches the bucket.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "second"))
    other = find_study(study.location)
    assert other.path != study.path and other.manifest == study.manifest
    assert len(Outbox(other.outbox)) == 2 and set(ConfirmScores(other.path).read()) == {"k"}
    with other.driving("sync"):
        assert Outbox(other.outbox, saved=other.save).deliver(lambda kind, args: None) == 2
    objects = s3_server.objects(bucket)
    assert objects[f"{prefix}/outbox/ops.jsonl"] == b"" and not [k for k in objects if k.endswith("/per_image.csv")]


HOLD = """
import sys, time
from study.run.record.bucket_study import find_study
with find_study(sys.argv[1]).driving("run"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_live_driver_of_a_study_in_a_bucket_is_refused_and_a_killed_one_is_not(bucket, s3_server, postgres, tmp_path,
                                                                               monkeypatch):
    """The driver lock of a study in a bucket is held by the driver's database session: a second
    driver is refused naming the first, and a SIGKILLed one leaves nothing that blocks a resume."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    study = make_study(bucket, postgres, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, study.location], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = refused(tmp_path, "sync", study.location, says="a live driver is running this study")
        assert f"pid {holder.pid} on " in line and "(run)" in line and study.driver() is not None
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    with study.driving("resume"):  # at once: the dead driver's session ended with it
        assert "(resume)" in study.driver()
    assert study.driver() is None
