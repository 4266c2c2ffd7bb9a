"""The state database of a study in a bucket: a PostgreSQL database every node reaches.

A bucket holds files, not a database: SQLite (the per-cell Optuna studies of a local study folder,
`optuna.db`) cannot live in one, and a bucket has no lock the kernel releases when its holder
dies. A study whose `--storage` is a bucket keeps both in PostgreSQL instead: the Optuna studies
through Optuna's RDB storage, and the driver lock as a session advisory lock
(`study.storage.db_lock`). Use a database of its own on the team's server (the one MLflow uses,
`createdb segstudy_state`), not MLflow's database: Optuna and MLflow both keep an
`alembic_version` table.

The URL is `--state-db`, else SEGSTUDY_STATE_DB, else the one the study recorded when it started.
It never carries a password: the password comes from PGPASSWORD or ~/.pgpass (libpq's own), so
the URL can be written to the study's manifest and Ray's experiment state without a secret.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from study.errors import SegstudyError
from study.redact import embeds_credentials, mask_uri
from study.tracking.stores import check_database, dialect_of

ENV = "SEGSTUDY_STATE_DB"
OPTION = "--state-db"
ACCEPTED = "postgresql://HOST:PORT/DATABASE (user and password from PGUSER, PGPASSWORD or ~/.pgpass)"
_SCHEMES = {"postgresql", "postgresql+psycopg", "postgres"}


def state_db_url(given: str | None, *, recorded: str | None = None) -> str | None:
    """The state database to use: `given` (--state-db), SEGSTUDY_STATE_DB, or `recorded` (the
    study's manifest); None when there is none."""
    return given or os.environ.get(ENV) or recorded or None


def checked_state_db(url: str | None, *, storage: str, reach: bool = True) -> str:
    """`url`, checked as the state database of the study at `storage` (a bucket URI).

    Raises:
        SegstudyError: none given, not PostgreSQL, a password in it, or (with `reach`) the
            database does not answer.
    """
    if not url:
        raise SegstudyError(
            f"--storage {storage}: a study in a bucket keeps its tuning state and driver lock in PostgreSQL; "
            f"give {OPTION} {ACCEPTED} (or set {ENV})"
        )
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme not in _SCHEMES:
        raise SegstudyError(f"{OPTION} '{mask_uri(url)}': not a PostgreSQL URL; accepted: {ACCEPTED}")
    if embeds_credentials(url):
        raise SegstudyError(
            f"{OPTION} '{mask_uri(url)}': carries a password, which would be written to the study's manifest; "
            "give it in PGPASSWORD or ~/.pgpass instead"
        )
    url = libpq_url(url)
    if reach:
        check_database(optuna_url(url), what=OPTION)
    return url


def check_shared_tracking(storage: str, tracking_uri: str) -> None:
    """A study in a bucket is resumed on any machine: its tracking store must be one every machine
    reaches (an MLflow server or a database), not a SQLite file on this one.

    Raises:
        SegstudyError: naming both and what to give instead.
    """
    if dialect_of(tracking_uri) in {"sqlite", "file", ""}:
        raise SegstudyError(
            f"--storage {storage}: a study in a bucket can be resumed on any machine, which needs a tracking store "
            f"every machine reaches, not {mask_uri(tracking_uri)} on this one: an MLflow server (--tracking-uri "
            "http://HOST:PORT, `segstudy tracking serve`) or a database (postgresql://...)"
        )


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg) takes it: `postgresql://...`."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme in _SCHEMES else url


def optuna_url(url: str) -> str:
    """The URL as SQLAlchemy (Optuna's RDB storage) takes it, naming psycopg 3 as the driver."""
    return f"postgresql+psycopg://{libpq_url(url).split('://', 1)[1]}"


__all__ = ["ACCEPTED", "ENV", "OPTION", "check_shared_tracking", "checked_state_db", "libpq_url", "optuna_url",
           "state_db_url"]
