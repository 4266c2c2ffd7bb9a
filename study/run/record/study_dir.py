"""The study directory: what a study needs on disk to be continued after its driver dies.

`<storage>/<name>-<time>/` holds a copy of the spec, `study.json` (tracking URI, the MLflow study
run, the chosen hyperparameters once the tune phase is over, the SHA-256 of the spec copy), the
per-cell Optuna storage, Tune's experiment folders and the tracking outbox. `segstudy resume` and
`segstudy sync` find it by path or by study name.

A live driver holds `driver.lock` (an OS file lock, so the kernel releases it when the driver dies,
however it dies): a second driver on the same study is refused instead of running every trial
again. Opening a folder checks what it must contain: a manifest with the keys below, a spec copy
whose hash matches the manifest, and, once tuning has started, its Optuna storage.

A study folder in a bucket is a `BucketStudyDir` (`study.run.record.bucket_study`): the same
files in a local working copy, each state write pushed to the bucket (`save`), Tune writing to
the bucket directly (`tune_storage`), the Optuna studies and the driver lock in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study import disk, driver_lock
from study.errors import SegstudyError

MANIFEST = "study.json"
SPEC_COPY = "spec.yaml"
LOCK = driver_lock.LOCK
OPTUNA_DB = "optuna.db"
REQUIRED = ("name", "tracking_uri")  # every manifest segstudy writes has these (and spec_sha256 since 0.2)


@dataclass(frozen=True)
class StudyDir:
    """One study's folder; `manifest` is re-read on every access so a resumed driver sees the
    state its predecessor left."""

    path: Path

    @classmethod
    def create(cls, storage: Path, *, name: str, spec_file: Path, tracking_uri: str) -> StudyDir:
        path = storage / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 1
        while path.exists():  # two studies started in the same second
            path = storage / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
            suffix += 1
        path.mkdir(parents=True)
        try:
            shutil.copyfile(spec_file, path / SPEC_COPY)
            study = cls(path)
            study.update(
                name=name, tracking_uri=tracking_uri, spec_source=str(Path(spec_file).resolve()), created=time.time(),
                spec_sha256=file_sha256(path / SPEC_COPY),
            )
        except OSError:  # a full disk: a folder without its manifest could never be resumed
            shutil.rmtree(path, ignore_errors=True)
            raise
        return study

    @classmethod
    def find(cls, name_or_dir: str | Path, *, storage: Path) -> StudyDir:
        """A study folder given directly, or the newest study called NAME under `storage`."""
        given = Path(name_or_dir)
        if (given / MANIFEST).is_file():
            return cls(given.resolve()).checked()
        if given.is_dir():
            raise SegstudyError(f"{given}: not a study directory (no {MANIFEST}); pass a folder made by segstudy run")
        # Another study's damaged folder must not block this one: unreadable manifests are skipped.
        manifests = {p.parent: _peek(p) for p in storage.glob(f"*/{MANIFEST}")} if storage.is_dir() else {}
        candidates = [d for d, m in manifests.items() if m is not None and m.get("name") == str(name_or_dir)]
        if not candidates:
            raise SegstudyError(
                f"no study named '{name_or_dir}' under {storage} (looked for */{MANIFEST}); "
                "pass the study directory or --storage where it ran"
            )
        newest = max(candidates, key=lambda d: (manifests[d].get("created", 0), d.name))  # type: ignore[union-attr]
        return cls(newest.resolve()).checked()

    def checked(self) -> StudyDir:
        """This folder, after checking it holds what a study needs to continue.

        Raises:
            SegstudyError: a manifest without its keys, a spec copy changed or damaged since the
                study started, or a tune phase whose Optuna storage is gone.
        """
        manifest = self.manifest
        missing = [k for k in REQUIRED if k not in manifest]
        if missing:
            raise SegstudyError(
                f"{self.where(MANIFEST)}: not a complete study manifest (missing {', '.join(missing)}); "
                "this folder cannot be resumed"
            )
        actual = file_sha256(self.spec_file) if self.spec_file.is_file() else "missing"
        if actual != manifest.get("spec_sha256", actual):  # folders made before fingerprints have none
            raise SegstudyError(
                f"{self.where(SPEC_COPY)}: changed or damaged since the study started (SHA-256 {actual[:12]}, "
                f"expected {str(manifest['spec_sha256'])[:12]}); restore it from {manifest.get('spec_source', 'the original')}"
            )
        self._check_tuning_state()
        return self

    def _check_tuning_state(self) -> None:
        """The tune phase's Optuna storage, once tuning started and until its choice is made."""
        manifest = self.manifest
        optuna_db = self.path / OPTUNA_DB
        if optuna_db.is_file() and _head(optuna_db) != b"SQLite format 3\x00":
            raise SegstudyError(f"{optuna_db}: not an SQLite database (damaged); restore it or start the study anew")
        if manifest.get("tune_started") and "chosen" not in manifest and not optuna_db.is_file():
            raise SegstudyError(
                f"{self.path / OPTUNA_DB}: missing, but the tune phase had started; without it the tune trials "
                "would run again. Restore it, or start the study anew with segstudy run"
            )

    @contextlib.contextmanager
    def driving(self, what: str = "driver") -> Iterator[None]:
        """Hold the study's driver lock while the body runs; refuse if a live driver holds it
        (`study.driver_lock`: the kernel drops it when its process ends, so a SIGKILLed driver
        never leaves a stale lock behind and the next `resume` takes over)."""
        with driver_lock.hold(self.path, what=what):
            yield

    def driver(self) -> str | None:
        """'pid P on HOST since T (run)' of the live driver of this study, or None."""
        return driver_lock.holder(self.path)

    def free_bytes(self) -> int:
        """Bytes still free on the disk that holds this folder."""
        return disk.free_bytes(self.path)

    @property
    def location(self) -> str:
        """Where the study is, as a user names it to `segstudy resume`: its folder (or bucket URI)."""
        return str(self.path)

    def where(self, name: str) -> str:
        """A file of the study as the user finds it (for messages): in its folder, or its bucket."""
        return f"{self.location}/{name}"

    @property
    def parent(self) -> Path:
        """Where the study's folder lies (a replicate is made beside it)."""
        return self.path.parent

    def save(self, *paths: str | Path) -> None:
        """Make writes to these files (or folders) of the study durable where the study lives:
        nothing to do for a local folder, pushed to the bucket for one in a bucket."""

    def has(self, name: str) -> bool:
        """Whether the study folder holds `name` (a Tune experiment folder, e.g. "tune-2")."""
        return (self.path / name).exists()

    def tune_storage(self) -> tuple[str, Any]:
        """(storage_path, storage_filesystem) for Tune's `RunConfig`: this folder, Ray's default filesystem."""
        return str(self.path), None

    def optuna_storage(self, name: str) -> tuple[str, str]:
        """(Optuna storage URL, study-name prefix) of the tune phase's per-cell studies: SQLite in
        the folder, each cell's study named after the spec (`name`)."""
        return f"sqlite:///{self.path / OPTUNA_DB}", name

    @property
    def spec_file(self) -> Path:
        return self.path / SPEC_COPY

    @property
    def outbox(self) -> Path:
        return self.path / "outbox"

    @property
    def run_name(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> dict[str, Any]:
        return _read(self.path / MANIFEST)

    def update(self, **values: Any) -> None:
        """Merge values into study.json atomically (a kill mid-write leaves the old file)."""
        data = {**self.manifest, **values}
        tmp = self.path / f".{MANIFEST}.tmp"
        try:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        except OSError:  # a full disk: the old manifest stays whole
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path / MANIFEST)
        self.save(MANIFEST)

    def next_attempt(self, phase: str) -> str:
        """A fresh Tune experiment name for this phase ("confirm", then "confirm-2", ...)."""
        n = 1
        while self.has(phase if n == 1 else f"{phase}-{n}"):
            n += 1
        return phase if n == 1 else f"{phase}-{n}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegstudyError(f"{path}: unreadable study manifest ({exc})") from None
    if not isinstance(data, dict):
        raise SegstudyError(f"{path}: not a study manifest (a JSON object is expected, found {type(data).__name__})")
    return data


def _peek(path: Path) -> dict[str, Any] | None:
    """The manifest at `path`, or None when it cannot be read (for scanning many folders)."""
    try:
        return _read(path)
    except SegstudyError:
        return None


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(16)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex (the spec copy's fingerprint in the manifest)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["MANIFEST", "StudyDir", "file_sha256"]
