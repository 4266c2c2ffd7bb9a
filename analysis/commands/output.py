"""The output folder of an analysis command: made if missing, refused in one line if it cannot be."""

from __future__ import annotations

from pathlib import Path

from study.errors import SegstudyError


def output_dir(path: Path, *, option: str = "--out") -> Path:
    """Create `path` (and parents) for writing; a file in the way or no permission is the user's to fix.

    Raises:
        SegstudyError: naming the option and the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SegstudyError(f"{option} {path}: is a file, not a folder; name a folder for the outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SegstudyError(f"{option} {path}: cannot create the folder ({exc.strerror or exc})") from None
    probe = path / ".segstudy-write-test"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SegstudyError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
    return path


__all__ = ["output_dir"]
