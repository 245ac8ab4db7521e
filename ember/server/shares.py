"""Quotas and fair sharing: whether a workspace may start another container now.

Quotas. An admin bounds a workspace (`ember workspace set W --max-containers N --max-cpu C
--max-memory M --max-gpus G`). A container that would take the workspace's live containers
(starting, running or stopping: each holds its resources until it ends) past one of them is not
started: its function's inputs wait in their queue, and start once the workspace's containers
end. Nothing fails for a quota.

Fair sharing, when the cluster is full: dominant resource fairness between workspaces. A
workspace's share is the largest fraction of the connected workers' CPU, memory or GPUs that
its live containers reserve. A function whose container finds no room says so (`wants_room`);
while it waits,
  - room goes to the waiting workspace with the lowest share first: a workspace with a higher
    share is not given a container meanwhile (`must_wait`), so room that frees goes to it;
  - a container of another workspace that is idle (it finished an input and asks for the next)
    stops instead (`yield_if_over`) when that workspace's share without it would still be at
    least the waiting workspace's share with the container it wants. The room then moves over
    within a container's stop and start, whatever the order of submission; and since no move
    goes past the point where the two shares cross, containers do not move back and forth.
Within one workspace no share is at stake: a container idle for IDLE_BEFORE_MAKING_ROOM, of a
function with nothing queued, stops for a function of its workspace that waits for the room
(`waiting_in_own_workspace`; the autoscaler asks, since it knows which idle containers its
min_containers and buffer_containers keep), rather than holding it for its whole scaledown_window.
A function counts as waiting only while it keeps asking (its autoscaler asks every tick, for queued
inputs or for the min_containers it is short of), and only if its container fits some connected
worker when empty: one that fits none holds no one back.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .._gpu import parse_request
from .auth import Identity

if TYPE_CHECKING:
    from .apps import FunctionState
    from .fleet import ContainerState, Fleet

log = logging.getLogger("ember.server")

WAIT_TTL = 2.0  # seconds a function counts as waiting after it last asked for room
# Seconds an idle container waits before it gives its room to another function of its workspace:
# calls that come one after another (a loop of .remote()) keep their warm container.
IDLE_BEFORE_MAKING_ROOM = 1.0
EPSILON = 1e-9


def need(fn: FunctionState) -> tuple[int, float, int, int]:
    """What one container of the function reserves: (containers, CPU, memory MiB, GPUs)."""
    res = fn.definition.resources
    return 1, res.cpu, res.memory_mb, parse_request(res.gpu)[1] if res.gpu else 0


def short_of_min_containers(fn: FunctionState) -> bool:
    """Its min_containers ask for room as queued inputs do."""
    return sum(1 for c in fn.containers.values() if not c.stopping) < fn.definition.min_containers


class Shares:
    def __init__(self, identity: Identity, fleet: Fleet, *, clock=time.monotonic):
        self.identity = identity
        self.fleet = fleet
        self.clock = clock
        # Functions whose container found no room: function_id -> (function, when it last asked).
        self._waiting: dict[str, tuple[FunctionState, float]] = {}

    # ---- what workspaces hold

    def held(self, workspace: str, *, leaving: bool = True) -> list[float]:
        """[containers, CPU, memory MiB, GPUs] the workspace's live containers reserve; without
        those already stopping if not `leaving` (their room is on its way to someone else)."""
        total = [0, 0.0, 0, 0]
        for c in self.fleet.containers():
            if c.function.app.workspace == workspace and (leaving or not c.stopping):
                for i, v in enumerate(need(c.function)):
                    total[i] += v
        return total

    def share(self, held) -> float:
        """The dominant share of the cluster that `held` is: its largest fraction of any resource."""
        workers = self.fleet.connected_workers()
        cpu = sum(w.cpu for w in workers)
        mem = sum(w.memory_mb for w in workers)
        gpus = sum(len(w.gpus.kinds) for w in workers)
        return max(held[1] / cpu if cpu else 0.0, held[2] / mem if mem else 0.0, held[3] / gpus if gpus else 0.0)

    # ---- before a container starts

    def quota_refusal(self, fn: FunctionState) -> str | None:
        """Why another container of the function would exceed its workspace's quotas, or None."""
        ws = self.identity.workspace(fn.app.workspace)
        if ws is None:
            return None
        limits = (ws.max_containers, ws.max_cpu, ws.max_memory_mb, ws.max_gpus)
        if all(limit is None for limit in limits):
            return None
        held, one = self.held(ws.name), need(fn)
        for limit, h, n, what in zip(limits, held, one, ("containers", "CPU", "MiB of memory", "GPUs")):
            if limit is not None and n and h + n > limit + EPSILON:
                if n > limit + EPSILON:
                    return (f"one of its containers needs {n:g} {what}, more than workspace {ws.name}'s quota of "
                            f"{limit:g} allows: they wait until an admin raises it (`ember workspace set`)")
                return f"workspace {ws.name} uses {h:g} of its quota of {limit:g} {what}"
        return None

    def must_wait(self, fn: FunctionState) -> str | None:
        """Why the function may not start a container now (its quota, or a workspace with a
        smaller share waiting for room), or None."""
        refusal = self.quota_refusal(fn)
        if refusal is not None:
            return refusal
        mine = fn.app.workspace
        others = self._waiting_workspaces(exclude=mine)
        if not others:
            return None
        my_share = self.share(self.held(mine))
        for other in others:
            if self.share(self.held(other)) < my_share - EPSILON:
                self.wants_room(fn)  # it waits for room too, behind the other
                return f"workspace {other}, with a smaller share of the cluster, waits for room first"
        return None

    def wants_room(self, fn: FunctionState):
        """The function's container found no room: its workspace waits (if it could fit at all)."""
        cpu, mem = fn.definition.resources.cpu, fn.definition.resources.memory_mb
        gpu = fn.definition.resources.gpu
        if any(w.cpu + EPSILON >= cpu and w.memory_mb >= mem and (not gpu or w.gpus.can_ever_satisfy(gpu))
               for w in self.fleet.connected_workers() if not w.draining):
            self._waiting[fn.function_id] = (fn, self.clock())

    def started(self, fn: FunctionState):
        """A container of the function was placed: it waits no more (until it asks again)."""
        self._waiting.pop(fn.function_id, None)

    # ---- idle containers of workspaces above their share

    def yield_if_over(self, c: ContainerState) -> bool:
        """Stop the idle container if a waiting workspace should have its room instead (see the
        module's doc); True if it was stopped."""
        if c.held or c.stopping or not self._waiting:
            return False
        mine = c.function.app.workspace
        waiting = self._waiting_functions(exclude=mine)
        if not waiting:
            return False
        held = self.held(mine, leaving=False)
        without = self.share([h - n for h, n in zip(held, need(c.function))])
        free_cpu, free_mem = c.worker.free()
        for fn in waiting:
            res = fn.definition.resources
            if (free_cpu + c.cpu + EPSILON < res.cpu or free_mem + c.memory_mb < res.memory_mb
                    or (res.gpu and not c.worker.gpus.can_ever_satisfy(res.gpu))):
                continue  # its room would not be enough for that function's container
            theirs = self.share([h + n for h, n in zip(self.held(fn.app.workspace, leaving=False), need(fn))])
            if theirs <= without + EPSILON:
                log.info("container %s of %s (workspace %s) stops: workspace %s, with a smaller share of the "
                         "cluster, waits for room", c.container_id, c.function.name, mine, fn.app.workspace)
                self.fleet.stop(c, f"it made room for workspace {fn.app.workspace}, with a smaller share of the "
                                "cluster")
                return True
        return False

    def waiting_in_own_workspace(self, c: ContainerState) -> FunctionState | None:
        """A function of the idle container's workspace that waits for the room its stop would give
        on its worker; None also when the room that containers stopping there give is enough for
        it already (one container waiting stops one idle container, not every idle one)."""
        if c.held or c.stopping or not self._waiting or self.clock() - c.since < IDLE_BEFORE_MAKING_ROOM:
            return None
        mine = c.function.app.workspace
        free_cpu, free_mem = c.worker.free()
        for other in c.worker.containers.values():
            if other.stopping:
                free_cpu += other.cpu
                free_mem += other.memory_mb
        for fn in self._waiting_functions():
            res = fn.definition.resources
            if fn.app.workspace != mine or fn is c.function:
                continue
            if res.gpu and not c.worker.gpus.can_ever_satisfy(res.gpu):
                continue
            if free_cpu + EPSILON >= res.cpu and free_mem >= res.memory_mb:
                return None  # its room is on its way
            if free_cpu + c.cpu + EPSILON >= res.cpu and free_mem + c.memory_mb >= res.memory_mb:
                return fn
        return None

    def _waiting_functions(self, exclude: str | None = None) -> list[FunctionState]:
        """The functions that wait for room now, but exclude's, forgetting those that stopped asking."""
        now = self.clock()
        found = []
        for fid, (fn, when) in list(self._waiting.items()):
            if now - when > WAIT_TTL or not (fn.pending or short_of_min_containers(fn)) or not fn.app.running:
                del self._waiting[fid]
            elif fn.app.workspace != exclude:
                found.append(fn)
        return found

    def _waiting_workspaces(self, exclude: str) -> list[str]:
        return sorted({fn.app.workspace for fn in self._waiting_functions(exclude)})
