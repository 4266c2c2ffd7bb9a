"""The driver lock of a study in a bucket: a PostgreSQL session advisory lock.

A local study folder's lock is an OS file lock (`study.driver_lock`), which the kernel drops when
its driver dies. A bucket has no such thing: a lock object (S3's conditional `If-None-Match`
write) outlives a SIGKILLed driver and would need a lease that a resume waits out. An advisory
lock held by the driver's database session has the file lock's semantics: PostgreSQL releases it
when the session ends, and a killed driver's session ends with its process (the kernel closes the
socket). A driver whose machine vanishes without closing its socket is found by TCP keepalives,
which the session sets short (`KEEPALIVE`), so its lock goes within about a minute.

The lock's key is the study folder's URI, hashed to the 64 bits an advisory lock takes. The holder
is named in the session's `application_name` ('pid P on HOST since T (run)'), so `holder` can say
who drives a study by asking `pg_locks` and `pg_stat_activity`, without taking anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Iterator

from study.errors import SegstudyError, first_line
from study.redact import mask_text, mask_uri

CONNECT_TIMEOUT_S = 10
NAME_LIMIT = 63  # PostgreSQL cuts application_name at NAMEDATALEN - 1 bytes
# Server side: a session whose peer is gone is noticed after idle + interval x count seconds.
KEEPALIVE = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}
_HOLDER = """
SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
"""


def lock_id(key: str) -> int:
    """The signed 64-bit advisory lock key of a study (its folder's URI)."""
    return int.from_bytes(hashlib.sha256(f"segstudy:{key}".encode()).digest()[:8], "big", signed=True)


def _note(what: str) -> str:
    """'pid P on HOST since T (WHAT)', the host cut so the whole fits `NAME_LIMIT`."""
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    rest = f" since {since} ({what})"
    head = f"pid {os.getpid()} on "
    room = max(1, NAME_LIMIT - len(head) - len(rest))
    return f"{head}{socket.gethostname()[:room]}{rest}"


def _connect(url: str, **options: object):  # noqa: ANN202 - psycopg is imported here only
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **options)
    except psycopg.Error as exc:
        text = mask_text(first_line(exc, limit=10_000), url)[:200]
        raise SegstudyError(f"state database '{mask_uri(url)}' is not reachable: {text}") from None


@contextlib.contextmanager
def hold(url: str, key: str, *, what: str = "driver") -> Iterator[None]:
    """Hold the lock of the study `key` while the body runs; refuse if a live session holds it.

    Raises:
        SegstudyError: another live driver holds it (naming it), or the database does not answer.
    """
    conn = _connect(url, application_name=_note(what), keepalives=1, keepalives_idle=30, keepalives_interval=10,
                    keepalives_count=3)
    try:
        for name, value in KEEPALIVE.items():
            conn.execute(f"SET {name} = {int(value)}")
        conn.execute("SET idle_session_timeout = 0")  # a server-wide timeout must not end the lock's session
        ident = lock_id(key)
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (ident,)).fetchone()[0]:
            raise SegstudyError(
                f"{key}: a live driver is running this study ({_holder(conn, ident) or 'another process'}); wait for it "
                "to end or stop it, then run segstudy resume"
            )
        yield
    finally:
        conn.close()  # ending the session releases the lock


def holder(url: str, key: str) -> str | None:
    """'pid P on HOST since T (run)' of the live driver of the study `key`, or None when none holds
    its lock. Takes nothing: reads PostgreSQL's lock table only."""
    conn = _connect(url, application_name="segstudy status")
    try:
        return _holder(conn, lock_id(key))
    finally:
        conn.close()


def _holder(conn, ident: int) -> str | None:  # noqa: ANN001
    high, low = (ident >> 32) & 0xFFFFFFFF, ident & 0xFFFFFFFF
    row = conn.execute(_HOLDER, (high, low)).fetchone()
    return None if row is None else (row[0] or "a live process")


__all__ = ["hold", "holder", "lock_id"]
