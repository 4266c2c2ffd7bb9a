"""A study folder in a bucket (`--storage s3://BUCKET/PREFIX`), for a cluster without a shared disk.

`BucketStudyDir` is a `StudyDir` whose folder is a local working copy (`bucket_copy`) of
`s3://BUCKET/PREFIX/<name>-<time>`: each state write is pushed to the bucket before the driver
goes on (`save`), Tune writes trial results and checkpoints to the bucket itself
(`tune_storage`), and what cannot live in a bucket lives in the state database
(`study.storage.state_db`): the per-cell Optuna studies (`optuna_storage`) and the driver lock
(`driving`, a PostgreSQL advisory lock that ends with its driver's session, as a file lock ends
with its process). A driver that takes a study over, on any machine, pulls its state from the
bucket once it holds the lock.

`study_root`, `create_study` and `find_study` open a study wherever it lives, a local folder or a
bucket: what the run, resume, sync and replicate commands call.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.errors import SegstudyError
from study.paths import output_folder
from study.redact import mask_uri
from study.run.record import bucket_copy
from study.run.record.study_dir import MANIFEST, SPEC_COPY, StudyDir, file_sha256
from study.storage import BucketPath, Root, is_remote, place, storage_root
from study.storage import db_lock
from study.storage.bucket_folder import BucketFolder
from study.storage.s3 import check_bucket, filesystem
from study.storage.state_db import check_shared_tracking, checked_state_db, optuna_url, state_db_url


@dataclass(frozen=True)
class BucketStudyDir(StudyDir):
    """A study folder in a bucket: `path` is its local working copy, `remote` the folder in the
    bucket, `state_db` the PostgreSQL database of its tuning state and driver lock."""

    remote: BucketPath
    state_db: str | None  # None: opened to read or add files only (`find_study(state=False)`), never driven

    @property
    def location(self) -> str:
        return self.remote.uri

    @property
    def parent(self) -> BucketPath:  # type: ignore[override]
        return self.remote.parent

    def save(self, *paths: str | Path) -> None:
        bucket_copy.push(self.remote, self.path, paths)

    def has(self, name: str) -> bool:
        return name in bucket_copy.names(self.remote)

    def tune_storage(self) -> tuple[str, Any]:
        return self.remote.fs_path, filesystem()

    def optuna_storage(self, name: str) -> tuple[str, str]:
        """The state database; each cell's study named after this folder's URI, so the studies of
        every study folder in one database stay apart."""
        return optuna_url(self._state_db()), self.remote.uri

    def _state_db(self) -> str:
        if self.state_db is None:
            raise SegstudyError(f"{self.location}: opened without its state database; give --state-db")
        return self.state_db

    def _check_tuning_state(self) -> None:
        manifest = self.manifest
        if self.state_db is None or not manifest.get("tune_started") or "chosen" in manifest:
            return
        import optuna

        url, prefix = self.optuna_storage(manifest["name"])
        if not any(n.startswith(f"{prefix}/") for n in optuna.get_all_study_names(storage=url)):
            raise SegstudyError(
                f"{self.location}: the tune phase had started, but the state database {mask_uri(self.state_db)} holds "
                "no tuning state of this study; without it the tune trials would run again. Give the --state-db it "
                "ran with, or start the study anew with segstudy run"
            )

    @contextlib.contextmanager
    def driving(self, what: str = "driver") -> Iterator[None]:
        """Hold the study's lock in the state database while the body runs (refused if a live
        driver holds it), with the working copy pulled from the bucket once it is held."""
        with db_lock.hold(self._state_db(), self.remote.uri, what=what):
            bucket_copy.pull(self.remote, self.path)
            yield

    def driver(self) -> str | None:
        """'pid P on HOST since T (run)' of the live driver of this study, or None."""
        return None if self.state_db is None else db_lock.holder(self.state_db, self.remote.uri)


def study_root(
    storage: str | Path | None, *, state_db: str | None = None, tracking_uri: str | None = None, writing: bool = True
) -> tuple[Root, str | None]:
    """Where study folders are (`--storage`, default ./ray_results) and, for a bucket, the state
    database, checked before anything starts: a local folder that can be written, or a bucket
    that exists and can be listed (and written), a state database that answers, and a tracking
    store every machine reaches (an MLflow server or database, not a SQLite file on this one).

    Raises:
        SegstudyError: one line naming the option and what is wrong.
    """
    root = storage_root(storage)
    if isinstance(root, Path):
        return (output_folder(root, option="--storage").resolve() if writing else _resolved(root)), None
    url = checked_state_db(state_db_url(state_db), storage=root.uri)
    if tracking_uri is not None:
        check_shared_tracking(root.uri, tracking_uri)
    check_bucket(root, write=writing)  # last: its write probe leaves the prefix's folder marker behind
    return root, url


def create_study(root: Root, *, name: str, spec_file: Path, tracking_uri: str, state_db: str | None = None) -> StudyDir:
    """A new study folder `<name>-<time>` under `root`: local, or in a bucket (its name picked and
    its manifest written while the root's lock is held, so two drivers never take one name)."""
    if isinstance(root, Path):
        return StudyDir.create(root, name=name, spec_file=spec_file, tracking_uri=tracking_uri)
    assert state_db is not None, "a study in a bucket needs its state database (study_root)"
    with db_lock.hold(state_db, f"{root.uri}#create", what="create"):
        taken = bucket_copy.names(root)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder, suffix = f"{name}-{stamp}", 1
        while folder in taken:  # two studies started in the same second
            folder, suffix = f"{name}-{stamp}-{suffix}", suffix + 1
        remote = root.child(folder)
        local = bucket_copy.working_copy(remote)
        if local.exists():
            shutil.rmtree(local)
        local.mkdir(parents=True)
        shutil.copyfile(spec_file, local / SPEC_COPY)
        study = BucketStudyDir(local, remote, state_db)
        study.save(SPEC_COPY)  # the spec before the manifest: a folder without a manifest is no study
        study.update(name=name, tracking_uri=tracking_uri, spec_source=str(Path(spec_file).resolve()), created=time.time(),
                     spec_sha256=file_sha256(local / SPEC_COPY), storage=remote.uri, state_db=state_db)
    return study


def find_study(name_or_dir: str | Path, *, storage: str | Path | None = None, state_db: str | None = None,
               writing: bool = True, state: bool = True) -> StudyDir:
    """A study folder given directly (a local folder or `s3://...`), or the newest study called
    NAME under `storage` (a local folder or a bucket prefix). `state=False`: a study in a bucket
    is opened without its state database, to read its files or add some (a report), not to drive it.

    Raises:
        SegstudyError: no such study, a bucket that cannot be used, a state database missing or
            not answering, or a folder that fails `StudyDir.checked`.
    """
    if is_remote(name_or_dir):
        found = place(name_or_dir, option="")
        if not isinstance(found, BucketPath):  # place refuses other schemes; this keeps the type checker sure
            raise SegstudyError(f"{name_or_dir}: not a study folder")
        check_bucket(found, option="", write=writing)
        manifest = _manifest(found)
        if manifest is None:
            raise SegstudyError(f"{found.uri}: not a study folder (no {MANIFEST} there); pass a folder made by segstudy run")
        return _open(found, manifest, state_db, state=state)
    root = storage_root(storage)
    if isinstance(root, Path) or Path(name_or_dir).is_dir():
        return StudyDir.find(name_or_dir, storage=_resolved(root) if isinstance(root, Path) else Path.cwd())
    check_bucket(root, write=writing)
    manifests = bucket_copy.manifests(root, MANIFEST)
    candidates = {d: m for d, m in manifests.items() if m is not None and m.get("name") == str(name_or_dir)}
    if not candidates:
        raise SegstudyError(f"no study named '{name_or_dir}' under {root.uri} (looked for */{MANIFEST}); "
                            "pass the study folder, or the --storage it ran with")
    newest = max(candidates, key=lambda d: (candidates[d].get("created", 0), d.name))
    return _open(newest, candidates[newest], state_db, state=state)


def _resolved(path: Path) -> Path:
    """`path` with its symlinks resolved, or as given where that cannot be done (a symlink loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _manifest(remote: BucketPath) -> dict[str, Any] | None:
    raw = BucketFolder(remote).read_bytes(MANIFEST)
    try:
        data = json.loads(raw) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SegstudyError(f"{remote.uri}/{MANIFEST}: unreadable study manifest") from None
    return data if isinstance(data, dict) else None


def _open(remote: BucketPath, manifest: dict[str, Any], state_db: str | None, *, state: bool) -> BucketStudyDir:
    """The study `remote` with its working copy pulled, checked; its state database is the one
    given, else SEGSTUDY_STATE_DB, else the one it recorded."""
    url = checked_state_db(state_db_url(state_db, recorded=manifest.get("state_db")), storage=remote.uri) if state else None
    local = bucket_copy.working_copy(remote)
    bucket_copy.pull(remote, local)
    return BucketStudyDir(local, remote, url).checked()  # type: ignore[return-value]


__all__ = ["BucketStudyDir", "create_study", "find_study", "study_root"]
