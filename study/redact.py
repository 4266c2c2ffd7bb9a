"""Mask secrets in every address segstudy shows: user info and credential-like query parameters;
and escape the control characters of every text it prints.

Tracking URIs, backend stores, artifact roots and Ray addresses are printed, logged, tagged on
MLflow runs and quoted in errors (ours, and MLflow's, SQLAlchemy's and requests' that we re-raise
as one line). Everything that leaves segstudy as text passes `mask_text` (`SegstudyError`, the
CLI's output, the study log, MLflow tags and params); a single address passes `mask_uri`.

Names and texts from a store, a spec or a file (an experiment or cell name on a shared MLflow
server, an error a trial wrote) may hold terminal escape codes: printed raw, they would set the
window title, clear the screen or recolour the terminal of whoever reads them. Everything printed
to a terminal passes `printable`, which masks and escapes them.

Stdlib only, rank 0 (docs/ARCHITECTURE.md 2): every layer may use it.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"

# A query parameter whose (lower-cased, '-' as '_') name contains one of these, or is one of
# _EXACT, carries a secret: token, access_token, X-Amz-Signature, X-Amz-Credential, api_key,
# client_secret, password, sessionid, Authorization, Azure SAS `sig`, ...
_PARTS = ("token", "passw", "pwd", "secret", "signature", "credential", "key", "auth", "sessionid", "session_id", "cookie")
_EXACT = frozenset({"sig", "pass", "pw", "jwt", "sas"})
_MIN_LITERAL = 3  # a known secret shorter than this is masked by pattern only (replacing "a" everywhere garbles text)

# scheme://USERINFO@ (userinfo up to the authority's last '@', so a password holding '@' is covered)
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s'\"<>]*@")
# name=value after a delimiter (?, &, ;, #, start, space, quote or bracket): query strings, and
# libpq-style "host=db password=x" text. The value runs to the next delimiter.
_PARAM = re.compile(r"(^|[?&;#\s,(\[{'\"])([A-Za-z0-9_.%\-]+)=([^&;#\s'\"<>)\]}]*)")
# An HTTP Authorization value (a token of 16+ characters, so English prose is left alone).
_BEARER = re.compile(r"\b((?i:bearer)|Basic)\s+[A-Za-z0-9._~+/\-]{16,}=*")


def is_credential_name(name: str) -> bool:
    """True for a parameter name that carries a secret (case-insensitive, URL-decoded).

    Example:
        >>> is_credential_name("X-Amz-Signature"), is_credential_name("max_results")
        (True, False)
    """
    norm = unquote(name).strip().lower().replace("-", "_")
    return norm in _EXACT or any(part in norm for part in _PARTS)


def _mask_param(match: re.Match[str]) -> str:
    lead, name, value = match.groups()
    return f"{lead}{name}={MASK}" if value and is_credential_name(name) else match.group(0)


def mask_uri(uri: str) -> str:
    """`uri` with its user info and the values of credential-like parameters replaced by ***.

    Everything else (scheme, host, port, path, other parameters) stays, so the address still says
    where it points.

    Example:
        >>> mask_uri("http://bob:pw@mlflow:5000/?token=abc&x=1")
        'http://***@mlflow:5000/?token=***&x=1'
    """
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", str(uri))
    return _PARAM.sub(_mask_param, text)


def uri_secrets(uri: str) -> list[str]:
    """The literal secrets of `uri` (password, credential parameter values, raw and decoded), for
    finding them in text where they appear without their URI (e.g. a URL path in an error)."""
    try:
        parts = urlsplit(str(uri))
        password = parts.password
    except ValueError:  # an unparsable authority (e.g. a bad IPv6 literal): patterns only
        return []
    found = [password, unquote(password)] if password else []
    for section in (parts.query, parts.fragment):
        for raw in re.split(r"[&;]", section):
            name, sep, value = raw.partition("=")
            if sep and value and is_credential_name(name):
                found += [value, unquote(value), *(v for _, v in parse_qsl(raw))]
    return sorted({s for s in found if len(s) >= _MIN_LITERAL}, key=len, reverse=True)


# Variables whose values are secrets segstudy's processes hold (credentials come from the
# environment, never from a URI or the spec): their values are masked wherever they would show.
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "PGPASSWORD",
                    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def environment_secrets() -> list[str]:
    """The values of `SECRET_VARIABLES` set in this process, longest first."""
    found = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    return sorted((v for v in found if len(v) >= _MIN_LITERAL), key=len, reverse=True)


def mask_text(text: str, *uris: str | None) -> str:
    """`text` with every secret masked: the literal secrets of the given `uris` and of the
    environment (`SECRET_VARIABLES`), then any URI user info, credential-like `name=value` and
    `Bearer ...` it holds.

    Example:
        >>> mask_text("GET /api?token=abc failed for https://u:pw@h", "https://h/?token=abc")
        'GET /api?token=*** failed for https://***@h'
    """
    text = str(text)
    for uri in uris:
        for secret in uri_secrets(uri) if uri else ():
            text = text.replace(secret, MASK)
    for secret in environment_secrets():
        text = text.replace(secret, MASK)
    text = mask_uri(text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)


# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and isolates
# that make text read differently from what it is.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    r"""`text` with each control character (tab and newline aside) written as a visible escape.

    Example:
        >>> escape_controls("exp\x1b]0;pwned\x07 ok")
        'exp\\x1b]0;pwned\\x07 ok'
    """
    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROLS.sub(escape, str(text))


def printable(text: str) -> str:
    """What segstudy prints: `text` with its secrets masked and its control characters escaped."""
    return escape_controls(mask_text(text))


def embeds_credentials(uri: str) -> bool:
    """True when a URI carries a secret: a password, a user name on http(s) (MLflow would send
    it), or a credential-like query or fragment parameter with a value. The spec check, the
    tracking writer and `tracking serve` all ask this one question.

    Example:
        >>> embeds_credentials("http://bob@mlflow:5000"), embeds_credentials("http://h:1/?token=x")
        (True, True)
        >>> embeds_credentials("sqlite:////tmp/mlflow.db"), embeds_credentials("postgresql://bob@db/mlflow")
        (False, False)
    """
    try:
        parts = urlsplit(str(uri))
        userinfo = parts.password or (parts.scheme in {"http", "https"} and parts.username)
    except ValueError:
        return mask_uri(str(uri)) != str(uri)
    return bool(userinfo) or mask_uri(f"?{parts.query}#{parts.fragment}") != f"?{parts.query}#{parts.fragment}"


__all__ = [
    "MASK", "SECRET_VARIABLES", "embeds_credentials", "environment_secrets", "escape_controls", "is_credential_name",
    "mask_text", "mask_uri", "printable", "uri_secrets",
]
