"""The control plane's working state and decisions, in parts, on one asyncio event loop.

Each concept has its module:
  auth.py        workspaces, tokens, and workers' and containers' credentials
  apps.py        apps, deployed versions, functions and class instances
  ledger.py      calls, inputs and outputs, durable; waiting for outputs
  dispatch.py    per-function queues, and the leases of inputs to containers (the one submit path)
  retries.py     whether and when a failed input runs again
  dead_letters.py  inputs that ended failed: what they kept, and running them again
  fleet.py       workers and containers: connects, exits, losses, orphans after a restart
  breaker.py     cordoning a worker whose containers keep failing, for a cooldown
  placement.py   which worker a new container goes to
  shares.py      quotas and fair sharing between workspaces: who may start a container now
  usage.py       what each workspace's containers used, by the hour (made by the fleet, which feeds it)
  autoscaler.py  how many containers a function needs
  web_routes.py  which function serves a URL label
  cron.py        scheduled runs
  logs.py        each app's log buffer and its followers
  builds.py      image builds on workers

The parts call each other's methods; this module makes them, with edges that point back
(new inputs go from the ledger to dispatch; a queue with work left asks the autoscaler for
containers, and an idle container asks shares whether to give its room to another workspace),
and runs what is driven by time (`tick`). Every state change that must survive a crash goes
through the Store before anyone is told about it.
"""

import logging
import time

from .apps import Apps, AppState
from .auth import Identity
from .blob_rights import BlobRights
from .autoscaler import Autoscaler
from .breaker import Breaker
from .builds import Builds
from .cron import Cron
from .dead_letters import DeadLetters
from .dispatch import Dispatch, call_later
from .fleet import Fleet
from .ledger import Ledger
from .placement import Placement
from .sandboxes import Sandboxes
from .snapshots import Snapshots
from .shares import Shares
from .store import Store
from .web_routes import WebRoutes

log = logging.getLogger("ember.server")


class Scheduler:
    def __init__(self, store: Store, *, lease_timeout: float, worker_timeout: float, app_timeout: float,
                 output_retention: float, log_retention: float = 24 * 3600,
                 breaker: Breaker | None = None, clock=time.monotonic, later=call_later):
        """clock: monotonic seconds; later(delay, callback): runs callback after delay (a retry's
        backoff). Both are the event loop's unless a test drives time itself."""
        self.store = store
        self.clock = clock
        self.identity = Identity(store)
        self.routes = WebRoutes()
        self.apps = Apps(store, self.routes, app_timeout=app_timeout, clock=clock)
        self.ledger = Ledger(store, self.apps, retention=output_retention, log_retention=log_retention,
                             clock=clock)
        self.blob_rights = BlobRights(store, self.apps)
        self.dispatch = Dispatch(store, self.ledger, clock=clock, later=later)
        self.fleet = Fleet(store, self.apps, self.dispatch, self.identity, lease_timeout=lease_timeout,
                           worker_timeout=worker_timeout, breaker=breaker, clock=clock)
        self.builds = Builds(store, self.fleet)
        self.shares = Shares(self.identity, self.fleet, clock=clock)
        self.placement = Placement(store, self.fleet, self.builds, self.identity, self.shares, clock=clock)
        self.autoscaler = Autoscaler(self.fleet, self.placement, self.shares, clock=clock)
        self.sandboxes = Sandboxes(self.apps, self.fleet, self.placement, clock=clock)
        self.snapshots = Snapshots(store, self.builds)
        self.cron = Cron(store, self.apps, self.ledger)
        self.dead_letters = DeadLetters(store, self.apps, self.ledger)
        self.ledger.dispatch = self.dispatch
        self.dispatch.autoscaler = self.autoscaler
        self.dispatch.shares = self.shares
        self.usage = self.dispatch.usage = self.fleet.usage
        self.provisioner = None  # with --provisioner: where new workers come from (provisioner/; main.py)

    def recover(self):
        """Load what was open when the control plane last stopped."""
        self.apps.recover()
        live = self.fleet.recover()
        for inp, container_id in self.ledger.recover():
            if container_id in live:
                self.fleet.orphan_holds(container_id, inp)
            else:
                self.dispatch.restore(inp)
        log.info("recovered %d apps, %d functions, %d containers", len(self.apps.listing()),
                 len(self.apps.functions()), len(live))

    def stop_app(self, app_id: str, reason: str = "the app was stopped"):
        """Stop an app: its calls and web requests end as cancelled, its containers stop."""
        app = self.apps.remove(app_id)
        if app is None:
            return
        self.sandboxes.app_stopped(app, reason)
        for fn in app.functions.values():
            self.ledger.cancel_calls(fn, reason)
            self.dispatch.cancel_web(fn, reason)
            self.fleet.stop_containers(fn, f"its app stopped: {reason}")
        app.log.close()
        log.info("app %s (%s) stopped: %s", app.name, app_id, reason)

    def tick(self):
        """Once a fraction of a second: expirations, scale-down, and scale-up of backlogs."""
        now = self.clock()
        for app in self.apps.listing():
            if app.superseded and not self._busy(app):
                self.stop_app(app.app_id, "a newer version was deployed and its calls are done")
            elif self.apps.silent(app, now):
                self.stop_app(app.app_id, f"its client sent no heartbeat for {self.apps.app_timeout:.0f}s")
        self.fleet.tick(now)
        self.sandboxes.tick(now)
        for fn in self.apps.functions():
            self.autoscaler.tick(fn, now)
        self.cron.run_due()
        self.ledger.forget_finished(now)
        self.usage.tick(now)

    def _busy(self, app: AppState) -> bool:
        """Whether the app may still run anything: a call that may take inputs or has open ones,
        or inputs queued or running (web requests among them)."""
        return self.ledger.busy(app) or any(self.dispatch.busy(fn) for fn in app.functions.values())
