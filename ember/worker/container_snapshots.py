"""Memory snapshots on the container backend: a container restored from a CRIU checkpoint.

As on the process backend (memory_snapshots.py, whose naming, code fetching and pruning this
reuses): the first start of a deployed function with enable_memory_snapshot=True on this worker
runs its imports and @ember.enter(snap=True) hooks in a container of its image that has no
identity and no connection, and checkpoints it; every container of that function is then
restored from it, told who it is on its stdin, connects, and runs the snap=False hooks.

How criu meets a container. criu runs in the container's own mount, PID, network, IPC and UTS
namespaces (`nsenter` into them for the dump; the container's init runs `criu restore`,
sandbox.restore), with its binary bound in read-only at /ember/criu. It then sees the same
namespaces as its target and dumps only the process tree and its files, which are the image's
(and the function's code, bound in read-only from the snapshot), reopened by path on restore.
So a restored container is made as any other (sandbox.py: its namespaces, overlay root with a
writable layer of its own, cgroups with its own limits, a network made for it) and its init
restores the process into it instead of starting the runtime; criu leaves cgroups alone
(--manage-cgroups=ignore: the copy stays in its container's). The copy gets back the
capabilities, bounding set, no_new_privs and seccomp filter it was dumped with, which the
container's runtime had set up as any container's.

The limit: such containers run without the worker's user namespace (userns.py). criu, as root
of the host, can only dump and restore a process in a child user namespace whose other
namespaces that user namespace owns, and a container's are the host's (made before it joins);
from inside the user namespace it lacks the host capabilities it needs (to read a seccomp
filter, to suspend it while it works). So container root is host root there, held by the rest
(its own namespaces, the reduced capabilities and bounding set, no_new_privs, seccomp, cgroups),
as on a worker whose kernel has no user namespaces. The worker says so once.

What is not in a snapshot (README, "Memory snapshots"): open sockets (connect after restore,
in snap=False hooks), GPUs and volumes (such containers start afresh), and files the snap=True
hooks wrote to the container's disk (each restored container has a fresh writable layer).
"""

import asyncio
import json
import logging
import os
import pathlib
import shutil

from .._ids import new_id
from ..proto import api_pb2
from . import criu
from .backend import identity_env
from .memory_snapshots import MemorySnapshots, SnapshotError, _children, _identity
from .procs import tail_of

log = logging.getLogger("ember.worker")

CRIU_DIR = "/ember/criu"  # where criu is bound into a snapshot's containers
IMAGES_DIR = "/ember/snapshot"
CODE_DIR = "/ember/snapshot-code"  # the function's code, as the snapshot loaded it
INIT_PATH = "/ember/snapshot-init.pb"
WORK_DIR = "/.ember-restore"  # criu's log and pidfile, on the container's own disk
MAX_READY = 2  # copies restored ahead of need, one per recently used snapshot: each holds its memory
# The PID of a snapshot's runtime in its container, and of every copy: clear of the PIDs that
# the init and criu take in a new container.
FIRST_PID = 1000


class SnapshotRun:
    """What a sandbox of a memory snapshot gets beyond a container's own (ContainerBackend._start)."""

    def __init__(self, binds: list, env: dict, spec: dict, stdin, stdout, pass_fds: list[int]):
        self.binds = binds
        self.env = env
        self.spec = spec
        self.stdin = stdin
        self.stdout = stdout  # None: the container's log
        self.pass_fds = pass_fds


class ContainerSnapshots(MemorySnapshots):
    def __init__(self, root: pathlib.Path, cache_dir: pathlib.Path, runtime_dir: pathlib.Path, stub):
        super().__init__(root, cache_dir, runtime_dir, root / "unused-code", stub)
        self.noted = False
        # By snapshot: a copy restored ahead of need, not yet anyone's (as a spare is), for the
        # next container of its function; made as one starts.
        self.ready: dict[str, asyncio.Task] = {}
        self.ready_for: dict[str, str] = {}  # snapshot -> its function's id

    def unsupported(self, sc: api_pb2.StartContainer) -> str:
        if sc.gpu_indices:
            return "it has GPUs"
        if sc.volumes:
            return "it mounts volumes"
        return ""

    async def start(self, backend, sc: api_pb2.StartContainer):
        """The container `sc` restored from its function's snapshot (taken first if there is
        none), as a running Box; None if it cannot be (logged): the caller starts it afresh."""
        init = sc.snapshot_init
        if why := self.unsupported(sc):
            log.info("memory snapshot of %s not used, the container starts afresh: %s", init.definition.name, why)
            return None
        if not self.noted:
            self.noted = True
            log.warning("memory snapshots on the container backend: their containers run without the user "
                        "namespace (container root is host root, held by its namespaces, capabilities and "
                        "seccomp), as criu cannot checkpoint across it (container_snapshots.py)")
        key = self.key(init, f"container:{sc.image.image_id}")
        snap = self.root / key
        try:
            box = await self.ready.pop(key) if key in self.ready else None
            if box is not None and not await self._tell(backend, box, sc):
                box = None
            if box is None:  # none restored ahead (or it could not be: then its snapshot is taken anew)
                async with self.locks.setdefault(key, asyncio.Lock()):
                    if not (snap / "meta.json").exists():
                        await self._take_in_container(backend, sc, snap)
                box = await self._restore_in_container(backend, sc, snap, sc.container_id)
                if not await self._tell(backend, box, sc):
                    raise SnapshotError("its restored copy ended at once")
        except (criu.CriuUnavailable, SnapshotError, OSError) as e:
            shutil.rmtree(snap, ignore_errors=True)
            log.warning("memory snapshot of %s not used, the container starts afresh: %s", init.definition.name, e)
            return None
        self._restore_ahead(backend, sc, snap, key)
        return box

    def _restore_ahead(self, backend, sc: api_pb2.StartContainer, snap: pathlib.Path, key: str):
        """Restore the next container of this function now, in the background: its cold start
        then only tells it who it is (a restore takes a new container's disk, network, sandbox
        and criu's work, some 300 ms)."""
        if key in self.ready or backend.stopping:
            return
        loop = asyncio.get_running_loop()
        function_id = sc.snapshot_init.function_id
        # A copy of this function's older version (before a redeploy) is not wanted any more.
        for old in [k for k, f in self.ready_for.items() if f == function_id and k != key and k in self.ready]:
            loop.create_task(self._drop(backend, self.ready.pop(old)))
        self.ready[key] = loop.create_task(self._ahead(backend, sc, snap))
        self.ready_for = {k: f for k, f in self.ready_for.items() if k in self.ready}
        self.ready_for[key] = function_id
        while len(self.ready) > MAX_READY:  # the least recently made goes
            loop.create_task(self._drop(backend, self.ready.pop(next(iter(self.ready)))))

    async def _ahead(self, backend, sc: api_pb2.StartContainer, snap: pathlib.Path):
        try:
            return await self._restore_in_container(backend, sc, snap, new_id("ct"))
        except (SnapshotError, OSError) as e:
            shutil.rmtree(snap, ignore_errors=True)
            log.warning("memory snapshot of %s removed, it cannot be restored: %s", sc.snapshot_init.definition.name, e)
            return None
        except Exception as e:  # no disk or network for it now (BuildError): the next start restores its own
            log.info("no copy of %s restored ahead: %s", sc.snapshot_init.definition.name, e)
            return None

    async def _tell(self, backend, box, sc: api_pb2.StartContainer) -> bool:
        """Make the restored copy the container `sc`: its limits, then who it is (on its stdin);
        False (the copy discarded) if it cannot be."""
        try:
            if box.proc.returncode is not None:
                raise OSError("it ended")
            box.cgroups.limit(sc.resources)
            box.env.update(identity_env(sc))
            identity = {k: v for k, v in box.env.items() if _identity(k)}
            box.proc.stdin.write(json.dumps({**identity, "cwd": box.cwd}).encode() + b"\n")
            await box.proc.stdin.drain()
            box.proc.stdin.close()
            return True
        except OSError as e:
            log.info("a copy restored from a memory snapshot not used for %s: %s", sc.container_id, e)
            await backend.discard(box)
            return False

    async def _drop(self, backend, task: asyncio.Task):
        box = await task
        if box is not None:
            await backend.discard(box)

    async def forget(self, backend):
        """An image was built again (force_build): snapshots, named by its id, may map files it
        no longer has, so all go, with their copies restored ahead; later starts take new ones."""
        await self.close(backend)
        for snap in list(self.root.iterdir()):
            async with self.locks.setdefault(snap.name, asyncio.Lock()):
                shutil.rmtree(snap, ignore_errors=True)

    async def close(self, backend):
        """The worker stops: the copies restored ahead go."""
        ready, self.ready = list(self.ready.values()), {}
        for task in ready:
            await self._drop(backend, task)

    async def _take_in_container(self, backend, sc: api_pb2.StartContainer, snap: pathlib.Path):
        await asyncio.to_thread(criu.argv, self.cache_dir)  # installed
        shutil.rmtree(snap, ignore_errors=True)
        (snap / "images").mkdir(parents=True)
        (snap / "code").mkdir()
        init = await self._resolved(sc.snapshot_init, snap / "code")
        (snap / "init.pb").write_bytes(init.SerializeToString())
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()  # pipes, not files: a restored file must have the size it was dumped with
        ready_r, ready_w = os.pipe()
        run = SnapshotRun(
            binds=[[str(self.cache_dir / "criu"), CRIU_DIR, True], [str(snap / "code"), CODE_DIR, True],
                   [str(snap / "init.pb"), INIT_PATH, True]],
            env={"EMBER_SNAPSHOT_INIT": INIT_PATH, "EMBER_SNAPSHOT_READY_FD": str(ready_w),
                 "EMBER_CODE_CACHE": CODE_DIR},
            spec={"first_pid": FIRST_PID}, stdin=stdin_r, stdout=out_w, pass_fds=[ready_w])
        box = None
        try:
            try:
                box = await backend.launch(f"{sc.container_id}-snap", sc.image, sc, run)
            finally:
                for fd in (stdin_r, out_w, ready_w):
                    os.close(fd)
            if await asyncio.to_thread(_read_upto, ready_r, b"ready") != b"ready":
                await box.proc.wait()
                printed = os.read(out_r, 1 << 16).decode(errors="replace").strip().splitlines()
                raise SnapshotError(f"its code did not load ({printed[-1] if printed else 'no output'})")
            inits = _children(box.proc.pid)
            if not inits:
                raise SnapshotError("its container ended before it could be checkpointed")
            images = os.open(snap / "images", os.O_RDONLY | os.O_DIRECTORY)
            try:
                # Into the container's namespaces (the process's, less its cgroups), where the
                # paths are the container's: the images folder is reached by its descriptor.
                # The process is left stopped, not killed: its end would end its container's
                # init, and with it criu, in the same PID namespace, before criu had exited.
                dump = await asyncio.create_subprocess_exec(
                    "nsenter", "-t", str(inits[0]), "-m", "-p", "-n", "-i", "-u", "--", *inside_argv(),
                    "dump", "-t", str(FIRST_PID), "--shell-job", "--leave-stopped", "-D", f"/proc/self/fd/{images}",
                    "--work-dir", f"/proc/self/fd/{images}", "-o", "dump.log", "-v1", pass_fds=[images],
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE)
                _, err = await dump.communicate()
            finally:
                os.close(images)
            if dump.returncode != 0:
                raise SnapshotError(f"criu dump failed: {first_error(snap / 'images' / 'dump.log', err.decode())}")
            meta = {"stdin": f"pipe:[{os.fstat(stdin_w).st_ino}]", "output": f"pipe:[{os.fstat(out_r).st_ino}]"}
            (snap / "meta.json").write_text(json.dumps(meta))  # last: a snapshot without it is incomplete
            log.info("memory snapshot of %s taken in a container (%.1f MB)", init.definition.name,
                     sum(f.stat().st_size for f in (snap / "images").iterdir()) / 1e6)
            self._prune()
        finally:
            if box is not None:
                await backend.discard(box)
            for fd in (stdin_w, out_r, ready_r):
                os.close(fd)

    async def _restore_in_container(self, backend, sc: api_pb2.StartContainer, snap: pathlib.Path, name: str):
        """A container restored from the snapshot, told nothing yet (it waits on its stdin for
        who it is), with `sc`'s disk, network and limits."""
        meta = json.loads((snap / "meta.json").read_text())
        os.utime(snap / "meta.json")  # used now: the last to go (_prune)
        status_r, status_w = os.pipe()
        run = SnapshotRun(
            binds=[[str(self.cache_dir / "criu"), CRIU_DIR, True], [str(snap / "images"), IMAGES_DIR, True],
                   [str(snap / "code"), CODE_DIR, True]],
            env={}, spec={"restore": {"criu": inside_argv(), "images": IMAGES_DIR, "work_dir": WORK_DIR,
                                      "inherit": [[0, meta["stdin"]], [1, meta["output"]]], "status_fd": status_w}},
            stdin=asyncio.subprocess.PIPE, stdout=None, pass_fds=[status_w])
        try:
            try:
                box = await backend.launch(name, sc.image, sc, run)
            finally:
                os.close(status_w)
            if await asyncio.to_thread(_read_upto, status_r, b"R") != b"R":
                await box.proc.wait()
                restore_log = box.disk.mount_point / "upper" / WORK_DIR.lstrip("/") / "restore.log"
                why = first_error(restore_log, tail_of(box.log_path))
                await backend.discard(box)
                raise SnapshotError(f"its restore failed ({why})")
        finally:
            os.close(status_r)
        return box


def inside_argv() -> list[str]:
    """criu's command in a snapshot's container, where its folder is bound at CRIU_DIR."""
    return criu.command(pathlib.Path(CRIU_DIR))


# What criu logs as errors in a container every time, probing the kernel, and goes on: no cause.
PROBE_NOISE = ("tun: Unable to create tun", "rlimit: Can't setup RLIMIT_NOFILE", "Dumping FAILED", "Restoring FAILED")


def first_error(log_path: pathlib.Path, fallback: str) -> str:
    """The first error criu logged that says why it failed (its last lines only say that it did)."""
    lines = tail_of(log_path, 1 << 16).strip().splitlines()
    errors = [line for line in lines if "Error (" in line and not any(n in line for n in PROBE_NOISE)]
    errors = errors or lines[-1:] or fallback.strip().splitlines()[-1:]
    return errors[0] if errors else "no output"


def _read_upto(fd: int, want: bytes) -> bytes:
    """What comes on `fd` until it is `want` or ends (others may hold its write end open)."""
    got = b""
    while len(got) < len(want):
        chunk = os.read(fd, len(want) - len(got))
        if not chunk:
            break
        got += chunk
    return got
