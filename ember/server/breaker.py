"""The workers' circuit breaker: a worker whose containers keep failing is cordoned for a while.

A container that fails on its worker's account (it could not start, or it ended without being
asked: crashed, killed, never connected) counts against its worker; a user's exception does not,
and neither does running out of its memory limit (the function's own size). After `after` such
failures within `window` seconds, the worker is cordoned for `cooldown` seconds: no new container
is placed there, and its containers stop (inputs they held but had not started go to the queue,
for other workers). Once the cooldown is over it is tried again, with a clean count (and a worker
that restarts starts with one too: fleet.py). The last
worker that could take work is never cordoned: then the fault is likelier the function's than the
worker's, and cordoning would stop everything.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fleet import WorkerState

log = logging.getLogger("ember.server")

DEFAULT_AFTER = 5
DEFAULT_WINDOW = 300.0
DEFAULT_COOLDOWN = 300.0


class Breaker:
    def __init__(self, after: int = DEFAULT_AFTER, window: float = DEFAULT_WINDOW,
                 cooldown: float = DEFAULT_COOLDOWN):
        self.after = after  # 0: never cordon
        self.window = window
        self.cooldown = cooldown
        self._failures: dict[str, collections.deque[float]] = {}  # worker id -> when its containers failed

    def failed(self, w: WorkerState, why: str, now: float, others_open: bool) -> bool:
        """A container of w failed on its worker's account; True if w is cordoned now (others_open:
        another connected worker could take its work)."""
        if self.after <= 0 or w.cordoned(now):
            return False
        times = self._failures.setdefault(w.worker_id, collections.deque())
        times.append(now)
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) < self.after:
            return False
        if not others_open:
            log.warning("worker %s: %d containers failed within %.0fs, but no other worker can take its work: "
                        "not cordoned", w.name, len(times), self.window)
            return False
        times.clear()
        w.cordoned_until = now + self.cooldown
        w.cordon_reason = f"{self.after} containers failed within {self.window:.0f}s (the last {why})"
        log.warning("worker %s is cordoned for %.0fs: %s", w.name, self.cooldown, w.cordon_reason)
        return True

    def forget(self, worker_id: str):
        self._failures.pop(worker_id, None)
