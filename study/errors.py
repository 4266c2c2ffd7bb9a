"""User-facing errors.

Every mistake a user can make (a bad spec, a missing file, a resource the cluster lacks) is raised
as :class:`SegstudyError` before any compute starts. The CLI prints its one-line message and exits
with code 2; library callers can catch it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from study.redact import embeds_credentials, mask_text

# Where a tracking server's credentials belong instead of the URI (which is printed, logged, and
# stored in the spec copy and study.json).
CREDENTIALS_ENV = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"


class SegstudyError(Exception):
    """A problem with the user's input, reported as one line naming what is wrong.

    The message is masked (`study.redact.mask_text`) as the error is made: it may quote a URI, or
    a library's error text that does, and every caller shows it.
    """

    exit_code = 2

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(mask_text(str(message)), *args)


def first_line(exc: BaseException, *, limit: int = 200, empty: str | None = None) -> str:
    """The first line of an exception's text, at most `limit` characters; `empty` (default: the
    exception's type name) when it has no text. Tracebacks stay in logs; users get this line.
    Masked before it is cut, so a secret at the cut is not left half shown."""
    text = str(exc).strip()
    return mask_text(text.splitlines()[0])[:limit] if text else (type(exc).__name__ if empty is None else empty)


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


__all__ = ["CREDENTIALS_ENV", "SegstudyError", "embeds_credentials", "first_line", "unknown_name"]
