"""Memory snapshots (enable_memory_snapshot=True): containers restored from a checkpoint.

For a deployed function the control plane sends, with each StartContainer, the init its
container will get (less its secrets). The first start on this worker runs Ember's runtime
with that init and no connection: it imports the function's code and runs its
@ember.enter(snap=True) hooks, says it is ready and waits; CRIU checkpoints it there (and it
ends). Every container of that function on this worker, the first one too, is then a copy
restored from the checkpoint (restorer.py: a PID namespace of its own each), told who it is on
its stdin; it connects to the control plane only then (gRPC's channel has threads and sockets
that a checkpoint must not hold) and runs the @ember.enter(snap=False) hooks.

A snapshot is named by a hash of the init (the function's definition: its image and code; its
app's function ids), and of Ember's runtime directory (named for Ember's version and files):
any change makes a new one. One that cannot be taken or restored is logged, removed, and the
container starts as it would without. This is the process backend's; the container backend's
(container_snapshots.py) takes and restores them in containers, and reuses the naming above.
"""

import asyncio
import hashlib
import json
import logging
import os
import pathlib
import shutil
import sys

from .._client import blobs
from ..proto import api_pb2
from . import criu
from .procs import tail_of

log = logging.getLogger("ember.worker")

RESTORER = pathlib.Path(__file__).with_name("restorer.py")
KEEP = 4  # snapshots a worker keeps, the most recently used: each holds its function's memory on disk


class MemorySnapshots:
    def __init__(self, root: pathlib.Path, cache_dir: pathlib.Path, runtime_dir: pathlib.Path, code_cache: pathlib.Path,
                 stub):
        self.root = root  # one folder per snapshot, named by its key
        self.cache_dir = cache_dir
        self.runtime_dir = runtime_dir
        self.code_cache = code_cache
        self.stub = stub
        self.locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)

    def key(self, init: api_pb2.ContainerInit, python: str) -> str:
        h = hashlib.sha256(f"{self.runtime_dir.name}\0{python}\0".encode())
        h.update(init.SerializeToString(deterministic=True))
        return h.hexdigest()[:32]

    async def start(self, init: api_pb2.ContainerInit, python: str, env: dict, cwd: pathlib.Path,
                    log_path: pathlib.Path) -> "Restored | None":
        """The container restored from its function's snapshot (taken first if there is none);
        None if it cannot be (logged): the caller starts it afresh. `env` holds its identity."""
        key = self.key(init, python)
        snap = self.root / key
        try:
            async with self.locks.setdefault(key, asyncio.Lock()):
                if not (snap / "meta.json").exists():
                    await self._take(init, python, {k: v for k, v in env.items() if not _identity(k)}, snap)
            return await self._restore(snap, env, cwd, log_path)
        except (criu.CriuUnavailable, SnapshotError, OSError) as e:
            log.warning("memory snapshot of %s not used, the container starts afresh: %s", init.definition.name, e)
            shutil.rmtree(snap, ignore_errors=True)
            return None

    async def _take(self, init: api_pb2.ContainerInit, python: str, env: dict, snap: pathlib.Path):
        command = await asyncio.to_thread(criu.argv, self.cache_dir)
        shutil.rmtree(snap, ignore_errors=True)
        (snap / "images").mkdir(parents=True)
        init = await self._resolved(init, self.code_cache)
        (snap / "init.pb").write_bytes(init.SerializeToString())
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()  # pipes, not files: a restored file must have the size it was dumped with
        ready_r, ready_w = os.pipe()
        env = dict(env, EMBER_SNAPSHOT_INIT=str(snap / "init.pb"), EMBER_SNAPSHOT_READY_FD=str(ready_w))
        try:
            proc = await asyncio.create_subprocess_exec(
                python, "-m", "ember.container", cwd=snap, env=env, stdin=stdin_r, stdout=out_w, stderr=out_w,
                pass_fds=[ready_w], start_new_session=True)
        finally:
            for fd in (stdin_r, out_w, ready_w):
                os.close(fd)
        try:
            ready = await asyncio.to_thread(_read_all, ready_r)
            if ready != b"ready":
                await proc.wait()
                printed = os.read(out_r, 1 << 16).decode(errors="replace").strip().splitlines()
                raise SnapshotError(f"its code did not load ({printed[-1] if printed else 'no output'})")
            dump = await asyncio.create_subprocess_exec(
                *command, "dump", "-t", str(proc.pid), "--shell-job", "-D", str(snap / "images"),
                "--work-dir", str(snap), "-o", "dump.log", "-v1",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            if await dump.wait() != 0:
                raise SnapshotError(f"criu dump failed: {tail_of(snap / 'dump.log').strip().splitlines()[-1:]}")
            await proc.wait()
            meta = {"stdin": f"pipe:[{os.fstat(stdin_w).st_ino}]", "output": f"pipe:[{os.fstat(out_r).st_ino}]"}
            (snap / "meta.json").write_text(json.dumps(meta))  # last: a snapshot without it is incomplete
            log.info("memory snapshot of %s taken (%.1f MB)", init.definition.name,
                     sum(f.stat().st_size for f in (snap / "images").iterdir()) / 1e6)
            self._prune()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for fd in (stdin_w, out_r, ready_r):
                os.close(fd)

    def _prune(self):
        """Remove all but the KEEP most recently used snapshots (those of older versions, mostly)."""
        def used(d: pathlib.Path) -> float:
            try:
                return (d / "meta.json").stat().st_mtime
            except FileNotFoundError:
                return float("inf")  # being taken
        for old in sorted(self.root.iterdir(), key=used, reverse=True)[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)

    async def _resolved(self, init: api_pb2.ContainerInit, code_cache: pathlib.Path) -> api_pb2.ContainerInit:
        """The init, with what its runtime would fetch from the control plane fetched here (it
        has no connection while its snapshot is taken): its code unpacked into `code_cache`,
        a pickled function's blob made inline."""
        init = api_pb2.ContainerInit.FromString(init.SerializeToString())
        d = init.definition
        if d.code_blob_id and not (code_cache / d.code_blob_id).exists():
            data = await blobs.download(self.stub(), d.code_blob_id)
            blobs.unpack_code(code_cache, d.code_blob_id, data)
        if d.pickled.blob_id:
            d.pickled.data = await blobs.download(self.stub(), d.pickled.blob_id)
            d.pickled.blob_id = ""
        return init

    async def _restore(self, snap: pathlib.Path, env: dict, cwd: pathlib.Path,
                       log_path: pathlib.Path) -> "Restored":
        meta = json.loads((snap / "meta.json").read_text())
        os.utime(snap / "meta.json")  # used now: the last to go (_prune)
        command = criu.argv(self.cache_dir)
        stdin_r, stdin_w = os.pipe()
        status_r, status_w = os.pipe()
        work = cwd / ".restore"
        work.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as logf:
            spec = {"criu": command, "images": str(snap / "images"), "work_dir": str(work),
                    "log": str(work / "restore.log"), "kdat": str(criu.kdat(self.cache_dir)),
                    "status_fd": status_w, "parent_pid": os.getpid(),
                    "inherit": [[stdin_r, meta["stdin"]], [logf.fileno(), meta["output"]]]}
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-S", "-E", str(RESTORER), json.dumps(spec), stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf, stderr=logf, pass_fds=[stdin_r, logf.fileno(), status_w], start_new_session=True)
            finally:
                os.close(stdin_r)
                os.close(status_w)
        try:
            restored = await asyncio.to_thread(_read_all, status_r)
            if not restored.startswith(b"R"):
                await proc.wait()
                why = (tail_of(work / "restore.log") or tail_of(log_path)).strip().splitlines()[-1:]
                raise SnapshotError(f"its restore failed ({why[0] if why else 'no output'})")
            identity = {k: v for k, v in env.items() if _identity(k)}
            os.write(stdin_w, json.dumps({**identity, "cwd": str(cwd)}).encode() + b"\n")
            return Restored(proc, _host_pid(proc.pid, int(restored[1:])))
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        finally:
            os.close(stdin_w)
            os.close(status_r)


class Restored:
    """A container restored from its snapshot: its restorer, waited for and signalled as a process
    is (it ends as the copy did), and the session the copy leads, where its CPU time and memory
    are read (the restorer's own session holds only the restorer)."""

    def __init__(self, proc: asyncio.subprocess.Process, session: int):
        self.proc = proc
        self.pid = proc.pid
        self.session = session

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self) -> int:
        return await self.proc.wait()

    def terminate(self):
        self.proc.terminate()

    def kill(self):
        self.proc.kill()


def _host_pid(restorer: int, pid: int) -> int:
    """The restored copy's PID as the worker sees it (`pid` is its own, in its namespace), found
    among the children of its restorer's init; the restorer's if it cannot be read."""
    for init in _children(restorer):
        for child in _children(init):
            try:
                nspid = next(line for line in pathlib.Path(f"/proc/{child}/status").read_text().splitlines()
                             if line.startswith("NSpid:")).split()
            except (OSError, StopIteration):
                continue
            if int(nspid[-1]) == pid:
                return child
    return restorer


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _identity(name: str) -> bool:
    """What a restored copy is told (who it is, where its control plane is), not what its snapshot holds."""
    return name in ("EMBER_CONTAINER_ID", "EMBER_TOKEN_ID", "EMBER_TOKEN_SECRET", "EMBER_SERVER_URL", "EMBER_FRAMES")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


class SnapshotError(Exception):
    pass
