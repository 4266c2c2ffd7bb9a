"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

import torch


def machine() -> str:
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{platform.node() or 'host'}: {cpus} CPU cores, {platform.processor() or platform.machine()}, torch {torch.__version__}"


def record(path: Path, payload: dict) -> None:
    """Append one JSON line of results (the RESULTS.md figures are copied from these)."""
    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), **payload}
    with path.open("a") as f:
        f.write(json.dumps(payload) + "\n")
    print(json.dumps(payload, indent=2))
