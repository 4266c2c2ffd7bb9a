"""`segstudy tracking serve`: a real `mlflow server` for studies on a cluster.

Bound to 127.0.0.1 unless a host is given (an MLflow server without auth must not face a
network by accident). MLflow 3's background job consumers are switched off: on a small machine
they take CPU from trials (docs/ARCHITECTURE.md 7).

`mlflow server` runs uvicorn as a child of its own, so killing it (even with SIGKILL) used to leave
uvicorn serving the port. Here the server runs in its own process group under this process, and
a small watchdog process holds the read end of a pipe whose write end only this process has:
however this process ends, the pipe closes and the watchdog ends the whole server group. A port
that is already taken is refused before anything starts.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from study.errors import SegstudyError, embeds_credentials
from study.redact import mask_uri
from study.tracking.sqlite_seed import seed_sqlite_store
from study.tracking.stores import check_database, is_database, require_driver
from study.watchdog import start_watchdog

LOOPBACK = "127.0.0.1"


def server_command(
    *, backend: str, artifacts: Path | str, host: str = LOOPBACK, port: int = 5000, workers: int = 1
) -> list[str]:
    """The `mlflow server` command line for a SQLite/PostgreSQL backend and an artifact root: a local
    folder (a Path), or a bucket's URI (a str: MLflow writes it through boto3, with the same AWS environment as
    `study.storage.s3`; clients reach the artifacts through the server, `--serve-artifacts`)."""
    if not (backend.startswith("sqlite:///") or is_database(backend)):
        raise SegstudyError(
            f"--backend-store-uri '{mask_uri(backend)}': accepted are sqlite:///PATH and postgresql://USER@HOST/DB "
            "(the password from PGPASSWORD or ~/.pgpass, not the URI)"
        )
    if embeds_credentials(backend):  # argv is visible to every user of the machine (ps)
        raise SegstudyError(
            f"--backend-store-uri '{mask_uri(backend)}' embeds a password or token; put it in PGPASSWORD or "
            "~/.pgpass so it is not shown in ps"
        )
    require_driver(backend, what="--backend-store-uri")
    if not 0 < port < 65536:
        raise SegstudyError(f"--port {port}: accepted are 1-65535")
    if workers < 1:
        raise SegstudyError(f"--workers {workers}: must be at least 1")
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow is None:
        raise SegstudyError("mlflow executable not found next to this Python or on PATH; run make install")
    return [
        mlflow, "server",
        "--host", host, "--port", str(port), "--workers", str(workers),
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts.resolve()) if isinstance(artifacts, Path) else artifacts,
        "--serve-artifacts",
    ]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


# Runs in the watchdog: wait for EOF on stdin (the server's supervisor is gone), then end the group.
_WATCHDOG = """
import os, signal, sys, time
group = int(sys.argv[1])
sys.stdin.buffer.read()
try:
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.1)
        os.killpg(group, 0)  # raises once every member has exited
    os.killpg(group, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


def check_port_free(host: str, port: int) -> None:
    """Refuse a host that is no address of this machine, and a port something already listens on
    (e.g. a server a crash left behind): each said as what it is.

    Raises:
        SegstudyError: --host cannot be resolved, or is not an address of this machine; --port is
            in use (or needs privileges).
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise SegstudyError(f"--host {host}: cannot be resolved ({reason}); give an address of this machine, "
                            "e.g. 127.0.0.1 or 0.0.0.0") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise SegstudyError(f"--host {host}: not an address of this machine ({exc.strerror}); give one of its "
                                    "addresses, e.g. 127.0.0.1 or 0.0.0.0") from None
            if exc.errno == errno.EACCES:
                raise SegstudyError(f"--port {port}: binding it needs privileges ({exc.strerror}); pick a port above 1023") from None
            raise SegstudyError(
                f"--port {port}: {host}:{port} is in use ({exc.strerror}); stop what listens there "
                f"(`ss -ltnp 'sport = :{port}'` shows it) or pick another port"
            ) from None


def serve(*, backend: str, artifacts: Path | str, host: str = LOOPBACK, port: int = 5000, workers: int = 1) -> int:
    """Run the MLflow server until it ends or this process is stopped; returns its exit code."""
    command = server_command(backend=backend, artifacts=artifacts, host=host, port=port, workers=workers)
    check_port_free(host, port)
    check_database(backend, what="--backend-store-uri")  # else the server retries it for ~100 s, then dies
    if backend.startswith("sqlite:///"):
        db = Path(backend.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        # The server then starts on a current schema instead of migrating one (it serves artifacts).
        seed_sqlite_store(db, artifact_root="mlflow-artifacts:/")
    if isinstance(artifacts, Path):
        artifacts.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(command, env=server_env(), start_new_session=True)
    write_end = start_watchdog(_WATCHDOG, str(server.pid))  # ends the server group if this process dies

    def stop(signum: int, _frame: object) -> None:
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        return server.wait()
    finally:
        os.close(write_end)  # the watchdog ends whatever of the group is left


__all__ = ["LOOPBACK", "check_port_free", "serve", "server_command", "server_env"]
