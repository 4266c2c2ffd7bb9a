"""A new SQLite tracking store, copied from one MLflow migrated once per MLflow version.

MLflow makes a SQLite store by running every schema migration since its first release: 0.7-1.4 s
on a quiet 2-core machine (3.7-4.7 s while it is busy), paid by every study, `make demo` and test
that starts a fresh store. The
result is the same file each time, so the first one is kept as a template (in the user's cache
folder, one per MLflow version) and later stores are copies of it, which MLflow opens as current
(its `alembic_version` is the head) in well under a second. The one thing of the template that
depends on where it was made, the Default experiment's artifact location (`./mlruns/0` of the
working folder), is set as MLflow would have set it.

Nothing here is required: when the cache folder cannot be written, MLflow makes the store itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/segstudy` (default `~/.cache/segstudy`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "segstudy"


def template_path() -> Path:
    import mlflow

    return cache_dir() / f"mlflow-{mlflow.__version__}-sqlite.db"


def default_experiment_location(artifact_root: str | None) -> str:
    """The artifact location MLflow gives the Default experiment (id 0) of a new store."""
    from mlflow.utils.uri import append_to_uri_path

    return append_to_uri_path(artifact_root or os.path.abspath("mlruns"), "0")


def _make_template(target: Path) -> None:
    """MLflow's own migration of an empty store, written to `target` atomically."""
    from mlflow.tracking import MlflowClient

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        db = Path(tmp) / "template.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments(max_results=1)
        os.replace(db, target)  # another process making it at once just replaces an identical file


def seed_sqlite_store(db: Path, *, artifact_root: str | None = None) -> bool:
    """Make the store `db` (which must not exist yet) as a copy of the template; False if not done.

    `artifact_root` is the default artifact root of whoever would have made the store: None for a
    client (MLflow's `./mlruns` of the working folder), `mlflow-artifacts:/` for a server that
    serves artifacts. The caller holds the store's lock (`store_lock`) or is the only one to open
    `db` (a server about to start), so no other process makes it meanwhile.
    """
    if db.exists():
        return False
    template = template_path()
    if not template.is_file():
        try:
            _make_template(template)
        except Exception:  # noqa: BLE001 - any failure (a read-only cache, a full disk): MLflow makes the store
            return False
    partial = db.with_name(f".{db.name}.{os.getpid()}.seeding")
    try:
        shutil.copyfile(template, partial)
        with contextlib.closing(sqlite3.connect(partial)) as conn, conn:
            # What MLflow writes for the Default experiment of a store made in this folder.
            now = int(time.time() * 1000)
            updated = conn.execute(
                "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                "WHERE experiment_id = 0",
                (default_experiment_location(artifact_root), now, now),
            ).rowcount
            if updated != 1 or not conn.execute("SELECT version_num FROM alembic_version").fetchone():
                raise sqlite3.DatabaseError("not a migrated MLflow store")
        os.replace(partial, db)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        if isinstance(exc, sqlite3.DatabaseError):  # a damaged template: made again next time
            with contextlib.suppress(OSError):
                template.unlink()
        return False  # MLflow makes the store itself
    return True
