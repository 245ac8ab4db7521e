"""Volumes on a worker: each committed version of a volume, laid out as a directory.

A version's files are hard links to a cache of file contents (named by their blob id, fetched
from the blob store once per worker), so laying out a version costs no copying. A container
mounts the version read-only as the lower layer of an overlay, with a writable layer of its
own above: its writes never touch the version or other containers, and `commit()` sends what
changed to the control plane as a new version.
"""

import asyncio
import collections
import os
import pathlib
import shutil

from .._client import blobs
from ..proto import api_pb2


class VolumeCache:
    def __init__(self, root: pathlib.Path, blob_stub):
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.stub = blob_stub  # () -> a connected gRPC stub, for the blob store
        self.locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    async def version_dir(self, manifest: api_pb2.VolumeManifest) -> pathlib.Path:
        """The directory holding this version of the volume, made once."""
        dest = self.root / manifest.volume_id / str(manifest.version)
        async with self.locks[f"{manifest.volume_id}/{manifest.version}"]:
            if dest.exists():
                return dest
            tmp = dest.with_name(f".tmp-{manifest.version}-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for f in manifest.files:
                blob = await self._blob(f.blob_id)
                target = tmp / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(blob, target)
                os.chmod(target, f.mode & 0o7777 or 0o644)
                os.utime(target, (f.mtime, f.mtime))
            tmp.rename(dest)
            return dest

    async def _blob(self, blob_id: str) -> pathlib.Path:
        path = self.blobs / blob_id
        async with self.locks[blob_id]:
            if not path.exists():
                tmp = path.with_name(f".{blob_id}.{os.getpid()}")
                with open(tmp, "wb") as out:
                    async for chunk in blobs.chunks_of(self.stub(), blob_id):
                        out.write(chunk)
                tmp.rename(path)
        return path
