"""What a tracking (or backend-store) URI names: its kind, the database driver it needs, whether
that database answers, and how to print it without its secrets.

A database URI is checked here before MLflow opens it: MLflow retries a database it cannot reach
for about 100 s (ten tries, doubling sleeps) before it gives up, and reports a missing driver as
a traceback. Both become one line in seconds.
"""

from __future__ import annotations

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


__all__ = ["check_database", "dialect_of", "is_accepted", "is_database", "require_driver"]
