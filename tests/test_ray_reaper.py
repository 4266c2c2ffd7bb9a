"""A driver that started Ray itself is SIGKILLed: none of the node's processes outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.slow

DRIVER = """
import json, time, psutil
from study.run.cluster.connect import connect_ray
connect_ray(None)
print(json.dumps([[p.pid, p.name()] for p in psutil.Process().children(recursive=True)]), flush=True)
time.sleep(600)
"""


def test_killed_driver_leaves_no_ray_process(tmp_path):
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=log, text=True,
                              start_new_session=True)
    try:
        line = driver.stdout.readline()
        assert line, (tmp_path / "driver.log").read_text()[-2000:]
        procs = json.loads(line)
        names = {name for _, name in procs}
        assert any("raylet" in n for n in names) and any("gcs" in n for n in names), names
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 40
        alive = procs
        while alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = [(pid, name) for pid, name in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        assert not alive, f"still running after the driver's SIGKILL: {alive}"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
