"""What a path given on the command line is, checked before anything is read, built or created.

Every command option of one kind goes through one function here: a file to read (the spec,
`--input`), a folder to read (`--data`), a folder to write in (`--storage`, `--out`,
`--artifacts`) and a file to write (`--output`, a new SQLite store). A refusal is one
`SegstudyError` naming the option, the path and what it is (a folder, a FIFO, a device, a
symlink loop, a read-only folder), and a check never leaves anything behind.

A URI is never taken for a local path: `s3://bucket/x` given where a path is expected would
otherwise become a folder named `s3:` in the current folder (pathlib folds the two slashes into
one). Each function refuses one first (`not_a_uri`); options that take a bucket as well parse
their value with `study.storage` before they come here.

Stdlib only, rank 0 (docs/ARCHITECTURE.md 2).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from study.errors import SegstudyError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


# scheme:/ at the start, as pathlib leaves `s3://b/x` (`s3:/b/x`); two letters at least, so a
# Windows drive (C:/) is not one.
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/")


def uri_scheme(path: str | Path) -> str | None:
    """The scheme of a path that is really a URI (`s3` for `s3://bucket/x`, also once pathlib has
    made it `s3:/bucket/x`), else None.

    Example:
        >>> uri_scheme(Path("s3://bucket/x")), uri_scheme("results/s3"), uri_scheme("./s3:/x")
        ('s3', None, None)
    """
    found = _URI.match(str(path))
    return found.group(1).lower() if found else None


def as_given(path: str | Path) -> str:
    """A path as the user typed it: a URI that pathlib folded gets its two slashes back."""
    text = str(path)
    return _URI.sub(lambda m: f"{m.group(1)}://", text, count=1) if "://" not in text else text


def not_a_uri(path: str | Path, *, option: str = "", takes: str = "a local path", hint: str = "") -> Path:
    """`path` as a Path, after checking it is not a URI (`s3://...`, `http://...`) that would be
    taken for a local folder named after its scheme.

    Raises:
        SegstudyError: naming the option, the URI and what the option takes (`hint`: what to
            give instead, e.g. "; for a bucket use --storage"); a local folder whose name ends in
            a colon can still be given as `./NAME:/...`.
    """
    scheme = uri_scheme(path)
    if scheme is not None:
        given = as_given(path)
        label = f"{option} {given}" if option else given
        raise SegstudyError(f"{label}: a URI, not {takes}{hint}")
    return Path(path)


def _label(path: Path, option: str) -> str:
    return f"{option} {path}" if option else str(path)


def _a(what: str) -> str:
    return f"{'an' if what[:1] in set('aeiou') else 'a'} {what}"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a file" if stat.S_ISREG(mode) else "a special file")


def _stat(path: Path, option: str, *, missing: str) -> os.stat_result | None:
    """`os.stat(path)` following symlinks; None when nothing is there; a SegstudyError for a path
    that cannot be looked at (a symlink loop, a file used as a folder, no permission)."""
    label = _label(path, option)
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise SegstudyError(f"{label}: a symlink to {os.readlink(path)}, which does not exist") from None
        return None
    except NotADirectoryError:
        parent = next((p for p in path.parents if p.is_file()), path.parent)
        raise SegstudyError(f"{label}: {missing}: {parent} is a file, not a folder") from None
    except ValueError as exc:  # an embedded NUL byte
        raise SegstudyError(f"{label}: not a usable path ({exc})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SegstudyError(f"{label}: a symlink loop (the link points back to itself)") from None
        raise SegstudyError(f"{label}: cannot be looked at ({exc.strerror or type(exc).__name__})") from None


def input_file(path: Path, *, option: str = "", what: str = "file") -> Path:
    """`path`, after checking it is an existing, readable regular file.

    Args:
        path: the path as the user gave it.
        option: how the user named it (`--input`, or "" to start the message with the path).
        what: what the file is, for the message ("spec file", "image").

    Raises:
        SegstudyError: missing, a folder, a FIFO, a device or socket, a symlink loop or to
            nothing, or not readable.

    Example:
        >>> input_file(Path("/dev/zero"), what="spec file")  # doctest: +SKIP
        SegstudyError: /dev/zero: is a character device, not a spec file
    """
    path = not_a_uri(path, option=option, takes=f"a local {what}")
    return _existing(path, option, what, is_kind=stat.S_ISREG, read=lambda p: open(p, "rb").close())


def input_folder(path: Path, *, option: str = "", what: str = "folder") -> Path:
    """`path`, after checking it is an existing folder that can be listed.

    Raises:
        SegstudyError: missing (said as missing), a file or other non-folder, a symlink loop, or
            not readable.
    """
    path = not_a_uri(path, option=option, takes=f"a local {what}")
    return _existing(path, option, what, is_kind=stat.S_ISDIR, read=lambda p: os.scandir(p).close())


def _existing(path: Path, option: str, what: str, *, is_kind: Callable[[int], bool], read: Callable[[Path], None]) -> Path:
    """`path`, after checking it exists, is of the kind `is_kind` accepts, and `read` can open it
    (a regular file opens without blocking; a folder is listed)."""
    label = _label(path, option)
    st = _stat(path, option, missing=f"{what} not found")
    if st is None:
        raise SegstudyError(f"{label}: {what} not found")
    if not is_kind(st.st_mode):
        raise SegstudyError(f"{label}: is {_kind(st.st_mode)}, not {_a(what)}")
    try:
        read(path)
    except OSError as exc:
        raise SegstudyError(f"{label}: {what} not readable ({exc.strerror or type(exc).__name__})") from None
    return path


def output_folder(path: Path, *, option: str = "", what: str = "folder") -> Path:
    """`path`, after checking it is a folder segstudy can write in, or can be created as one.

    Nothing is created: a missing folder is checked through its nearest existing parent, which
    must be a folder where a file can be made (probed with a temporary file, removed at once, so
    a read-only mount or a folder without write permission is refused for any user).

    Raises:
        SegstudyError: an existing non-folder at `path` or above it, a symlink loop, or a folder
            that cannot be written.
    """
    path = not_a_uri(path, option=option, takes=f"a local {what}")
    label = _label(path, option)
    st = _stat(path, option, missing="cannot be created")
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise SegstudyError(f"{label}: is {_kind(st.st_mode)}, not {_a(what)}")
        _probe_writable(path, label=label, what=f"{what} is not writable")
        return path
    parent = _nearest_existing(path, option)
    _probe_writable(parent, label=label, what=f"cannot be created: {parent} is not writable")
    return path


def output_file(path: Path, *, option: str = "", what: str = "file") -> Path:
    """`path`, after checking a file can be written there: not a folder or special file, and its
    folder exists or can be created, and can be written.

    Raises:
        SegstudyError: naming the option and what is in the way.
    """
    path = not_a_uri(path, option=option, takes=f"a local {what}")
    label = _label(path, option)
    st = _stat(path, option, missing="cannot be created")
    if st is not None and not stat.S_ISREG(st.st_mode):
        hint = f"; give a file path, e.g. {path / 'name'}" if stat.S_ISDIR(st.st_mode) else ""
        raise SegstudyError(f"{label}: is {_kind(st.st_mode)}, not {_a(what)}{hint}")
    folder = path.parent
    folder_st = _stat(folder, option, missing="cannot be created")
    if folder_st is not None and not stat.S_ISDIR(folder_st.st_mode):
        raise SegstudyError(f"{label}: cannot be created: {folder} is {_kind(folder_st.st_mode)}, not a folder")
    base = folder if folder_st is not None else _nearest_existing(folder, option, label=label)
    _probe_writable(base, label=label, what=f"cannot be written: {base} is not writable")
    return path


def _nearest_existing(path: Path, option: str, *, label: str | None = None) -> Path:
    """The nearest existing ancestor of `path`, which must be a folder."""
    label = label or _label(path, option)
    for parent in path.absolute().parents:
        st = _stat(parent, option, missing="cannot be created")
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise SegstudyError(f"{label}: cannot be created: {parent} is {_kind(st.st_mode)}, not a folder")
        return parent
    return Path("/")


def _probe_writable(folder: Path, *, label: str, what: str) -> None:
    try:
        handle, name = tempfile.mkstemp(prefix=".segstudy-probe-", dir=folder)
    except OSError as exc:
        raise SegstudyError(f"{label}: {what} ({exc.strerror or type(exc).__name__})") from None
    os.close(handle)
    os.unlink(name)


__all__ = ["as_given", "input_file", "input_folder", "not_a_uri", "output_file", "output_folder", "uri_scheme"]
