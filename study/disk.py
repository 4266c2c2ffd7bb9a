"""Free space and full disks: what a folder's file system has left, and whether an error was a
full disk however a library wrapped it.

A full disk (ENOSPC, a quota, SQLite's "database or disk is full") is a fault of the machine, not
of the study: a study that meets one stops as interrupted and resumable (docs/ARCHITECTURE.md 3,
"Stopping"), with one line naming the path and what is left on its disk. MLflow, SQLAlchemy,
pyarrow and a Ray worker's traceback keep only the text of the OSError, so the text is read too.

Stdlib only, rank 0 (docs/ARCHITECTURE.md 2).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from study.errors import SegstudyError

NO_SPACE_EXIT = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure of the machine; run it again later
_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How a full disk reads once only the text is left (lower case).
_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded", "[errno 28]", "[errno 122]")


class NoSpaceError(SegstudyError):
    """A command refused or stopped because a disk has too little space: one line, exit 75."""

    exit_code = NO_SPACE_EXIT


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a folder about to be made lives there)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still put on the file system that holds `path` (or would
    hold it: its nearest existing ancestor); 0 when that cannot be looked at."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return 0


def same_disk(a: Path, b: Path) -> bool:
    """Whether two paths (or their nearest existing ancestors) lie on one file system."""
    try:
        return os.stat(nearest_existing(a)).st_dev == os.stat(nearest_existing(b)).st_dev
    except OSError:
        return False


def size_text(n: float) -> str:
    """'0 B', '812 KB', '12.3 MB', '4.0 GB'.

    Example:
        >>> size_text(0), size_text(831_488), size_text(12.3e6), size_text(4e9)
        ('0 B', '812 KB', '12.3 MB', '4.0 GB')
    """
    if n < 1024:
        return f"{int(n)} B"
    if n < 1024**2:
        return f"{n / 1024:.0f} KB"
    if n < 1024**3:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e9:.1f} GB"


def space_text(path: Path | str) -> str:
    """'/mnt/x/study-1 (0 B free)': a path and what its disk has left."""
    return f"{path} ({size_text(free_bytes(Path(path)))} free)"


def is_no_space_text(text: str) -> bool:
    """Whether an error's text says the disk is full."""
    low = text.lower()
    return any(t in low for t in _TEXTS)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, None if e.__suppress_context__ else e.__context__]  # `raise ... from None` cut the chain
    return seen


def no_space(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, is a full disk."""
    return any(
        (isinstance(e, OSError) and e.errno in _ERRNOS) or is_no_space_text(str(e)) for e in _chain(exc)
    )


Where = Path | str | None


def no_space_cause(exc: BaseException, *, where: Where | Sequence[Where]) -> str | None:
    """The one-line cause of a stop for a full disk, 'no space left on device: PATH (N free)', or
    None when `exc` is not a full disk. PATH is the file the error names (of a copy's source and
    destination, the one on the fuller disk), else the one of `where` (the files or folders the
    failed write may have gone to) whose disk has the least space left."""
    if not no_space(exc):
        return None
    # A copy or rename names its source as `filename` and its destination as `filename2`
    # (shutil's sendfile copy does); the full disk is the one with the least left, the
    # destination on a tie.
    named = [f for e in _chain(exc) if isinstance(e, OSError) and e.errno in _ERRNOS
             for f in (e.filename2, e.filename) if isinstance(f, str | os.PathLike) and str(f)]
    candidates = [w for w in (where if isinstance(where, list | tuple) else [where]) if w]
    path = min(named or candidates, key=lambda w: free_bytes(Path(w)), default=None)
    return f"no space left on device: {space_text(path)}" if path else "no space left on device"


def require_free(path: Path, need: int, *, what: str) -> None:
    """Refuse when the disk of `path` has less than `need` bytes free.

    Args:
        what: what needs the space, for the message ("the study writes about 120 MB: ...").

    Raises:
        NoSpaceError: naming the path, its free space and `what`.
    """
    free = free_bytes(path)
    if free < need:
        raise NoSpaceError(f"{path}: {size_text(free)} free on its disk, but {what}; free space or choose another disk")


__all__ = [
    "NO_SPACE_EXIT", "NoSpaceError", "free_bytes", "is_no_space_text", "nearest_existing", "no_space", "no_space_cause",
    "require_free", "same_disk", "size_text", "space_text",
]
