"""The study's log file: everything Ray, Tune, MLflow, Optuna and the trial workers say.

A study folder is made only once the spec, the cluster and the preflight have passed (bad input
leaves nothing behind), but Ray and MLflow talk from the first moment. So the log starts in a
temporary file and moves into the folder, as `segstudy.log`, when the folder exists; a resumed
study appends to the same file.

The log lives on the study folder's disk: when that fills up, a write that fails records a stop
for a full disk (`process_state.stop_on_full_disk`) and the text is dropped, instead of a logging
traceback on the console for every line that follows.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from study import disk, process_state
from study.process_state import route_library_output
from study.redact import mask_text

LOG_FILE = "segstudy.log"


class LibraryLog:
    """A text sink (write/flush) that can move to its final place while loggers hold it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        handle, name = tempfile.mkstemp(prefix="segstudy-", suffix=".log")
        self.path = Path(name)
        self._file = open(handle, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.moved = False
        self.full = False  # its disk filled up: what follows is dropped

    def write(self, text: str) -> int:
        """Append `text`, secrets masked (Ray, MLflow and urllib3 may log an address with its token)."""
        with self._lock:
            if not self._file.closed and not self.full:
                self._guarded(lambda: self._file.write(mask_text(text)))
            return len(text)  # what the caller handed over, as a stream reports it

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed and not self.full:
                self._guarded(self._file.flush)

    def _guarded(self, write: Any) -> None:
        try:
            write()
        except OSError as exc:
            if not disk.no_space(exc):
                raise
            self.full = True
            process_state.stop_on_full_disk(f"no space left on device: {disk.space_text(self.path)}")

    def move_to(self, folder: Path) -> Path:
        """Continue in `folder/segstudy.log` (appended to, when a resumed study has one).

        Raises:
            OSError: the folder's disk is full (the log stays where it was).
        """
        target = folder / LOG_FILE
        with self._lock:
            self._guarded(self._file.flush)
            with open(target, "a", encoding="utf-8") as out, open(self.path, encoding="utf-8") as early:
                shutil.copyfileobj(early, out)
            self._close_file()
            self.path.unlink(missing_ok=True)
            self.path, self.moved = target, True
            self._file = open(target, "a", encoding="utf-8")  # noqa: SIM115
        return target

    def close(self) -> None:
        """Close; a log that never reached a study folder (the study was refused) is removed."""
        with self._lock:
            self._close_file()
            if not self.moved:
                self.path.unlink(missing_ok=True)

    def _close_file(self) -> None:
        try:
            self._file.close()
        except OSError as exc:  # what was still buffered met a full disk; the log ends here
            if not disk.no_space(exc):
                raise
            self.full = True


@contextlib.contextmanager
def library_output(verbose: bool) -> Iterator[LibraryLog | None]:
    """Route library output to a `LibraryLog` for the duration (None, and the console as it
    was, when `verbose`)."""
    if verbose:
        yield None
        return
    log = LibraryLog()
    undo = route_library_output(log)
    try:
        yield log
    finally:
        undo()
        log.close()


__all__ = ["LOG_FILE", "LibraryLog", "library_output"]
