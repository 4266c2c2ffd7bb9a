"""`segstudy tracking serve`: a real `mlflow server` for studies on a cluster.

Bound to 127.0.0.1 unless a host is given (an MLflow server without auth must not face a
network by accident). MLflow 3's background job consumers are switched off: on a small machine
they take CPU from trials (docs/ARCHITECTURE.md 7).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from study.errors import SegstudyError

LOOPBACK = "127.0.0.1"


def server_command(
    *, backend: str, artifacts: Path, host: str = LOOPBACK, port: int = 5000, workers: int = 1
) -> list[str]:
    """The `mlflow server` command line for a SQLite/PostgreSQL backend and a local artifact root."""
    if not backend.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg2://", "mysql://")):
        raise SegstudyError(
            f"--backend-store-uri '{backend}': accepted are sqlite:///PATH and postgresql://USER@HOST/DB "
            "(the password from PGPASSWORD or ~/.pgpass, not the URI)"
        )
    if urlsplit(backend).password:
        raise SegstudyError(
            "--backend-store-uri embeds a password; put it in PGPASSWORD or ~/.pgpass so it is not shown in ps"
        )
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
        "--artifacts-destination", str(artifacts.resolve()),
        "--serve-artifacts",
    ]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def serve(*, backend: str, artifacts: Path, host: str = LOOPBACK, port: int = 5000, workers: int = 1) -> None:
    """Replace this process with the MLflow server (signals reach it directly)."""
    command = server_command(backend=backend, artifacts=artifacts, host=host, port=port, workers=workers)
    if backend.startswith("sqlite:///"):
        Path(backend.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    os.execve(command[0], command, server_env())


__all__ = ["LOOPBACK", "serve", "server_command", "server_env"]
