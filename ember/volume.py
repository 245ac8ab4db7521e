"""ember.Volume: files shared by containers and kept by the control plane, in versions.

    vol = ember.Volume.from_name("models", create_if_missing=True)

    @app.function(volumes={"/models": vol})
    def train():
        open("/models/weights.bin", "wb").write(...)
        vol.commit()          # now visible to containers that start or reload() from here on

A container sees the version that was latest when it started; its writes are its own until
`commit()` (or until it stops, which commits too); `reload()` brings in what others committed.
Each file is committed on its own, so two containers committing different files both keep
theirs; a container killed before committing changes nothing. From outside a container:
`read_file`, `listdir`, `remove_file`, `batch_upload`.
"""

import asyncio
import contextlib
import copy
import json
import os
import pathlib
import posixpath
import time
import typing

from . import exception
from ._client import blobs
from ._client.bridge import twin
from ._client.client import Client
from ._object import NamedObject
from .proto import api_pb2
from .types import FileEntry, FileEntryType, VolumeInfo

MOUNTS_FILE = "/ember/volumes.json"  # written by the worker into containers that mount volumes


def _clean(path: str) -> str:
    """A path inside the volume: relative, normalized, never above its root."""
    p = posixpath.normpath("/" + str(path)).lstrip("/")
    return "" if p == "." else p


class _Mount:
    """A volume as this container has it: where, and what each file was at its last sync."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.base = {f["path"]: f for f in manifest.get("files", [])}


def _mounts() -> dict[str, _Mount]:
    """volume id -> its mount, inside a container; empty elsewhere."""
    global _MOUNTS
    if _MOUNTS is None:
        _MOUNTS = {}
        if os.environ.get("EMBER_CONTAINER_ID") and os.path.exists(MOUNTS_FILE):
            for m in json.loads(pathlib.Path(MOUNTS_FILE).read_text()):
                _MOUNTS[m["manifest"]["volumeId"]] = _Mount(m["path"], m["manifest"])
    return _MOUNTS


_MOUNTS: dict[str, _Mount] | None = None


def _changes(mount: _Mount) -> tuple[list[tuple[str, str, os.stat_result]], list[str]]:
    """The files written in the mount since its last sync (relative path, full path, stat), and
    those deleted."""
    written, seen = [], set()
    for dirpath, _dirs, files in os.walk(mount.path):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, mount.path)
            seen.add(rel)
            st = os.lstat(full)
            base = mount.base.get(rel)
            if base is None or base["size"] != st.st_size or abs(base["mtime"] - st.st_mtime) >= 1e-6:
                written.append((rel, full, st))
    return written, [p for p in mount.base if p not in seen]


def _write_file(target: str, chunks: list[bytes], mode: int, mtime: float):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as out:
        out.writelines(chunks)
    os.chmod(target, mode or 0o644)
    os.utime(target, (mtime, mtime))


class Volume(NamedObject):
    _kind = "volume"
    _info = VolumeInfo
    _read_only = False  # a handle from read_only(): the containers it is mounted in cannot write to it

    def read_only(self) -> "Volume":
        """The same volume, mounted read-only where a function mounts this handle (writes there
        fail with EROFS); this handle's own methods (put files, read, ...) work as before."""
        return self.with_mount_options(read_only=True)

    def with_mount_options(self, *, read_only: bool | None = None, sub_path=None) -> "Volume":
        """The same volume with options for the mounts of this handle: read_only=True."""
        if read_only is not None and not isinstance(read_only, bool):
            raise exception.InvalidError(f"with_mount_options(read_only={read_only!r}): pass True or False")
        if sub_path is not None:
            raise exception.InvalidError(
                f"{self!r}.with_mount_options(sub_path={str(sub_path)!r}): not supported by Ember: a volume is "
                "mounted whole; mount it and use the subdirectory (or keep that data in a volume of its own)")
        handle = copy.copy(self)
        if read_only is not None:
            handle._read_only = read_only
        return handle

    # ------------------------------------------------------------------ inside a container

    async def _mount(self, what: str) -> _Mount:
        mount = _mounts().get(await self._id())
        if mount is None:
            raise exception.InvalidError(f"{what}() works in a container that mounts {self!r} "
                                         "(volumes={path: volume} on its function)")
        return mount

    @twin
    async def commit(self):
        """Send this container's changes to the volume as its next version."""
        mount = await self._mount("commit")
        client = Client.from_env()
        changed, deleted = await asyncio.to_thread(_changes, mount)
        written = []
        for rel, full, st in changed:
            blob_id = await blobs.upload_file(client.stub, full)
            written.append(api_pb2.VolumeFile(path=rel, blob_id=blob_id, size=st.st_size,
                                              mode=st.st_mode & 0o7777, mtime=st.st_mtime))
        if not written and not deleted:
            return
        await client.rpc("VolumeCommit", api_pb2.VolumeCommitRequest(
            volume_id=await self._id(), files=written, deleted=deleted), what=f"committing {self!r}")
        for p in deleted:
            del mount.base[p]
        for f in written:
            mount.base[f.path] = {"path": f.path, "blobId": f.blob_id, "size": f.size, "mtime": f.mtime}

    @twin
    async def reload(self):
        """Bring in what others committed since this container last synced (its own
        uncommitted changes to other files stay)."""
        mount = await self._mount("reload")
        client = Client.from_env()
        latest_files = {f.path: f for f in (await self._manifest(client)).files}
        for path, f in latest_files.items():
            base = mount.base.get(path)
            if base is not None and base.get("blobId") == f.blob_id:
                continue
            chunks = await blobs.download_chunks(client.stub, f.blob_id)
            await asyncio.to_thread(_write_file, os.path.join(mount.path, path), chunks, f.mode, f.mtime)
            mount.base[path] = {"path": path, "blobId": f.blob_id, "size": f.size, "mtime": f.mtime}
        for path in [p for p in mount.base if p not in latest_files]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(mount.path, path))
            del mount.base[path]

    # ------------------------------------------------------------------ from anywhere

    async def _probe(self):
        await self._manifest(Client.from_env())

    async def _manifest(self, client: Client) -> api_pb2.VolumeManifest:
        return await client.rpc("VolumeGet", api_pb2.VolumeRef(volume_id=await self._id()), what=repr(self))

    @classmethod
    def _check_create_options(cls, options: dict, what: str):
        version = options.pop("version", None)
        if version not in (None, 1, 2):
            raise exception.InvalidError(f"{what}: version={version!r}: Ember's volumes have one version of their "
                                         "format; leave version out")
        if options.pop("experimental_options", None):
            raise exception.InvalidError(f"{what}: experimental_options are Modal's own; leave them out")
        super()._check_create_options(options, what)

    @staticmethod
    def rename(old_name: str, new_name: str, *, client=None, environment_name: str | None = None):
        """Give the volume `old_name` the name `new_name`. The control plane has no rename, so
        this makes `new_name` holding the same files (no data is copied: the files are the same
        blobs), then deletes `old_name`: the volume gets a new object_id, and containers running
        with the old one lose it."""
        from ._object import _check_client
        what = f"Volume.rename({old_name!r}, {new_name!r})"
        _check_client(client, what)
        old = Volume.from_name(old_name, environment_name=environment_name).hydrate()  # it must exist
        Volume.objects.create(new_name)  # an error if new_name exists
        new = Volume.from_name(new_name)
        old._loop().run(new._take_files(old, what))
        Volume.objects.delete(old_name)

    async def _take_files(self, source: "Volume", what: str):
        client = Client.from_env()
        files = (await source._manifest(client)).files
        if files:
            await client.rpc("VolumeCommit", api_pb2.VolumeCommitRequest(volume_id=await self._id(), files=files),
                             what=what)

    @twin
    async def listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        """The files and directories at path (everything below it with recursive=True)."""
        return [e async for e in self._entries(path, recursive)]

    @twin
    async def iterdir(self, path: str = "/", *, recursive: bool = True):
        """The files and directories at path, one by one (everything below it by default, as
        Modal's iterdir)."""
        async for e in self._entries(path, recursive):
            yield e

    async def _entries(self, path: str, recursive: bool):
        for e in await self._list(path, recursive):
            yield e

    async def _list(self, path: str, recursive: bool) -> list[FileEntry]:
        root = _clean(path)
        prefix = root + "/" if root else ""
        files = (await self._manifest(Client.from_env())).files
        if root and any(f.path == root for f in files):
            return [FileEntry(f.path, FileEntryType.FILE, f.mtime, f.size) for f in files if f.path == root]
        out: dict[str, FileEntry] = {}
        for f in files:
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix):]
            if recursive or "/" not in rest:
                out[f.path] = FileEntry(f.path, FileEntryType.FILE, f.mtime, f.size)
            parts = rest.split("/")[:-1]
            for i in range(len(parts) if recursive else min(1, len(parts))):
                d = prefix + "/".join(parts[:i + 1])
                out.setdefault(d, FileEntry(d, FileEntryType.DIRECTORY, 0.0, 0))
        if root and not out:
            raise FileNotFoundError(f"{path}: no such file or directory in {self!r}")
        return sorted(out.values(), key=lambda e: e.path)

    @twin
    async def read_file(self, path: str):
        """The file's content, in chunks as they arrive: `b"".join(vol.read_file("a.txt"))`."""
        async for chunk in self._read(path):
            yield chunk

    async def _read(self, path: str):
        rel = _clean(path)
        client = Client.from_env()
        for f in (await self._manifest(client)).files:
            if f.path == rel:
                async for chunk in blobs.chunks_of(client.stub, f.blob_id):
                    yield chunk
                return
        raise FileNotFoundError(f"{path}: no such file in {self!r}")

    @twin
    async def read_file_into_fileobj(self, path: str, fileobj, progress_cb=None) -> int:
        """Write the file's content into a binary file object; the number of bytes written.
        progress_cb, if given, is called with advance=BYTES as chunks arrive."""
        written = 0
        async for chunk in self._read(path):
            await asyncio.to_thread(fileobj.write, chunk)
            written += len(chunk)
            if progress_cb is not None:
                progress_cb(advance=len(chunk))
        return written

    @twin
    async def copy_files(self, src_paths, dst_path: str, recursive: bool = False):
        """Copy files inside the volume, as `cp` does: into dst_path when it is a directory (or
        ends with "/", or there are several sources), else to dst_path. Directories need
        recursive=True. Nothing is copied but names: a copy is the same blob."""
        if isinstance(src_paths, str) or not src_paths:
            raise exception.InvalidError(f"copy_files({src_paths!r}, ...): pass a list of paths in the volume")
        client = Client.from_env()
        files = {f.path: f for f in (await self._manifest(client)).files}
        dst = _clean(dst_path)
        dst_is_dir = (dst_path.endswith("/") or len(src_paths) > 1 or not dst
                      or any(p.startswith(dst + "/") for p in files))
        copies = []
        for src in src_paths:
            rel = _clean(src)
            under = [p for p in files if not rel or p.startswith(rel + "/")]
            if rel in files:
                target = posixpath.join(dst, posixpath.basename(rel)) if dst_is_dir else dst
                copies.append((files[rel], target))
            elif under:
                if not recursive:
                    raise IsADirectoryError(f"{src} is a directory in {self!r}: pass recursive=True")
                base = posixpath.join(dst, posixpath.basename(rel)) if dst_is_dir and rel else dst
                copies += [(files[p], posixpath.join(base, p[len(rel):].lstrip("/"))) for p in under]
            else:
                raise FileNotFoundError(f"{src}: no such file or directory in {self!r}")
        written = []
        for f, target in copies:
            copy = api_pb2.VolumeFile()
            copy.CopyFrom(f)
            copy.path = _clean(target)
            written.append(copy)
        await client.rpc("VolumeCommit", api_pb2.VolumeCommitRequest(volume_id=await self._id(), files=written),
                         what=f"copying files in {self!r}")

    @twin
    async def remove_file(self, path: str, *, recursive: bool = False):
        rel = _clean(path)
        client = Client.from_env()
        files = [f.path for f in (await self._manifest(client)).files]
        is_file = rel in files
        under = [p for p in files if p.startswith(rel + "/") or not rel]
        if not is_file and not under:
            raise FileNotFoundError(f"{path}: no such file or directory in {self!r}")
        if not is_file and not recursive:
            raise IsADirectoryError(f"{path} is a directory in {self!r}: pass recursive=True")
        await client.rpc("VolumeCommit", api_pb2.VolumeCommitRequest(
            volume_id=await self._id(), deleted=[rel] if rel else files), what=f"removing {path} from {self!r}")

    @contextlib.contextmanager
    def batch_upload(self, force: bool = False):
        """Upload local files as one commit: `with vol.batch_upload() as b: b.put_file(...)`."""
        batch = _Batch(self, force)
        yield batch
        batch.commit()


class _Content(typing.NamedTuple):
    """A file given as a file object: its bytes and mode."""
    data: bytes
    mode: int


class _Batch:
    def __init__(self, volume: Volume, force: bool):
        self.volume = volume
        self.force = force
        self.files: dict[str, pathlib.Path | _Content] = {}

    def put_file(self, local_file, remote_path: str, mode: int | None = None):
        """A local file (a path, or a binary file object, read now) to upload as remote_path."""
        if hasattr(local_file, "read"):
            data = local_file.read()
            if not isinstance(data, bytes):
                raise exception.InvalidError(f"put_file({local_file!r}): open the file in binary mode ('rb')")
            self.files[_clean(remote_path)] = _Content(data, 0o644 if mode is None else mode)
            return
        src = pathlib.Path(local_file)
        if not src.is_file():
            raise FileNotFoundError(f"{local_file}: no such file")
        self.files[_clean(remote_path)] = src if mode is None else _Content(src.read_bytes(), mode)

    def put_directory(self, local_path, remote_path: str, recursive: bool = True):
        root = pathlib.Path(local_path)
        if not root.is_dir():
            raise NotADirectoryError(f"{local_path}: no such directory")
        for p in (root.rglob("*") if recursive else root.glob("*")):
            if p.is_file():
                self.files[_clean(posixpath.join(remote_path, p.relative_to(root).as_posix()))] = p

    def _loop(self):
        return self.volume._loop()

    @twin
    async def commit(self):
        client = Client.from_env()
        if not self.force:
            existing = {f.path for f in (await self.volume._manifest(client)).files}
            clash = sorted(existing & set(self.files))
            if clash:
                raise FileExistsError(f"{', '.join(clash[:5])} exist in {self.volume!r} already: "
                                      "pass batch_upload(force=True) to overwrite")
        written = []
        for rel, src in self.files.items():
            if isinstance(src, _Content):
                blob_id = await blobs.upload(client.stub, src.data)
                written.append(api_pb2.VolumeFile(path=rel, blob_id=blob_id, size=len(src.data), mode=src.mode,
                                                  mtime=time.time()))
                continue
            st = src.stat()
            blob_id = await blobs.upload_file(client.stub, str(src))
            written.append(api_pb2.VolumeFile(path=rel, blob_id=blob_id, size=st.st_size, mode=st.st_mode & 0o7777,
                                              mtime=st.st_mtime))
        await client.rpc("VolumeCommit", api_pb2.VolumeCommitRequest(
            volume_id=await self.volume._id(), files=written), what=f"uploading to {self.volume!r}")
