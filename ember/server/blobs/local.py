"""Blobs in a directory on the control plane's disk: ROOT/ab/abcd... for the blob abcd....

A put streams into a temporary file and renames it to its hash once complete, so a reader never
sees half a blob; a put that meets a full disk removes its file and raises DiskFull. Disk reads
and writes (and hashing) run in a thread, a chunk at a time, so a large blob does not hold up
the event loop.
"""

import asyncio
import hashlib
import os
import pathlib
import tempfile
from collections.abc import AsyncIterable

from ...config import BLOB_CHUNK
from ..disk import DiskFull, is_disk_full
from . import BlobNotFound, BlobStore, PutUrl, is_blob_id

UPLOAD_PREFIX = ".upload-"


class LocalBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Puts cut short by a crash leave their temporary files; none can be running yet.
        for stale in self.root.glob(UPLOAD_PREFIX + "*"):
            stale.unlink(missing_ok=True)

    def _path(self, blob_id: str) -> pathlib.Path | None:
        """Where the blob lives, None for a malformed id (never a path outside the root)."""
        return self.root / blob_id[:2] / blob_id if is_blob_id(blob_id) else None

    async def put(self, chunks: AsyncIterable[bytes]) -> str:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=UPLOAD_PREFIX)
        except OSError as e:
            if is_disk_full(e, self.root):
                raise DiskFull(self.root, "a blob") from e
            raise
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    await asyncio.to_thread(_append, f, digest, chunk)
            blob_id = digest.hexdigest()
            dest = self._path(blob_id)
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
        except BaseException as e:
            os.unlink(tmp)  # never half a blob, nor the room it took
            if is_disk_full(e, self.root):
                raise DiskFull(self.root, "a blob") from e
            raise
        return blob_id

    async def get(self, blob_id: str):
        path = self._path(blob_id)
        if path is None:
            raise BlobNotFound(blob_id)
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
        with f:
            while data := await asyncio.to_thread(f.read, BLOB_CHUNK):
                yield data

    async def exists(self, blob_id: str) -> bool:
        path = self._path(blob_id)
        return path is not None and path.exists()

    async def delete(self, blob_id: str):
        path = self._path(blob_id)
        if path is not None:
            path.unlink(missing_ok=True)

    async def refresh(self, blob_id: str) -> bool:
        path = self._path(blob_id)
        try:
            os.utime(path)  # a blob's mtime is when it was last put or refreshed
        except (FileNotFoundError, TypeError):
            return False
        return True

    async def list(self):
        for d in await asyncio.to_thread(_subdirs, self.root):
            for entry in await asyncio.to_thread(_entries, d):
                yield entry

    async def delete_unless_put_since(self, blob_id: str, since: float) -> int:
        # No await between the look and the unlink: a put's rename and a refresh run on this
        # same event loop, so neither can come in between.
        path = self._path(blob_id)
        try:
            st = path.stat()
        except (FileNotFoundError, AttributeError):
            return 0
        if st.st_mtime >= since:
            return 0
        path.unlink(missing_ok=True)
        return st.st_size

    def url_for(self, blob_id: str) -> str | None:
        return None

    async def put_url(self, blob_id: str, tag: str) -> PutUrl | None:
        return None

    async def upload_tag(self, blob_id: str) -> str | None:
        return None


def _append(f, digest, chunk: bytes):
    digest.update(chunk)
    f.write(chunk)


def _subdirs(root: pathlib.Path) -> list[str]:
    return [e.path for e in os.scandir(root) if e.is_dir() and len(e.name) == 2]


def _entries(d: str) -> list[tuple[str, int, float]]:
    out = []
    for e in os.scandir(d):
        if is_blob_id(e.name):
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            out.append((e.name, st.st_size, st.st_mtime))
    return out
