"""What a tracking (or backend-store) URI names: its kind, the database driver it needs, whether
that database answers, and how to print it without its secrets.

A database URI is checked here before MLflow opens it: MLflow retries a database it cannot reach
for about 100 s (ten tries, doubling sleeps) before it gives up, and reports a missing driver as
a traceback. Both become one line in seconds.

A SQLite URI naming a file that exists is checked to be an MLflow store before MLflow opens it:
MLflow would write its tables into another program's database (or fail on a file that is no
database at all, after leaving a lock beside it). The check reads the file only, through SQLite's
read-only, immutable mode, so the file is left byte for byte as it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from study.errors import SegstudyError, first_line
from study.redact import mask_text, mask_uri

# What MLflow 3 tracks to: these schemes, and databases, whose scheme may name a driver (`postgresql+psycopg2`).
_PLAIN = {"sqlite", "http", "https"}
_DATABASES = {"postgresql", "mysql"}
# pip requirement of a driver module, where it is not the module's own name.
_PIP = {"psycopg": "'psycopg[binary]' (segstudy's `postgres` extra)", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}
CONNECT_TIMEOUT_S = 10


def dialect_of(uri: str) -> str:
    """The scheme without its driver part (`postgresql` for `postgresql+psycopg://`); '' for a path."""
    return urlsplit(uri).scheme.split("+")[0] if "://" in uri else ""


def is_accepted(uri: str) -> bool:
    """True for a URI of a kind MLflow tracks to: SQLite, an http(s) server, PostgreSQL or MySQL."""
    return (urlsplit(uri).scheme in _PLAIN and "://" in uri) or is_database(uri)


def is_database(uri: str) -> bool:
    """True for a database server URI (PostgreSQL, MySQL): one MLflow opens through a driver."""
    return dialect_of(uri) in _DATABASES


def require_driver(uri: str, *, what: str = "tracking URI") -> None:
    """Refuse a database URI whose driver is not installed, naming what to install.

    The driver is the one SQLAlchemy picks for the URI, asked, not assumed: a bare `postgresql://`
    means psycopg 3 from SQLAlchemy 2.1 on and psycopg2 before it.
    """
    if not is_database(uri):
        return
    from sqlalchemy.engine import make_url  # MLflow's own dependency; only database URIs need it
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(uri).get_dialect()
    except (ArgumentError, NoSuchModuleError):
        raise SegstudyError(
            f"{what} '{mask_uri(uri)}': unknown database driver '{urlsplit(uri).scheme}'; "
            "accepted are postgresql://, postgresql+psycopg://, postgresql+psycopg2://, mysql://, mysql+pymysql://"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = exc.name or dialect.driver
        raise SegstudyError(f"{what} '{mask_uri(uri)}' needs the {module} module: pip install {_PIP.get(module, module)}") from None


def check_database(uri: str, *, what: str = "tracking URI") -> None:
    """One connection to a database URI within `CONNECT_TIMEOUT_S`; other URIs are left alone.

    Raises:
        SegstudyError: the driver is missing, or the database refuses or does not answer (wrong
            host or port, server down, unknown database, authentication failed).
    """
    if not is_database(uri):
        return
    require_driver(uri, what=what)
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    # connect_timeout: a libpq (psycopg 2 and 3) and MySQL client option alike.
    engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - any failure here means "MLflow cannot open it either"
        text = first_line(getattr(exc, "orig", None) or exc, limit=10_000)
        raise SegstudyError(f"{what} '{mask_uri(uri)}' is not reachable: {mask_text(text, uri)[:200]}") from None
    finally:
        engine.dispose()


SQLITE_HEADER = b"SQLite format 3\x00"
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})  # every MLflow store has these


def check_sqlite_store(path: Path, *, uri: str, what: str = "tracking URI") -> None:
    """Refuse an existing file at a SQLite URI's path that is not an MLflow store; a path with
    nothing there yet is left for the caller (a new store, or "no store" for a reading command).

    Raises:
        SegstudyError: naming the URI and what the file is: a folder or special file, empty, not
            an SQLite database, or an SQLite database without MLflow's tables.
    """
    label = f"{what} '{uri}'"
    if not path.exists():
        return
    if not path.is_file():
        raise SegstudyError(f"{label}: {path} is not a file; name an MLflow store or a new path")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise SegstudyError(f"{label}: {path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not head:
        raise SegstudyError(f"{label}: {path} is an empty file, not an MLflow store; remove it or name a new path")
    if head != SQLITE_HEADER:
        raise SegstudyError(f"{label}: {path} is not an SQLite database, so not an MLflow store; name an MLflow store "
                            "or a new path")
    tables = _sqlite_tables(path)
    if tables is None:
        raise SegstudyError(f"{label}: {path} is a damaged SQLite database; restore it or name a new path")
    missing = MLFLOW_TABLES - tables
    if missing:
        raise SegstudyError(
            f"{label}: {path} is an SQLite database without MLflow's tables ({', '.join(sorted(missing))}), another "
            "program's; it is left as it is: name an MLflow store or a new path"
        )


def _sqlite_tables(path: Path) -> set[str] | None:
    """The table names of an SQLite file, read without writing anything (not even a lock or a
    journal: `immutable=1`); None when SQLite cannot read it."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return None
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return None
    finally:
        conn.close()


__all__ = ["check_database", "check_sqlite_store", "dialect_of", "is_accepted", "is_database", "require_driver"]
