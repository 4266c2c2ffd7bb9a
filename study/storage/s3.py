"""S3 through pyarrow's filesystem: the one place that builds it, and says what its errors mean.

Ray Tune writes trial results and checkpoints through a pyarrow filesystem (`RunConfig(
storage_filesystem=...)`), and segstudy's own study files go through the same one, so both
agree on the endpoint and credentials. The standard AWS environment decides everything:

- credentials: the AWS SDK's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
  AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws, a web identity or instance role). They are never
  passed to pyarrow explicitly, so the filesystem Ray pickles into its experiment state and
  ships to the workers carries none: each node resolves its own.
- endpoint: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, as boto3 (and so MLflow) reads them;
  pyarrow itself ignores both (apache/arrow#49643), so they are passed as `endpoint_override`.
- region: AWS_REGION, else AWS_DEFAULT_REGION, else pyarrow's own resolution.

segstudy never creates or deletes a bucket (pyarrow's defaults): a missing one is an error.
"""

from __future__ import annotations

import functools
import os
import re
import uuid

from pyarrow import fs as pafs

from study.errors import SegstudyError, first_line
from study.storage.roots import BucketPath

ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
PROBE = ".segstudy-probe-"

# "AWS Error ACCESS_DENIED during HeadBucket operation: ..." in pyarrow's OSError texts.
_AWS_ERROR = re.compile(r"AWS Error (\w+) during (\w+) operation")
_REFUSED = {"ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "EXPIRED_TOKEN",
            "INVALID_CLIENT_TOKEN_ID", "UNRECOGNIZED_CLIENT", "MISSING_AUTHENTICATION_TOKEN", "INVALID_SIGNATURE",
            "REQUEST_TIME_TOO_SKEWED", "UNKNOWN"}  # UNKNOWN: pyarrow's name for a 403 without a body
_UNREACHABLE = {"NETWORK_CONNECTION", "REQUEST_TIMEOUT", "SERVICE_UNAVAILABLE", "SLOW_DOWN", "INTERNAL_FAILURE"}


def _first_set(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def endpoint() -> str | None:
    """The S3 endpoint the environment names (an S3-compatible server), or None for AWS itself."""
    return _first_set(ENDPOINT_VARS)


def where_s3() -> str:
    """'at http://HOST:PORT' for an S3-compatible server, 'on AWS S3' otherwise (for messages)."""
    found = endpoint()
    return f"at {found}" if found else "on AWS S3"


def filesystem() -> pafs.S3FileSystem:
    """The S3 filesystem of this environment (module docstring); one per endpoint and region."""
    return _filesystem(endpoint(), _first_set(REGION_VARS))


@functools.cache
def _filesystem(endpoint_url: str | None, region: str | None) -> pafs.S3FileSystem:
    options: dict[str, str] = {}
    if endpoint_url:
        options["endpoint_override"] = endpoint_url
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


def refusal(exc: OSError, *, where: str) -> SegstudyError:
    """One line for what S3 answered: no bucket, credentials or policy refused, no server, or
    the first line of pyarrow's text (none of them holds a secret: the SDK never echoes one)."""
    found = _AWS_ERROR.search(str(exc))
    code = found.group(1) if found else ""
    if code == "NO_SUCH_BUCKET":
        return SegstudyError(f"{where}: the bucket does not exist {where_s3()}; create it first (segstudy never creates buckets)")
    if code in _REFUSED:
        return SegstudyError(
            f"{where}: access refused {where_s3()} ({code}); check the credentials ({CREDENTIALS}) and the bucket's policy"
        )
    if code in _UNREACHABLE or "curlCode" in str(exc):
        return SegstudyError(f"{where}: no S3 server answered {where_s3()} ({code or 'no connection'}); check AWS_ENDPOINT_URL")
    return SegstudyError(f"{where}: S3 refused the request {where_s3()}: {first_line(exc, limit=300)}")


def require_boto3(where: str) -> None:
    """Refuse, in one line, a bucket MLflow would have to open without boto3 installed."""
    import importlib.util

    if importlib.util.find_spec("boto3") is None:
        raise SegstudyError(f"{where}: MLflow reads and writes a bucket through boto3: pip install 'segstudy[s3]'")


def check_bucket(path: BucketPath, *, option: str = "--storage", write: bool = True) -> None:
    """`path`'s bucket exists, its prefix can be listed and (with `write`) written: a probe
    object is put and deleted at once. Run before anything is started, so a study never gets as
    far as its first trial against a bucket it cannot use.

    Raises:
        SegstudyError: one line naming the option and the URI: the bucket does not exist, access
            is refused (credentials or policy), or no server answers.
    """
    where = f"{option} {path.uri}" if option else path.uri
    s3 = filesystem()
    try:
        if s3.get_file_info(path.bucket).type == pafs.FileType.NotFound:
            raise SegstudyError(f"{where}: the bucket does not exist {where_s3()}; create it first "
                                "(segstudy never creates buckets)")
        s3.get_file_info(pafs.FileSelector(path.fs_path, allow_not_found=True, recursive=False))
        if write:
            probe = path.child(f"{PROBE}{uuid.uuid4().hex}").fs_path
            with s3.open_output_stream(probe) as out:
                out.write(b"")
            s3.delete_file(probe)
    except OSError as exc:
        raise refusal(exc, where=where) from None


__all__ = ["CREDENTIALS", "ENDPOINT_VARS", "check_bucket", "endpoint", "filesystem", "refusal", "require_boto3",
           "where_s3"]
