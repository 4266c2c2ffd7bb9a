"""Shared fixtures. One Ray instance per test session: a real head node on loopback, started
lazily by the first test that needs it and stopped at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "smoke.yaml"
SMOKE_TUNING = ROOT / "search_spaces" / "smoke_tuning.yaml"
SMOKE_3D = ROOT / "search_spaces" / "smoke_3d.yaml"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]


def head_env() -> dict[str, str]:
    """The head runs job entrypoints with the first `python` on PATH: make it this venv's."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"  # loopback-only test cluster
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory):
    """A real `ray start --head --block` on 127.0.0.1 with the job server, and this process connected.

    The head runs in its own process group so teardown stops exactly this cluster (never other
    Ray instances on the machine, as `ray stop` would).
    """
    import ray

    env = head_env()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port, dash = free_port(), free_port()
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={free_port()}",  # the job agent's; Ray's fixed default clashes with other heads
        "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats",
        f"--temp-dir={tmp_path_factory.mktemp('ray')}",
    ]
    log = (tmp_path_factory.getbasetemp() / "ray_head.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(gcs_address=f"127.0.0.1:{port}", dashboard_url=f"http://127.0.0.1:{dash}", env=env)
    try:
        wait_for_dashboard(head.dashboard_url, proc, timeout=120)
        ray.init(address=head.gcs_address, logging_level="WARNING")
        yield head
    finally:
        ray.shutdown()
        stop_process_group(proc)
        log.close()


def wait_for_dashboard(url: str, proc: subprocess.Popen, *, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}; see ray_head.log in the pytest temp dir")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Ray dashboard at {url} did not answer within {timeout} s")


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the head's process group, then SIGKILL whatever is left after 30 s."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a variant of the smoke spec: `write_spec(**overrides)` -> path (dotted keys allowed)."""

    def _write(_file: str = "spec.yaml", _base: Path = SMOKE, **overrides: object) -> Path:
        raw = yaml.safe_load(_base.read_text())
        for dotted, value in overrides.items():
            node = raw
            *parents, leaf = dotted.split("__")
            for key in parents:
                node = node.setdefault(key, {})
            if value is DELETE:
                node.pop(leaf, None)
            else:
                node[leaf] = value
        path = tmp_path / _file
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return _write


DELETE = object()


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `segstudy` console script."""
    exe = shutil.which("segstudy", path=str(BIN)) or str(BIN / "segstudy")
    return subprocess.run([exe, *args], cwd=cwd, env=env or os.environ.copy(), capture_output=True, text=True, timeout=timeout)


def run_app(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the `segstudy` app in this process, the way the console script would.

    For commands whose subprocess would spend most of its time importing torch, MONAI and MLflow
    again (5-10 s each on 2 cores); `run_cli` keeps the real console script covered.
    """
    from typer.testing import CliRunner

    from study.cli import app

    with contextlib.chdir(cwd):
        result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["segstudy", *args], result.exit_code, result.stdout, result.stderr)
