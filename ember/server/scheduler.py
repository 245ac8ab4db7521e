"""The control plane's working state and decisions, on one asyncio event loop.

Inputs are queued per function and handed to containers that said they want work (no polling:
each event, an input arriving or a container asking for more, runs `dispatch`). Containers are
started on workers when the backlog would take longer to drain than a new container takes to
start, up to the function's `max_containers` and the workers' capacity. Every state change that
must survive a crash goes through the Store before anyone is told about it.

Leases: an input handed to a container is held by that container until its output arrives.
If the container exits, the worker reports why and the input is retried (a failed attempt); if
the container or its worker vanishes without a report, the input returns to the queue once the
lease timeout has passed (a lost lease, which does not use up a retry).
"""

import asyncio
import collections
import logging
import math
import pickle
import re
import time

from .._gpu import GpuAllocator
from .._ids import new_id
from ..proto import api_pb2
from ..schedule import next_time
from .builds import Builds
from .objects import volume_manifest
from .store import Store

log = logging.getLogger("ember.server")

Output = api_pb2.Output
FINAL_FAILURES = (Output.FAILURE, Output.TIMEOUT, Output.CONTAINER_EXITED, Output.OUT_OF_MEMORY)
# A lease lost this many times (container or worker vanished each time) fails the input.
MAX_LOST = 5
# Containers of a function that exit before they ever connect, in a row, before its calls fail.
MAX_START_FAILURES = 3
LOG_BUFFER = 20_000


class AppState:
    __slots__ = ("app_id", "name", "running", "heartbeat_at", "functions", "logs", "log_seq",
                 "log_listeners", "deployed", "version", "superseded")

    def __init__(self, app_id, name, deployed=False, version=0, superseded=False):
        self.app_id = app_id
        self.name = name
        self.deployed = deployed      # lives on without a client; versions replace each other
        self.version = version        # 0 until published
        self.superseded = superseded  # an old version: finishes its calls, then stops
        self.running = True
        self.heartbeat_at = time.monotonic()
        self.functions: dict[str, FunctionState] = {}
        self.logs: collections.deque[api_pb2.LogEntry] = collections.deque(maxlen=LOG_BUFFER)
        self.log_seq = 0
        self.log_listeners: list[asyncio.Future] = []


class FunctionState:
    __slots__ = ("function_id", "app", "definition", "pending", "containers", "exec_ewma",
                 "init_failure", "capacity_warned", "start_failures", "web_requests", "dispatch_soon")

    def __init__(self, function_id, app, definition):
        self.function_id = function_id
        self.app: AppState = app
        self.definition: api_pb2.FunctionDefinition = definition
        self.pending: collections.deque[InputState] = collections.deque()
        self.containers: dict[str, ContainerState] = {}
        self.exec_ewma: float | None = None   # seconds per input, per container, as seen here
        self.capacity_warned = 0.0
        self.init_failure: api_pb2.ContainerInitFailure | None = None
        self.start_failures = 0
        # A web endpoint's open requests: a call of its own that is never stored.
        self.web_requests = (CallState(f"web:{function_id}", self)
                             if definition.web.kind or definition.web_methods else None)
        self.dispatch_soon = False

    @property
    def name(self):
        return self.definition.name


class CallState:
    __slots__ = ("call_id", "function", "num_inputs", "num_done", "next_seq", "cancelled",
                 "outputs", "inputs", "listeners", "done_at", "fetched")

    def __init__(self, call_id, function, num_inputs=None, num_done=0, next_seq=1, cancelled=False):
        self.call_id = call_id
        self.function: FunctionState = function
        self.num_inputs: int | None = num_inputs
        self.num_done = num_done
        self.next_seq = next_seq
        self.cancelled = cancelled
        # Outputs accepted since this call was loaded; outputs[0] has seq first_seq.
        self.outputs: list[api_pb2.CallOutput] = []
        self.inputs: dict[str, InputState] = {}   # open inputs, by id
        self.listeners: list = []                 # callables, run once on the next output
        self.done_at: float | None = None
        self.fetched = False

    def done(self) -> bool:
        return self.num_inputs is not None and self.num_done >= self.num_inputs


class InputState:
    __slots__ = ("input_id", "call", "idx", "args", "attempts", "lost", "container", "web")

    def __init__(self, input_id, call, idx, args, attempts=0, lost=0, web=None):
        self.input_id = input_id
        self.call: CallState = call
        self.idx = idx
        self.args: bytes = args   # serialized Payload, passed through untouched
        self.attempts = attempts
        self.lost = lost
        self.container: ContainerState | None = None
        # A web request: the gateway's side of it (see gateway.WebRequest); never stored.
        self.web = web


class WorkerState:
    __slots__ = ("worker_id", "boot_id", "name", "cpu", "memory_mb", "send", "connected",
                 "last_seen", "containers", "gpus", "backend", "backend_note")

    def __init__(self, reg: api_pb2.WorkerRegister, send):
        self.worker_id = reg.worker_id
        self.boot_id = reg.boot_id
        self.name = reg.name
        self.cpu = reg.cpu
        self.memory_mb = reg.memory_mb
        self.send = send
        self.connected = True
        self.last_seen = time.monotonic()
        self.containers: dict[str, ContainerState] = {}
        self.gpus = GpuAllocator(list(reg.gpus))
        self.backend = reg.backend
        self.backend_note = reg.backend_note

    def free(self) -> tuple[float, int]:
        cpu = self.cpu - sum(c.cpu for c in self.containers.values())
        mem = self.memory_mb - sum(c.memory_mb for c in self.containers.values())
        return cpu, mem


class ContainerState:
    __slots__ = ("container_id", "function", "worker", "state", "send", "want", "held",
                 "last_seen", "since", "requested_at", "cpu", "memory_mb", "stopping")

    def __init__(self, container_id, function, worker):
        self.container_id = container_id
        self.function: FunctionState = function
        self.worker: WorkerState = worker
        self.state = "starting"       # starting | ready | disconnected
        self.send = None              # puts a ContainerCommand on its stream, while connected
        self.want = 0
        self.held: dict[str, InputState] = {}   # in the order they were handed over
        self.last_seen = time.monotonic()
        # When it last went idle, or started its current input: its idle time or busy time.
        self.since = time.monotonic()
        self.requested_at = time.monotonic()
        res = function.definition.resources
        self.cpu = res.cpu
        self.memory_mb = res.memory_mb
        self.stopping = False


class Scheduler:
    def __init__(self, store: Store, *, lease_timeout: float, worker_timeout: float,
                 app_timeout: float, output_retention: float):
        self.store = store
        self.lease_timeout = lease_timeout
        self.worker_timeout = worker_timeout
        self.app_timeout = app_timeout
        self.output_retention = output_retention
        self.apps: dict[str, AppState] = {}
        self.functions: dict[str, FunctionState] = {}
        self.calls: dict[str, CallState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.containers: dict[str, ContainerState] = {}
        self.cold_start_ewma = 0.5
        self.builds = Builds(store, self)
        self.deployments: dict[str, str] = {}  # deployed app name -> the app id of its current version
        self.bound: dict[tuple[str, bytes], str] = {}  # (class function, parameters) -> its bound function
        # Scheduled functions, by (app name, function name): when they last ran (durable), and
        # when they run next (derived, cached).
        self.schedule_runs: dict[tuple[str, str], float] = store.schedule_runs()
        self.next_runs: dict[tuple[str, str], tuple] = {}
        self.started_at = time.monotonic()
        # URL label -> the function serving it, and which of a class's methods ("" for a function)
        self.web_routes: dict[str, tuple[str, str]] = {}
        self.web_base_url = ""                  # the gateway's URL, set when it starts
        # Containers that existed before a restart and may still reconnect:
        # id -> (deadline, the inputs the store says it held).
        self.orphans: dict[str, tuple[float, list[InputState]]] = {}

    # ------------------------------------------------------------------ recovery

    def recover(self):
        """Load what was open when the control plane last stopped."""
        for app_id, name, deployed, version, state in self.store.running_apps():
            self.apps[app_id] = AppState(app_id, name, bool(deployed), version, state == "superseded")
            if deployed and version and state == "running":
                self.deployments[name] = app_id
        for fid, app_id, definition in self.store.functions_of_running_apps():
            fn = FunctionState(fid, self.apps[app_id], definition)
            self.functions[fid] = fn
            fn.app.functions[fid] = fn
            app = fn.app
            if not app.deployed or self.deployments.get(app.name) == app_id:
                self._route(fn)
        deadline = time.monotonic() + self.lease_timeout
        live = {cid for cid, *_ in self.store.live_containers()}
        for cid in live:
            self.orphans[cid] = (deadline, [])
        n_inputs = 0
        for call_id, fid, num_inputs, num_done, next_seq, cancelled in self.store.open_calls():
            fn = self.functions.get(fid)
            if fn is None:
                continue
            call = CallState(call_id, fn, num_inputs, num_done, next_seq, bool(cancelled))
            self.calls[call_id] = call
            for input_id, idx, args, attempts, lost, container_id, _avail in self.store.open_inputs(call_id):
                inp = InputState(input_id, call, idx, args, attempts, lost)
                call.inputs[input_id] = inp
                n_inputs += 1
                if container_id in live:
                    # Held by a container: it may reconnect and finish it, or the lease expires.
                    self.orphans[container_id][1].append(inp)
                else:
                    fn.pending.append(inp)
        log.info("recovered %d apps, %d functions, %d open calls, %d open inputs, %d containers",
                 len(self.apps), len(self.functions), len(self.calls), n_inputs, len(live))

    # ------------------------------------------------------------------ apps and functions

    def create_app(self, name: str, deployed: bool = False) -> str:
        app_id = new_id("ap")
        self.store.create_app(app_id, name, deployed)
        self.apps[app_id] = AppState(app_id, name, deployed)
        return app_id

    def deploy_app(self, app_id: str) -> int:
        """Publish a deployed app as the current version of its name; the previous version
        takes no new calls (they go to this one) and stops once its calls are done."""
        app = self.apps.get(app_id)
        if app is None or not app.deployed:
            raise LookupError(f"app {app_id} is not a running deployed app")
        old = self.apps.get(self.deployments.get(app.name, ""))
        app.version = self.store.last_version(app.name) + 1
        self.deployments[app.name] = app_id
        if old is not None:
            old.superseded = True
        for fn in app.functions.values():
            self._route(fn)
        self.store.deploy_app(app_id, app.version, old.app_id if old else None)
        log.info("app %s deployed as version %d (%s)", app.name, app.version, app_id)
        return app.version

    def current_app(self, name: str) -> AppState:
        app = self.apps.get(self.deployments.get(name, ""))
        if app is None:
            deployed = sorted(self.deployments)
            raise LookupError(f"there is no deployed app named {name!r} (deployed: {', '.join(deployed) or 'none'}); "
                              f"deploy it with `ember deploy FILE --name {name}`")
        return app

    def lookup_function(self, app_name: str, name: str) -> FunctionState:
        app = self.current_app(app_name)
        for fn in app.functions.values():
            if fn.name == name and not fn.definition.bound_params:
                return fn
        names = sorted(fn.name for fn in app.functions.values() if not fn.definition.bound_params)
        raise LookupError(f"app {app_name!r} has no function {name!r}; it has: {', '.join(names) or 'none'}")

    def heartbeat_app(self, app_id: str) -> bool:
        app = self.apps.get(app_id)
        if app is None:
            return False
        app.heartbeat_at = time.monotonic()
        return True

    def stop_app(self, app_id: str, reason: str = "the app was stopped"):
        app = self.apps.pop(app_id, None)
        if app is None:
            return
        app.running = False
        if self.deployments.get(app.name) == app_id:
            del self.deployments[app.name]
        self.store.stop_app(app_id)
        for fn in app.functions.values():
            self.functions.pop(fn.function_id, None)
            for call in [c for c in self.calls.values() if c.function is fn]:
                self._cancel_inputs(call, reason)
            if fn.web_requests is not None:
                self._unroute(fn)
                self._cancel_inputs(fn.web_requests, reason)
            for c in list(fn.containers.values()):
                self._stop_container(c)
        for fut in app.log_listeners:
            if not fut.done():
                fut.set_result(None)
        log.info("app %s (%s) stopped: %s", app.name, app_id, reason)

    def create_function(self, app_id: str, definition: api_pb2.FunctionDefinition) -> str:
        app = self.apps.get(app_id)
        if app is None:
            raise LookupError(f"app {app_id} is not running")
        fid = new_id("fu")
        self.store.create_function(fid, app_id, definition)
        fn = FunctionState(fid, app, definition)
        self.functions[fid] = fn
        app.functions[fid] = fn
        if not app.deployed:
            self._route(fn)
        return fid

    def drain_app(self, app_id: str):
        """Stop an app once its running calls are done; it takes no new ones (`ember serve`
        drains the version it replaced)."""
        app = self.apps.get(app_id)
        if app is not None:
            app.superseded = True
            for fn in app.functions.values():
                self._unroute(fn)

    def bind_function(self, function_id: str, params: bytes) -> str:
        """The function of a class instance with these parameters: its own pool of containers."""
        parent = self.function_for_call(function_id)
        if not parent.definition.is_class:
            raise LookupError(f"{parent.name} is not a class")
        key = (parent.function_id, params)
        fid = self.bound.get(key)
        if fid is None or fid not in self.functions:
            d = api_pb2.FunctionDefinition()
            d.CopyFrom(parent.definition)
            d.bound_params = params
            fid = self.bound[key] = self.create_function(parent.app.app_id, d)
        return fid

    def function_for_call(self, function_id: str) -> FunctionState:
        fn = self.functions.get(function_id)
        if fn is None or fn.app.superseded:
            # A function of an older version of a deployed app: its current version takes the call.
            origin = (fn.app.name, fn.name) if fn is not None else self.store.function_origin(function_id)
            if origin is not None and origin[0] in self.deployments:
                try:
                    return self.lookup_function(*origin)
                except LookupError:
                    pass
        if fn is None:
            if self.store.function(function_id) is None:
                raise LookupError(f"there is no function with id {function_id}")
            raise LookupError("its app is not running (it was stopped, or its client went away)")
        return fn

    # ------------------------------------------------------------------ web endpoints

    def _route(self, fn: FunctionState):
        """Serve a function's web endpoints at their labels, taking them over from any earlier
        app: a new version of a deployed app, or a newer run of an ephemeral one (`ember serve`)."""
        if fn.web_requests is not None and not fn.definition.bound_params:
            for label, endpoint in web_endpoints(fn).items():
                self.web_routes[label] = (fn.function_id, endpoint)

    def _unroute(self, fn: FunctionState):
        if fn.web_requests is not None:
            for label, endpoint in web_endpoints(fn).items():
                if self.web_routes.get(label) == (fn.function_id, endpoint):
                    del self.web_routes[label]

    def web_urls(self, fn: FunctionState) -> dict[str, str]:
        """Where its endpoints are served: "" for a function's own, else by class method."""
        if fn.web_requests is None:
            return {}
        return {endpoint: f"{self.web_base_url}/{label}" for label, endpoint in web_endpoints(fn).items()}

    def web_function(self, label: str) -> tuple[FunctionState | None, str]:
        fid, endpoint = self.web_routes.get(label, ("", ""))
        fn = self.functions.get(fid)
        return (fn, endpoint) if fn is not None and fn.app.running else (None, "")

    def submit_web(self, fn: FunctionState, request: api_pb2.HttpRequest, web) -> InputState:
        """Queue a web request; `web` hears its response (deliver) and its end (finish)."""
        requests = fn.web_requests
        requests.next_seq += 1
        inp = InputState(f"{requests.call_id}:{requests.next_seq}", requests, 0, b"", web=web)
        web.request = request
        requests.inputs[inp.input_id] = inp
        fn.pending.append(inp)
        # Requests that arrive together go to containers together: one message, not one each.
        if not fn.dispatch_soon:
            fn.dispatch_soon = True
            asyncio.get_running_loop().call_soon(self._dispatch_soon, fn)
        return inp

    def _dispatch_soon(self, fn: FunctionState):
        fn.dispatch_soon = False
        if fn.function_id in self.functions:
            self.dispatch(fn)

    def web_to_container(self, inp: InputState, events: list[api_pb2.HttpEvent]):
        """More of a request (body, disconnect, WebSocket messages): now, or once it has a container."""
        c = inp.container
        if c is not None and c.send is not None:
            c.send(api_pb2.ContainerCommand(http=api_pb2.HttpEvents(events=events)))
        else:
            inp.web.outbox.extend(events)

    def web_abandoned(self, inp: InputState):
        """Its client went away: a queued request is dropped, a running one is told."""
        if inp.input_id not in inp.call.inputs:
            return
        if inp.container is None:
            del inp.call.inputs[inp.input_id]  # dispatch skips it
        elif inp.container.send is not None:
            inp.container.send(api_pb2.ContainerCommand(cancel_input_id=inp.input_id))

    def _finish_web(self, inp: InputState, out: api_pb2.Output):
        if out.status == Output.GENERATOR_ITEM or inp.call.inputs.pop(inp.input_id, None) is None:
            return
        self._release(inp)
        inp.web.finish(out)

    # ------------------------------------------------------------------ calls

    def create_call(self, function_id: str, call_id: str, inputs, complete: bool,
                    maybe_exists: bool = True) -> CallState:
        """Create a call with a first batch of inputs. Resending the same call id is a no-op.

        maybe_exists=False skips looking in the store for a call this id already made (the
        hot path of a first send, whose id the client just drew at random).
        """
        call = self.calls.get(call_id)
        if call is not None:
            return call
        if maybe_exists:
            existing = self.lookup_call(call_id)
            if existing is not None:
                return existing
        fn = self.function_for_call(function_id)
        self.store.create_call(call_id, function_id, len(inputs) if complete else None)
        call = CallState(call_id, fn, len(inputs) if complete else None)
        self.calls[call_id] = call
        self._add_inputs(call, inputs)
        self.dispatch(fn)
        return call

    def put_inputs(self, call_id: str, inputs, complete: bool):
        call = self.calls.get(call_id)
        if call is None:
            raise LookupError(f"there is no open call {call_id}")
        if call.function.function_id not in self.functions:
            raise LookupError("its app is not running")
        self._add_inputs(call, inputs)
        if complete:
            # The number of inputs is the highest index sent + 1: resent batches add nothing.
            n = max([i.idx + 1 for i in inputs] + [call.num_inputs or 0, self._max_idx(call)])
            call.num_inputs = n
            self.store.close_call(call_id, n)
        if call.done():
            self._call_finished(call)
        self.dispatch(call.function)

    def _max_idx(self, call: CallState) -> int:
        return max((i.idx + 1 for i in call.inputs.values()), default=0)

    def _add_inputs(self, call: CallState, inputs):
        rows = []
        fn = call.function
        for inp in inputs:
            input_id = f"{call.call_id}:{inp.idx}"
            if input_id in call.inputs:
                continue
            args = inp.args.SerializeToString()
            rows.append((input_id, call.call_id, inp.idx, args))
            state = InputState(input_id, call, inp.idx, args)
            call.inputs[input_id] = state
            fn.pending.append(state)
        self.store.add_inputs(rows)

    def cancel_call(self, call_id: str):
        call = self.calls.get(call_id)
        if call is None or call.done():
            return
        call.cancelled = True
        self.store.cancel_call(call_id)
        self._cancel_inputs(call, "the call was cancelled")

    def _cancel_inputs(self, call: CallState, reason: str):
        """Finish every open input of a call as cancelled; containers running one are told."""
        for inp in list(call.inputs.values()):
            if inp.container is not None and inp.container.send is not None:
                inp.container.send(api_pb2.ContainerCommand(cancel_input_id=inp.input_id))
        outs = [(inp, Output(input_id=inp.input_id, idx=inp.idx, status=Output.CANCELLED, error=reason))
                for inp in call.inputs.values()]
        if call.num_inputs is None and call is not call.function.web_requests:
            call.num_inputs = max(self._max_idx(call), call.num_done)
            self.store.close_call(call.call_id, call.num_inputs)
        self._record_outputs(outs)
        pending = call.function.pending
        if pending:
            call.function.pending = collections.deque(i for i in pending if i.call is not call)

    # ------------------------------------------------------------------ outputs

    def _record_outputs(self, results: list[tuple[InputState, api_pb2.Output]], log_seq: int = 0):
        """Append outputs to their calls, durably; final ones close their inputs.

        results: (input, output); an output that is not a GENERATOR_ITEM is final.
        """
        if not results:
            return
        rows, finished, touched = [], [], {}
        now = time.time()
        for inp, out in results:
            if inp.web is not None:  # a web request's end: nothing to store
                self._finish_web(inp, out)
                continue
            call = inp.call
            if inp.input_id not in call.inputs:
                continue  # already finished (a duplicate after a reconnect, or a cancel race)
            seq = call.next_seq
            call.next_seq += 1
            co = api_pb2.CallOutput(seq=seq, output=out, log_seq=log_seq)
            rows.append((call.call_id, seq, out.SerializeToString(), now))
            call.outputs.append(co)
            if out.status != Output.GENERATOR_ITEM:
                del call.inputs[inp.input_id]
                if inp.container is not None:
                    inp.container.held.pop(inp.input_id, None)
                    inp.container = None
                finished.append(inp.input_id)
                call.num_done += 1
            touched[call.call_id] = call
        if not rows:
            return  # nothing to store (only web requests ended, or only duplicates came)
        self.store.add_outputs(rows, finished, [(c.call_id, c.num_done, c.next_seq) for c in touched.values()])
        for call in touched.values():
            if call.done():
                self._call_finished(call)
            listeners, call.listeners = call.listeners, []
            for fn in listeners:
                fn(call)

    def _call_finished(self, call: CallState):
        if call.done_at is None:
            call.done_at = time.monotonic()

    def outputs_after(self, call: CallState, after_seq: int, limit: int) -> list[api_pb2.CallOutput]:
        first_seq = call.next_seq - len(call.outputs)
        if after_seq + 1 >= first_seq:
            start = after_seq + 1 - first_seq
            return call.outputs[start:start + limit]
        return self.store.outputs(call.call_id, after_seq, limit)

    def lookup_call(self, call_id: str) -> CallState | None:
        """An open or recently finished call; older ones are read back from the store."""
        call = self.calls.get(call_id)
        if call is not None:
            return call
        row = self.store.call(call_id)
        if row is None:
            return None
        function_id, num_inputs, num_done, next_seq, cancelled = row
        fn = self.functions.get(function_id)
        if fn is None:
            app_id, definition = self.store.function(function_id)
            fn = FunctionState(function_id, AppState(app_id, ""), definition)
            fn.app.running = False
        call = CallState(call_id, fn, num_inputs, num_done, next_seq, bool(cancelled))
        if num_inputs is None or num_done < num_inputs:
            # Its app stopped before it finished: it never will.
            call.num_inputs = num_done
        call.done_at = time.monotonic()
        self.calls[call_id] = call
        return call

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, fn: FunctionState):
        """Hand queued inputs to containers that want them; start containers if needed."""
        pending = fn.pending
        if not pending:
            return
        if fn.init_failure is not None:
            self._fail_init(fn)
            return
        ready = [c for c in fn.containers.values() if c.want > 0 and c.send is not None and not c.stopping]
        if ready:
            ready.sort(key=lambda c: len(c.held))
            later = []
            for c in ready:
                batch, stored = [], []
                if not c.held:
                    c.since = time.monotonic()
                while c.want > 0 and pending:
                    inp = pending.popleft()
                    if inp.input_id not in inp.call.inputs:
                        continue  # cancelled while queued
                    inp.attempts += 1
                    inp.container = c
                    c.held[inp.input_id] = inp
                    c.want -= 1
                    if inp.web is not None:
                        batch.append(api_pb2.Input(input_id=inp.input_id, http=inp.web.request, attempt=1))
                        if inp.web.outbox:
                            later.append(inp)
                        continue
                    batch.append(api_pb2.Input(input_id=inp.input_id, call_id=inp.call.call_id, idx=inp.idx,
                                               args=api_pb2.Payload.FromString(inp.args),
                                               attempt=inp.attempts))
                    stored.append(inp.input_id)
                if batch:
                    if stored:
                        self.store.assign_inputs(c.container_id, stored)
                    c.send(api_pb2.ContainerCommand(inputs=api_pb2.InputBatch(inputs=batch)))
                for inp in later:  # what came of a request while it waited for a container
                    events, inp.web.outbox = inp.web.outbox, []
                    self.web_to_container(inp, events)
                later.clear()
                if not pending:
                    return
        self.autoscale(fn)

    def autoscale(self, fn: FunctionState):
        """Start containers when the backlog would take longer to drain than a start takes."""
        if not fn.pending or not fn.app.running or fn.init_failure is not None:
            return
        live = [c for c in fn.containers.values() if not c.stopping]
        n_live = len(live)
        limit = fn.definition.max_containers or 1_000_000
        outstanding = len(fn.pending) + sum(len(c.held) for c in live)
        if n_live == 0:
            target = 1
        else:
            est = self._exec_estimate(fn, live)
            if est is None:
                return  # nothing has run yet: wait for the first container to tell us
            work = len(fn.pending) * est
            target = max(n_live, math.ceil(work / self.cold_start_ewma))
        target = min(target, limit, outstanding)
        for _ in range(target - n_live):
            if not self._start_container(fn):
                break

    def _keep_warm(self, fn: FunctionState):
        """Keep min_containers of a running app's function started, before any input asks."""
        want = fn.definition.min_containers
        if not want or not fn.app.running or fn.app.superseded or fn.init_failure is not None:
            return
        for _ in range(want - sum(1 for c in fn.containers.values() if not c.stopping)):
            if not self._start_container(fn):
                break

    def _exec_estimate(self, fn: FunctionState, live: list[ContainerState]) -> float | None:
        """Seconds a container spends per input: measured, or at least what the inputs running
        now have taken so far (which tells that a first, slow input is slow)."""
        now = time.monotonic()
        running = max((now - c.since) / len(c.held) for c in live if c.held) if any(c.held for c in live) else 0.0
        if fn.exec_ewma is None:
            return running or None
        return max(fn.exec_ewma, running)

    def unisolated_workers(self) -> list[str]:
        return [f"{w.name}: {api_pb2.Backend.Name(w.backend).removeprefix('BACKEND_').lower()} backend, {w.backend_note}" for w in self.workers.values()
                if w.connected and w.backend != api_pb2.BACKEND_CONTAINER]

    def pick_builder(self) -> WorkerState | None:
        """The connected worker to build an image on: the least busy."""
        live = [w for w in self.workers.values() if w.connected]
        return min(live, key=lambda w: len(w.containers), default=None)

    def _start_container(self, fn: FunctionState) -> bool:
        res = fn.definition.resources
        best, best_free = None, None
        for w in self.workers.values():
            if not w.connected:
                continue
            cpu, mem = w.free()
            if res.gpu and not (w.gpus.free() and w.gpus.can_ever_satisfy(res.gpu)):
                continue
            if _server_port(fn) and any(_server_port(c.function) == _server_port(fn) for c in w.containers.values()):
                continue  # its server's port is taken on that worker's network
            if cpu + 1e-9 >= res.cpu and mem >= res.memory_mb:
                if best is None or cpu > best_free:
                    best, best_free = w, cpu
        if best is None:
            now = time.monotonic()
            if now - fn.capacity_warned > 10:
                fn.capacity_warned = now
                if not any(w.connected for w in self.workers.values()):
                    log.warning("inputs of %s wait: no worker is connected", fn.name)
                else:
                    log.info("inputs of %s wait: no worker has %.2f CPU, %d MiB%s free", fn.name, res.cpu,
                             res.memory_mb, f" and GPU {res.gpu}" if res.gpu else "")
            return False
        cid = new_id("ct")
        gpu_indices = best.gpus.assign(cid, res.gpu) if res.gpu else []
        if gpu_indices is None:
            return False
        self.store.create_container(cid, fn.function_id, best.worker_id, best.boot_id)
        self._track(ContainerState(cid, fn, best))
        image = fn.definition.image
        best.send(api_pb2.WorkerCommand(start_container=api_pb2.StartContainer(
            container_id=cid, function_id=fn.function_id, app_id=fn.app.app_id, resources=res, image=image,
            layers=self.builds.known(image), gpu_indices=gpu_indices, block_network=fn.definition.block_network,
            volumes=[api_pb2.VolumeMount(path=path, manifest=volume_manifest(self.store, vid))
                     for path, vid in sorted(fn.definition.volume_mounts.items())])))
        log.info("starting container %s for %s on worker %s", cid, fn.name, best.name)
        return True

    # ------------------------------------------------------------------ containers

    def _track(self, c: ContainerState):
        self.containers[c.container_id] = c
        c.function.containers[c.container_id] = c
        c.worker.containers[c.container_id] = c

    def _untrack(self, c: ContainerState):
        c.worker.gpus.release(c.container_id)
        self.containers.pop(c.container_id, None)
        c.function.containers.pop(c.container_id, None)
        c.worker.containers.pop(c.container_id, None)

    def container_connected(self, hello: api_pb2.ContainerHello, send) -> ContainerState | None:
        c = self.containers.get(hello.container_id)
        if c is None:
            return None
        c.send = send
        c.last_seen = time.monotonic()
        if c.state == "starting":
            c.function.start_failures = 0
            self.cold_start_ewma = 0.8 * self.cold_start_ewma + 0.2 * (time.monotonic() - c.requested_at)
        c.state = "ready"
        # After a reconnect: inputs it no longer holds go back to the queue.
        held = set(hello.held_input_ids)
        for inp in list(c.held.values()):
            if inp.input_id not in held:
                self._requeue(inp, lost=True)
        if c.container_id in self.orphans:
            _, inputs = self.orphans.pop(c.container_id)
            for inp in inputs:
                if inp.input_id in held and inp.input_id in inp.call.inputs:
                    inp.container = c
                    c.held[inp.input_id] = inp
                else:
                    self._requeue(inp, lost=True)
        return c

    def _orphan_gone(self, container_id: str, reason: str):
        """A container from before a restart will not come back: requeue what it held."""
        self.store.container_exited(container_id, reason)
        _, inputs = self.orphans.pop(container_id, (0, []))
        for inp in inputs:
            if inp.input_id in inp.call.inputs and inp.container is None:
                self._requeue(inp, lost=True)

    def container_wants(self, c: ContainerState, n: int):
        c.want += n
        c.last_seen = time.monotonic()
        self.dispatch(c.function)

    def container_outputs(self, c: ContainerState, batch: api_pb2.OutputBatch, log_seq: int):
        c.last_seen = now = time.monotonic()
        fn = c.function
        for ev in batch.http:
            inp = c.held.get(ev.input_id)
            if inp is not None and inp.web is not None:
                inp.web.deliver(ev)
        results = []
        finals = sum(1 for o in batch.outputs if o.status != Output.GENERATOR_ITEM)
        if finals:
            per_input = (now - c.since) / finals
            fn.exec_ewma = per_input if fn.exec_ewma is None else 0.7 * fn.exec_ewma + 0.3 * per_input
        for out in batch.outputs:
            inp = c.held.get(out.input_id)
            if inp is None:
                continue  # not ours any more (cancelled, requeued after a lost lease)
            if out.status in FINAL_FAILURES and self._retry(inp, out):
                continue
            results.append((inp, out))
        self._record_outputs(results, log_seq)
        c.since = now  # idle from now on, or running its next held input from now on
        if batch.want_inputs:
            self.container_wants(c, batch.want_inputs)

    def _retry(self, inp: InputState, out: api_pb2.Output) -> bool:
        """Schedule another attempt if the policy allows; True if it will be retried."""
        if inp.web is not None:
            return False  # a request is answered once, by whoever ran it
        policy = inp.call.function.definition.retries
        generator_started = any(o.output.status == Output.GENERATOR_ITEM and o.output.input_id == inp.input_id
                                for o in inp.call.outputs[-64:])
        if inp.attempts > policy.max_retries or generator_started or inp.call.cancelled:
            return False
        delay = min(policy.initial_delay * (policy.backoff_coefficient ** (inp.attempts - 1)), policy.max_delay)
        log.info("input %s failed (%s): attempt %d of %d in %.1fs", inp.input_id,
                 out.error or Output.Status.Name(out.status), inp.attempts + 1, policy.max_retries + 1, delay)
        self._release(inp)
        self.store.requeue_input(inp.input_id, inp.attempts, inp.lost, time.time() + delay)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._enqueue, inp)
        else:
            self._enqueue(inp)
        return True

    def _release(self, inp: InputState):
        if inp.container is not None:
            inp.container.held.pop(inp.input_id, None)
            inp.container = None

    def _enqueue(self, inp: InputState):
        if inp.input_id in inp.call.inputs and inp.call.function.function_id in self.functions:
            inp.call.function.pending.appendleft(inp)
            self.dispatch(inp.call.function)

    def _requeue(self, inp: InputState, lost: bool):
        """Put an input back without charging an attempt: it never ran, or its container
        vanished without a word (lost: counted, and capped at MAX_LOST)."""
        if inp.web is not None:  # it may have answered in part: it ends here
            self._finish_web(inp, Output(input_id=inp.input_id, status=Output.CONTAINER_EXITED,
                                         error="its container was lost while it ran"))
            return
        self._release(inp)
        inp.attempts = max(0, inp.attempts - 1)
        inp.lost += lost
        if inp.lost > MAX_LOST:
            self._record_outputs([(inp, Output(
                input_id=inp.input_id, idx=inp.idx, status=Output.CONTAINER_EXITED,
                error=f"its container was lost {inp.lost} times (worker or network failures)"))])
            return
        self.store.requeue_input(inp.input_id, inp.attempts, inp.lost, 0)
        self._enqueue(inp)

    def container_init_failed(self, c: ContainerState, failure: api_pb2.ContainerInitFailure):
        fn = c.function
        fn.init_failure = failure
        log.warning("container %s could not load %s: %s", c.container_id, fn.name, failure.error)
        for inp in list(c.held.values()):
            self._release(inp)
            fn.pending.appendleft(inp)
        self._fail_init(fn)

    def _fail_init(self, fn: FunctionState):
        failure = fn.init_failure
        inputs, fn.pending = list(fn.pending), collections.deque()
        # An exception from a class's enter hook is the user's own: the calls fail with it as is.
        status = Output.FAILURE if failure.in_enter else Output.INIT_FAILURE
        self._record_outputs([(inp, Output(
            input_id=inp.input_id, idx=inp.idx, status=status, error=failure.error,
            traceback=failure.traceback, data=failure.exception)) for inp in inputs])

    def container_disconnected(self, c: ContainerState):
        """Its stream closed: it exited (the worker will say why) or the network broke."""
        if c.container_id in self.containers:
            c.send = None
            c.want = 0
            c.state = "disconnected"
            c.last_seen = time.monotonic()

    def container_exited(self, exited: api_pb2.ContainerExited):
        container_id, reason, log_tail = exited.container_id, exited.reason, exited.log_tail
        c = self.containers.pop(container_id, None)
        if container_id in self.orphans:
            self._orphan_gone(container_id, reason)
        else:
            self.store.container_exited(container_id, reason)
        if c is None:
            return
        self._untrack(c)
        fn = c.function
        if c.state == "starting" and not c.stopping:
            # It never connected: its image or its runtime could not start. Give up after a few.
            fn.start_failures += 1
            log.warning("container %s of %s failed to start: %s%s", container_id, fn.name, reason,
                        f"\n{log_tail}" if log_tail else "")
            if fn.start_failures >= MAX_START_FAILURES or exited.cause == api_pb2.ContainerExited.START_FAILED:
                fn.init_failure = api_pb2.ContainerInitFailure(
                    error=f"its container {reason}" + (f"; its last output:\n{log_tail}" if log_tail else ""))
        held = list(c.held.values())
        if held and not c.stopping:
            # The first input it holds is the one it was running; the rest never started.
            running, rest = held[0], held[1:]
            error = reason + (f"; its last output:\n{log_tail}" if log_tail else "")
            out = Output(input_id=running.input_id, idx=running.idx,
                         status=(Output.OUT_OF_MEMORY if exited.cause == api_pb2.ContainerExited.OUT_OF_MEMORY
                                 else Output.CONTAINER_EXITED),
                         error=f"its container {reason} while running this input (attempt {running.attempts})")
            log.warning("container %s of %s %s while running input %s", container_id, fn.name, error,
                        running.input_id)
            if not self._retry(running, out):
                self._record_outputs([(running, out)])
            for inp in rest:
                self._requeue(inp, lost=False)
        else:
            for inp in held:
                self._requeue(inp, lost=False)
        if fn.function_id in self.functions:
            self.dispatch(fn)

    def _container_lost(self, c: ContainerState, why: str):
        log.warning("container %s of %s is lost (%s): its inputs go back to the queue",
                    c.container_id, c.function.name, why)
        self._untrack(c)
        self.store.container_exited(c.container_id, f"lost: {why}")
        for inp in list(c.held.values()):
            self._requeue(inp, lost=True)
        if c.worker.connected:
            c.worker.send(_stop_command(c.container_id, kill=True))

    def _stop_container(self, c: ContainerState):
        if c.stopping:
            return
        c.stopping = True
        if c.worker.connected:
            c.worker.send(_stop_command(c.container_id, kill=False))

    # ------------------------------------------------------------------ workers

    def worker_connected(self, reg: api_pb2.WorkerRegister, send) -> WorkerState:
        old = self.workers.get(reg.worker_id)
        self.store.upsert_worker(reg)
        w = WorkerState(reg, send)
        self.workers[reg.worker_id] = w
        running = set(reg.running_container_ids)
        if old is not None:
            for c in list(old.containers.values()):
                if old.boot_id == reg.boot_id and c.container_id in running:
                    c.worker = w
                    w.containers[c.container_id] = c
                else:
                    # The worker restarted: whatever it ran before is gone.
                    self._container_lost(c, "its worker restarted")
        # Containers known from before a control-plane restart.
        for cid, fid, worker_id, boot_id in self.store.live_containers():
            if worker_id != reg.worker_id or cid in self.containers:
                continue
            fn = self.functions.get(fid)
            if cid in running and boot_id == reg.boot_id and fn is not None:
                c = ContainerState(cid, fn, w)
                c.state = "disconnected"
                self._track(c)
                # The inputs it held are claimed when the container says hello.
            else:
                self._orphan_gone(cid, "gone after a control-plane restart")
                if cid in running:
                    send(_stop_command(cid, kill=True))
        log.info("worker %s connected (%.1f CPU, %d MiB)", reg.name, reg.cpu, reg.memory_mb)
        for fn in list(self.functions.values()):
            self.dispatch(fn)
        return w

    def worker_disconnected(self, w: WorkerState):
        self.builds.worker_lost(w)
        if self.workers.get(w.worker_id) is w:
            w.connected = False
            w.last_seen = time.monotonic()
            log.warning("worker %s disconnected", w.name)

    # ------------------------------------------------------------------ logs

    def add_logs(self, c: ContainerState, batch: api_pb2.LogBatch) -> int:
        return self._append_logs(c.function.app, batch.entries, c.container_id, c.function.name)

    def _append_logs(self, app: AppState, entries, container_id: str, function_name: str) -> int:
        for e in entries:
            app.log_seq += 1
            e.seq = app.log_seq
            e.container_id = container_id
            e.function_name = function_name
            app.logs.append(e)
        listeners, app.log_listeners = app.log_listeners, []
        for fut in listeners:
            if not fut.done():
                fut.set_result(None)
        return app.log_seq

    # ------------------------------------------------------------------ time-driven work

    def tick(self):
        """Once a fraction of a second: expirations, scale-down, and scale-up of backlogs."""
        now = time.monotonic()
        for app in list(self.apps.values()):
            if app.superseded and not self._app_busy(app):
                self.stop_app(app.app_id, "a newer version was deployed and its calls are done")
            elif (not app.deployed and now - app.heartbeat_at > self.app_timeout
                  and now - self.started_at > self.app_timeout):
                self.stop_app(app.app_id, f"its client sent no heartbeat for {self.app_timeout:.0f}s")
        for w in list(self.workers.values()):
            if not w.connected and now - w.last_seen > self.worker_timeout:
                del self.workers[w.worker_id]
                for c in list(w.containers.values()):
                    self._container_lost(c, f"its worker {w.name} is gone")
        for c in list(self.containers.values()):
            if c.state == "disconnected" and now - c.last_seen > self.lease_timeout:
                self._container_lost(c, f"no contact for {self.lease_timeout:.0f}s")
            elif c.state == "ready" and now - c.last_seen > self.lease_timeout:
                self._container_lost(c, f"no heartbeat for {self.lease_timeout:.0f}s")
            elif c.state == "ready" and not c.held and not c.stopping:
                window = c.function.definition.scaledown_window
                if now - c.since > window and len(c.function.containers) > c.function.definition.min_containers:
                    log.info("container %s of %s idle for %.0fs: stopping", c.container_id, c.function.name, window)
                    self._stop_container(c)
            elif c.state == "starting" and now - c.requested_at > max(60.0, self.worker_timeout):
                self._container_lost(c, "it did not start within 60s")
        for cid, (deadline, _) in list(self.orphans.items()):
            if now > deadline:
                self._orphan_gone(cid, "it did not reconnect after a control-plane restart")
                c = self.containers.get(cid)
                if c is not None:
                    self._container_lost(c, "it did not reconnect after a control-plane restart")
        for fn in list(self.functions.values()):
            if fn.pending:
                self.autoscale(fn)
            self._keep_warm(fn)
        self.run_schedules()
        for call_id, call in list(self.calls.items()):
            if call.done_at is not None and not call.listeners and (
                    call.fetched and now - call.done_at > 60 or now - call.done_at > 600):
                del self.calls[call_id]

    def run_schedules(self):
        """Call the scheduled functions of deployed apps whose time has come: once per tick
        however many were missed (while the control plane was down, say)."""
        now = time.time()
        for app_id in list(self.deployments.values()):
            app = self.apps[app_id]
            for fn in list(app.functions.values()):
                sched = fn.definition.schedule
                if not (sched.cron or sched.period_seconds) or fn.definition.bound_params:
                    continue
                key = (app.name, fn.name)
                last = self.schedule_runs.get(key)
                if last is None:  # never ran: its time counts from the deploy (read once)
                    last = self.schedule_runs[key] = self.store.deployed_at(app_id)
                cached = self.next_runs.get(key)
                if cached is None or cached[:2] != (last, sched.SerializeToString()):
                    cached = self.next_runs[key] = (last, sched.SerializeToString(), next_time(sched, last))
                if now >= cached[2]:
                    self._run_scheduled(fn, now)

    def _run_scheduled(self, fn: FunctionState, now: float):
        call_id = new_id("fc")
        # No arguments: pickle's own bytes for ((), {}), which the container unpickles as usual.
        args = api_pb2.Payload(data=pickle.dumps(((), {})))
        self.create_call(fn.function_id, call_id, [api_pb2.Input(idx=0, args=args)], complete=True,
                         maybe_exists=False)
        self.schedule_runs[(fn.app.name, fn.name)] = now
        self.store.set_schedule_run(fn.app.name, fn.name, now)
        self._append_logs(fn.app, [api_pb2.LogEntry(fd=2, data=f"ember: scheduled run of {fn.name} ({call_id})\n")],
                          "", fn.name)
        log.info("schedule: %s.%s runs as %s", fn.app.name, fn.name, call_id)

    def _app_busy(self, app: AppState) -> bool:
        """Whether any call of the app's functions may still run or take inputs."""
        return any(call.function.app is app and (call.num_inputs is None or call.inputs)
                   for call in self.calls.values()) or any(
            fn.web_requests is not None and fn.web_requests.inputs for fn in app.functions.values())

    def expire_outputs(self):
        self.store.expire(time.time() - self.output_retention)


def _server_port(fn: FunctionState) -> int:
    """The port a @web_server function's containers listen on, on their worker's network."""
    return fn.definition.web.port if fn.definition.web.kind == api_pb2.WebEndpoint.WEB_SERVER else 0


def web_endpoints(fn: FunctionState) -> dict[str, str]:
    """A function's web endpoints by their name in URLs (the label given, or APP-FUNCTION,
    APP-CLASS-METHOD; "-dev" for an app that is not deployed, as Modal does): which class
    method serves each ("" for a function's own)."""
    d, app = fn.definition, fn.app
    endpoints = {"": d.web} if d.web.kind else {}
    endpoints.update(d.web_methods)
    labels = {}
    for method, web in endpoints.items():
        name = f"{fn.name}-{method}" if method else fn.name
        label = web.label or (f"{app.name}-{name}" if app.name else name)
        label = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
        labels[label if app.deployed else f"{label}-dev"] = method
    return labels


def _stop_command(container_id: str, kill: bool) -> api_pb2.WorkerCommand:
    return api_pb2.WorkerCommand(stop_container=api_pb2.StopContainer(container_id=container_id, kill=kill))
