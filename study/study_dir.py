"""The study directory: what a study needs on disk to be continued after its driver dies.

`<storage>/<name>-<time>/` holds a copy of the spec, `study.json` (tracking URI, the MLflow study
run, the chosen hyperparameters once the tune phase is over), the per-cell Optuna storage, Tune's
experiment folders and the tracking outbox. `segstudy resume` and `segstudy sync` find it by path
or by study name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.errors import SegstudyError

MANIFEST = "study.json"
SPEC_COPY = "spec.yaml"


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
        shutil.copyfile(spec_file, path / SPEC_COPY)
        study = cls(path)
        study.update(name=name, tracking_uri=tracking_uri, spec_source=str(Path(spec_file).resolve()), created=time.time())
        return study

    @classmethod
    def find(cls, name_or_dir: str | Path, *, storage: Path) -> StudyDir:
        """A study folder given directly, or the newest study called NAME under `storage`."""
        given = Path(name_or_dir)
        if (given / MANIFEST).is_file():
            return cls(given.resolve())
        if given.is_dir():
            raise SegstudyError(f"{given}: not a study directory (no {MANIFEST}); pass a folder made by segstudy run")
        candidates = [
            p.parent for p in storage.glob(f"*/{MANIFEST}") if _read(p).get("name") == str(name_or_dir)
        ] if storage.is_dir() else []
        if not candidates:
            raise SegstudyError(
                f"no study named '{name_or_dir}' under {storage} (looked for */{MANIFEST}); "
                "pass the study directory or --storage where it ran"
            )
        return cls(max(candidates, key=lambda p: (_read(p / MANIFEST).get("created", 0), p.name)).resolve())

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
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.path / MANIFEST)

    def next_attempt(self, phase: str) -> str:
        """A fresh Tune experiment name for this phase ("confirm", then "confirm-2", ...)."""
        n = 1
        while (self.path / (phase if n == 1 else f"{phase}-{n}")).exists():
            n += 1
        return phase if n == 1 else f"{phase}-{n}"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise SegstudyError(f"{path}: unreadable study manifest ({exc})") from None


__all__ = ["MANIFEST", "StudyDir"]
