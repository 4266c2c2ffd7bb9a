"""The lock a live study driver holds in its study folder, and who holds it.

A driver holds `driver.lock` (an OS file lock, flock) while it runs a study, so the kernel releases
it when the driver dies, however it dies: a second driver on the same study is refused, and
`segstudy status` tells a running study from one whose driver is gone by asking whether the lock
is held. Asking never writes: the file is opened read-only and only a shared lock is tried.

Stdlib only, rank 0 (docs/ARCHITECTURE.md 2): the run layer takes the lock, the analysis reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from study.errors import SegstudyError

LOCK = "driver.lock"


@contextlib.contextmanager
def hold(folder: Path, *, what: str = "driver") -> Iterator[None]:
    """Hold the lock of the study in `folder` while the body runs, with 'pid P on HOST since T
    (WHAT)' as its text; refuse if a live process holds it.

    Raises:
        SegstudyError: another live process holds it (its text says which).
    """
    fd = os.open(Path(folder) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _text(fd) or "another process"
            raise SegstudyError(
                f"{folder}: a live driver is running this study ({holder}); wait for it to end or stop it, "
                "then run segstudy resume"
            ) from None
        note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} ({what})"
        with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, its text is only a note
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def holder(folder: Path) -> str | None:
    """'pid P on HOST since T (run)' of the live process holding the study's lock, or None when
    none does (no lock file, or a lock the kernel released when its driver died)."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _text(fd) or "a live process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _text(fd: int) -> str:
    return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()


__all__ = ["LOCK", "hold", "holder"]
