"""Reading commands given a bad or unreachable tracking URI: one line, exit 2, no secret, no wait."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import run_app

SECRET = "hunter2-very-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMANDS = {
    "analyze": ["analyze", "--experiment", "x", "--out", "out"],
    "status": ["status", "x"],
    "report": ["report", "--experiment", "x", "--out", "out"],
    "predict": ["predict", "--model", "0" * 32, "--input", "in.png", "--output", "out.png"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"http://alice:{SECRET}@127.0.0.1:5000", "embeds credentials"),
        (f"postgresql://alice:{SECRET}@db/mlflow", "embeds credentials"),
        ("ftp://example/mlflow", "accepted are sqlite:///PATH"),
        ("mysql://db/mlflow", "needs the MySQLdb module: pip install mysqlclient"),
    ],
)
def test_bad_tracking_uri_is_one_line(tmp_path, command, uri, expected):
    (tmp_path / "in.png").write_bytes(b"not a png")
    proc = run_app(*COMMANDS[command], "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", ["analyze", "status", "report"])
@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "postgresql://127.0.0.1:{port}/mlflow"])
def test_unreachable_server_fails_fast(tmp_path, command, uri):
    """Nothing listens on the port: a one-line error in seconds, not MLflow's minutes of retries."""
    t0 = time.monotonic()
    proc = run_app(*COMMANDS[command], "--tracking-uri", uri.format(port=_free_port()), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not reachable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_out_naming_a_file_is_one_line(tmp_path, command):
    (tmp_path / "out").write_text("my notes")
    proc = run_app(*COMMANDS[command], "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--out out: is a file, not a folder" in proc.stderr
    assert (tmp_path / "out").read_text() == "my notes"  # nothing overwritten


def test_recommend_on_garbage_images_is_one_line(tmp_path):
    data = tmp_path / "mine"
    data.mkdir()
    (data / "a_image.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (data / "a_mask.png").write_bytes(b"also garbage")
    proc = run_app("recommend", "--experiment", "x", "--data", str(data), "--tracking-uri",
                   f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "a_image.png: cannot read as PNG" in proc.stderr
