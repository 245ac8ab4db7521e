"""Warm parents: a cold start forked from a process that has the function's code imported.

For each function code (its workspace, image, module and env=) with cold starts lately, the
worker keeps a parent (ember/container/parent.py): Ember's runtime and the function's module
imported, no credential, no connection. A new container of that code is a fork of it, told
its identity by the worker as it is forked, which then connects and loads its function as any
container (its module is imported already, so that is a dictionary lookup) and shares the
parent's memory copy-on-write. A parent is started at a code's second cold start (recent
traffic, not every function a worker ever ran once), replaced when a redeploy or a new image
changes its function's code (its forks run on, and it goes when the last of them ends), and
retired after PARENT_IDLE seconds without a fork.

A container does not fork (it starts the usual way, and the worker says why once per code)
where a fork cannot be sound: GPUs (a driver's state does not survive a fork), secrets (they
are set before the code loads, and a parent has none), a function defined in __main__ (not
imported), a module that starts threads at import or opts out (`__ember_fork__ = False`), or
`ember worker --warm-parents off`. A parent that refuses or dies is not tried again for its
code.

Who runs a parent is its backend's (`launch`). The process backend runs it as a plain process,
as its containers are (no isolation to keep). The container backend (container.py) runs it in a
sandbox of its own, and forks each container into namespaces made for it ahead, as below.

Why it is hard: a fork that gets namespaces of its own (PID, mount, network), a writable layer
and a root of its own would have to make them itself after the fork, so after its parent ran the
function's import, which is user code in the same address space and can change anything the
child does next. Whatever privilege the child holds for that (unshare and mount, which a
container's seccomp filter denies, or capabilities over the namespaces it joins), the parent's
code can use first. So the privilege must be one that gains that code nothing.

Two designs do that. (1) Seccomp user notification: the parent's filter is a container's,
except that unshare, mount, pivot_root and umount2 go to the worker, which allows them to the
child just forked until it reports its namespaces made. The worker must judge calls whose
pointer arguments (mount's paths and options) can change after it looked, so the argument rests
on which namespaces the calls reach, and the child runs the root's whole setup in the user's
address space. (2) The one chosen, simpler: the worker makes each fork's namespaces itself, as
it makes any container's, and the child only joins them. For each fork, forkns.py (run by the
worker as root) mounts the fork's root (its image's layers and a fresh writable layer), then,
as container root, makes a user namespace of its own (owned by container root, an unprivileged
host user, mapped one to one onto the worker's user namespace) and, owned by it, the fork's
mount, PID, network, IPC and UTS namespaces, with the root pivoted to and /proc mounted by their
init. The worker opens them (/proc/INIT/ns/*) and hands them to the parent with the fork; the
child setns()es into them (user namespace first: its owner has every capability in it), forks
into the PID namespace, and that grandchild, the container's process, drops to a container's
capabilities and stacks a container's seccomp filter (which denies setns again) before it gets
its credential. The parent runs as container root in its own sandbox, with a container's
capabilities and a container's filter that lets setns through, and nothing else. Why that is
sound:
  - setns needs a descriptor of the namespace and CAP_SYS_ADMIN over its owner. The parent's
    capabilities are a container's, in the worker's user namespace: no host namespace can be
    joined, even by a descriptor that leaked (the test hands it the host's network and user
    namespaces: EPERM). Container root owns the forks' user namespaces only, so what it can
    join is a fork's namespaces, and those only through a descriptor: it sees no other
    container's /proc entries, and holds the descriptors of its own forks' namespaces only.
  - In a fork's namespaces it can do what the fork's own code can: its root, its writable
    layer, its network. The parent is the same code of the same workspace (its key holds the
    workspace, the module, its code and the image), which runs in every fork
    with every input anyway, so joining a fork (or a sibling it forked earlier, if it keeps the
    descriptors) gains it nothing its forks do not have. Its filter still denies mount, unshare
    of namespaces and the new mount API, so it makes nothing new.
  - A fork's PID namespace must be a child of the parent's (setns into a PID namespace works
    only downwards), so the parent sees its forks' processes in its /proc, as their ancestor.
    Processes of the same host user may open each other's /proc/PID/mem where they are
    dumpable: a fork's init and its container's processes are made not dumpable (as a
    container's init is), and what they exec is the fork's own code again.
  - The child in between (left in the parent's PID namespace, with every capability in the
    fork's user namespace and the parent's filter) only waits for the container's process and
    ends as it does: what it could be made to do is what the parent can.
  - The mappings of a fork's user namespace are written by the maker as container root (only a
    process with CAP_SETUID in the worker's user namespace may map more than its own ID), so a
    fork holds the same 65536 IDs as any container of the worker, and none of the host's.
  - The fork's root mount comes from the maker's mount namespace, where it is locked: pivot_root
    refuses a locked mount, so the init binds it onto itself first (its children stay locked,
    as they should: they cannot be unmounted to show what is below).
  - Limits: the child waits, after its setns, until the worker has moved it into the fork's
    cgroups (forkns.join's `go`), so that what runs in the fork's PID namespace is held by the
    fork's memory, CPU and pids limits from its start (the test's fork is killed at its memory
    limit, and the kill is counted in its own cgroup).
  - The fork's root is made as a container's (sandbox.setup_root: the image's layers and its
    own writable layer, idmapped, its binds and volumes), except that its /proc, /sys and the
    pivot are its init's; its network is the worker's usual one (a veth, NAT, the firewall),
    attached to the fork's own network namespace (network.attach(of_pid=)), since it could not
    join one of host root's.
Making a fork's namespaces took 48 to 70 ms (medians; 14 to 22 ms of it the maker's interpreter),
joining them 4 to 5 ms (bench/forkns.py, a busy machine; BENCHMARKS.md): they are made ahead, as
spares are, so that only the join is on the cold-start path.

How the container backend does it (container.py, "warm parents"):
  - the parent: the image's Python in a sandbox as any container's (its own root and writable
    layer, cgroups held to its function's limits, PID and mount namespaces, no network and no
    control plane), confined by forkns.confine_parent; its function's code unpacked by the
    worker (a parent has no credential to fetch it) and bound read-only at /ember/code, where
    its forks find it too;
  - ahead of each fork (once the parent is ready, and again after each fork): the maker
    (forkns.py, run by the worker as root with a container's spec: the image's layers, a
    writable layer on a disk of its own, the binds of the control and frames relays, its
    cgroups, which the maker joins first so that the fork's init is held by them) makes the
    namespaces; the worker attaches a network to them (network.attach(of_pid=)) and opens them;
  - the fork: its namespaces' descriptors, a `go` pipe and its log go with the fork request;
    the parent answers its child's PID in its own PID namespace, which the worker finds on the
    host (its child of that PID, by NSpid), moves into the fork's cgroups and only then writes
    `go`; the child joins, forks the container's process into the fork's PID namespace, which
    takes its identity (the worker's, made for it) and connects as any container;
  - the fork's init serves the worker's commands in it (`ember container exec`), as a
    container's init does; what the fork prints goes to the control plane as any container's
    (`ember container logs`), and what it wrote to its descriptors before its runtime ran, to
    its log on the worker;
  - where it cannot fork (parents.why_not, and the backend's own reasons: no user namespace,
    block_network=True, volumes, an ephemeral_disk= other than the default, a memory snapshot),
    or where a fork's namespaces could not be made, the container starts from a spare and the
    worker says why once per code.
Tested as the process backend's forks are, in a worker's real forks (tests/test_container_forks.py):
the escape suite's attacks are refused in one, a fork is killed at its own memory limit (its
own cgroup counts the kill), siblings share no writable state, a redeploy replaces the parent,
`ember container logs/exec` work on a fork, and the fallback says why once.
"""

import array
import asyncio
import collections
import contextlib
import hashlib
import inspect
import json
import logging
import os
import signal
import socket
import typing

from ..proto import api_pb2

log = logging.getLogger("ember.worker")

PARENT_IDLE = float(os.environ.get("EMBER_WARM_PARENT_IDLE", "60"))  # seconds without a fork before it is retired
MAX_PARENTS = 4      # parents kept at once; the one forked least recently goes first
WARM_AFTER = 2       # cold starts of a code (within PARENT_IDLE of each other) that start its parent
START_AFTER = 0.25   # seconds after the cold start that asks for a parent: that container loads first


def key_of(sc: api_pb2.StartContainer) -> str:
    """What a parent holds imported: the image, and the function's code and env= (the same for
    every function of one module, and across runs of an app whose code did not change), for
    one workspace: code and images are named by their bytes, and another workspace's import of
    the same bytes is still not one its containers may be forked from."""
    d = sc.definition
    h = hashlib.sha256()
    for part in (sc.workspace, sc.image.image_id, d.module, d.code_blob_id, json.dumps(sorted(d.env.items()))):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def function_of(sc: api_pb2.StartContainer) -> tuple[str, str]:
    """Which function it is across redeploys and runs of its app (each of which has an id of its
    own): where its code is, by name. A parent of other code for it is out of date."""
    return sc.definition.module, sc.definition.qualname


def why_not(sc: api_pb2.StartContainer) -> str | None:
    """Why a container of `sc` must not be a fork, or None."""
    d = sc.definition
    if sc.gpu_indices:
        return "it has GPUs, whose driver state a fork does not share soundly"
    if d.secret_ids:
        return "its secrets are set before its code loads, and a warm parent has none"
    if d.pickled.data or d.pickled.blob_id or not d.module:
        return "its function is serialized (defined in __main__), not imported"
    return None


class ParentGone(Exception):
    pass


class Forked:
    """A container forked from a parent: waited for and signalled as a process is (its parent,
    not the worker, reaps it and says how it ended)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self.ended = asyncio.get_running_loop().create_future()

    def _exited(self, code: int):
        if self.returncode is None:
            self.returncode = code
            self.ended.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self.ended)

    def send_signal(self, sig: int):
        if self.returncode is None:  # not reaped yet, so its PID is still its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class Parent:
    def __init__(self, key: str, function: tuple[str, str], proc, sock: socket.socket, resolve: "Resolve"):
        self.key = key
        self.resolve = resolve
        self.function = function  # (module, qualname) of the function it was made for: a redeploy of it replaces this
        self.proc = proc
        self.sock = sock
        self.children: dict[int, Forked] = {}
        self.forking: asyncio.Future | None = None  # the fork asked for, until its PID comes
        self.lock = asyncio.Lock()
        self.last_fork = asyncio.get_running_loop().time()
        self.retiring = False  # replaced: it goes once its forks have ended
        self.reader: asyncio.Task | None = None

    async def _recv(self) -> dict:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 16)
        if not data:
            raise ParentGone("it exited")
        return json.loads(data)

    async def handshake(self, definition: api_pb2.FunctionDefinition) -> str | None:
        """Give it the function; why it cannot be forked from, or None once it is ready."""
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.sock, json.dumps({"definition": definition.SerializeToString().hex()}).encode())
        answer = await self._recv()
        if "refused" in answer:
            return answer["refused"]
        self.reader = loop.create_task(self._read())
        return None

    async def _read(self):
        try:
            while True:
                msg = await self._recv()
                if "pid" in msg and self.forking is not None and not self.forking.done():
                    self.forking.set_result(msg["pid"])
                elif "exited" in msg and (child := self.children.pop(msg["exited"], None)) is not None:
                    child._exited(os.waitstatus_to_exitcode(msg["status"]))
        except (ParentGone, OSError, ValueError, TypeError, KeyError):
            pass  # gone, or talking nonsense
        # Its socket's end ends it (if it still runs), and its forks with it (their parent-death
        # signal is SIGKILL).
        self.sock.close()
        if self.forking is not None and not self.forking.done():
            self.forking.set_exception(ParentGone("it exited"))
        for child in self.children.values():
            child._exited(-signal.SIGKILL)
        self.children.clear()

    @property
    def alive(self) -> bool:
        return self.reader is not None and not self.reader.done()

    async def fork(self, request: dict, fds: typing.Sequence[int] = ()) -> Forked:
        """Fork a container: `request` is what the child is told (container/parent.py), `fds`
        descriptors it is handed with it (the container backend's: its namespaces, its `go`
        pipe and its log)."""
        async with self.lock:
            if not self.alive:
                raise ParentGone("it exited")
            loop = asyncio.get_running_loop()
            self.forking = loop.create_future()
            data = json.dumps({"fork": request}).encode()
            if fds:
                self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                await loop.sock_sendall(self.sock, data)
            pid = await self.forking
            # A parent has run the function's import: its word is checked before the worker
            # signals or measures that PID as a container's.
            host_pid = self.resolve(self, pid) if isinstance(pid, int) else None
            if host_pid is None:
                raise ParentGone(f"it answered with PID {pid!r}, which is not a child of its")
            child = self.children[pid] = Forked(host_pid)
            self.last_fork = loop.time()
            return child

    async def close(self):
        """Retire it: its socket's end ends it."""
        self.sock.close()
        if self.reader is not None:
            self.reader.cancel()
        if self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


def child_of_process(parent: Parent, pid: int) -> int | None:
    """A parent that runs as a plain process (the process backend's): the PID it answered, if
    it is its child."""
    return pid if _parent_of(pid) == parent.proc.pid else None


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


# A backend's way to start a parent for a container's code: given the container's start and
# the parent's end of its socket (inheritable), the started process (an asyncio Process).
Launch = typing.Callable[[api_pb2.StartContainer, socket.socket], typing.Awaitable[typing.Any]]
# How a parent's answer (a PID in its own PID namespace) is found on the host: the host PID of
# its child of that PID, or None if it has no such child.
Resolve = typing.Callable[[Parent, int], int | None]


class WarmParents:
    def __init__(self, enabled: bool, launch: Launch, cleanup: typing.Callable[[str], typing.Any] = lambda key: None,
                 resolve: Resolve = child_of_process, on_ready: typing.Callable[[Parent], None] = lambda parent: None):
        self.enabled = enabled
        self.launch = launch
        self.cleanup = cleanup  # what the backend does once a parent (by key) is gone (may be a coroutine)
        self.resolve = resolve
        self.on_ready = on_ready  # what the backend does once a parent is ready (makes a fork's namespaces ahead)
        self.parents: collections.OrderedDict[str, Parent] = collections.OrderedDict()  # by key, least recent first
        self.starting: dict[str, asyncio.Task] = {}
        self.cold: dict[str, tuple[int, float]] = {}  # key -> cold starts lately, and when the last was
        self.refused: dict[str, str] = {}  # key -> why it cannot be forked from (said once)
        self.said: set[tuple[str, str]] = set()
        self.retirer: asyncio.Task | None = None

    def _say(self, key: str, sc: api_pb2.StartContainer, why: str):
        if (key, why) not in self.said:
            self.said.add((key, why))
            log.info("containers of %s start without a warm parent: %s", sc.definition.name or sc.function_id, why)

    async def fork(self, sc: api_pb2.StartContainer, env: dict[str, str], cwd: str, log_path: str) -> Forked | None:
        """The container `sc` as a fork of its code's parent, or None: it starts the usual way
        (and its code's parent is started, if its code has been starting cold lately)."""
        parent = self.ready(sc)
        if parent is None:
            return None
        return await self.forked(sc, parent, {"env": env, "cwd": cwd, "log": log_path})

    def ready(self, sc: api_pb2.StartContainer, why: str | None = None) -> Parent | None:
        """The parent the container `sc` is to be forked from, or None: it starts the usual way
        (said once per code where it never can; `why`: the backend's reason, if it has one),
        and its code's parent is started if its code has been starting cold lately."""
        if not self.enabled or sc.definition.sandbox:  # a sandbox runs no code of the app
            return None
        key = key_of(sc)
        why = why or why_not(sc) or self.refused.get(key)
        if why:
            self._say(key, sc, why)
            return None
        parent = self.parents.get(key)
        if parent is not None and not parent.retiring and parent.alive:
            return parent
        self._count_cold(key, sc)
        return None

    async def forked(self, sc: api_pb2.StartContainer, parent: Parent, request: dict,
                     fds: typing.Sequence[int] = ()) -> Forked | None:
        """Fork the container `sc` from `parent` (ready() gave it); None if it could not."""
        try:
            child = await parent.fork(request, fds)
        except (ParentGone, OSError) as e:
            await self.give_up(sc, parent, f"its warm parent ended ({e}; see the worker's log)")
            return None
        if self.parents.get(parent.key) is parent:
            self.parents.move_to_end(parent.key)
        parent.function = function_of(sc)
        return child

    async def give_up(self, sc: api_pb2.StartContainer, parent: Parent, why: str):
        """Containers of `parent`'s code are not forked any more (the first to say why is said)."""
        self.refused.setdefault(parent.key, why)
        self._say(parent.key, sc, self.refused[parent.key])
        await self._drop(parent)

    def _count_cold(self, key: str, sc: api_pb2.StartContainer):
        now = asyncio.get_running_loop().time()
        n, last = self.cold.get(key, (0, now))
        n = n + 1 if now - last < PARENT_IDLE else 1
        self.cold[key] = (n, now)
        if n >= WARM_AFTER and key not in self.starting and key not in self.parents:
            self.starting[key] = asyncio.get_running_loop().create_task(self._start(key, sc))
        if self.retirer is None:
            self.retirer = asyncio.get_running_loop().create_task(self._retire_idle())

    async def _start(self, key: str, sc: api_pb2.StartContainer):
        parent = None
        try:
            await asyncio.sleep(START_AFTER)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            ours.setblocking(False)
            theirs.set_inheritable(True)
            try:
                proc = await self.launch(sc, theirs)
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            parent = Parent(key, function_of(sc), proc, ours, self.resolve)
            why = await parent.handshake(sc.definition)
            if why:
                self.refused[key] = why
                self._say(key, sc, why)
                await self._drop(parent)
                return
            self.parents[key] = parent
            log.info("a warm parent (pid %d) of %s is ready: its containers fork from it", proc.pid,
                     sc.definition.name or sc.function_id)
            self.on_ready(parent)
            for other in list(self.parents.values()):  # a redeploy's, or a new image's: the old code goes
                if other is not parent and other.function == parent.function:
                    other.retiring = True
            if len(self.parents) > MAX_PARENTS:
                next(iter(self.parents.values())).retiring = True
            await self._retire_done()
        except (ParentGone, OSError, asyncio.CancelledError) as e:
            if parent is not None:
                await self._drop(parent)
            if isinstance(e, asyncio.CancelledError):
                raise
            self.refused[key] = f"its warm parent could not start ({e}; see the worker's log)"
            self._say(key, sc, self.refused[key])
        finally:
            self.starting.pop(key, None)

    async def _drop(self, parent: Parent):
        if self.parents.get(parent.key) is parent:
            del self.parents[parent.key]
        await parent.close()
        done = self.cleanup(parent.key)
        if inspect.isawaitable(done):
            await done

    async def _retire_done(self):
        """Parents replaced, or idle, that no fork of runs any more."""
        now = asyncio.get_running_loop().time()
        for parent in list(self.parents.values()):
            if now - parent.last_fork > PARENT_IDLE:
                parent.retiring = True
            if parent.retiring and not parent.children:
                log.info("warm parent %d retired (%s)", parent.proc.pid,
                         "idle" if now - parent.last_fork > PARENT_IDLE else "its code was replaced")
                await self._drop(parent)

    async def _retire_idle(self):
        while True:
            await asyncio.sleep(min(PARENT_IDLE / 4, 5))
            await self._retire_done()

    async def stop_all(self):
        for task in list(self.starting.values()) + ([self.retirer] if self.retirer else []):
            task.cancel()
        for parent in list(self.parents.values()):
            await self._drop(parent)
