"""The fleet: workers and their containers, as they connect, disconnect, exit and vanish.

A worker registers its resources and the containers it still runs; a container says hello
once it is up, and holds inputs (their leases, dispatch.py) while it keeps in touch. When a
container ends, its worker reports why (ContainerExited.cause): the input it was running failed
(it ran out of memory, or its container exited), the others it held never started, and one that
never connected counts as a start failure of its function.

Losses: a container whose connection closed while its worker's is closed too (the machine or
the worker died) is given up at once, and its inputs go back to the queue; only a silent one
(frozen, or behind a broken network) waits for its lease to run out, and a worker silent for the
worker timeout is given up with all its containers. A container given up while it still talks
is fenced: its stream ends (it exits), and its worker is told to kill it, now or when it
registers again, so that it does not go on with inputs that now belong to others.
After a control-plane restart, the containers the store says were running are orphans until
they (and their workers) reconnect, or their lease runs out.

A worker is admitted, not trusted: its worker token bounds what it may offer, a worker id stays
with the token that first registered it, and it speaks only of its own containers. Each
container gets a credential of its own when it is asked for (auth.py), forgotten when it ends.
What each container reserves and the CPU time its worker says it used go to usage.py. A worker
whose containers keep failing is cordoned for a while (breaker.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from .._gpu import GpuAllocator
from ..proto import api_pb2
from .apps import Apps, FunctionState
from .auth import Forbidden, Identity, Token
from .breaker import Breaker
from .dispatch import Dispatch
from .execs import Execs
from .ledger import InputState
from .store import Store
from .usage import Usage

log = logging.getLogger("ember.server")

Output = api_pb2.Output
Cause = api_pb2.ContainerExited
STARTING = api_pb2.CONTAINER_STATE_STARTING
READY = api_pb2.CONTAINER_STATE_READY
DISCONNECTED = api_pb2.CONTAINER_STATE_DISCONNECTED
# Containers of a function that exit before they ever connect, in a row, before its calls fail.
MAX_START_FAILURES = 3
# What a container of a function with restrict_modal_access=True may still call of the client
# API: moving blobs (its large arguments and results, its volumes' files).
RESTRICTED_ALLOWED = ("BlobPut", "BlobGet", "BlobExists", "BlobUrl")
START_TIMEOUT = 60.0  # seconds a container may take to connect (or the worker timeout, if longer)


class WorkerState:
    __slots__ = ("backend", "backend_note", "boot_id", "connected", "containers", "cordon_reason", "cordoned_until",
                 "cpu", "draining", "end", "gpus", "labels", "last_seen", "memory_mb", "name", "own_network", "send",
                 "used_cpu", "used_memory_mb", "worker_id")

    def __init__(self, reg: api_pb2.WorkerRegister, send, now: float, end=None):
        self.worker_id = reg.worker_id
        self.boot_id = reg.boot_id
        self.name = reg.name
        self.cpu = reg.cpu
        self.memory_mb = reg.memory_mb
        self.send = send  # puts a WorkerCommand on its stream
        self.end = end    # end(why): ends its stream (it registers again)
        self.connected = True
        self.last_seen = now
        # Its containers (hold and release keep the sums of what they reserve, which placement
        # reads for every worker at every start: summing them there made starts O(containers)).
        self.containers: dict[str, ContainerState] = {}
        self.used_cpu = 0.0
        self.used_memory_mb = 0
        self.gpus = GpuAllocator(list(reg.gpus))
        self.backend = reg.backend
        self.backend_note = reg.backend_note
        self.own_network = reg.own_network  # its containers' ports do not collide
        self.labels = dict(reg.labels)  # `ember worker --label region=eu`: where region= places
        self.draining = False  # finishes what it runs, takes nothing new (`ember worker drain`)
        # Its containers kept failing: none is placed here until then (clock seconds; breaker.py).
        self.cordoned_until = 0.0
        self.cordon_reason = ""

    def cordoned(self, now: float) -> bool:
        return now < self.cordoned_until

    def free(self) -> tuple[float, int]:
        return self.cpu - self.used_cpu, self.memory_mb - self.used_memory_mb

    def hold(self, c: ContainerState):
        if c.container_id not in self.containers:
            self.containers[c.container_id] = c
            self.used_cpu += c.cpu
            self.used_memory_mb += c.memory_mb

    def release(self, c: ContainerState):
        if self.containers.pop(c.container_id, None) is not None:
            self.used_cpu -= c.cpu
            self.used_memory_mb -= c.memory_mb
            if not self.containers:
                self.used_cpu = 0.0  # no float residue once it is empty


_container_seq = itertools.count()


class ContainerState:
    __slots__ = ("container_id", "cpu", "end", "function", "held", "init_failed", "inputs_given", "last_seen",
                 "memory_mb", "memory_used", "reported", "requested_at", "resending", "send", "seq", "since", "state",
                 "stopping", "stop_why", "want", "worker")

    def __init__(self, container_id: str, function: FunctionState, worker: WorkerState, now: float):
        self.container_id = container_id
        self.function = function
        self.worker = worker
        self.state = STARTING         # an api_pb2.ContainerState: STARTING, READY or DISCONNECTED
        self.send = None              # puts a ContainerCommand on its stream, while connected
        self.end = None               # end(why): ends its stream, while connected (it exits)
        # After a reconnect: output batches it sends again, and the inputs its hello said it
        # holds; what else it held goes back to the queue once those batches came (dispatch.settle).
        self.resending = 0
        self.reported: set[str] = set()
        self.want = 0
        self.held: dict[str, InputState] = {}   # its leases, in the order they were handed over
        self.last_seen = now          # its last word: its leases last until lease_timeout after it
        # When it last went idle, or started its current input: its idle time or busy time.
        self.since = now
        self.requested_at = now
        res = function.definition.resources
        self.cpu = res.cpu
        self.memory_mb = res.memory_mb
        self.memory_used = 0  # bytes in use, as its worker last measured (every heartbeat); 0 until then
        self.stopping = False
        self.stop_why = ""  # why the control plane had it stop (or knows it will exit): its app's log says
        self.inputs_given = 0  # inputs handed to it: it retires at its function's inputs_per_container
        self.init_failed = False  # its function's code could not load: its exit is not its worker's fault
        self.seq = next(_container_seq)  # the order containers were made in: dispatch's order among equals


class Fleet:
    def __init__(self, store: Store, apps: Apps, dispatch: Dispatch, identity: Identity, *, lease_timeout: float,
                 worker_timeout: float, breaker: Breaker | None = None, clock=time.monotonic):
        self.store = store
        self.apps = apps
        self.dispatch = dispatch
        self.identity = identity
        self.lease_timeout = lease_timeout
        self.worker_timeout = worker_timeout
        self.clock = clock
        self.breaker = breaker or Breaker()
        # Seconds from asking for a container to its hello, smoothed: what a backlog is weighed
        # against (autoscaler.py).
        self.cold_start = 0.5
        self.on_cold_start = None  # observe(seconds from asking for a container to its being ready): metrics.py
        self._workers: dict[str, WorkerState] = {}
        self._containers: dict[str, ContainerState] = {}
        # Containers that existed before a restart and may still reconnect:
        # id -> (deadline, the inputs the store says it held).
        self._orphans: dict[str, tuple[float, list[InputState]]] = {}
        self._joined = asyncio.Event()  # set (and replaced) each time a worker connects
        # The control plane is stopping: streams that close now say nothing of their peers.
        self.closing = False
        self.usage = Usage(store, self, clock=clock)  # what containers use, per workspace (usage.py)
        self.execs = Execs()  # commands run in containers (`ember container exec`), relayed to their workers
        # Sandboxes (sandboxes.py) hear of their containers' ends: on_end(c, why, killed_for_memory)
        # once one ended or was given up.
        self.on_end = None

    # ---- after a restart

    def recover(self) -> set[str]:
        """The containers that were live: orphans until they reconnect or their lease expires."""
        deadline = self.clock() + self.lease_timeout
        live = set()
        for cid, fid, _, _, credential_hash in self.store.live_containers():
            live.add(cid)
            self._orphans[cid] = (deadline, [])
            fn = self.apps.function(fid)
            if fn is not None:
                self.identity.restore_container(cid, credential_hash, fn.app.workspace)
        return live

    def orphan_holds(self, container_id: str, inp: InputState):
        """The store says this orphan held the input: it may reconnect and finish it, or the lease expires."""
        self._orphans[container_id][1].append(inp)

    def is_orphan(self, container_id: str) -> bool:
        return container_id in self._orphans

    def _orphan_gone(self, container_id: str, reason: str):
        """A container from before a restart will not come back: requeue what it held."""
        self.store.container_exited(container_id, reason)
        self.identity.forget_container(container_id)
        _, inputs = self._orphans.pop(container_id, (0, []))
        for inp in inputs:
            if not inp.done and inp.container is None:
                self.dispatch.requeue(inp, lost=True)

    # ---- workers

    def admit(self, reg: api_pb2.WorkerRegister, token: Token):
        """Refuse a registration its token does not allow (Forbidden says why); validate.py has
        refused impossible amounts already."""
        if token.max_cpu is not None and reg.cpu > token.max_cpu:
            raise Forbidden(f"worker {reg.name} offers {reg.cpu} CPU, more than its token allows ({token.max_cpu})")
        if token.max_memory_mb is not None and reg.memory_mb > token.max_memory_mb:
            raise Forbidden(f"worker {reg.name} offers {reg.memory_mb} MiB, more than its token allows "
                            f"({token.max_memory_mb} MiB)")
        first = self.store.worker_token(reg.worker_id)
        holder = self.identity.tokens.get(first) if first else None
        if holder is not None and first != token.token_id and holder.revoked_at is None:
            raise Forbidden(f"worker id {reg.worker_id} belongs to another worker token")

    def worker_connected(self, reg: api_pb2.WorkerRegister, send, token_id: str, end=None) -> WorkerState:
        old = self._workers.get(reg.worker_id)
        self.store.upsert_worker(reg, token_id)
        w = WorkerState(reg, send, self.clock(), end)
        if old is not None:
            w.draining = old.draining
            if old.boot_id == reg.boot_id:  # a reconnect; a restarted worker starts with a clean slate
                w.cordoned_until, w.cordon_reason = old.cordoned_until, old.cordon_reason
            else:
                self.breaker.forget(reg.worker_id)
        self._workers[reg.worker_id] = w
        running = set(reg.running_container_ids)
        if old is not None:
            for c in list(old.containers.values()):
                if old.boot_id == reg.boot_id and c.container_id in running:
                    c.worker = w
                    w.hold(c)
                else:
                    # The worker restarted: whatever it ran before is gone.
                    self.lost(c, "its worker restarted")
        # Containers known from before a control-plane restart.
        for cid, fid, worker_id, boot_id, _ in self.store.live_containers():
            if worker_id != reg.worker_id or cid in self._containers:
                continue
            fn = self.apps.function(fid)
            if cid in running and boot_id == reg.boot_id and fn is not None:
                c = ContainerState(cid, fn, w, self.clock())
                c.state = DISCONNECTED
                self.add(c)
                # The inputs it held are claimed when the container says hello.
            else:
                self._orphan_gone(cid, "gone after a control-plane restart")
        # What it runs that is not known here was given up (its inputs went to others): fenced.
        for cid in running.difference(w.containers):
            log.warning("worker %s runs container %s, which was given up: it is told to kill it", reg.name, cid)
            send(_stop_command(cid, kill=True))
        log.info("worker %s connected (%.1f CPU, %d MiB)", reg.name, reg.cpu, reg.memory_mb)
        self._joined.set()
        self._joined = asyncio.Event()
        for fn in self.apps.functions():
            self.dispatch.dispatch(fn)
        return w

    def worker_seen(self, w: WorkerState):
        w.last_seen = self.clock()

    def worker_disconnected(self, w: WorkerState):
        self.execs.worker_lost(w)  # what it relayed of commands in its containers cannot go on
        if self._workers.get(w.worker_id) is w:
            w.connected = False
            w.last_seen = self.clock()
            log.warning("worker %s disconnected", w.name)
            if self.closing:
                return
            for c in list(w.containers.values()):
                if c.send is None:  # its own connection is closed too (or never opened)
                    self.lost(c, f"its connection and its worker {w.name}'s closed")

    async def worker_joined(self):
        """Wait until the next worker connects."""
        await self._joined.wait()

    def connected_workers(self) -> list[WorkerState]:
        return [w for w in self._workers.values() if w.connected]

    def workers(self) -> list[WorkerState]:
        return sorted(self._workers.values(), key=lambda w: w.name)

    def _by_name(self, name: str) -> WorkerState:
        for w in self._workers.values():
            if w.name == name:
                return w
        raise LookupError(f"there is no worker named {name!r} (see `ember worker list`)")

    def drain(self, name: str):
        """The worker takes nothing new: its containers finish what they run, then stop (inputs
        they held but had not started go back to the queue), and no new one is placed on it."""
        w = self._by_name(name)
        w.draining = True
        for c in list(w.containers.values()):
            self.stop(c, f"its worker {name} drains")
        log.info("worker %s drains", name)

    def remove(self, name: str):
        """Stop the worker's containers (their inputs go back to the queue) and forget it; a
        connected worker is told to exit."""
        w = self._by_name(name)
        del self._workers[w.worker_id]
        self.breaker.forget(w.worker_id)
        for c in list(w.containers.values()):
            self.lost(c, f"its worker {name} was removed")
        if w.connected:
            w.send(api_pb2.WorkerCommand(shutdown=api_pb2.Empty()))
        w.connected = False
        log.info("worker %s removed", name)

    def builder(self) -> WorkerState | None:
        """The connected worker to build an image on: the least busy, one not cordoned if there is one."""
        now = self.clock()
        return min((w for w in self.connected_workers() if not w.draining),
                   key=lambda w: (w.cordoned(now), len(w.containers)), default=None)

    def open_workers(self) -> list[WorkerState]:
        """The connected workers that take new containers: not draining, not cordoned."""
        now = self.clock()
        return [w for w in self.connected_workers() if not w.draining and not w.cordoned(now)]

    def unisolated_workers(self) -> list[str]:
        """The connected workers that run containers without isolation, and why."""
        return [f"{w.name}: {api_pb2.Backend.Name(w.backend).removeprefix('BACKEND_').lower()} backend, "
                f"{w.backend_note}" for w in self.connected_workers() if w.backend != api_pb2.BACKEND_CONTAINER]

    # ---- containers

    def containers(self) -> list[ContainerState]:
        """Every live container: starting, running or stopping, until its worker reports its end."""
        return list(self._containers.values())

    def container(self, container_id: str, workspace: str | None) -> ContainerState | None:
        """A live container; given a workspace, only one of that workspace (None: any, for an admin)."""
        c = self._containers.get(container_id)
        return c if c is not None and workspace in (None, c.function.app.workspace) else None

    def add(self, c: ContainerState, new: bool = False):
        """Track a container: one just placed (new), or one known from before a restart."""
        if new:
            self.usage.started(c)
        self._containers[c.container_id] = c
        c.function.containers[c.container_id] = c
        c.worker.hold(c)

    def _untrack(self, c: ContainerState):
        self.usage.ended(c)
        self.execs.container_gone(c.container_id)
        self.identity.forget_container(c.container_id)
        c.worker.gpus.release(c.container_id)
        self._containers.pop(c.container_id, None)
        c.function.containers.pop(c.container_id, None)
        c.worker.release(c)

    def container_connected(self, hello: api_pb2.ContainerHello, send, end=None) -> ContainerState | None:
        c = self._containers.get(hello.container_id)
        if c is None:
            return None
        c.send = send
        c.end = end
        c.last_seen = now = self.clock()
        if c.state == STARTING:
            c.function.start_failures = 0
            if not c.held:
                c.since = now  # idle from its first hello: its start is not idle time (scaledown_window)
            self.cold_start = 0.8 * self.cold_start + 0.2 * (now - c.requested_at)
            if self.on_cold_start is not None:
                self.on_cold_start(now - c.requested_at)
            image = c.function.definition.image.image_id
            c.function.app.log.event(f"container {c.container_id} started on worker {c.worker.name}"
                                     + (f" (image {image[:12]})" if image else "")
                                     + f" in {(now - c.requested_at) * 1000:.0f} ms", c.function.name, c.container_id)
        c.state = READY
        # After a reconnect (this control plane's restart, or a broken network). The inputs the
        # store says an orphan held are its own again: finished or not, their outputs may be
        # among those it sends again.
        if c.container_id in self._orphans:
            _, inputs = self._orphans.pop(c.container_id)
            for inp in inputs:
                if not inp.done and inp.container is None:
                    inp.container = c
                    c.held[inp.input_id] = inp
        held = set(hello.held_input_ids)
        for input_id in held.difference(c.held):
            inp = self.dispatch.ledger.open_input(input_id)
            if inp is not None and inp.container is None and inp.call.function is c.function:
                # Queued here, as the hint of who held it had not reached the store before a restart.
                inp.container = c
                c.held[input_id] = inp
            else:
                # Done, or another container's now: it must not go on with it.
                send(api_pb2.ContainerCommand(cancel_input_id=input_id))
        # What else it held goes back to the queue, once the outputs it sends again are in.
        c.reported = held
        c.resending = hello.resending
        if not c.resending:
            self.dispatch.settle(c)
        return c

    def is_connected(self, container_id: str) -> bool:
        """Whether the container has a stream open now."""
        c = self._containers.get(container_id)
        return c is not None and c.send is not None

    def check_access(self, container_id: str, rpc: str, request):
        """A container's call of the client API: refused (Forbidden) if its function has
        restrict_modal_access=True, but for blobs and the volumes mounted in it."""
        c = self._containers.get(container_id)
        d = c.function.definition if c is not None else None
        if d is None or not d.restrict_access or rpc in RESTRICTED_ALLOWED:
            return
        if rpc == "VolumeGet" and request.volume_id in d.volume_mounts.values():
            return
        read_only = set(d.read_only_volumes)
        if rpc == "VolumeCommit" and request.volume_id in [v for p, v in d.volume_mounts.items() if p not in read_only]:
            return
        raise Forbidden(f"{d.name} has restrict_modal_access=True: its containers may not call {rpc} (other "
                        "functions, dicts, queues, secrets and volumes not mounted in it are out of its reach)")

    def heartbeat(self, c: ContainerState):
        c.last_seen = self.clock()

    def container_disconnected(self, c: ContainerState, send):
        """Its stream closed: it exited (its worker will say why) or the network broke. Its
        leases last until the lease timeout, for it to reconnect, but when its worker's
        connection is closed too: then nobody will report its end, and it is given up now."""
        if c.send == send and c.container_id in self._containers:  # not replaced by a newer stream
            c.send = None
            c.end = None
            c.want = 0
            c.resending = 0
            c.state = DISCONNECTED
            c.last_seen = self.clock()
            if not c.worker.connected and not self.closing:
                self.lost(c, f"its connection and its worker {c.worker.name}'s closed")

    def container_init_failed(self, c: ContainerState, failure: api_pb2.ContainerInitFailure):
        fn = c.function
        fn.init_failure = failure
        c.init_failed = True
        log.warning("container %s could not load %s: %s", c.container_id, fn.name, failure.error)
        self.dispatch.fail_init(fn, list(c.held.values()))

    def container_cannot_start(self, c: ContainerState, error: str):
        """It cannot be given what it needs to start (a secret it names is gone): it stops, and
        the inputs waiting for its function fail with why. Unlike an init failure this is not
        kept: once the cause is mended (the secret made again), its next container starts."""
        log.warning("container %s of %s cannot start: %s", c.container_id, c.function.name, error)
        self.stop(c, f"it cannot start: {error}")
        self.dispatch.fail_init(c.function, list(c.held.values()), api_pb2.ContainerInitFailure(error=error))

    def container_exited(self, exited: api_pb2.ContainerExited, worker: WorkerState):
        container_id, reason, log_tail = exited.container_id, exited.reason, exited.log_tail
        c = self._containers.get(container_id)
        owner = c.worker.worker_id if c is not None else self._orphan_worker(container_id)
        if owner is None:
            return  # given up on already (lost), or never known: nothing to do
        if owner != worker.worker_id:
            log.warning("worker %s reported the exit of container %s, which runs on worker %s: ignored",
                        worker.name, container_id, c.worker.name if c is not None else owner)
            return
        if c is not None and exited.cpu_seconds:
            self.usage.cpu_used(c, exited.cpu_seconds)
        self._containers.pop(container_id, None)
        if container_id in self._orphans:
            self._orphan_gone(container_id, reason)
        else:
            self.store.container_exited(container_id, reason)
        if c is None:
            return
        self._untrack(c)
        fn = c.function
        fn.app.log.event(f"container {container_id} exited: {exit_cause(c, exited)}", fn.name, container_id)
        if fn.definition.sandbox and self.on_end is not None:
            self.on_end(c, exit_cause(c, exited), exited.cause == Cause.OUT_OF_MEMORY)
        if not c.stopping and not c.init_failed and exited.cause != Cause.OUT_OF_MEMORY:
            self._failed_on(c.worker, reason)
        if c.state == STARTING and not c.stopping:
            # It never connected: its image or its runtime could not start. Give up after a few.
            fn.start_failures += 1
            log.warning("container %s of %s failed to start: %s%s", container_id, fn.name, reason,
                        f"\n{log_tail}" if log_tail else "")
            if fn.start_failures >= MAX_START_FAILURES or exited.cause == Cause.START_FAILED:
                fn.init_failure = api_pb2.ContainerInitFailure(
                    error=f"its container {reason}" + (f"; its last output:\n{log_tail}" if log_tail else "")
                    + _entrypoint_hint(fn.definition.image))
        held = list(c.held.values())
        # Stopping, it was cut short and its inputs go back to the queue; but a kill for memory is
        # its input's doing, even in a container stopping after its last input (single-use):
        # requeued, that input would kill each container it ran in, without end.
        if held and (not c.stopping or exited.cause == Cause.OUT_OF_MEMORY):
            # The first input it holds is the one it was running; the rest never started.
            running, held = held[0], held[1:]
            error = reason + (f"; its last output:\n{log_tail}" if log_tail else "")
            status = Output.OUT_OF_MEMORY if exited.cause == Cause.OUT_OF_MEMORY else Output.CONTAINER_EXITED
            log.warning("container %s of %s %s while running input %s", container_id, fn.name, error,
                        running.input_id)
            self.dispatch.fail(running, Output(
                input_id=running.input_id, idx=running.idx, status=status,
                error=f"its container {reason} while running this input (attempt {running.attempts})"))
        for inp in held:
            self.dispatch.requeue(inp, lost=False)
        if fn.app.running:
            self.dispatch.dispatch(fn)

    def _failed_on(self, w: WorkerState, why: str):
        """A container of w failed on its worker's account (it crashed, was killed, or could not
        start): the breaker counts it, and once w is cordoned its containers stop and their work
        goes to the other workers."""
        now = self.clock()
        others = any(o is not w for o in self.open_workers())
        if not self.breaker.failed(w, why, now, others):
            return
        for c in list(w.containers.values()):
            self.stop(c, f"its worker {w.name} was cordoned: its containers kept failing")
        for fn in self.apps.functions():
            self.dispatch.dispatch(fn)

    def container_usage(self, usage: api_pb2.ContainerUsage, worker: WorkerState):
        """The CPU time its running containers have used so far, and the memory they use, as the
        worker measured them."""
        for u in usage.containers:
            c = self._containers.get(u.container_id)
            if c is not None and c.worker is worker:  # a worker speaks only of its own
                self.usage.cpu_used(c, u.cpu_seconds)
                c.memory_used = u.memory_bytes

    def _orphan_worker(self, container_id: str) -> str | None:
        """The id of the worker a container from before a restart ran on."""
        for cid, _, worker_id, *_ in self.store.live_containers() if container_id in self._orphans else ():
            if cid == container_id:
                return worker_id
        return None

    def lost(self, c: ContainerState, why: str):
        """Give up on a container that vanished: its inputs go back to the queue. If it still
        talks, its stream ends (it exits) and its worker is told to kill it: fenced."""
        log.warning("container %s of %s is lost (%s): its inputs go back to the queue",
                    c.container_id, c.function.name, why)
        c.function.app.log.event(f"container {c.container_id} was lost ({why}): its inputs go back to the queue",
                                 c.function.name, c.container_id)
        self._untrack(c)
        self.store.container_exited(c.container_id, f"lost: {why}")
        if c.function.definition.sandbox and self.on_end is not None:
            self.on_end(c, f"was lost ({why}); a sandbox is not started again elsewhere", False)
        for inp in list(c.held.values()):
            self.dispatch.requeue(inp, lost=True)
        if c.send is not None and c.end is not None:
            c.end(f"container {c.container_id} was given up ({why}); its inputs went to other containers")
        c.send = None
        if c.worker.connected:
            c.worker.send(_stop_command(c.container_id, kill=True))

    def _give_up_silent(self, w: WorkerState):
        """A worker whose stream is open sent nothing for the worker timeout (it is frozen, or its
        network is): it cannot watch its containers, so they are given up (told to exit, and the
        worker to kill them when it reads again), and it must register again."""
        why = f"its worker {w.name} sent nothing for {self.worker_timeout:.0f}s"
        log.warning("worker %s sent nothing for %.0fs: its containers are given up", w.name, self.worker_timeout)
        del self._workers[w.worker_id]
        for c in list(w.containers.values()):
            self.lost(c, why)
        w.connected = False
        if w.end is not None:
            w.end(f"worker {w.name} sent nothing for {self.worker_timeout:.0f}s: its containers were given up; "
                  "register again")

    def stop(self, c: ContainerState, why: str, retiring: bool = False):
        """Ask its worker to stop it (why: in words, for its app's log), letting it finish what it
        runs. A retiring one (it ran its inputs_per_container) is marked stopping already, from its
        last input on."""
        if c.stopping and not retiring:
            return
        c.stopping = True
        c.stop_why = c.stop_why or why
        if c.worker.connected:
            c.worker.send(_stop_command(c.container_id, kill=False))

    def terminate(self, c: ContainerState):
        """Kill it now, whatever it runs (a call cancelled with terminate_containers=True)."""
        c.stopping = True
        c.stop_why = "killed: the call it ran was cancelled with terminate_containers=True"
        if c.worker.connected:
            c.worker.send(_stop_command(c.container_id, kill=True))

    def stop_containers(self, fn: FunctionState, why: str):
        for c in list(fn.containers.values()):
            self.stop(c, why)

    # ---- time-driven

    def tick(self, now: float):
        """Give up on workers and containers that went silent, or never came; try cordoned workers
        again once their cooldown is over."""
        for w in list(self._workers.values()):
            if w.cordoned_until and not w.cordoned(now):
                w.cordoned_until, w.cordon_reason = 0.0, ""
                log.info("worker %s is tried again: its cooldown is over", w.name)
                for fn in self.apps.functions():
                    self.dispatch.dispatch(fn)
            if not w.connected and now - w.last_seen > self.worker_timeout:
                del self._workers[w.worker_id]
                for c in list(w.containers.values()):
                    self.lost(c, f"its worker {w.name} is gone")
            elif now - w.last_seen > self.worker_timeout:
                self._give_up_silent(w)
        for c in list(self._containers.values()):
            if c.state == DISCONNECTED and now - c.last_seen > self.lease_timeout:
                self.lost(c, f"no contact for {self.lease_timeout:.0f}s")
            elif c.state == READY and now - c.last_seen > self.lease_timeout:
                self.lost(c, f"no heartbeat for {self.lease_timeout:.0f}s")
            elif c.state == STARTING and now - c.requested_at > max(START_TIMEOUT, self.worker_timeout):
                self.lost(c, f"it did not start within {START_TIMEOUT:.0f}s")
        for cid, (deadline, _) in list(self._orphans.items()):
            if now > deadline:
                self._orphan_gone(cid, "it did not reconnect after a control-plane restart")
                c = self._containers.get(cid)
                if c is not None:
                    self.lost(c, "it did not reconnect after a control-plane restart")


def exit_cause(c: ContainerState, exited: api_pb2.ContainerExited) -> str:
    """Why a container ended, in words, for its app's log: what its worker saw, and why the
    control plane had it stop if it did."""
    if exited.cause == Cause.OUT_OF_MEMORY:
        return f"killed for memory: it {exited.reason}"
    if exited.cause in (Cause.START_FAILED, Cause.WORKER_ERROR):
        return f"it {exited.reason}"
    if c.stop_why:
        return f"{c.stop_why} (it {exited.reason})"
    if c.init_failed:
        return f"its function's code failed to load (it {exited.reason})"
    if exited.exit_code:
        return f"crashed: it {exited.reason}"
    return f"it {exited.reason}"


def _stop_command(container_id: str, kill: bool) -> api_pb2.WorkerCommand:
    return api_pb2.WorkerCommand(stop_container=api_pb2.StopContainer(container_id=container_id, kill=kill))


def _entrypoint_hint(image: api_pb2.Image) -> str:
    """For a container that never connected: its image's entrypoint, which may not run the
    runtime it is given."""
    entrypoint = [list(s.args) for s in image.steps if s.kind == api_pb2.ImageStep.ENTRYPOINT]
    if not entrypoint or not entrypoint[-1]:
        return ""
    return (f"\n(its image's entrypoint {entrypoint[-1]} runs Ember's runtime as its arguments: a script must end "
            'with exec "$@"; Image.entrypoint([]) runs the runtime directly)')
