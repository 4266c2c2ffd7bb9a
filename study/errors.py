"""User-facing errors.

Every mistake a user can make (a bad spec, a missing file, a resource the cluster lacks) is raised
as :class:`SegstudyError` before any compute starts. The CLI prints its one-line message and exits
with code 2; library callers can catch it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from urllib.parse import urlsplit

# Where a tracking server's credentials belong instead of the URI (which is printed, logged, and
# stored in the spec copy and study.json).
CREDENTIALS_ENV = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"


class SegstudyError(Exception):
    """A problem with the user's input, reported as one line naming what is wrong."""

    exit_code = 2


def first_line(exc: BaseException, *, limit: int = 200, empty: str | None = None) -> str:
    """The first line of an exception's text, at most `limit` characters; `empty` (default: the
    exception's type name) when it has no text. Tracebacks stay in logs; users get this line."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else (type(exc).__name__ if empty is None else empty)


def unknown_name(kind: str, given: str, available: Iterable[str], *, where: str = "") -> SegstudyError:
    """Build a MONAI-style look-up error: what was given, did-you-mean, what is accepted.

    Example:
        >>> str(unknown_name("architecture", "unte", ["unet", "unetr"], where="smoke.yaml: factors.architecture"))
        "smoke.yaml: factors.architecture: unknown architecture 'unte'; did you mean 'unet'? Accepted: unet, unetr"
    """
    names = sorted(available)
    close = difflib.get_close_matches(str(given), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    prefix = f"{where}: " if where else ""
    return SegstudyError(f"{prefix}unknown {kind} '{given}'{hint} Accepted: {', '.join(names)}")


def embeds_credentials(uri: str) -> bool:
    """True when a tracking URI carries a secret: a password, or a user name on http(s) (MLflow
    would send it). The spec check and the tracking writer both ask this one question.

    Example:
        >>> embeds_credentials("http://bob@mlflow:5000"), embeds_credentials("sqlite:////tmp/mlflow.db")
        (True, False)
    """
    parts = urlsplit(uri)
    return bool(parts.password or (parts.scheme in {"http", "https"} and parts.username))
