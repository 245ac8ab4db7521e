"""Apps and their functions: creating, deploying, draining and stopping apps, and finding the
function that takes a call, by name or by id.

An ephemeral app lives while its client sends heartbeats. A deployed app lives on without a
client, published as numbered versions of its name: the newest takes the calls, an older one
finishes what it runs and then stops. A class is a function with methods; each instance (its
parameters) is bound as a function of its own, with its own pool of containers.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING

from .._ids import new_id
from ..proto import api_pb2
from . import validate
from .logs import AppLog
from .store import Store
from .web_routes import WebRoutes

if TYPE_CHECKING:
    from .fleet import ContainerState
    from .ledger import InputState

log = logging.getLogger("ember.server")


def named(d: api_pb2.FunctionDefinition) -> bool:
    """Whether callers find a function by its name: not so a class instance bound to parameters,
    nor a variant with options of its own (with_options), reached through their handles only."""
    return not d.bound_params and not d.derived_from and not d.sandbox


def apply_options(d: api_pb2.FunctionDefinition, o: api_pb2.FunctionOptions):
    """A function's definition with what with_options (and friends) changed."""
    r = d.resources
    if o.HasField("cpu"):
        r.cpu, r.cpu_limit = o.cpu, 0  # as a plain cpu= of the function: reserved, no limit
    if o.HasField("memory_mb"):
        r.memory_mb = r.memory_limit_mb = o.memory_mb
    if o.HasField("gpu"):
        r.gpu = o.gpu
    if o.HasField("timeout"):
        d.timeout = o.timeout
    if o.HasField("retries"):
        d.retries.CopyFrom(o.retries)
    if o.replace_secrets:
        d.ClearField("secret_ids")
        d.secret_ids.extend(o.secret_ids)
    if o.replace_volumes:
        d.ClearField("volume_mounts")
        d.volume_mounts.update(o.volume_mounts)
        d.ClearField("read_only_volumes")
        d.read_only_volumes.extend(o.read_only_volumes)
    for f in ("scaledown_window", "min_containers", "max_containers", "buffer_containers", "max_inputs",
              "target_inputs", "batch_max_size", "batch_wait_ms"):
        if o.HasField(f):
            setattr(d, f, getattr(o, f))
    if o.HasField("max_inputs") and not o.HasField("target_inputs"):
        d.target_inputs = 0  # the parent's may exceed the new max_inputs
    if o.HasField("max_inputs") and o.max_inputs > 1:
        d.batch_max_size = d.batch_wait_ms = 0  # concurrent now, so no longer batched
    if o.HasField("batch_max_size") and o.batch_max_size:
        d.max_inputs, d.target_inputs = 0, 0  # batched now, so no longer concurrent


DURATIONS_KEPT = 256


class AppState:
    __slots__ = ("app_id", "deployed", "functions", "heartbeat_at", "log", "name", "running", "superseded",
                 "version", "workspace")

    def __init__(self, app_id: str, workspace: str, name: str, now: float, log: AppLog, deployed=False, version=0,
                 superseded=False):
        self.app_id = app_id
        self.workspace = workspace    # its owner: only callers of this workspace see it
        self.name = name
        self.deployed = deployed      # lives on without a client; versions replace each other
        self.version = version        # 0 until published
        self.superseded = superseded  # an old version: finishes its calls, then stops
        self.running = True           # False once stopped: its functions take no more work
        self.heartbeat_at = now
        self.functions: dict[str, FunctionState] = {}
        self.log = log

    def function_ids(self) -> dict[str, str]:
        """Its functions' ids by name (class instances' bound functions have none of their own)."""
        return {f.name: f.function_id for f in self.functions.values() if named(f.definition)}


class FunctionState:
    __slots__ = ("app", "capacity_warned", "completed", "containers", "definition", "dispatch_soon", "durations",
                 "exec_ewma", "failed", "function_id", "init_failure", "pending", "serves_web", "start_failures",
                 "wanting", "weighed_at")

    def __init__(self, function_id: str, app: AppState, definition: api_pb2.FunctionDefinition):
        self.function_id = function_id
        self.app = app
        self.definition = definition
        self.serves_web = bool(definition.web.kind or definition.web_methods)
        # Its inputs waiting for a container (dispatch.py's queue), and whether a dispatch is due
        # at the end of this loop iteration.
        self.pending: collections.deque[InputState] = collections.deque()
        self.dispatch_soon = False
        self.containers: dict[str, ContainerState] = {}  # the fleet's, for this function
        # Those of its containers that asked for inputs since they last had all they asked for
        # (dispatch.py): what a dispatch looks through, rather than every container of a large
        # function at every output. Some may have stopped wanting since: dispatch drops them.
        self.wanting: dict[str, ContainerState] = {}
        self.weighed_at = float("-inf")       # when the autoscaler last weighed its backlog (autoscaler.py)
        self.exec_ewma: float | None = None   # seconds per input, per container, as seen here
        # The same, per output batch, the latest ones: the dashboard's p50 and p99.
        self.durations: collections.deque[float] = collections.deque(maxlen=DURATIONS_KEPT)
        self.capacity_warned = 0.0            # when placement last said that no worker fits it
        self.init_failure: api_pb2.ContainerInitFailure | None = None  # its code cannot load: calls fail
        self.completed = 0  # inputs that ended with success, and otherwise (metrics.py)
        self.failed = 0
        self.start_failures = 0               # its containers that exited before connecting, in a row

    @property
    def name(self):
        return self.definition.name


class Apps:
    def __init__(self, store: Store, routes: WebRoutes, *, app_timeout: float, clock=time.monotonic):
        self.store = store
        self.routes = routes
        self.app_timeout = app_timeout
        self.clock = clock
        self.started_at = clock()
        self._apps: dict[str, AppState] = {}
        self._functions: dict[str, FunctionState] = {}  # of running apps
        # (workspace, deployed app name) -> the app id of its current version
        self._deployments: dict[tuple[str, str], str] = {}
        self._bound: dict[tuple[str, bytes], str] = {}  # (class function, parameters) -> its bound function

    def recover(self):
        """Load the apps that were running when the control plane last stopped, and their functions."""
        for app_id, workspace, name, deployed, version, state in self.store.running_apps():
            self._apps[app_id] = AppState(app_id, workspace, name, self.clock(),
                                          self._log(app_id, workspace, name, deployed), bool(deployed), version,
                                          state == "superseded")
            if deployed and version and state == "running":
                self._deployments[workspace, name] = app_id
        for fid, app_id, definition in self.store.functions_of_running_apps():
            if definition.sandbox:
                continue  # its sandbox ended with the control plane that held it
            app = self._apps[app_id]
            fn = self._add_function(fid, app, definition)
            if not app.deployed or self._deployments.get((app.workspace, app.name)) == app_id:
                self.routes.route(fn)

    # ---- apps

    def create_app(self, workspace: str, name: str, deployed: bool = False) -> str:
        app_id = new_id("ap")
        self.store.create_app(app_id, workspace, name, deployed)
        self._apps[app_id] = AppState(app_id, workspace, name, self.clock(), AppLog(
            self.store, app_id, workspace, name if deployed else ""), deployed)
        return app_id

    def _log(self, app_id: str, workspace: str, name: str, deployed) -> AppLog:
        """The log of an app that existed before: its lines go on from the last one kept."""
        return AppLog(self.store, app_id, workspace, name if deployed else "", self.store.last_log_seq(app_id))

    def deploy(self, app_id: str) -> int:
        """Publish a deployed app as the current version of its name; the previous version
        takes no new calls (they go to this one) and stops once its calls are done."""
        app = self._apps.get(app_id)
        if app is None or not app.deployed:
            raise LookupError(f"app {app_id} is not a running deployed app")
        key = (app.workspace, app.name)
        old = self._apps.get(self._deployments.get(key, ""))
        app.version = self.store.last_version(*key) + 1
        self._deployments[key] = app_id
        if old is not None:
            old.superseded = True
        for fn in app.functions.values():
            self.routes.route(fn)
        self.store.deploy_app(app_id, app.version, old.app_id if old else None)
        log.info("app %s deployed as version %d (%s)", app.name, app.version, app_id)
        return app.version

    def drain(self, app_id: str):
        """Stop an app once its running calls are done; it takes no new ones (`ember serve`
        drains the version it replaced)."""
        app = self._apps.get(app_id)
        if app is not None:
            app.superseded = True
            for fn in app.functions.values():
                self.routes.unroute(fn)

    def remove(self, app_id: str) -> AppState | None:
        """Take a running app out, marked stopped: it takes no calls and serves no URLs. Its
        calls and containers are the caller's to end (Scheduler.stop_app)."""
        app = self._apps.pop(app_id, None)
        if app is None:
            return None
        app.running = False
        if self._deployments.get((app.workspace, app.name)) == app_id:
            del self._deployments[app.workspace, app.name]
        self.store.stop_app(app_id)
        for fn in app.functions.values():
            self._functions.pop(fn.function_id, None)
            self.routes.unroute(fn)
        return app

    def heartbeat(self, app_id: str) -> bool:
        app = self._apps.get(app_id)
        if app is None:
            return False
        app.heartbeat_at = self.clock()
        return True

    def silent(self, app: AppState, now: float) -> bool:
        """An ephemeral app whose client sent no heartbeat for app_timeout (counted from the
        control plane's start too: clients reconnect after a restart)."""
        return (not app.deployed and now - app.heartbeat_at > self.app_timeout
                and now - self.started_at > self.app_timeout)

    def app(self, app_id: str, workspace: str | None = None) -> AppState | None:
        """A running app; given a workspace, only one of that workspace (another's is as if it did not exist)."""
        app = self._apps.get(app_id)
        return app if app is not None and workspace in (None, app.workspace) else None

    def listing(self, workspace: str | None = None) -> list[AppState]:
        """The running apps (deployed ones, current and superseded, and ephemeral ones), of one workspace or all."""
        return [a for a in self._apps.values() if workspace in (None, a.workspace)]

    def current_versions(self) -> list[AppState]:
        """The current version of each deployed app."""
        return [self._apps[app_id] for app_id in self._deployments.values()]

    def current_app(self, workspace: str, name: str) -> AppState:
        app = self._apps.get(self._deployments.get((workspace, name), ""))
        if app is None:
            deployed = sorted(n for w, n in self._deployments if w == workspace)
            raise LookupError(f"there is no deployed app named {name!r} (deployed: {', '.join(deployed) or 'none'}); "
                              f"deploy it with `ember deploy FILE --name {name}`")
        return app

    # ---- functions

    def create_function(self, app_id: str, definition: api_pb2.FunctionDefinition, workspace: str | None = None) -> str:
        app = self.app(app_id, workspace)
        if app is None:
            raise LookupError(f"app {app_id} is not running")
        fid = new_id("fu")
        self.store.create_function(fid, app_id, definition)
        fn = self._add_function(fid, app, definition)
        if not app.deployed:
            self.routes.route(fn)
        return fid

    def forget_function(self, fn: FunctionState):
        """A sandbox's function, once its sandbox ended: it runs nothing more."""
        self._functions.pop(fn.function_id, None)
        fn.app.functions.pop(fn.function_id, None)

    def _add_function(self, fid: str, app: AppState, definition: api_pb2.FunctionDefinition) -> FunctionState:
        fn = FunctionState(fid, app, definition)
        self._functions[fid] = fn
        app.functions[fid] = fn
        return fn

    def bind_function(self, function_id: str, params: bytes, workspace: str,
                      options: api_pb2.FunctionOptions | None = None, check=None) -> str:
        """The function of a class instance with these parameters, or of a function (or a class)
        with options of its own: its own pool of containers, made once per parameters and options.
        check(definition) vets the result (validation, the secrets' and volumes' owners)."""
        parent = self.function_for_call(function_id, workspace)
        if params and not parent.definition.is_class:
            raise LookupError(f"{parent.name} is not a class")
        if options is not None and options.ByteSize() == 0:
            options = None
        if not params and options is None:
            return parent.function_id
        # Serialized deterministically: the same options find the same function again.
        key = (parent.function_id, params, options.SerializeToString(deterministic=True) if options else b"")
        fid = self._bound.get(key)
        if fid is None or fid not in self._functions:
            d = api_pb2.FunctionDefinition()
            d.CopyFrom(parent.definition)
            if params:
                d.bound_params = params
            if options is not None:
                apply_options(d, options)
                d.derived_from = parent.function_id
                # Reached through its handle only: not a second schedule, or a second web endpoint.
                d.ClearField("schedule")
                d.ClearField("web")
                d.ClearField("web_methods")
            if check is not None:
                check(d)
            fid = self._bound[key] = self.create_function(parent.app.app_id, d)
        return fid

    def update_autoscaler(self, function_id: str, workspace: str, req: api_pb2.FunctionUpdateAutoscalerRequest):
        """Change a function's autoscaler settings now; they hold until its app is next deployed."""
        fn = self.function_for_call(function_id, workspace)
        d = api_pb2.FunctionDefinition()
        d.CopyFrom(fn.definition)
        for f in ("min_containers", "max_containers", "buffer_containers", "scaledown_window"):
            if req.HasField(f):
                setattr(d, f, getattr(req, f))
        if d.max_containers and d.min_containers > d.max_containers:
            raise ValueError(f"min_containers={d.min_containers} exceeds max_containers={d.max_containers}")
        validate.function_definition(d)
        self.store.update_function(fn.function_id, d)
        fn.definition = d
        return fn

    def function(self, function_id: str, workspace: str | None = None) -> FunctionState | None:
        """A function of a running app; given a workspace, only one of that workspace."""
        fn = self._functions.get(function_id)
        return fn if fn is not None and workspace in (None, fn.app.workspace) else None

    def functions(self) -> list[FunctionState]:
        return list(self._functions.values())

    def lookup_function(self, workspace: str, app_name: str, name: str) -> FunctionState:
        app = self.current_app(workspace, app_name)
        for fn in app.functions.values():
            if fn.name == name and named(fn.definition):
                return fn
        names = sorted(fn.name for fn in app.functions.values() if named(fn.definition))
        raise LookupError(f"app {app_name!r} has no function {name!r}; it has: {', '.join(names) or 'none'}")

    def function_for_call(self, function_id: str, workspace: str) -> FunctionState:
        """The function of the workspace that takes a new call of function_id."""
        fn = self.function(function_id, workspace)
        if fn is None or fn.app.superseded:
            # A function of an older version of a deployed app: its current version takes the call.
            origin = ((fn.app.workspace, fn.app.name, fn.name) if fn is not None
                      else self.store.function_origin(function_id))
            if origin is not None and origin[0] == workspace and origin[:2] in self._deployments:
                try:
                    return self.lookup_function(*origin)
                except LookupError:
                    pass
        if fn is None:
            stored = self.store.function(function_id)
            if stored is None or stored[1] != workspace:
                raise LookupError(f"there is no function with id {function_id}")
            raise LookupError("its app is not running (it was stopped, or its client went away)")
        if fn.definition.sandbox:
            raise LookupError(f"{function_id} is a sandbox's container, which takes no calls: use ember.Sandbox")
        return fn

    def stopped_function(self, function_id: str) -> FunctionState:
        """A stand-in for a function whose app stopped, read from the store: for its old calls."""
        app_id, workspace, definition = self.store.function(function_id)
        fn = FunctionState(function_id, AppState(app_id, workspace, "", self.clock(),
                                                          self._log(app_id, workspace, "", False)), definition)
        fn.app.running = False
        return fn
