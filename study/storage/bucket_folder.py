"""One folder in an S3 bucket, read and written through pyarrow (`study.storage.s3`).

A study in a bucket keeps a local working copy of its own files (`StudyDir`); this is how each
write of the copy reaches the bucket, and how a driver on another machine gets the copy back.
An object is written by one PUT (or one completed multipart upload), so a reader sees the old
object or the new one, never half of one: what an atomic rename gives a local folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pyarrow import fs as pafs

from study.errors import SegstudyError
from study.storage.roots import BucketPath
from study.storage.s3 import filesystem, refusal


class BucketFolder:
    """The folder `path` of a bucket; paths given to its methods are relative to it ('a/b.json').

    Every S3 failure is raised as one `SegstudyError` line naming the object (`s3.refusal`).
    """

    def __init__(self, path: BucketPath) -> None:
        self.path = path
        self.fs = filesystem()

    def __repr__(self) -> str:
        return f"BucketFolder({self.path.uri!r})"

    def _at(self, rel: str) -> BucketPath:
        return self.path.child(rel) if rel else self.path

    def kind(self, rel: str = "") -> str | None:
        """'file', 'folder' or None (nothing there)."""
        info = self._call(rel, lambda p: self.fs.get_file_info(p))
        return {pafs.FileType.File: "file", pafs.FileType.Directory: "folder"}.get(info.type)

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        if self.kind(rel) != "file":
            return None

        def read(p: str) -> bytes:
            with self.fs.open_input_stream(p) as f:
                return f.read()

        return self._call(rel, read)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Put one object whole (a reader never sees part of it)."""

        def write(p: str) -> None:
            with self.fs.open_output_stream(p) as out:
                out.write(data)

        self._call(rel, write)

    def upload(self, local: Path, rel: str) -> None:
        """Copy a local file, or a folder with everything in it, to `rel`; a local path that no
        longer exists is deleted there (the copy mirrors what the driver removed)."""
        if local.is_dir():
            self._call(rel, lambda p: pafs.copy_files(str(local), p, source_filesystem=pafs.LocalFileSystem(),
                                                      destination_filesystem=self.fs))
        elif local.is_file():
            self.write_bytes(rel, local.read_bytes())
        else:
            self.delete(rel)

    def delete(self, rel: str) -> None:
        """Delete the object or folder `rel`, if there is one."""
        kind = self.kind(rel)
        if kind == "folder":
            self._call(rel, lambda p: self.fs.delete_dir(p))
        elif kind == "file":
            self._call(rel, lambda p: self.fs.delete_file(p))

    def download(self, rel: str, local: Path) -> bool:
        """Replace `local` by the file or folder `rel`; False (and `local` removed) when `rel`
        does not exist."""
        kind = self.kind(rel)
        if local.is_dir():
            shutil.rmtree(local)
        else:
            local.unlink(missing_ok=True)
        if kind is None:
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            local.write_bytes(self.read_bytes(rel) or b"")
        else:
            self._call(rel, lambda p: pafs.copy_files(p, str(local), source_filesystem=self.fs,
                                                      destination_filesystem=pafs.LocalFileSystem()))
        return True

    def entries(self, rel: str = "") -> dict[str, str]:
        """Name -> 'file' or 'folder' of what is directly in `rel` (empty when nothing is)."""
        infos = self._call(rel, lambda p: self.fs.get_file_info(pafs.FileSelector(p, allow_not_found=True, recursive=False)))
        kinds = {pafs.FileType.File: "file", pafs.FileType.Directory: "folder"}
        return {i.base_name: kinds[i.type] for i in infos if i.type in kinds}

    def _call(self, rel: str, action):  # noqa: ANN001, ANN202 - a small private helper
        where = self._at(rel)
        try:
            return action(where.fs_path)
        except OSError as exc:
            raise refusal(exc, where=where.uri) from None
        except SegstudyError:
            raise


__all__ = ["BucketFolder"]
