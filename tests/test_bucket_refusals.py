"""A bucket segstudy cannot use is refused in one line (exit 2) before anything starts, against a
real S3-compatible server (tests/s3_server.py) that checks signatures; and a URI is never taken for
a local path by any path option. No secret appears in what is printed."""

from __future__ import annotations

import pytest

from conftest import SMOKE, TrackingServer, run_app


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


@pytest.fixture
def tracking(tmp_path):
    """A real tracking server: the bucket is checked after the tracking store answers."""
    server = TrackingServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    server.start()
    yield server.uri
    server.stop()


def test_a_bucket_that_cannot_be_used_is_refused_in_one_line(bucket, s3_server, postgres, tracking, tmp_path, monkeypatch):
    spec, secret = str(SMOKE), s3_server.secret_key
    run = ("run", spec, "--state-db", postgres, "--tracking-uri", tracking)
    missing = refused(tmp_path, *run, "--storage", f"s3://{bucket}-missing/studies", says="the bucket does not exist",
                      secrets=(secret,))
    assert f"s3://{bucket}-missing/studies" in missing and s3_server.endpoint in missing

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
    ],
)
def test_a_uri_is_never_taken_for_a_local_path(args, says, tmp_path):
    refused(tmp_path, *args, says=says)
