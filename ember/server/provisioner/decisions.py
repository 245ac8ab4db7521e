"""The provisioner's decisions, the same for every cluster manager: when to ask for a worker, of
what shape, when to let one go, and what to do when a request fails.

Demand is what placement could not place for want of room (placement.unplaced: a function's
container that no connected worker has the CPU, memory or GPU for), not a quota or a region;
and an image build waiting for a worker while none is connected or coming.
Each pass, every such container is first counted against the room of the workers asked for and
not yet connected; one that fits in none gets a new worker of the smallest shape that holds it
(at least --worker-cpu/--worker-memory), up to --max-workers jobs in all. So a backlog grows the
pool one worker at a time per function per pass: once a worker connects, the autoscaler fills
it, and asks again only if it still has no room.

A provisioned worker with no container for the idle window is removed from the fleet, which
tells it to exit (its job then ends); a job still there RETIRE_GRACE later is cancelled. A job
that the cluster manager refuses, that ends before its worker connects, or whose worker does not
connect within the start timeout is reported (the log and `ember worker list`), and its shape is
tried again after a backoff that doubles up to BACKOFF_MAX; other shapes go on meanwhile. Each
job has a worker token of its own, bounded by its shape and revoked when the job ends.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import secrets
import time

from ..auth import ADMIN, MAIN, WORKER, Identity, Principal
from ..fleet import Fleet, WorkerState
from ..builds import Builds
from ..placement import Placement
from ..apps import Apps
from .base import JOB_LABEL, PENDING, Backend, ProvisionError, Shape, WorkerSpec, gpu_count

log = logging.getLogger("ember.server")

PASS_EVERY = 1.0        # seconds between passes
UNPLACED_FRESH = 5.0    # seconds a placement failure stays demand (placement retries it every tick)
BACKOFF_FIRST, BACKOFF_MAX = 2.0, 300.0  # seconds before a failed shape is asked for again
RETIRE_GRACE = 30.0     # seconds a retired worker's job has to end by itself before it is cancelled
FAILURES_SHOWN = 5      # failed requests `ember worker list` shows, the latest first
FAILURE_SHOWN_FOR = 600.0
ROOT = Principal(ADMIN, MAIN, "")  # the control plane itself, making and revoking jobs' tokens


@dataclasses.dataclass(slots=True)
class Job:
    """A worker asked of the cluster manager, from the request until its job ends."""
    name: str
    shape: Shape
    token_id: str
    asked_at: float
    job_id: str = ""
    state: str = PENDING
    reason: str = ""                 # the cluster manager's, e.g. why it is still pending
    connected: bool = False          # its worker has connected (at least once)
    seen_at: float = 0.0             # when its worker was last seen connected
    idle_since: float | None = None
    retired_at: float | None = None  # when it was let go: its worker told to exit, or its job cancelled


@dataclasses.dataclass(slots=True)
class Room:
    """What is left of a worker's shape once the containers counted against it are taken out."""
    shape: Shape
    cpu: float = 0.0
    memory_mb: int = 0
    gpus: int = 0

    def take(self, res) -> bool:
        """Count a container against it, if it fits."""
        if not self.shape.holds(res, (self.cpu, self.memory_mb, self.gpus)):
            return False
        self.cpu += res.cpu
        self.memory_mb += res.memory_mb
        self.gpus += gpu_count(res)
        return True


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    name: str
    shape: Shape
    why: str
    at: float  # unix seconds


class Provisioner:
    def __init__(self, backend: Backend, fleet: Fleet, apps: Apps, placement: Placement, builds: Builds,
                 identity: Identity, *,
                 max_workers: int, server_url: str, floor: Shape, idle_window: float, start_timeout: float,
                 worker_backend: str, command: tuple[str, ...], env: dict[str, str] | None = None, ca_file: str = "",
                 clock=time.monotonic):
        self.backend = backend
        self.fleet = fleet
        self.apps = apps
        self.placement = placement
        placement.unplaced = {}  # placement notes what it cannot place from now on
        self.builds = builds
        self.identity = identity
        self.max_workers = max_workers
        self.server_url = server_url
        self.floor = floor
        self.idle_window = idle_window
        self.start_timeout = start_timeout
        self.worker_backend = worker_backend
        self.command = command
        self.env = dict(env or {})
        self.ca_file = ca_file
        self.clock = clock
        self.jobs: dict[str, Job] = {}  # by worker name
        self.failures: collections.deque[Failure] = collections.deque(maxlen=FAILURES_SHOWN)
        self._backoff: dict[Shape, tuple[float, float]] = {}  # shape -> (not before, last delay)
        self._said_full = 0.0

    async def run(self):
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("the %s provisioner's pass failed", self.backend.kind)
            await asyncio.sleep(PASS_EVERY)

    async def step(self):
        """One pass: follow the jobs, then ask for what the unplaced containers need."""
        self._adopt()
        if self.jobs:
            try:
                alive = await asyncio.to_thread(self.backend.jobs, [j.job_id for j in self.jobs.values()])
            except ProvisionError as e:
                log.warning("cannot list %s jobs (retrying): %s", self.backend.kind, e)
                return
            await self._follow(alive, self.clock())
        for shape in self._wanted(self.clock()):
            await self._submit(shape)

    # ---- following the jobs

    def _adopt(self):
        """Workers this control plane provisioned before it restarted: it follows them again
        (their job id is in their label), so that they count and retire as before."""
        prefix = self.backend.kind + ":"
        for w in self.fleet.connected_workers():
            job = w.labels.get(JOB_LABEL, "")
            if job.startswith(prefix) and w.name not in self.jobs:
                self.jobs[w.name] = Job(w.name, Shape(int(w.cpu), w.memory_mb), self.fleet.store.worker_token(
                    w.worker_id) or "", self.clock(), job_id=job[len(prefix):], connected=True, seen_at=self.clock())
                log.info("following %s job %s again (worker %s)", self.backend.kind, job[len(prefix):], w.name)

    async def _follow(self, alive: dict[str, tuple[str, str]], now: float):
        for job in list(self.jobs.values()):
            w = self._worker(job.name)
            if job.job_id not in alive:
                self._ended(job, now)
                continue
            job.state, job.reason = alive[job.job_id]
            if w is not None:
                if not job.connected:
                    job.connected = True
                    self._backoff.pop(job.shape, None)
                    log.info("worker %s connected from %s job %s", job.name, self.backend.kind, job.job_id)
                job.seen_at = now
                if job.retired_at is None:
                    self._retire_if_idle(job, w, now)
            if job.retired_at is not None:
                if now - job.retired_at > RETIRE_GRACE:
                    await self._cancel(job)
                    job.retired_at = now  # cancelled: it ends soon (else it is cancelled again)
            elif not job.connected and now - job.asked_at > self.start_timeout:
                await self._cancel(job)
                job.retired_at = now
                self._failed(job.name, job.shape, f"its {self.backend.kind} job {job.job_id} did not start a worker "
                             f"within {self.start_timeout:.0f}s ({job.state}{f': {job.reason}' if job.reason else ''});"
                             " it was cancelled", now)
            elif w is None and job.connected and now - job.seen_at > self.start_timeout:
                log.warning("worker %s has been disconnected for %.0fs while its %s job %s runs: the job is cancelled",
                            job.name, now - job.seen_at, self.backend.kind, job.job_id)
                await self._cancel(job)
                job.retired_at = now

    def _retire_if_idle(self, job: Job, w: WorkerState, now: float):
        if w.containers or any(b.worker is w for b in self.builds.by_id.values()):  # running or building
            job.idle_since = None
            return
        job.idle_since = job.idle_since if job.idle_since is not None else now
        if now - job.idle_since >= self.idle_window:
            log.info("worker %s (%s job %s) idle for %.0fs: told to exit", job.name, self.backend.kind, job.job_id,
                     self.idle_window)
            job.retired_at = now
            self.fleet.remove(job.name)

    def _ended(self, job: Job, now: float):
        del self.jobs[job.name]
        self._revoke(job)
        if job.connected or job.retired_at is not None:  # let go, or reported already
            log.info("%s job %s of worker %s ended", self.backend.kind, job.job_id, job.name)
        else:
            self._failed(job.name, job.shape, f"its {self.backend.kind} job {job.job_id} ended before its worker "
                         "connected (see the job's output)", now)

    async def _cancel(self, job: Job):
        try:
            await asyncio.to_thread(self.backend.cancel, job.job_id)
        except ProvisionError as e:
            log.warning("cannot cancel %s job %s: %s", self.backend.kind, job.job_id, e)

    def _worker(self, name: str) -> WorkerState | None:
        return next((w for w in self.fleet.connected_workers() if w.name == name), None)

    def _revoke(self, job: Job):
        if job.token_id in self.identity.tokens:
            self.identity.revoke(ROOT, job.token_id)

    def _failed(self, name: str, shape: Shape, why: str, now: float):
        _, last = self._backoff.get(shape, (0.0, 0.0))
        delay = min(BACKOFF_MAX, last * 2) if last else BACKOFF_FIRST
        self._backoff[shape] = (now + delay, delay)
        self.failures.appendleft(Failure(name, shape, why, time.time()))
        log.warning("worker %s (%s) failed to start: %s; a worker of that shape is asked for again in %.0fs", name,
                    shape.describe(), why, delay)

    # ---- asking for workers

    def _wanted(self, now: float) -> list[Shape]:
        """The shapes of the new workers that unplaced containers need, within --max-workers."""
        arriving = [Room(j.shape) for j in self.jobs.values() if not j.connected and j.retired_at is None]
        wanted: list[Room] = []
        if self.builds.waiting and not arriving and self.fleet.builder() is None and len(self.jobs) < self.max_workers:
            wanted.append(Room(self.floor))  # an image build waits for any worker
        for function_id, at in list(self.placement.unplaced.items()):
            fn = self.apps.function(function_id)
            if now - at > UNPLACED_FRESH or fn is None or not fn.app.running or fn.init_failure is not None:
                del self.placement.unplaced[function_id]
                continue
            res = fn.definition.resources
            if fn.definition.regions:
                continue  # a provisioned worker has no region: it would never take it
            if any(room.take(res) for room in arriving + wanted):
                continue
            shape = Shape.fitting(res, self.floor)
            if self._backoff.get(shape, (0.0, 0.0))[0] > now:
                continue
            if len(self.jobs) + len(wanted) >= self.max_workers:
                if now - self._said_full > 60:
                    self._said_full = now
                    log.info("inputs of %s wait for room, and %d workers (--max-workers) are asked for already",
                             fn.name, self.max_workers)
                continue
            wanted.append(Room(shape))
            wanted[-1].take(res)
        return [room.shape for room in wanted]

    async def _submit(self, shape: Shape):
        name = f"ember-{self.backend.kind}-{secrets.token_hex(4)}"
        token, secret = self.identity.new_token(ROOT, role=WORKER, name=f"{self.backend.kind} worker {name}",
                                                max_cpu=shape.cpu, max_memory_mb=shape.memory_mb)
        job = self.jobs[name] = Job(name, shape, token.token_id, self.clock())
        spec = WorkerSpec(name, shape, self.server_url, token.token_id, secret, self.worker_backend, self.command,
                          tuple(sorted(self.env.items())), self.ca_file)
        try:
            job.job_id = await asyncio.to_thread(self.backend.submit, spec)
        except ProvisionError as e:
            del self.jobs[name]
            self._revoke(job)
            self._failed(name, shape, f"{self.backend.kind} refused it: {e}", self.clock())
            return
        log.info("asked %s for worker %s (%s): job %s", self.backend.kind, name, shape.describe(), job.job_id)

    # ---- what `ember worker list` shows

    def describe(self, name: str) -> str:
        """A connected worker's job, if this provisioner asked for it ('' if not)."""
        job = self.jobs.get(name)
        return f"{self.backend.kind} job {job.job_id}" if job else ""

    def not_connected(self) -> list[tuple[str, Shape, str]]:
        """(name, shape, state) of the workers asked for and not connected, then of recent failures."""
        rows = [(j.name, j.shape, f"{self.backend.kind} job {j.job_id or '(submitting)'}: {j.state}"
                 + (f" ({j.reason})" if j.reason and j.reason != "None" else ""))
                for j in self.jobs.values() if not j.connected]
        cutoff = time.time() - FAILURE_SHOWN_FOR
        rows += [(f.name, f.shape, f"failed to start: {f.why}") for f in self.failures if f.at > cutoff]
        return rows

