"""Tracking writes that could not reach the MLflow server, kept on disk until it is back.

A study on a shared cluster outlives tracking-server restarts. When a write fails because the
server cannot be reached, it goes to `<study dir>/outbox/ops.jsonl` (artifacts copied next to it)
and every later write queues behind it, so the store receives everything in the original order.
`StudyTracker` retries delivery every few seconds, at the end of the study, on `segstudy resume`
and on `segstudy sync`. Runs created while offline get a stand-in id ("offline-...") that is
mapped to the real run id when the creation is delivered; the mapping is kept in `ids.json`.

A study folder in a bucket keeps its outbox in a local working copy: `saved` is told every path
the outbox wrote or removed, before the call returns, so the bucket holds each kept write before
the driver goes on (a resume on another machine delivers it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from sqlalchemy.exc import OperationalError

from study.disk import no_space
from study.errors import first_line

log = logging.getLogger(__name__)

OFFLINE_PREFIX = "offline-"


class Op(StrEnum):
    """The write operations of `StudyTracker`, dispatched in `StudyTracker._apply`.

    The values are the `kind` strings of ops.jsonl: an outbox kept by an older segstudy replays,
    so a value never changes; a new operation is a new member.
    """

    CREATE_RUN = "create_run"
    LOG_BATCH = "log_batch"  # metrics, params and tags
    LOG_ARTIFACT = "log_artifact"
    REGISTER_MODEL = "register_model"
    DELETE_RUN = "delete_run"
    DELETE_MODEL_VERSIONS = "delete_model_versions"
    SET_TERMINATED = "set_terminated"
    SET_STATUS = "set_status"  # e.g. a resumed study run is RUNNING again


Apply = Callable[[Op, dict[str, Any]], str | None]
Saved = Callable[..., None]  # called with the paths an outbox wrote or removed, in order


def is_unavailable(exc: BaseException) -> bool:
    """True when the error means "the store cannot take writes now", not "the request was wrong".

    A server that is down or unreachable, and one that answers 5xx (an MLflow server whose
    database is down answers 503, its model registry 500), reach us as "API request to ...
    failed with exception ...": MLflow's HTTP retry policy gives up on exactly those. A 5xx
    outside that policy comes back as "failed with error code 5xx" (501, not implemented, is a
    bug, not an outage). A database store raises TEMPORARILY_UNAVAILABLE for a database it cannot
    reach, or SQLAlchemy's OperationalError where MLflow opens it (the registry, on first use).
    Anything else (a bad parameter, a missing run) is a bug to raise, not a write to keep; so is a
    full disk (SQLite's "database or disk is full" is an OperationalError too): the outbox lives
    in the study folder, often on that very disk, and the study stops for it (`study.disk`).
    """
    if no_space(exc):
        return False
    if isinstance(exc, ConnectionError | TimeoutError | OperationalError):
        return True
    if isinstance(exc, MlflowException):
        return (
            "failed with exception" in str(exc)
            or _SERVER_ERROR.search(str(exc)) is not None
            or exc.error_code in ("TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED")
        )
    return False


_SERVER_ERROR = re.compile(r"failed with error code 5(?!01)\d\d\b")


class Outbox:
    """An append-only file of pending tracking operations, delivered in order."""

    def __init__(self, directory: Path, *, saved: Saved | None = None) -> None:
        self.directory = directory
        self.ops_file = directory / "ops.jsonl"
        self.ids_file = directory / "ids.json"
        self.saved = saved or (lambda *paths: None)

    def __len__(self) -> int:
        return len(self._ops())

    def new_offline_id(self) -> str:
        return f"{OFFLINE_PREFIX}{uuid.uuid4().hex}"

    def ids(self) -> dict[str, str]:
        """Offline stand-in id -> real run id, for every creation delivered so far."""
        try:
            return json.loads(self.ids_file.read_text())
        except FileNotFoundError:
            return {}

    def append(self, kind: Op, args: dict[str, Any]) -> None:
        """Queue one operation durably (flushed and fsynced: the driver may be killed next)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        written = [self.ops_file]
        if kind is Op.LOG_ARTIFACT:
            keep = self.directory / "files" / uuid.uuid4().hex
            keep.mkdir(parents=True)
            copied = Path(shutil.copy2(args["path"], keep / Path(args["path"]).name))
            # Relative to the outbox: a study folder taken over on another machine (a bucket's
            # working copy) or moved keeps its kept files at another absolute path.
            args = {**args, "path": copied.relative_to(self.directory).as_posix()}
            written.insert(0, keep)
        with self.ops_file.open("a") as f:
            f.write(json.dumps({"kind": kind.value, "args": args}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.saved(*written)

    def deliver(self, apply: Apply) -> int:
        """Send queued operations in order until one fails to reach the server.

        Returns how many were delivered. Connection failures stop delivery and keep the rest;
        other errors propagate (after saving progress) because retrying them cannot help.
        """
        ops = self._ops()
        ids = self.ids()
        done = 0
        removed: list[Path] = []
        try:
            for op in ops:
                kind = Op(op["kind"])
                args = map_ids(op["args"], ids)
                if kind is Op.LOG_ARTIFACT:  # kept relative to the outbox (absolute in older outboxes)
                    args = {**args, "path": str(self.directory / args["path"])}
                result = apply(kind, args)
                if kind is Op.CREATE_RUN and result is not None:
                    ids[args["offline_id"]] = result
                if kind is Op.LOG_ARTIFACT:
                    shutil.rmtree(Path(args["path"]).parent, ignore_errors=True)
                    removed.append(Path(args["path"]).parent)
                done += 1
        except Exception as exc:
            self._save(ops[done:], ids, removed)
            if is_unavailable(exc):
                log.warning("tracking outbox: %d write(s) still waiting (%s)", len(ops) - done, first_line(exc, limit=300))
                return done
            raise
        self._save([], ids, removed)
        return done

    def _ops(self) -> list[dict[str, Any]]:
        try:
            lines = self.ops_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        # A kill in the middle of an append leaves at most one partial last line.
        ops = []
        for line in lines:
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return ops

    def _save(self, ops: list[dict[str, Any]], ids: dict[str, str], removed: Sequence[Path] = ()) -> None:
        """Rewrite what is left, and tell `saved` (with the kept files delivered and removed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.ids_file, json.dumps(ids, indent=1))
        _atomic_write(self.ops_file, "".join(json.dumps(op) + "\n" for op in ops))
        self.saved(self.ids_file, self.ops_file, *removed)


def map_ids(args: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """`args` with every stand-in run id replaced by its real id, where known.

    Run ids appear as the target of an operation and as values of tags (the parent run)."""
    args = dict(args)
    if args.get("run_id") in ids:
        args["run_id"] = ids[args["run_id"]]
    if isinstance(args.get("tags"), dict):
        args["tags"] = {k: ids.get(v, v) for k, v in args["tags"].items()}
    return args


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


__all__ = ["OFFLINE_PREFIX", "Op", "Outbox", "is_unavailable", "map_ids"]
