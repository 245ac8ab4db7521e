"""The autoscaler: how many containers each function needs.

A backlog gets the containers it needs at once: before any input of the function has finished,
one for each input queued or running (target_inputs each, @ember.concurrent), as Modal does,
started as many at a time as the workers have cores (more when cold starts are measured
short, as forks are); once timings come, as many as drain the
backlog within a cold start. Always up to its max_containers
(and the workers' room, placement.py, and its workspace's quotas and fair share, shares.py).
It keeps min_containers started even with no input, and a container idle for the function's
scale-down window (counted from its first hello) stops, down to min_containers; an idle one
stops sooner when another workspace waits for its room, and those beyond a max_containers
lowered at run time stop at once. While a function is busy (inputs queued or running), it keeps
buffer_containers idle containers beyond those that run inputs, ready for a burst.
"""

import logging
import math
import time

from .apps import FunctionState
from .fleet import READY, STARTING, ContainerState, Fleet
from .placement import Placement
from .shares import Shares

log = logging.getLogger("ember.server")

# Weighing a backlog walks all of a function's containers. Dispatch asks for it whenever inputs are
# left queued, which a large busy function does at every output: beyond this many containers,
# it is weighed at most every WEIGH_EVERY seconds between ticks.
WEIGH_AT_ONCE_UP_TO = 100
WEIGH_EVERY = 0.05
# A cold start this long (the fleet's guess before it has measured any) is taken to be all CPU: a
# new interpreter importing its libraries, one per core at a time. Cold starts measured shorter
# (a fork of a warm parent: tens of ms, mostly round trips) leave the cores mostly idle, and
# that many more of them start at once per core: else a backlog of 100 forks starts 2 at a time.
CPU_BOUND_START = 0.5


class Autoscaler:
    def __init__(self, fleet: Fleet, placement: Placement, shares: Shares, *, clock=time.monotonic):
        self.fleet = fleet
        self.placement = placement
        self.shares = shares
        self.clock = clock

    def backlog(self, fn: FunctionState):
        """Dispatch left inputs queued: start containers for them if they need more."""
        now = self.clock()
        if len(fn.containers) > WEIGH_AT_ONCE_UP_TO and now - fn.weighed_at < WEIGH_EVERY:
            return
        fn.weighed_at = now
        self.scale_up(fn)

    def scale_up(self, fn: FunctionState):
        """Start the containers its backlog needs, at once (the module's docstring says how many)."""
        if not fn.pending or not fn.app.running or fn.init_failure is not None or fn.definition.sandbox:
            return
        live = [c for c in fn.containers.values() if not c.stopping]
        n_live = len(live)
        limit = fn.definition.max_containers or 1_000_000
        outstanding = len(fn.pending) + sum(len(c.held) for c in live)
        per_container = max(1, fn.definition.target_inputs or fn.definition.max_inputs)
        # One container for each input it has no room for (Modal's rule): what a backlog needs
        # while nothing tells how long its inputs take. Concurrent ones hold target_inputs each.
        target = math.ceil(outstanding / per_container)
        est = self._exec_estimate(fn, live)
        if est is None:
            # But no more starting at once than the workers have cores: a start is mostly CPU, so
            # more would slow each other's, and the first timings with them. Short inputs then
            # drain on the first few, and long ones get a container each as fast as they start.
            # (More per core when cold starts are measured short: CPU_BOUND_START.)
            starting = sum(1 for c in live if c.state == STARTING)
            per_core = max(1, int(CPU_BOUND_START / max(self.fleet.cold_start, 1e-3)))
            target = min(target, n_live - starting + self._cores() * per_core)
        else:
            # Timings tell: as many as drain the backlog within a cold start. Short inputs drain
            # on the containers it has sooner than another would start.
            by_work = max(n_live, math.ceil(len(fn.pending) * est / self.fleet.cold_start))
            target = min(target, by_work) if per_container == 1 else max(target, by_work)
        target = min(target, limit, outstanding)
        for _ in range(target - n_live):
            if not self.placement.start_container(fn):
                break

    def tick(self, fn: FunctionState, now: float):
        """Scale down what is idle, up for a backlog, and keep min_containers warm."""
        if fn.definition.sandbox:
            return  # its one container is its sandbox's (sandboxes.py), however idle
        window = fn.definition.scaledown_window
        spare = self._idle(fn) - self._buffer(fn)  # idle ones beyond the buffer may stop
        for c in list(fn.containers.values()):
            if c.state != READY or c.held or c.stopping:
                continue
            if now - c.since > window and len(fn.containers) > fn.definition.min_containers and spare > 0:
                spare -= 1
                log.info("container %s of %s idle for %.0fs: stopping", c.container_id, fn.name, window)
                self.fleet.stop(c, f"scaled down: idle for {window:g}s (scaledown_window)")
            elif (spare > 0 and not fn.pending and len(fn.containers) > fn.definition.min_containers
                  and (waiting := self.shares.waiting_in_own_workspace(c)) is not None):
                spare -= 1
                log.info("container %s of %s stops: %s, of the same workspace, waits for its room",
                         c.container_id, fn.name, waiting.name)
                self.fleet.stop(c, f"it made room for {waiting.name}, of the same workspace, which waited for it")
            else:
                self.shares.yield_if_over(c)
        self._keep_within_max(fn)
        if fn.pending:
            self.scale_up(fn)
        self._keep_warm(fn)
        self._keep_buffer(fn)

    def _keep_within_max(self, fn: FunctionState):
        """Stop the containers beyond a max_containers lowered at run time (update_autoscaler):
        idle ones first, then the least busy, which finish what they hold."""
        limit = fn.definition.max_containers
        live = sorted((c for c in fn.containers.values() if not c.stopping), key=lambda c: (len(c.held), -c.seq))
        for c in live[:len(live) - limit] if limit else []:
            log.info("container %s of %s is beyond max_containers=%d: stopping", c.container_id, fn.name, limit)
            self.fleet.stop(c, f"scaled down: beyond max_containers={limit}")

    def _keep_warm(self, fn: FunctionState):
        """Keep min_containers of a running app's function started, before any input asks."""
        want = fn.definition.min_containers
        if not want or not fn.app.running or fn.app.superseded or fn.init_failure is not None:
            return
        for _ in range(want - sum(1 for c in fn.containers.values() if not c.stopping)):
            if not self.placement.start_container(fn):
                break

    def _buffer(self, fn: FunctionState) -> int:
        """The idle containers it keeps now: buffer_containers while it has inputs queued or running."""
        busy = any(not i.done for i in fn.pending) or any(c.held for c in fn.containers.values())
        return fn.definition.buffer_containers if busy else 0

    def _idle(self, fn: FunctionState) -> int:
        """Its containers that run nothing and take inputs (starting ones will)."""
        return sum(1 for c in fn.containers.values() if not c.held and not c.stopping)

    def _keep_buffer(self, fn: FunctionState):
        """Start containers until a busy function has buffer_containers idle ones, within max_containers."""
        if not fn.app.running or fn.app.superseded or fn.init_failure is not None:
            return
        live = sum(1 for c in fn.containers.values() if not c.stopping)
        room = (fn.definition.max_containers or 1_000_000) - live
        for _ in range(min(room, self._buffer(fn) - self._idle(fn))):
            if not self.placement.start_container(fn):
                break

    def _cores(self) -> int:
        """The CPU cores of the workers that take new containers (at least one)."""
        return max(1, math.ceil(sum(w.cpu for w in self.fleet.open_workers())))

    def _exec_estimate(self, fn: FunctionState, live: list[ContainerState]) -> float | None:
        """Seconds a container spends per input, once one has finished (None before): measured,
        or more if the inputs running now have taken longer so far (a slow one tells)."""
        if fn.exec_ewma is None:
            return None
        now = self.clock()
        running = max(((now - c.since) / len(c.held) for c in live if c.held), default=0.0)
        return max(fn.exec_ewma, running)
