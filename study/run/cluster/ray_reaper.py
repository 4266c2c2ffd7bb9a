"""Leave no Ray process behind when a driver that started Ray itself dies, however it dies.

`ray.init()` in the driver starts the node's processes as the driver's descendants. When the
driver is SIGKILLed, the GCS and raylet notice and exit, but the dashboard and runtime-env agents
(about 210 MB) live on. A watchdog process, started with the read end of a pipe whose write end
only the driver holds, waits for end-of-file (the driver is gone, or shut Ray down) and then ends
whatever of the node's processes is still alive. Processes are named by (pid, start time), so a
recycled pid is never killed.
"""

from __future__ import annotations

import json
import os

import psutil

from study.watchdog import start_watchdog

_WATCHDOG = """
import json, os, signal, sys, time
import psutil
procs = []
for pid, created in json.loads(sys.argv[1]):
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - created) < 1e-3:
            procs.append(p)
    except psutil.Error:
        pass
sys.stdin.buffer.read()
time.sleep(2)  # a clean ray.shutdown() ends them itself; this is for what a killed driver left
alive = [p for p in procs if p.is_running()]
for p in alive:
    try:
        p.terminate()
    except psutil.Error:
        pass
gone, alive = psutil.wait_procs(alive, timeout=5)
for p in alive:
    try:
        p.kill()
    except psutil.Error:
        pass
"""

_write_end: int | None = None


def reap_on_exit() -> int:
    """Watch this process's Ray descendants; returns how many are watched. Call after `ray.init()`."""
    global _write_end
    if _write_end is not None:
        os.close(_write_end)  # an earlier local Ray of this process: its watchdog takes over now
    children = psutil.Process().children(recursive=True)
    watched = [(p.pid, p.create_time()) for p in children]
    _write_end = start_watchdog(_WATCHDOG, json.dumps(watched))
    return len(watched)


__all__ = ["reap_on_exit"]
