"""Schedules: the functions of deployed apps that run on a cron or a period, each run a call.

When a schedule last ran is kept per (app name, function name), so that it outlives the app's
versions and the control plane's restarts; when it runs next is derived from that.
"""

import logging
import pickle
import time

from .._ids import new_id
from ..proto import api_pb2
from ..schedule import next_time
from .apps import Apps, FunctionState, named
from .ledger import Ledger
from .store import Store

log = logging.getLogger("ember.server")


class Cron:
    def __init__(self, store: Store, apps: Apps, ledger: Ledger):
        self.store = store
        self.apps = apps
        self.ledger = ledger
        # Scheduled functions, by (workspace, app name, function name): when they last ran
        # (durable), and when they run next (derived, cached).
        self._last_runs: dict[tuple[str, str, str], float] = store.schedule_runs()
        self._next_runs: dict[tuple[str, str, str], tuple] = {}

    def run_due(self):
        """Call the scheduled functions of deployed apps whose time has come: once per tick
        however many were missed (while the control plane was down, say)."""
        now = time.time()
        for app in self.apps.current_versions():
            for fn in list(app.functions.values()):
                sched = fn.definition.schedule
                if not (sched.cron or sched.period_seconds) or not named(fn.definition):
                    continue
                key = (app.workspace, app.name, fn.name)
                last = self._last_runs.get(key)
                if last is None:  # never ran: its time counts from the deploy (read once)
                    last = self._last_runs[key] = self.store.deployed_at(app.app_id)
                cached = self._next_runs.get(key)
                if cached is None or cached[:2] != (last, sched.SerializeToString()):
                    cached = self._next_runs[key] = (last, sched.SerializeToString(), next_time(sched, last))
                if now >= cached[2]:
                    self._run(fn, now)

    def next_run(self, fn: FunctionState) -> float | None:
        """When a scheduled function of a deployed app runs next (unix seconds), None if it is not one."""
        sched = fn.definition.schedule
        if not (sched.cron or sched.period_seconds) or not fn.app.deployed:
            return None
        last = self._last_runs.get((fn.app.workspace, fn.app.name, fn.name))
        return next_time(sched, last if last is not None else self.store.deployed_at(fn.app.app_id))

    def _run(self, fn: FunctionState, now: float):
        call_id = new_id("fc")
        # No arguments: pickle's own bytes for ((), {}), which the container unpickles as usual.
        args = api_pb2.Payload(data=pickle.dumps(((), {})))
        self.ledger.create_call(fn.app.workspace, fn.function_id, call_id, [api_pb2.Input(idx=0, args=args)],
                                complete=True, maybe_exists=False)
        self._last_runs[(fn.app.workspace, fn.app.name, fn.name)] = now
        self.store.set_schedule_run(fn.app.workspace, fn.app.name, fn.name, now)
        fn.app.log.event(f"scheduled run of {fn.name} ({call_id})", fn.name, call_id=call_id)
        log.info("schedule: %s.%s runs as %s", fn.app.name, fn.name, call_id)
