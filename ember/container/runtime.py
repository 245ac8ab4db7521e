"""What runs inside a container: load the user's function once, then serve inputs.

Two threads matter. The main thread loads and runs user code (signals, like the cancel
interrupt, go to it). An I/O thread runs an asyncio loop holding the one stream to the control
plane: inputs arrive there and go to the main thread through a queue; outputs and logs go
back through the loop in the order they happened, so a print always precedes the result of
the input that printed it. A function with @ember.concurrent(max_inputs=N) has N-1 more threads
taking inputs from the same queue; its async inputs run as tasks on one more event loop, shared
by them all (as Modal runs them), while a function of one input at a time runs an async input on
its thread's own loop. A function with @ember.batched(max_batch_size=N, wait_ms=W) takes up to N
inputs from the queue at once, waiting at most W ms after the first for more, and is called once
with lists of them. Web endpoints run on the I/O loop (see web.py).
"""

import asyncio
import collections
import errno
import functools
import importlib
import inspect
import io
import json
import logging
import os
import pathlib
import queue
import signal
import sys
import threading
import time
import traceback

import cloudpickle
import grpc

from .. import _transport, config, context, exception
from .._client import blobs
from .._client.auth import Authed
from .._client.bridge import LoopThread
from .._client.serialization import deserialize, serialize_exception, serialize_result
from .._client.servers import Servers
from .._client.stream import Outbox, ReconnectingStream, unavailable
from .._proc import die_with_parent
from ..proto import api_pb2, api_pb2_grpc
from .web import WebHost, make_apps

Output = api_pb2.Output
Payload = api_pb2.Payload
HEARTBEAT = 1.0             # seconds
# Answers that end the container: the control plane does not know it, or refuses its credential.
FINAL = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
RESEND_OUTPUTS = 1000       # outputs kept to resend after a reconnect
MAX_PREFETCH = 256          # inputs a container holds at most, for very fast functions (fewer, larger messages)
BATCH_SECONDS = 0.005       # a fast function's inputs come in batches worth about this long
DETACH_WAIT = 5.0           # seconds to wait for the control plane to take the last outputs
LOG_GATHER = 0.002          # seconds printed lines wait for more to go with them in one message
LOG_MESSAGE = 1 << 20       # characters of printed text in one message at most

log = logging.getLogger("ember.container")


def note_full_disk(exc: BaseException):
    """An error that came of a write finding the container's disk full says so, and how to raise
    the limit (its own message only says "No space left on device")."""
    size_mb = int(os.environ.get("EMBER_EPHEMERAL_DISK_MB") or 0)
    seen = exc
    while seen is not None and not (isinstance(seen, OSError) and seen.errno == errno.ENOSPC):
        seen = seen.__cause__ or seen.__context__
    if not size_mb or seen is None:
        return
    try:
        st = os.statvfs("/")  # the overlay's: its writable layer's disk
    except OSError:
        return
    if st.f_bavail * st.f_frsize <= max(1 << 20, (size_mb << 20) // 100):
        exc.add_note(f"The container's disk is full: its writable layer holds ephemeral_disk={size_mb} MiB. "
                     "Pass a larger ephemeral_disk= (MiB) to @app.function or @app.cls to raise it.")


class InputCancelled(BaseException):
    """Raised in the main thread when the running input is cancelled (not an Exception,
    so user code's `except Exception` does not swallow it)."""


class _ThreadLoop(threading.local):
    """The event loop that runs async functions' inputs on this thread."""
    loop: asyncio.AbstractEventLoop | None = None


class Runtime:
    def __init__(self, container_id: str, server_url: str):
        self.container_id = container_id
        self.server_url = server_url
        self.io: LoopThread | None = None             # started by run(): a memory snapshot is taken before
        self.inputs: queue.SimpleQueue = queue.SimpleQueue()
        self.init: queue.SimpleQueue = queue.SimpleQueue()
        self.held: dict[str, api_pb2.Input] = {}     # received, no final output yet (I/O thread)
        self.requested = 0                            # asked for, not yet received (I/O thread)
        self.target = 1                               # inputs to hold at once (set by main thread)
        self.recent_outputs: collections.deque = collections.deque(maxlen=RESEND_OUTPUTS)
        # Outputs the input threads finished, for the I/O thread to send (_queue_outputs).
        self.outputs_lock = threading.Lock()
        self.outputs_pending: list[api_pb2.Output] = []
        self.cancelled: set[str] = set()
        self.slots = 1                                # inputs run at once (@ember.concurrent)
        self.running: dict[str, int] = {}             # input id -> the thread running it
        self.deadlines: dict[str, float] = {}         # input id -> when it times out
        self.thread_loop = _ThreadLoop()
        self.shared_loop: asyncio.AbstractEventLoop | None = None  # concurrent async inputs' one loop
        self.tasks: dict = {}                         # input id -> its task there (a future), to cancel
        self.batch_size = 0                           # @ember.batched: inputs per call at most
        self.batch_wait = 0.0                         # ... and seconds to wait for them after the first
        self.watchdog = threading.Condition()
        self.watchdog_idle = True                     # waiting without a deadline
        # The one stream to the control plane, reopened whenever it breaks (but when the control
        # plane no longer knows this container).
        self.stream = ReconnectingStream(
            self._open, self._handle, on_connect=self._hello, retry=lambda e: e.code() not in FINAL,
            on_disconnect=self._disconnected)
        self.detached = threading.Event()
        self.initialized = False
        self.exit_hooks: list = []                    # a class's @ember.exit() methods (@app.cls)
        self.in_enter = False                         # running its @ember.enter() hooks
        self.definition: api_pb2.FunctionDefinition | None = None   # set once loaded
        self.web: WebHost | None = None               # a web endpoint's requests (on the I/O loop)
        self.stub = None
        # What was printed and not sent yet (any thread adds to it, the I/O thread sends it): lines
        # gathered for LOG_GATHER go in one message, and all of them before any output.
        self.log_lock = threading.Lock()
        self.log_pending: list[tuple[int, str, str]] = []  # (fd, text, input id)
        self.writers: tuple[LogWriter, ...] = ()  # sys.stdout and sys.stderr, as the runtime set them
        # Restored from a memory snapshot: the init it was taken with, and what it loaded then.
        self.snapshot: tuple[api_pb2.ContainerInit, object] | None = None

    # ------------------------------------------------------------------ I/O thread

    def _open(self, messages):
        """The stream on the frame transport where the worker said it is, else on gRPC."""
        self.connecting_to = url = self.servers.url
        self.stub = self.servers.stub()
        grpc_stream = functools.partial(self.stub.ContainerConnect, wait_for_ready=self.servers.wait_for_ready)
        return _transport.FrameStream(lambda: _transport.dial_from_container(url, self.servers.several, self.stub),
                                      "ContainerConnect", config.token(), messages, api_pb2.ContainerCommand,
                                      grpc_stream)

    def _disconnected(self, error):
        if error is None or unavailable(error):
            self.servers.failed(self.connecting_to, error)  # another control plane may lead now

    async def _connect_loop(self):
        # One address, or several of control planes of which one leads (servers.py). Its own
        # credential, from its worker (the same its code's calls carry: config.token()).
        self.servers = Servers(self.server_url,
                               lambda channel: Authed(api_pb2_grpc.ContainerApiStub(channel), config.token()))
        self.stub = self.servers.stub()
        self.stream.max_delay = self.servers.max_delay
        try:
            await self.stream.run()
        except grpc.aio.AioRpcError as e:  # FINAL: every other break is retried
            log.error("the control plane refused this container (%s): exiting", e.details())
            os._exit(3)
        self.detached.set()

    def _hello(self, out: Outbox):
        """What a new stream starts with: who we are, and after a reconnect (the control plane
        restarted or the network broke) what it may have lost."""
        # Sent again without the inputs they asked for: what it wants now is asked below.
        resend = [api_pb2.OutputBatch(outputs=b.outputs, http=b.http) for b in self.recent_outputs] \
            if self.initialized else []
        out.put(api_pb2.ContainerMessage(hello=api_pb2.ContainerHello(
            container_id=self.container_id, held_input_ids=list(self.held), resending=len(resend))))
        if self.initialized:
            for batch in resend:
                out.put(api_pb2.ContainerMessage(outputs=batch))
            self.requested = 0
            self._ask_for_inputs(out)

    async def _heartbeat(self):
        while True:
            await asyncio.sleep(HEARTBEAT)
            self._send(api_pb2.ContainerMessage(heartbeat=api_pb2.Empty()))

    def _send(self, msg):
        self.stream.send(msg)

    def _handle(self, cmd: api_pb2.ContainerCommand):
        kind = cmd.WhichOneof("cmd")
        if kind == "inputs":
            n = len(cmd.inputs.inputs)
            self.requested = max(0, self.requested - n)
            for inp in cmd.inputs.inputs:
                self.held[inp.input_id] = inp
                if self.web is not None and inp.HasField("http"):
                    self.web.start(inp)
                else:
                    self.inputs.put(inp)
        elif kind == "http":
            self.web.deliver(cmd.http.events)
        elif kind == "init":
            if not self.initialized:
                self.init.put(cmd.init)
        elif kind == "cancel_input_id":
            input_id = cmd.cancel_input_id
            self.cancelled.add(input_id)
            thread = self.running.get(input_id)
            task = self.tasks.get(input_id)
            if task is not None:  # an async input on the shared loop: its task is cancelled too
                task.cancel()
            if self.web is not None and input_id in self.web.requests:
                self.web.cancel(input_id)
            elif thread == threading.main_thread().ident:
                signal.pthread_kill(thread, signal.SIGUSR1)
            elif thread is not None:
                # Another thread's input cannot be interrupted safely: it is answered as
                # cancelled now, and what it returns later is dropped.
                inp = self.held.get(input_id)
                self._flush_outputs([Output(input_id=input_id, idx=inp.idx if inp else 0, status=Output.CANCELLED,
                                            error="the call was cancelled while it ran")])

    def _ask_for_inputs(self, out: Outbox | None = None):
        out = out or self.stream.outbox
        want = self.target - len(self.held) - self.requested
        if want > 0 and out is not None:
            self.requested += want
            out.put(api_pb2.ContainerMessage(want_inputs=want))

    def _queue_outputs(self, outputs: list[api_pb2.Output]):
        """From an input thread: outputs for the I/O thread to send, in the order given. Those
        queued while it is busy (sending the last ones, reading inputs) go in one message with
        them: the I/O thread is woken once for them, not once for each input."""
        with self.outputs_lock:
            first = not self.outputs_pending
            self.outputs_pending.extend(outputs)
        if first:
            self.io.call_soon(self._send_queued_outputs)

    def _send_queued_outputs(self):
        with self.outputs_lock:
            outputs, self.outputs_pending = self.outputs_pending, []
        if outputs:
            self._flush_outputs(outputs)

    def _flush_outputs(self, outputs: list[api_pb2.Output]):
        msg = api_pb2.ContainerMessage()
        msg.outputs.outputs.extend(outputs)  # (a batch made apart would be copied into msg once more)
        self._send_outputs(msg)

    def _send_outputs(self, msg: api_pb2.ContainerMessage):
        """Send msg's OutputBatch (filled in place by the caller: outputs, web requests' events),
        asking for inputs in place of those that ended."""
        self._send_logs()  # what the inputs printed goes first
        batch = msg.outputs
        for o in batch.outputs:
            if o.status != Output.GENERATOR_ITEM:
                self.held.pop(o.input_id, None)
                self.cancelled.discard(o.input_id)
        want = max(0, self.target - len(self.held) - self.requested)
        self.requested += want
        batch.want_inputs = want
        if self.web is None:  # a web request does not outlive its stream: nothing to resend
            self.recent_outputs.append(batch)
        self._send(msg)

    def log(self, fd: int, text: str, input_id: str = ""):
        """From any thread: text printed (while input_id ran), to send soon with what else comes."""
        with self.log_lock:
            self.log_pending.append((fd, text, input_id))
            first = len(self.log_pending) == 1
        if first:
            self.io.call_soon(self.io.loop.call_later, LOG_GATHER, self._send_logs)

    def _send_logs(self):
        """On the I/O thread: what was printed so far, in as few messages as its size allows."""
        with self.log_lock:
            pending, self.log_pending = self.log_pending, []
        msg, size = None, 0
        for fd, text, input_id in pending:
            if msg is None or (size and size + len(text) > LOG_MESSAGE):
                if msg is not None:
                    self._send(msg)
                msg, size = api_pb2.ContainerMessage(logs=api_pb2.LogBatch()), 0
            msg.logs.entries.add(fd=fd, data=text, input_id=input_id)  # made in place: not copied
            size += len(text)
        if msg is not None:
            self._send(msg)

    def _detach(self):
        """Close our side of the stream; the control plane finishes with what we sent."""
        self._send_logs()
        if self.stream.outbox is None:
            self.detached.set()
        self.stream.close()

    # ------------------------------------------------------------------ main thread

    def take_snapshot(self, init: api_pb2.ContainerInit, ready_fd: int):
        """Load the function as its snapshot holds it (imports, @ember.enter(snap=True) hooks, no
        secrets, no connection), say so on ready_fd, and wait: the worker checkpoints this process
        now, and restored copies read who they are on stdin."""
        os.environ.update(init.definition.env)
        self.snapshot = init, self._load(init.definition, init.app_function_ids, snap_only=True)
        os.write(ready_fd, b"ready")
        os.close(ready_fd)
        identity = json.loads(sys.stdin.readline())  # here the snapshot is taken; a restored copy goes on
        os.chdir(identity.pop("cwd"))
        os.environ.update(identity)
        self.container_id = identity["EMBER_CONTAINER_ID"]
        self.server_url = identity["EMBER_SERVER_URL"]

    def _from_snapshot(self, init: api_pb2.ContainerInit):
        """The function the snapshot loaded, its @ember.enter(snap=False) hooks run now."""
        taken, fn = self.snapshot
        if (taken.function_id, taken.definition, dict(taken.app_function_ids)) != (
                init.function_id, init.definition, dict(init.app_function_ids)):
            raise RuntimeError("this container was restored from a memory snapshot of another function or version: "
                               "the worker picked the wrong one (report it); the next container starts afresh")
        if init.definition.is_class:
            from ..cls import enter_hooks
            self.in_enter = True
            for name in enter_hooks(type(fn), snap=False):
                getattr(fn, name)()
            self.in_enter = False
        return fn

    def run(self):
        self.io = LoopThread("ember-io")
        self._capture_output()
        signal.signal(signal.SIGUSR1, self._on_cancel_signal)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        # A process the function forks (a multiprocessing pool's worker) is not the runtime: its
        # signals do what they do by default. With these handlers, a pool's SIGTERM to its
        # workers would run the container's exit hooks there and wait for an io thread that
        # does not exist in the child (it has only the thread that forked). They are blocked
        # across the fork: one that reaches the child before its handlers are reset would be
        # lost (Python drops a signal whose handler changed before it ran), and the pool would
        # wait for that worker forever.
        os.register_at_fork(before=_block_signals, after_in_parent=_unblock_signals,
                            after_in_child=_default_signals)
        self.io.call_soon(lambda: (self.io.loop.create_task(self._connect_loop()),
                                   self.io.loop.create_task(self._heartbeat())))
        threading.Thread(target=self._watchdog, name="ember-timeout", daemon=True).start()
        init = _take(self.init)
        context.app_id = init.app_id
        if init.definition.sandbox:
            # A sandbox's container runs no code of the app: commands run in it by exec, and it
            # lives until its sandbox ends it (server/sandboxes.py).
            self.initialized = True
            self.definition = init.definition
            _idle()
        started = StartupWatch(self, init.definition.startup_timeout)
        try:
            # Before user code: it may read them at import. env= comes after the secrets (Modal's order).
            os.environ.update(init.secret_env)
            os.environ.update(init.definition.env)
            note_image(init.definition)
            fn = self._from_snapshot(init) if self.snapshot else self._load(init.definition, init.app_function_ids)
            web_apps = make_apps(fn, init.definition) if init.definition.web.kind or init.definition.web_methods else {}
        except BaseException as e:  # noqa: BLE001 - whatever loading the user's code raised is the caller's
            if not started.done():
                _idle()  # it timed out meanwhile: the watch says so and ends the container
            note_full_disk(e)
            data, line, tb = serialize_exception(e)
            self._init_failed(api_pb2.ContainerInitFailure(
                error=line, traceback=tb, exception=api_pb2.Payload(data=data), in_enter=self.in_enter))
        if not started.done():
            _idle()
        self.initialized = True
        self.definition = init.definition
        self.slots = self.target = max(1, init.definition.max_inputs)
        if init.definition.batch_max_size:
            self.batch_size = init.definition.batch_max_size
            self.batch_wait = init.definition.batch_wait_ms / 1000
            self.target = 2 * self.batch_size  # the next batch gathers while one runs
        if self.slots > 1:
            self.shared_loop = asyncio.new_event_loop()
            threading.Thread(target=self.shared_loop.run_forever, name="ember-async", daemon=True).start()
        if web_apps:
            # Requests run on the I/O loop, as many at once as the function allows (a class's
            # other methods run in the threads below).
            self.web = WebHost(self, web_apps, init.definition.timeout)
            if not init.definition.is_class:
                self.io.call_soon(self._ask_for_inputs)
                _idle()  # this thread only runs signal handlers now
        for i in range(1, self.slots):
            threading.Thread(target=self._serve, args=(fn, init.definition), name=f"ember-input-{i}",
                             daemon=True).start()
        self.io.call_soon(self._ask_for_inputs)
        self._serve(fn, init.definition)

    def _init_failed(self, failure: api_pb2.ContainerInitFailure):
        """Its code could not be loaded: the calls waiting for it fail with why, and it exits."""
        self.io.call_soon(self._send_logs)  # what its imports printed comes before why they failed
        self.io.call_soon(self._send, api_pb2.ContainerMessage(init_failure=failure))
        self._exit(1)

    def _serve(self, fn, definition):
        ewma = None
        pending: list[api_pb2.Output] = []
        while True:
            if self.batch_size:
                pending.extend(self._run_batch(fn, definition, self._next_batch()))
                sys.stdout.flush()
                sys.stderr.flush()
                self._queue_outputs(pending)
                pending = []
                continue
            inp = _take(self.inputs)
            t0 = time.perf_counter()
            outputs = self._run_input(fn, definition, inp)
            duration = time.perf_counter() - t0
            ewma = duration if ewma is None else 0.8 * ewma + 0.2 * duration
            # Hold a batch worth about BATCH_SECONDS of work: one input at a time for slow functions.
            if self.web is None and self.slots == 1:
                self.target = max(1, min(MAX_PREFETCH, int(BATCH_SECONDS / max(ewma, 1e-6))))
            pending.extend(outputs)
            # Batch outputs while more inputs are already here; send as soon as there are none.
            if self.inputs.empty() or len(pending) >= MAX_PREFETCH:
                sys.stdout.flush()
                sys.stderr.flush()
                self._queue_outputs(pending)
                pending = []

    def _run_input(self, fn, definition, inp: api_pb2.Input) -> list[api_pb2.Output]:
        name = definition.name
        base = {"input_id": inp.input_id, "idx": inp.idx}
        if inp.input_id in self.cancelled:
            return [Output(**base, status=Output.CANCELLED, error="the call was cancelled")]
        try:
            args_payload = inp.args
            data = args_payload.data if not args_payload.blob_id else self._bytes(args_payload)
            args, kwargs = deserialize(data, "the arguments of " + name + "()")
            is_generator = definition.is_generator
            if inp.args.method:  # a method of the class instance `fn`
                if inp.args.method not in definition.methods:
                    raise AttributeError(f"{name} has no method {inp.args.method!r} marked @ember.method()")
                is_generator = definition.methods[inp.args.method]
                fn = getattr(fn, inp.args.method)
            # What ember.current_input_id() says while the user's code runs.
            with context.running_input(inp.input_id, inp.call_id):
                self._arm(inp.input_id, definition.timeout)
                try:
                    if is_generator:
                        for item in self._items(fn(*args, **kwargs)):
                            data, err = serialize_result(name, item)
                            if err:
                                return [Output(**base, status=Output.FAILURE, error=err)]
                            sys.stdout.flush()
                            sys.stderr.flush()
                            out = Output(**base, status=Output.GENERATOR_ITEM, data=self._payload(data))
                            self._queue_outputs([out])
                        result = None
                    else:
                        result = fn(*args, **kwargs)
                        if inspect.iscoroutine(result):
                            result = self._await(result, inp.input_id)
                finally:
                    self._disarm(inp.input_id)
                    sys.stdout.flush()  # the end of what it printed, before its output
                    sys.stderr.flush()
        except InputCancelled:
            self.thread_loop.loop = None  # interrupted while it ran: the next async input gets a fresh one
            return [Output(**base, status=Output.CANCELLED, error="the call was cancelled while it ran")]
        except BaseException as e:  # noqa: BLE001 - whatever the user's code raised is the caller's
            note_full_disk(e)
            data, line, tb = serialize_exception(e)
            return [Output(**base, status=Output.FAILURE, error=line, traceback=tb, data=self._payload(data))]
        data, err = serialize_result(name, result)
        if err:
            return [Output(**base, status=Output.FAILURE, error=err)]
        if len(data) <= blobs.BLOB_THRESHOLD:  # inline: what self._payload() makes, without its two calls
            return [Output(input_id=inp.input_id, idx=inp.idx, status=Output.SUCCESS, data=Payload(data=data))]
        try:
            return [Output(**base, status=Output.SUCCESS, data=self._payload(data))]
        except grpc.aio.AioRpcError as e:  # a large result the control plane could not store (a full disk)
            return [Output(**base, status=Output.FAILURE, error=f"{e.code().name}: its result ({len(data)} bytes) "
                           f"could not be stored: {e.details()}")]

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.thread_loop.loop is None:
            self.thread_loop.loop = asyncio.new_event_loop()
        return self.thread_loop.loop

    def _await(self, coro, input_id: str | None = None):
        """Run a coroutine of the user's: as a task on the shared loop (a concurrent function),
        or on this thread's own loop."""
        if self.shared_loop is None:
            return self._loop().run_until_complete(coro)
        task = asyncio.run_coroutine_threadsafe(coro, self.shared_loop)
        if input_id is not None:
            self.tasks[input_id] = task
        try:
            return task.result()
        finally:
            self.tasks.pop(input_id, None)

    # ---- @ember.batched

    def _next_batch(self) -> list[api_pb2.Input]:
        """Up to batch_size inputs: the first to come, and what else comes within batch_wait."""
        batch = [_take(self.inputs)]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_size:
            left = deadline - time.monotonic()
            try:
                batch.append(self.inputs.get(timeout=left) if left > 0 else self.inputs.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run_batch(self, fn, definition, batch: list[api_pb2.Input]) -> list[api_pb2.Output]:
        """One call of a batched function with lists of its inputs' arguments (a class's method
        per method its inputs name); each input gets its own item of the list it returns."""
        outputs, groups = [], {}
        for inp in batch:
            if inp.input_id in self.cancelled:
                outputs.append(Output(input_id=inp.input_id, idx=inp.idx, status=Output.CANCELLED,
                                      error="the call was cancelled"))
            else:
                groups.setdefault(inp.args.method, []).append(inp)
        for method, inputs in groups.items():
            outputs.extend(self._call_batch(fn, definition, method, inputs))
        return outputs

    def _call_batch(self, fn, definition, method: str, inputs: list[api_pb2.Input]) -> list[api_pb2.Output]:
        name = f"{definition.name}.{method}" if method else definition.name
        outputs, columns, ran = [], None, []
        try:
            if method:
                if method not in definition.methods:
                    raise AttributeError(f"{definition.name} has no method {method!r} marked @ember.method()")
                fn = getattr(fn, method)
            params = list(inspect.signature(fn).parameters.values())
            if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
                raise TypeError(f"@ember.batched {name}() cannot take *args or **kwargs: name each parameter")
            signature = inspect.Signature(params)
        except BaseException as e:  # noqa: BLE001 - the user's code's fault: each input hears of it
            return self._fail_all(inputs, e)
        columns = {p.name: [] for p in params}
        for inp in inputs:
            try:
                args, kwargs = deserialize(self._bytes(inp.args), f"the arguments of {name}()")
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
            except BaseException as e:  # noqa: BLE001 - this input's own arguments are wrong: it alone fails
                outputs.extend(self._fail_all([inp], e))
                continue
            for k, v in bound.arguments.items():
                columns[k].append(v)
            ran.append(inp)
        if not ran:
            return outputs
        for inp in ran:
            self._arm(inp.input_id, definition.timeout)
        try:
            results = fn(**columns)
            if inspect.iscoroutine(results):
                results = self._await(results)
            if not isinstance(results, (list, tuple)) or len(results) != len(ran):
                got = f"{len(results)} results" if isinstance(results, (list, tuple)) else \
                    f"a {type(results).__name__}"
                raise exception.ExecutionError(
                    f"@ember.batched {name}() returned {got} for a batch of {len(ran)} inputs: it must return "
                    "a list with one result per input, in their order")
        except InputCancelled:
            return outputs + [Output(input_id=i.input_id, idx=i.idx, status=Output.CANCELLED,
                                     error="the call was cancelled while it ran") for i in ran]
        except BaseException as e:  # noqa: BLE001 - what the user's code raised reaches every input of the batch
            return outputs + self._fail_all(ran, e)
        finally:
            for inp in ran:
                self._disarm(inp.input_id)
        for inp, result in zip(ran, results):
            base = {"input_id": inp.input_id, "idx": inp.idx}
            data, err = serialize_result(name, result)
            if err:
                outputs.append(Output(**base, status=Output.FAILURE, error=err))
            else:
                outputs.append(Output(**base, status=Output.SUCCESS, data=self._payload(data)))
        return outputs

    def _fail_all(self, inputs: list[api_pb2.Input], e: BaseException) -> list[api_pb2.Output]:
        note_full_disk(e)
        data, line, tb = serialize_exception(e)
        payload = self._payload(data)
        return [Output(input_id=i.input_id, idx=i.idx, status=Output.FAILURE, error=line, traceback=tb, data=payload)
                for i in inputs]

    def _items(self, gen):
        """A generator's items, or an async generator's, run on this thread's loop."""
        if not inspect.isasyncgen(gen):
            yield from gen
            return
        while True:
            try:
                yield self._await(anext(gen))
            except StopAsyncIteration:
                return

    def _payload(self, data: bytes) -> api_pb2.Payload:
        return blobs.to_payload(data, lambda d: self.io.run(blobs.upload(self.stub, d)))

    def _bytes(self, payload: api_pb2.Payload) -> bytes:
        return blobs.from_payload(payload, lambda b: self.io.run(blobs.download(self.stub, b)))

    def _load(self, d: api_pb2.FunctionDefinition, app_function_ids, snap_only: bool = False):
        if d.pickled.data or d.pickled.blob_id:
            obj = deserialize(self._bytes(d.pickled), f"function {d.name}")
        else:
            if d.code_blob_id:
                sys.path.insert(0, str(self._code_dir(d.code_blob_id)))
            module = importlib.import_module(d.module)
            obj = module
            for part in d.qualname.split("."):
                try:
                    obj = getattr(obj, part)
                except AttributeError:
                    raise AttributeError(f"module {d.module!r} ({getattr(module, '__file__', '?')}) has no "
                                         f"function {d.qualname!r}") from None
        from ..cls import Cls, hooks, instantiate
        from ..function import Function
        if isinstance(obj, (Function, Cls)):
            # The app's other functions, as imported here, can be called from this one.
            app = (obj._function if isinstance(obj, Cls) else obj)._app
            for name, f in (app._functions.items() if app is not None else ()):
                if name in app_function_ids:
                    f._hydrate(None, app_function_ids[name])
            obj = obj.get_raw_f() if isinstance(obj, Function) else obj.get_user_cls()
        if d.is_class:
            # One instance per container: parameters set and enter hooks run before any input.
            params = dict(cloudpickle.loads(d.bound_params)) if d.bound_params else {}
            self.in_enter = True
            instance = instantiate(obj, params, snap_only)
            self.in_enter = False
            self.exit_hooks = [getattr(instance, name) for name in hooks(obj, "exit")]
            return instance
        if not callable(obj):
            raise TypeError(f"{d.module}.{d.qualname} is a {type(obj).__name__}, not a function")
        return obj

    def _code_dir(self, blob_id: str) -> pathlib.Path:
        """The function's source, unpacked once per worker into a shared cache."""
        cache = pathlib.Path(os.environ.get("EMBER_CODE_CACHE") or pathlib.Path.cwd() / ".code")
        dest = cache / blob_id
        if not dest.exists():
            blobs.unpack_code(cache, blob_id, self.io.run(blobs.download(self.stub, blob_id)))
        return dest

    # ---- timeouts and cancellation

    def _arm(self, input_id: str, timeout: float):
        with self.watchdog:
            self.running[input_id] = threading.get_ident()
            if timeout > 0:
                self.deadlines[input_id] = time.monotonic() + timeout
                # A watchdog already waiting for an earlier deadline wakes by itself and re-reads
                # the next one: waking it for every input would cost a thread switch per input.
                if self.watchdog_idle:
                    self.watchdog.notify()

    def _disarm(self, input_id: str):
        with self.watchdog:
            self.running.pop(input_id, None)
            self.deadlines.pop(input_id, None)

    def _watchdog(self):
        with self.watchdog:
            while True:
                if not self.deadlines:
                    self.watchdog_idle = True
                    self.watchdog.wait()
                    continue
                self.watchdog_idle = False
                input_id, deadline = min(self.deadlines.items(), key=lambda item: item[1])
                left = deadline - time.monotonic()
                if left > 0:
                    self.watchdog.wait(left)
                    continue
                inp = self.held.get(input_id)
                timeout = self.definition.timeout
                out = Output(input_id=input_id, idx=inp.idx if inp else 0, status=Output.TIMEOUT,
                             error=f"timed out after {timeout:g}s (its timeout); its container was stopped")
                self.io.call_soon(self._flush_outputs, [out])
                # The user's code cannot be interrupted safely: end the container instead.
                self._exit(0)

    def _on_cancel_signal(self, signum, frame):
        main = threading.main_thread().ident
        if any(thread == main and input_id in self.cancelled for input_id, thread in list(self.running.items())):
            raise InputCancelled()

    def _on_sigterm(self, signum, frame):
        for hook in self.exit_hooks:  # a class's @ember.exit() methods, as the container stops
            try:
                hook()
            except Exception:  # noqa: BLE001 - shown; the container stops all the same
                traceback.print_exc()
        from ..volume import Volume, _mounts
        for volume_id in _mounts():  # what it wrote to its volumes is committed as it stops
            try:
                Volume._from_id(volume_id, None).commit()
            except Exception:  # noqa: BLE001 - shown; the container stops all the same
                traceback.print_exc()
        self._exit(0)

    def _exit(self, code: int):
        for writer in self.writers:
            writer.flush_all()
        self.io.call_soon(self._detach)
        self.detached.wait(DETACH_WAIT)
        os._exit(code)

    # ---- output capture

    def _capture_output(self):
        """Everything the container prints goes to the caller, as it is printed."""
        for fd in (1, 2):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            threading.Thread(target=self._pump, args=(r, fd), name=f"ember-fd{fd}", daemon=True).start()
        self.writers = sys.stdout, sys.stderr = LogWriter(self, 1), LogWriter(self, 2)

    def _pump(self, r: int, fd: int):
        """Output written straight to the file descriptors (C code, subprocesses)."""
        while data := os.read(r, 65536):
            self.log(fd, data.decode(errors="replace"))  # of no input: which one wrote it is not known


class StartupWatch:
    """startup_timeout=: the container's imports and @ember.enter() hooks must be done in time,
    else it fails its function's calls with an error saying so, and exits (user code cannot be
    interrupted safely)."""

    def __init__(self, runtime: Runtime, seconds: float):
        self.runtime = runtime
        self.seconds = seconds
        self.lock = threading.Lock()
        self.state = "loading"  # then "done" (in time) or "timed out"
        if seconds > 0:
            self.timer = threading.Timer(seconds, self._expired)
            self.timer.daemon = True
            self.timer.start()

    def done(self) -> bool:
        """Loading ended: True if in time (the watch stops), False if it had timed out."""
        with self.lock:
            if self.state == "loading":
                self.state = "done"
                if self.seconds > 0:
                    self.timer.cancel()
            return self.state == "done"

    def _expired(self):
        with self.lock:
            if self.state != "loading":
                return
            self.state = "timed out"
        where = "its @ember.enter() hooks" if self.runtime.in_enter else "importing its code"
        self.runtime._init_failed(api_pb2.ContainerInitFailure(error=(
            f"its container did not start within startup_timeout={self.seconds:g}s (it was still {where}): "
            "make its imports and @ember.enter() hooks faster, or pass a larger startup_timeout= to "
            "@app.function or @app.cls")))


class LogWriter(io.TextIOBase):
    """sys.stdout/sys.stderr in the container: line-buffered, sent in order with outputs, each line
    with the input whose code printed it (the input of its thread or async task, context.py; none
    at import or in @ember.enter()). Each input has its own buffer, so that the pieces of lines
    that concurrent inputs print do not mix."""

    def __init__(self, runtime: Runtime, fd: int):
        self.runtime = runtime
        self.fd = fd
        self.lock = threading.Lock()
        self.bufs: dict[str, list[str]] = {}  # input id ('' for none) -> what it wrote since its last line

    def writable(self):
        return True

    def write(self, s: str) -> int:
        input_id = context.current_input_id() or ""
        with self.lock:
            buf = self.bufs.setdefault(input_id, [])
            buf.append(s)
            if "\n" not in s:
                return len(s)
            del self.bufs[input_id]
        self.runtime.log(self.fd, "".join(buf), input_id)
        return len(s)

    def flush(self):
        """What the current input wrote (or, outside any, what was written outside inputs): another
        input's piece of a line waits for the rest of its line."""
        if not self.bufs:
            # Nothing waits (the usual case: this runs for every input). Read without the lock:
            # what this input wrote, its thread (or task) wrote before now.
            return
        input_id = context.current_input_id() or ""
        with self.lock:
            buf = self.bufs.pop(input_id, None)
        if buf:
            self.runtime.log(self.fd, "".join(buf), input_id)

    def flush_all(self):
        """Everything, as the container ends."""
        with self.lock:
            bufs, self.bufs = self.bufs, {}
        for input_id, buf in bufs.items():
            self.runtime.log(self.fd, "".join(buf), input_id)

    def isatty(self):
        return False

    def fileno(self):
        return self.fd


RUNTIME_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)  # those the runtime handles


# Python runs signal handlers (SIGTERM's exit hooks) in the main thread only, and the kernel may
# hand a signal to another thread (one the main thread is not ready for: it has another pending,
# or blocks it around a fork): a main thread asleep in a wait would then never run the handler.
# So its waits wake every WAKE seconds, which runs what came meanwhile.
WAKE = 0.5


def note_image(d: api_pb2.FunctionDefinition):
    """Before its code loads: the image it runs in, for `with image.imports():` to raise (an
    import that fails in the image it is for is an error, elsewhere only missing)."""
    from .. import image
    image.current_recipe = image.recipe([(api_pb2.ImageStep.Kind.Name(s.kind).lower(), s.args, dict(s.env), s.path)
                                         for s in d.image.steps])


def _take(q: queue.SimpleQueue):
    """The next item of q (without waiting when one is there), the main thread waking meanwhile."""
    while True:
        try:
            return q.get(timeout=WAKE)
        except queue.Empty:
            pass


def _idle():
    """The main thread has nothing more to do but run signal handlers."""
    while True:
        time.sleep(WAKE)


def _block_signals():
    signal.pthread_sigmask(signal.SIG_BLOCK, RUNTIME_SIGNALS)


def _unblock_signals():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, RUNTIME_SIGNALS)


def _default_signals():
    for signum in RUNTIME_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    _unblock_signals()  # one that came meanwhile does now what it does by default


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s container %(levelname)s %(message)s")
    if "EMBER_SNAPSHOT_INIT" in os.environ:
        # Not dying with the worker: a restored copy's parent is its restorer (worker/memory_snapshots.py),
        # which dies with the worker; a parent-death signal kept in the snapshot would kill it as that exits.
        init = api_pb2.ContainerInit.FromString(pathlib.Path(os.environ.pop("EMBER_SNAPSHOT_INIT")).read_bytes())
        runtime = Runtime("", "")
        runtime.take_snapshot(init, int(os.environ.pop("EMBER_SNAPSHOT_READY_FD")))
        runtime.run()
        return
    die_with_parent(int(os.environ["EMBER_WORKER_PID"]) if "EMBER_WORKER_PID" in os.environ else None)
    if os.environ.get("EMBER_SPARE"):
        # A spare: started ahead of need with everything above imported; the worker says
        # which container to be when one is needed (or closes the pipe: nothing to do).
        line = sys.stdin.readline()
        if not line:
            return
        os.environ.update(json.loads(line))
    Runtime(os.environ["EMBER_CONTAINER_ID"], os.environ["EMBER_SERVER_URL"]).run()
