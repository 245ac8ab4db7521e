"""Usage: what each workspace's containers used, per app and function, kept by the hour.

- CPU-seconds, used: measured by the worker (the container's cgroup; the process tree's times
  on the process backend), sent as a running total every few seconds and when the container
  ends; each report adds what is new since the one before.
- Memory GiB-seconds and GPU-seconds, reserved: what the container asked for, times how long it
  lived (from its placement until its end), counted here.
- Inputs run: the outputs its containers send.

Totals gather in memory and reach the store every few seconds (FLUSH_EVERY), added to hourly
buckets of (workspace, app name, function name); `ember usage` reads them, and they survive
restarts. What was used in the last few seconds before the control plane crashed, or while it
was down, is not counted.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from .._gpu import parse_request
from .store import Store

if TYPE_CHECKING:
    from .apps import FunctionState
    from .fleet import ContainerState, Fleet

FLUSH_EVERY = 5.0  # seconds between writes of the totals to the store
HOUR = 3600.0
BY = ("", "app", "function")


class _Meter:
    """What has been counted of one live container."""
    __slots__ = ("at", "cpu")

    def __init__(self, at: float, cpu: float | None):
        self.at = at    # when its reserved time was last counted
        self.cpu = cpu  # the CPU total it last reported; None: not known yet (it ran before a restart)


class Usage:
    def __init__(self, store: Store, fleet: Fleet, *, clock=time.monotonic, wall=time.time):
        self.store = store
        self.fleet = fleet
        self.clock = clock
        self.wall = wall
        self._meters: dict[str, _Meter] = {}
        # (workspace, app name, function name, hour) -> [cpu s, memory GiB s, GPU s, inputs], not yet stored
        self._pending: dict[tuple[str, str, str, float], list[float]] = {}
        self._flushed_at = clock()

    def _add(self, fn: FunctionState, i: int, amount: float):
        if amount <= 0:
            return
        key = (fn.app.workspace, fn.app.name, fn.name, self.wall() // HOUR * HOUR)
        self._pending.setdefault(key, [0.0, 0.0, 0.0, 0])[i] += amount

    def _meter(self, c: ContainerState) -> _Meter:
        m = self._meters.get(c.container_id)
        if m is None:  # a container from before a restart: counted from now on
            m = self._meters[c.container_id] = _Meter(self.clock(), None)
        return m

    def _reserved(self, c: ContainerState, now: float):
        """Count its reserved memory and GPUs up to now."""
        m = self._meter(c)
        seconds, m.at = max(0.0, now - m.at), now
        res = c.function.definition.resources
        self._add(c.function, 1, c.memory_mb / 1024 * seconds)
        self._add(c.function, 2, (parse_request(res.gpu)[1] if res.gpu else 0) * seconds)

    # ---- what the fleet and dispatch tell

    def started(self, c: ContainerState):
        """A container was just placed: everything it uses from now on is counted."""
        self._meters[c.container_id] = _Meter(self.clock(), 0.0)

    def cpu_used(self, c: ContainerState, total: float):
        """The container's worker says it has used `total` CPU-seconds since it started."""
        if not math.isfinite(total) or total < 0:
            return  # not a measurement: it must not poison the totals
        m = self._meter(c)
        if m.cpu is not None:
            self._add(c.function, 0, total - m.cpu)
        m.cpu = total if m.cpu is None else max(m.cpu, total)

    def cpu_seconds(self, container_id: str) -> float | None:
        """The CPU time a live container has used, as its worker last said (None: not known yet)."""
        m = self._meters.get(container_id)
        return None if m is None else m.cpu

    def ended(self, c: ContainerState):
        self._reserved(c, self.clock())
        self._meters.pop(c.container_id, None)

    def inputs_run(self, fn: FunctionState, n: int):
        self._add(fn, 3, n)

    # ---- to the store, and back

    def tick(self, now: float):
        if now - self._flushed_at >= FLUSH_EVERY:
            self.flush()

    def flush(self):
        """Count every live container's reserved time so far, and add the totals to the store."""
        now = self._flushed_at = self.clock()
        for c in self.fleet.containers():
            self._reserved(c, now)
        if self._pending:
            rows = [(*key, *values) for key, values in self._pending.items()]
            self._pending.clear()
            self.store.add_usage(rows)

    def report(self, workspace: str | None, since: float, by: str) -> list[tuple]:
        """Totals since `since` (unix seconds, from the start of its hour) of one workspace (None:
        each), per workspace, app or function: (workspace, app, function, cpu s, memory GiB s, GPU s, inputs)."""
        if by not in BY:
            raise ValueError(f"usage by {by!r}: give app or function (or nothing: per workspace)")
        self.flush()  # what is not stored yet counts too (the store's reads see what it has not committed)
        totals: dict[tuple[str, str, str], list[float]] = {}
        for ws, app, fn, *values in self.store.usage(workspace, since // HOUR * HOUR):
            key = (ws, app if by else "", fn if by == "function" else "")
            row = totals.setdefault(key, [0.0, 0.0, 0.0, 0])
            for i, v in enumerate(values):
                row[i] += v
        return [(*key, cpu, mem, gpu, int(inputs)) for key, (cpu, mem, gpu, inputs) in sorted(totals.items())]
