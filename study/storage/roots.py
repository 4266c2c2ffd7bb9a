"""Where study folders live: a local folder, or a prefix in an S3 bucket (`--storage`).

`--storage` (and a study folder given to `resume`, `sync`, `replicate`) is parsed here, once, so a
URI is never taken for a local path: `s3://bucket/prefix` is a `BucketPath`, any other scheme is
refused, and what is left is a local folder. Stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from study.errors import SegstudyError
from study.paths import as_given, uri_scheme

S3 = "s3"
ACCEPTED = "a local folder, or s3://BUCKET/PREFIX (S3, or an S3-compatible server named by AWS_ENDPOINT_URL)"
DEFAULT = "ray_results"
# S3's bucket naming rules: 3-63 characters, lowercase letters, digits, '.' and '-', a letter or digit at each end.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class BucketPath:
    """A folder in an S3 bucket: `bucket` and a `key` prefix without slashes at either end.

    Example:
        >>> BucketPath.parse("s3://team-studies/segstudy/").child("demo-20260101-120000").uri
        's3://team-studies/segstudy/demo-20260101-120000'
    """

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str, *, option: str = "--storage") -> BucketPath:
        """`s3://bucket[/prefix]`, checked: a valid bucket name, no empty, '.' or '..' parts.

        Raises:
            SegstudyError: naming the option, the URI and what is wrong with it.
        """
        text = as_given(uri)
        rest = text.split("://", 1)[1] if "://" in text else ""
        bucket, _, key = rest.partition("/")
        where = f"{option} {text}" if option else text
        if not _BUCKET.match(bucket):
            raise SegstudyError(
                f"{where}: '{bucket}' is not a bucket name (3-63 lowercase letters, digits, '.' and '-'); accepted: {ACCEPTED}"
            )
        key = key.strip("/")
        parts = key.split("/") if key else []
        if any(part in {"", ".", ".."} for part in parts):
            raise SegstudyError(f"{where}: the prefix '{key}' has an empty, '.' or '..' part; give it as a/b/c")
        return cls(bucket, key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    @property
    def fs_path(self) -> str:
        """The path a pyarrow filesystem (and Ray's `storage_path` beside it) takes: no scheme."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1] if self.key else self.bucket

    @property
    def parent(self) -> BucketPath:
        return BucketPath(self.bucket, self.key.rsplit("/", 1)[0] if "/" in self.key else "")

    def child(self, *parts: str) -> BucketPath:
        return BucketPath(self.bucket, "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/")))

    def __str__(self) -> str:
        return self.uri


Root = Path | BucketPath


def is_remote(given: str | Path | None) -> bool:
    """True for a value that names a bucket (`s3://...`)."""
    return given is not None and uri_scheme(given) is not None


def storage_root(given: str | Path | None, *, option: str = "--storage") -> Root:
    """Where study folders are: `given` parsed (default ./ray_results), a local folder made absolute.

    Raises:
        SegstudyError: a URI of a scheme other than s3, or a malformed s3 URI.

    Example:
        >>> storage_root("s3://team-studies/segstudy")
        BucketPath(bucket='team-studies', key='segstudy')
    """
    return place(DEFAULT if given is None or str(given) == "" else given, option=option)


def place(given: str | Path, *, option: str = "--storage") -> Root:
    """A local path (absolute, not resolved: a symlink loop is for the path checks to name) or a
    `BucketPath`: a study folder, or a folder of study folders.

    Raises:
        SegstudyError: a URI of a scheme other than s3, or a malformed s3 URI.
    """
    scheme = uri_scheme(given)
    if scheme == S3:
        return BucketPath.parse(str(given), option=option)
    if scheme is not None:
        where = f"{option} {as_given(given)}" if option else as_given(given)
        raise SegstudyError(f"{where}: {scheme}:// is not a storage segstudy writes to; accepted: {ACCEPTED}")
    return Path(given).absolute()


__all__ = ["ACCEPTED", "BucketPath", "DEFAULT", "Root", "is_remote", "place", "storage_root"]
