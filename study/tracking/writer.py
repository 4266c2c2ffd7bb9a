"""The one module that writes to MLflow: a parent run per study, a child run per trial.

All writes come from the Tune driver (SQLite wants a single writer) through `MlflowClient`, so no
global "active run" state leaks between studies in one process. Layout and names: docs/ARCHITECTURE.md
3 and `study.metrics_names`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from functools import cached_property
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from study import library_versions
from study import metrics_names as M
from study.process_state import artifacts_through_server, fail_fast_http
from study.errors import CREDENTIALS_ENV, SegstudyError, embeds_credentials, first_line
from study.paths import output_file
from study.redact import mask_text, mask_uri
from study.tracking.outbox import OFFLINE_PREFIX, Op, Outbox, Saved, is_unavailable, map_ids
from study.tracking.sqlite_seed import seed_sqlite_store
from study.tracking.stores import check_database, check_sqlite_store, is_accepted, require_driver

log = logging.getLogger(__name__)

TRACKING_ENV = "MLFLOW_TRACKING_URI"
_PARAM_LIMIT = 6000  # MLflow rejects longer param values


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None, *, cwd: Path | None = None) -> str:
    """`--tracking-uri`, else MLFLOW_TRACKING_URI, else the spec's, else SQLite in the working dir.

    A relative SQLite path is made absolute: Ray job working dirs are unpacked copies, and a
    relative store would land inside one and vanish with it.
    """
    uri = cli_uri or os.environ.get(TRACKING_ENV) or spec_uri
    base = (cwd or Path.cwd()).resolve()
    if not uri:
        return f"sqlite:///{base / 'mlflow.db'}"
    check_no_credentials(uri)
    if not is_accepted(uri):
        raise SegstudyError(
            f"tracking URI '{mask_uri(uri)}': accepted are sqlite:///PATH, postgresql://..., mysql://..., http(s)://HOST:PORT"
        )
    require_driver(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(base / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock beside a SQLite store (`<db>.lock`) for the body; nothing for servers."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        handle = open(db.with_name(db.name + ".lock"), "a")  # noqa: SIM115 - closed below
    except OSError:  # a read-only folder: nobody can create a schema there, so there is nothing to guard
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks until the other process has created the schema
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def reading_client(uri: str) -> MlflowClient:
    """A client for commands that only read a study (analyze, status, report, predict).

    Raises:
        SegstudyError: no store at a SQLite path (MLflow would silently create an empty one), or a
            store that cannot be reached, in seconds rather than after MLflow's retries.
    """
    check_no_credentials(uri)
    path = _sqlite_path(uri)
    if path is not None:
        if not path.exists():
            raise SegstudyError(f"tracking URI '{mask_uri(uri)}': no MLflow store at {path}; run `segstudy run SPEC` first")
        check_sqlite_store(path, uri=mask_uri(uri))  # an MLflow store, checked without writing a byte
    if uri.startswith(("http://", "https://")):
        fail_fast_http()
        artifacts_through_server()
    check_database(uri)  # in seconds, not after MLflow's retries
    # No store lock: the store exists with its schema, so opening it creates nothing (and a reading
    # command writes nothing, not even the lock file beside it).
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    check_reachable(client, uri)
    return client


def check_reachable(client: MlflowClient, uri: str) -> None:
    """One cheap request; any failure becomes a one-line error naming the (masked) URI."""
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot track or read"
        first = mask_text(first_line(exc, limit=10_000), uri)[:200]  # the URI's own secrets, wherever they appear
        raise SegstudyError(f"tracking URI '{mask_uri(uri)}' is not reachable: {first}") from None


def _artifact_root(uri: str) -> str | None:
    db = _sqlite_path(uri)
    return None if db is None else (db.parent / "mlartifacts").as_uri()


class StudyTracker:
    """Creates and fills the MLflow runs of one study.

    Every write goes through `_do`, so with an outbox attached (`use_outbox`) a write that cannot
    reach the server is kept on disk and delivered later instead of failing the study.
    """

    def __init__(
        self, tracking_uri: str, experiment: str, *, flush_interval_s: float = 5.0, retry_interval_s: float = 5.0
    ) -> None:
        check_no_credentials(tracking_uri)
        if tracking_uri.startswith(("http://", "https://")):
            fail_fast_http()  # a stalled Tune driver helps nobody: the outbox is our retry
            artifacts_through_server()
        check_database(tracking_uri)  # MlflowClient opens a database at once, retrying for ~100 s
        self.uri = tracking_uri
        self.experiment = experiment
        self.study_run_id: str | None = None
        self._experiment_id: str | None = None
        # Per-epoch metrics are buffered and written every few seconds: one store write per
        # epoch per trial costs the driver enough CPU to slow trials on a small machine.
        self.flush_interval_s = flush_interval_s
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()
        self.outbox: Outbox | None = None
        self.retry_interval_s = retry_interval_s
        self._last_retry = 0.0

    @property
    def local_store(self) -> Path | None:
        """The file of a SQLite store (its artifacts lie beside it); None for a server or database."""
        return _sqlite_path(self.uri)

    def use_outbox(self, directory: Path, *, saved: Saved | None = None) -> None:
        """Keep writes the server cannot take in `directory` (see `study.tracking.outbox`);
        `saved` is told each path the outbox wrote or removed (a study folder in a bucket)."""
        self.outbox = Outbox(directory, saved=saved)

    @cached_property
    def client(self) -> MlflowClient:
        """Made at first use, not with the tracker: for a SQLite store that does not exist yet,
        making it creates the store (its schema, under the file lock of `store_lock`, so two
        studies started at once do not both migrate it), and a study refused by a check after the
        tracker was made must leave no store behind."""
        with store_lock(self.uri):
            db = _sqlite_path(self.uri)
            if db is not None:
                seed_sqlite_store(db)  # a copy of a migrated store: seconds faster than MLflow's migrations
            return MlflowClient(tracking_uri=self.uri)

    def check_reachable(self) -> None:
        """Fail fast, before any trial, when the store cannot be opened or the server is down.

        A SQLite store that does not exist yet is not created here: its path is checked (a file
        that can be made in a writable folder) and the first write creates it.
        """
        db = _sqlite_path(self.uri)
        if db is not None:
            output_file(db, option="tracking URI", what="SQLite store")
            if not db.exists():
                return
            check_sqlite_store(db, uri=mask_uri(self.uri))  # never MLflow's tables written into another program's file
        check_reachable(self.client, self.uri)

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                root = _artifact_root(self.uri)
                location = f"{root}/{self.experiment}" if root else None
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
                except MlflowException as exc:  # another study of this name created it just now
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise exc from None
                    self._experiment_id = found.experiment_id
        return self._experiment_id

    def start_study(
        self, *, params: Mapping[str, Any], tags: Mapping[str, str], spec_file: Path | None, run_name: str | None = None
    ) -> str:
        self.study_run_id = self._create_run(
            run_name or f"{self.experiment}-{time.strftime('%Y%m%d-%H%M%S')}",
            {M.ROLE_TAG: M.ROLE_STUDY, **version_tags(), **tags},
        )
        self._log_params(self.study_run_id, params)
        if spec_file is not None:
            self.log_file(self.study_run_id, spec_file)
        return self.study_run_id

    def start_trial(
        self,
        *,
        cell: str,
        phase: str,
        seed: int,
        factors: list[str],
        params: Mapping[str, Any],
        trial_id: str,
        extra_tags: Mapping[str, str] | None = None,
    ) -> str:
        tags = {
            M.ROLE_TAG: M.ROLE_TRIAL,
            M.CELL_TAG: cell,
            M.PHASE_TAG: phase,
            M.SEED_TAG: str(seed),
            M.FACTORS_TAG: json.dumps(sorted(factors)),
            M.TRIAL_ID_TAG: trial_id,
            **version_tags(),
            **(extra_tags or {}),
        }
        if self.study_run_id:
            tags[M.PARENT_TAG] = self.study_run_id
        run_id = self._create_run(f"{cell}|seed={seed}|{phase}", tags)
        self._log_params(run_id, params)
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int = 0, buffered: bool = False) -> None:
        """Log metrics now, or (buffered) with the next flush, at most `flush_interval_s` later."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if not buffered:
            self._write(run_id, batch)
            return
        self._pending.setdefault(run_id, []).extend(batch)
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self, run_id: str | None = None) -> None:
        """Write buffered metrics (of one run, or all)."""
        for rid in [run_id] if run_id is not None else list(self._pending):
            self._write(rid, self._pending.pop(rid, []))
        if run_id is None:
            self._last_flush = time.monotonic()

    def _write(self, run_id: str, metrics: list[Metric]) -> None:
        for i in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
            chunk = [[m.key, m.value, m.timestamp, m.step] for m in metrics[i : i + 1000]]
            self._do(Op.LOG_BATCH, {"run_id": run_id, "metrics": chunk})

    def log_artifacts(self, run_id: str, paths: Iterable[Path], *, artifact_path: str | None = None) -> None:
        """Attach each file of `paths` to the run, under `artifact_path` (the run's root if None)."""
        for path in paths:
            self.log_file(run_id, path, artifact_path=artifact_path)

    def log_file(self, run_id: str, path: Path, *, artifact_path: str | None = None) -> None:
        args: dict[str, Any] = {"run_id": run_id, "path": str(path)}
        if artifact_path:
            args["artifact_path"] = artifact_path
        self._do(Op.LOG_ARTIFACT, args)

    def log_tree(self, run_id: str, directory: Path, *, artifact_path: str) -> None:
        """Every file under `directory`, at the same relative place under `artifact_path`."""
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            parent = path.relative_to(directory).parent.as_posix()
            self.log_file(run_id, path, artifact_path=artifact_path if parent == "." else f"{artifact_path}/{parent}")

    def register_model(self, run_id: str, *, name: str, artifact_path: str, tags: Mapping[str, str]) -> None:
        """A new version of registered model `name` pointing at the run's logged model."""
        self._do(
            Op.REGISTER_MODEL,
            {"run_id": run_id, "name": name, "artifact_path": artifact_path, "tags": {k: str(v) for k, v in tags.items()}},
        )

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._do(Op.LOG_BATCH, {"run_id": run_id, "tags": _masked_tags(tags)})

    def finish(self, run_id: str, *, failed_reason: str | None = None, status: str | None = None) -> None:
        self.flush(run_id)
        if failed_reason is not None:
            self.set_tags(run_id, {M.ERROR_TAG: failed_reason[:5000]})
        final = status or ("FAILED" if failed_reason is not None else "FINISHED")
        self._do(Op.SET_TERMINATED, {"run_id": run_id, "status": final})

    def reopen(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed study's run)."""
        self._do(Op.SET_STATUS, {"run_id": run_id, "status": "RUNNING"})

    def search_runs(self, filter_string: str, *, max_results: int | None = None) -> list[Run]:
        """Active runs of the study's experiment that match `filter_string`: every page, or the
        first `max_results`. A read, here so callers need no client of their own."""
        runs: list[Run] = []
        token = None
        while max_results is None or len(runs) < max_results:
            page = self.client.search_runs(
                [self.experiment_id()],
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000 if max_results is None else min(1000, max_results - len(runs)),
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    def delete_run(self, run_id: str) -> None:
        """Delete the run and any registry version made from it (a discarded run serves no model)."""
        self._do(Op.DELETE_MODEL_VERSIONS, {"run_id": run_id})
        self._do(Op.DELETE_RUN, {"run_id": run_id})

    def deliver(self, *, force: bool = True) -> int:
        """Send what the outbox holds; returns how many writes are still waiting."""
        if self.outbox is None:
            return 0
        if not force and time.monotonic() - self._last_retry < self.retry_interval_s:
            return len(self.outbox)
        self._last_retry = time.monotonic()
        if len(self.outbox):
            sent = self.outbox.deliver(self._apply)
            if sent:
                log.warning("tracking: delivered %d kept write(s) to %s", sent, mask_uri(self.uri))
        return len(self.outbox)

    def real_id(self, run_id: str) -> str:
        """The MLflow id of a run created while the server was away (identity otherwise)."""
        if self.outbox is None or not run_id.startswith(OFFLINE_PREFIX):
            return run_id
        return self.outbox.ids().get(run_id, run_id)

    def _create_run(self, run_name: str, tags: dict[str, str]) -> str:
        args = {"experiment_id": self.experiment_id(), "run_name": run_name, "tags": _masked_tags(tags)}
        if self.outbox is not None:
            args["offline_id"] = self.outbox.new_offline_id()
        run_id = self._do(Op.CREATE_RUN, args)
        assert run_id is not None
        return run_id

    def _do(self, kind: Op, args: dict[str, Any]) -> str | None:
        """Apply one write, or keep it in the outbox when the server cannot be reached.

        Once something is kept, later writes queue behind it: MLflow must see a run created
        before its metrics, and a run's FINISHED after its last metric.
        """
        if self.outbox is not None:
            if self.deliver(force=False) > 0:
                return self._keep(kind, args)  # stand-in ids are mapped when the outbox delivers it
            # Only now are the ids known: the delivery just made may have created the real run
            # behind a stand-in id this write names (as its target or as the parent tag).
            args = map_ids(args, self.outbox.ids())
        try:
            return self._apply(kind, args)
        except Exception as exc:
            if self.outbox is None or not is_unavailable(exc):
                raise
            log.warning("tracking server %s unreachable; keeping writes in %s", mask_uri(self.uri), self.outbox.directory)
            self._last_retry = time.monotonic()
            return self._keep(kind, args)

    def _keep(self, kind: Op, args: dict[str, Any]) -> str | None:
        assert self.outbox is not None
        self.outbox.append(kind, args)
        return args.get("offline_id") if kind is Op.CREATE_RUN else None

    def _apply(self, kind: Op, args: dict[str, Any]) -> str | None:
        """Send one operation to MLflow; the id of a created run, else None."""
        match kind:
            case Op.CREATE_RUN:
                return self.client.create_run(args["experiment_id"], run_name=args["run_name"], tags=args["tags"]).info.run_id
            case Op.LOG_BATCH:
                self.client.log_batch(
                    args["run_id"],
                    metrics=[Metric(k, v, ts, step) for k, v, ts, step in args.get("metrics", [])],
                    params=[Param(k, v) for k, v in args.get("params", {}).items()],
                    tags=[RunTag(k, v) for k, v in args.get("tags", {}).items()],
                )
            case Op.LOG_ARTIFACT:
                self.client.log_artifact(args["run_id"], args["path"], artifact_path=args.get("artifact_path"))
            case Op.REGISTER_MODEL:
                self._ensure_registered_model(args["name"])
                source = f"runs:/{args['run_id']}/{args['artifact_path']}"
                self.client.create_model_version(args["name"], source=source, run_id=args["run_id"], tags=args["tags"])
            case Op.DELETE_RUN:
                self.client.delete_run(args["run_id"])
            case Op.DELETE_MODEL_VERSIONS:
                for version in self.client.search_model_versions(f"run_id = '{args['run_id']}'"):
                    self.client.delete_model_version(version.name, version.version)
            case Op.SET_TERMINATED:
                self.client.set_terminated(args["run_id"], status=args["status"])
            case Op.SET_STATUS:
                self.client.update_run(args["run_id"], status=args["status"])
            case _:
                raise ValueError(f"unknown tracking operation {kind!r}")
        return None

    def _ensure_registered_model(self, name: str) -> None:
        try:
            self.client.create_registered_model(name, description="segstudy confirmed models of one study cell")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = sorted((k, _param_text(v)) for k, v in params.items())
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._do(Op.LOG_BATCH, {"run_id": run_id, "params": dict(items[i : i + 100])})


def check_no_credentials(uri: str) -> None:
    """Credentials belong in MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN (or PGPASSWORD, ~/.pgpass),
    never in the URI: the URI is printed, logged and stored in study.json."""
    if embeds_credentials(uri):
        raise SegstudyError(
            f"tracking URI '{mask_uri(uri)}' embeds credentials; remove them and set {CREDENTIALS_ENV} in the environment"
        )


def version_tags() -> dict[str, str]:
    """Library versions behind every run, so a result can be reproduced (docs/ARCHITECTURE.md 7)."""
    return {M.VERSIONS_TAG: _VERSIONS}


_VERSIONS = json.dumps(library_versions(), sort_keys=True)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return mask_text(text)[:_PARAM_LIMIT]


# Tags that name a run, a folder or a cell and are searched for by equality: written as they are.
_IDENTITY_TAGS = frozenset({M.PARENT_TAG, M.STUDY_DIR_TAG, M.TRIAL_ID_TAG, M.CELL_TAG})


def _masked_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tag values as text, secrets masked (an error text may quote a URI with its token)."""
    return {k: str(v) if k in _IDENTITY_TAGS else mask_text(str(v)) for k, v in tags.items()}


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, None for other stores."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


__all__ = [
    "StudyTracker", "check_no_credentials", "fail_fast_http", "reading_client", "resolve_tracking_uri", "version_tags",
]
