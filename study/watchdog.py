"""A watchdog process that acts when this process ends, however it ends (SIGKILL included).

The watchdog reads a pipe whose only write end this process holds. The kernel closes that end when
this process exits for any reason, so the watchdog sees end-of-file and runs its clean-up: the one
mechanism that survives a SIGKILL, which no signal handler or atexit hook does.
"""

from __future__ import annotations

import os
import subprocess
import sys


def start_watchdog(code: str, *args: str) -> int:
    """Run `python -c code args...` in its own session with stdin on a pipe; returns the write end.

    Close the returned descriptor to trigger the clean-up early (e.g. after a normal shutdown).
    """
    read_end, write_end = os.pipe()
    subprocess.Popen([sys.executable, "-c", code, *args], stdin=read_end, start_new_session=True, close_fds=True)
    os.close(read_end)
    os.set_inheritable(write_end, False)  # children (Ray workers, servers) must not keep it open
    return write_end


__all__ = ["start_watchdog"]
