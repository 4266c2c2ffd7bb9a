"""The local working copy of a study folder that lives in a bucket (`--storage s3://...`).

A driver writes its study's own files (the manifest, the outbox, `confirm_scores.jsonl`, the
log, the summary and report) where libraries expect files: in a local copy of the folder. The
bucket stays the truth: every state write is pushed (`push`) before the call that made it
returns, so whatever the driver relies on next is in the bucket, and a driver on another machine
that takes the study over pulls (`pull`) exactly that. What the copy holds of the bucket is the
study's own state, the top-level files and `outbox/`; Tune's experiment folders (trial results
and checkpoints, written to the bucket by Ray itself), `summary/` and `report/` stay there.

The copy lives in the user's cache (`$XDG_CACHE_HOME/segstudy/studies/BUCKET/PREFIX/NAME`, by
default under ~/.cache), so two studies never share one and a second look at a study on the same
machine reuses it; it is replaced by the bucket's state whenever a driver takes the study over.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from study.storage import BucketPath
from study.storage.bucket_folder import BucketFolder

STATE_FOLDERS = ("outbox",)  # besides the top-level files


def working_copy(remote: BucketPath) -> Path:
    """Where this machine keeps its copy of the study folder `remote`."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "segstudy" / "studies" / remote.bucket / remote.key


def pull(remote: BucketPath, local: Path) -> None:
    """Make `local` hold the study state the bucket holds: its top-level files and state folders,
    and nothing else of them (a file the bucket no longer has is removed here too)."""
    folder = BucketFolder(remote)
    there = folder.entries()
    local.mkdir(parents=True, exist_ok=True)
    for name, kind in there.items():
        if kind == "file" or name in STATE_FOLDERS:
            folder.download(name, local / name)
    for path in local.iterdir():
        if path.name not in there and (path.is_file() or path.name in STATE_FOLDERS):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def push(remote: BucketPath, local: Path, paths: Iterable[str | Path]) -> None:
    """Copy each of `paths` (inside `local`, or relative to it) to the bucket, in order; one that
    no longer exists locally is deleted there."""
    folder = BucketFolder(remote)
    for path in paths:
        rel = Path(path).relative_to(local) if Path(path).is_absolute() else Path(path)
        folder.upload(local / rel, rel.as_posix())


def names(remote: BucketPath) -> set[str]:
    """What is directly in the bucket folder `remote` (files and folders)."""
    return set(BucketFolder(remote).entries())


def manifests(root: BucketPath, manifest: str) -> dict[BucketPath, dict[str, Any] | None]:
    """Each study folder directly under `root` with its manifest (None: unreadable)."""
    folder = BucketFolder(root)
    out: dict[BucketPath, dict[str, Any] | None] = {}
    for name, kind in folder.entries().items():
        if kind != "folder":
            continue
        raw = folder.read_bytes(f"{name}/{manifest}")
        if raw is None:
            continue
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        out[root.child(name)] = data if isinstance(data, dict) else None
    return out


__all__ = ["STATE_FOLDERS", "manifests", "names", "pull", "push", "working_copy"]
