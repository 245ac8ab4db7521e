"""ember.Function and ember.FunctionCall: calling a function that runs in a container.

Every way to call has an async twin under `.aio`: `f.remote(x)` / `await f.remote.aio(x)`,
`f.map(xs)` / `async for y in f.map.aio(xs)`, `call.get()` / `await call.get.aio()`.
"""

import asyncio
import functools
import inspect
import posixpath
import threading
import time

from . import _gpu, exception
from ._client.client import Client
from ._client.serialization import deserialize, exception_from_output, serialize_args
from ._ids import new_id
from .image import DEFAULT_IMAGE, Image
from .proto import api_pb2
from .retries import Retries
from .schedule import Cron, Period
from .secret import Secret
from .volume import Volume

Output = api_pb2.Output
POLL = 50.0                 # seconds per long poll for outputs
MAP_BATCH = 1000            # inputs per message
MAP_BATCH_BYTES = 4 << 20
MAP_BATCH_AGE = 0.02        # seconds an unsent batch may wait for more inputs
MAP_OUTSTANDING = 50_000    # inputs sent but not yet returned, before the sender waits


# Where a volume cannot be mounted: the system's own directories and Ember's.
RESERVED_MOUNTS = ("proc", "sys", "dev", "ember", "usr", "bin", "sbin", "lib", "lib64", "etc")


class _aio:
    """A method with an async twin: obj.name(...) and await obj.name.aio(...)."""

    def __init__(self, aio_impl):
        self.aio_impl = aio_impl
        self.sync_impl = None

    def __call__(self, sync_impl):
        self.sync_impl = sync_impl
        functools.update_wrapper(self, sync_impl)
        return self

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        bound = functools.partial(self.sync_impl, obj)
        bound.aio = functools.partial(self.aio_impl, obj)
        return bound


def parse_gpu(gpu) -> str:
    """Validate a GPU request: "any", "H100", "A100:2", ...; returns it normalized ("" for none)."""
    try:
        kind, count = _gpu.parse_request(gpu)
    except _gpu.GpuRequestError as e:
        raise exception.InvalidError(f"gpu={gpu!r}: {e}") from None
    return kind if count <= 1 else f"{kind}:{count}"


class FunctionSpec:
    """The validated options of @app.function."""

    def __init__(self, *, image=None, cpu=None, memory=None, gpu=None, timeout=300, retries=None,
                 secrets=(), volumes=None, max_containers=None, min_containers=0, scaledown_window=60,
                 block_network=False, schedule=None):
        if image is not None and not isinstance(image, Image):
            raise exception.InvalidError(f"image={image!r}: pass an ember.Image, e.g. ember.Image.debian_slim()")
        # cpu= and memory= given explicitly are limits too; unset, they are only what is reserved.
        self.cpu_limit = float(cpu) if isinstance(cpu, (int, float)) and not isinstance(cpu, bool) else 0.0
        self.memory_limit = memory if isinstance(memory, int) and not isinstance(memory, bool) else 0
        cpu = 0.125 if cpu is None else cpu
        if not isinstance(cpu, (int, float)) or isinstance(cpu, bool) or not 0 < cpu <= 256:
            raise exception.InvalidError(f"cpu={cpu!r}: pass the number of cores, e.g. 0.5 or 2")
        memory = 128 if memory is None else memory
        if not isinstance(memory, int) or isinstance(memory, bool) or not 1 <= memory <= 4 << 20:
            raise exception.InvalidError(f"memory={memory!r}: pass MiB as an integer, e.g. 512")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 86400:
            raise exception.InvalidError(f"timeout={timeout!r}: pass seconds, more than 0 and at most 86400")
        if max_containers is not None and (not isinstance(max_containers, int) or max_containers < 1):
            raise exception.InvalidError(f"max_containers={max_containers!r}: pass a positive integer or None")
        if not isinstance(min_containers, int) or min_containers < 0:
            raise exception.InvalidError(f"min_containers={min_containers!r}: pass a non-negative integer")
        if max_containers is not None and min_containers > max_containers:
            raise exception.InvalidError(f"min_containers={min_containers} exceeds max_containers={max_containers}")
        if not isinstance(scaledown_window, (int, float)) or not 0 < scaledown_window <= 86400:
            raise exception.InvalidError(f"scaledown_window={scaledown_window!r}: pass seconds, from 1 to 86400")
        if not isinstance(secrets, (list, tuple)) or not all(isinstance(s, Secret) for s in secrets):
            raise exception.InvalidError(f"secrets={secrets!r}: pass a list of ember.Secret")
        self.secrets = list(secrets)
        volumes = volumes or {}
        if not isinstance(volumes, dict) or not all(isinstance(v, Volume) for v in volumes.values()):
            raise exception.InvalidError(f"volumes={volumes!r}: pass a dict of mount path -> ember.Volume")
        for path in volumes:
            clean = posixpath.normpath(path) if isinstance(path, str) else ""
            if not clean.startswith("/") or clean == "/" or clean.split("/")[1] in RESERVED_MOUNTS:
                raise exception.InvalidError(f"volumes: {path!r} cannot be a mount path: pass an absolute path "
                                             f"outside {', '.join('/' + r for r in RESERVED_MOUNTS)}, e.g. \"/data\"")
        self.volumes = {posixpath.normpath(p): v for p, v in volumes.items()}
        if schedule is not None and not isinstance(schedule, (Cron, Period)):
            raise exception.InvalidError(f"schedule={schedule!r}: pass ember.Cron(...) or ember.Period(...)")
        self.schedule = schedule
        self.image = image or DEFAULT_IMAGE
        self.block_network = bool(block_network)
        self.cpu = float(cpu)
        self.memory = memory
        self.gpu = parse_gpu(gpu)
        self.timeout = float(timeout)
        self.retries = Retries.coerce(retries)
        self.max_containers = max_containers
        self.min_containers = min_containers
        self.scaledown_window = float(scaledown_window)

    def definition(self, name: str, is_generator: bool) -> api_pb2.FunctionDefinition:
        return api_pb2.FunctionDefinition(
            name=name, is_generator=is_generator,
            resources=api_pb2.Resources(cpu=self.cpu, memory_mb=self.memory, gpu=self.gpu, cpu_limit=self.cpu_limit,
                                        memory_limit_mb=self.memory_limit),
            block_network=self.block_network,
            schedule=self.schedule._proto() if self.schedule is not None else None,
            timeout=self.timeout, retries=self.retries.to_proto(), max_containers=self.max_containers or 0,
            min_containers=self.min_containers, scaledown_window=self.scaledown_window)


async def _output_value(client: Client, out: api_pb2.Output, name: str):
    """The value an output carries, or the exception it describes (raised)."""
    data = await client.payload_bytes_async(out.data)
    if out.status in (Output.SUCCESS, Output.GENERATOR_ITEM):
        return deserialize(data, f"the result of {name}()")
    raise exception_from_output(out, data, name)


class Function:
    """A function of an App; call it with .remote(), .map(), .spawn() and friends."""

    def __init__(self, app, raw_f, spec: FunctionSpec, name: str | None = None, serialized: bool = False):
        self._app = app
        self._serialized = serialized  # ship by value (cloudpickle) even from an importable file
        self._raw_f = raw_f
        self._spec = spec
        self._name = name or raw_f.__name__
        self._is_generator = inspect.isgeneratorfunction(raw_f) or inspect.isasyncgenfunction(raw_f)
        self._function_id: str | None = None
        self._client: Client | None = None
        self._web_url: str | None = None
        self._method_web_urls: dict[str, str] = {}  # a class's web methods
        functools.update_wrapper(self, raw_f)

    def __repr__(self):
        return f"<ember.Function {self._name}>"

    def __reduce__(self):
        # Pickled (e.g. by a function that calls this one): a reference that works remotely.
        return (_function_ref, (self._name, self._function_id, self._is_generator))

    @property
    def object_id(self) -> str | None:
        return self._function_id

    def get_raw_f(self):
        return self._raw_f

    def _hydrate(self, client: Client | None, function_id: str | None, web_url: str = "", method_web_urls=None):
        self._client, self._function_id, self._web_url = client, function_id, web_url or None
        self._method_web_urls = dict(method_web_urls or {})

    def get_web_url(self) -> str | None:
        """Where the function's web endpoint is served (None if it has none)."""
        self._ready()
        return self._web_url

    @classmethod
    def from_name(cls, app_name: str, name: str) -> "Function":
        """A function of a deployed app, from any process; looked up when first called. Calls
        always reach the app's current version."""
        f = cls.__new__(cls)
        f._app, f._serialized, f._raw_f, f._spec = None, False, None, None
        f._name, f._is_generator, f._function_id, f._client, f._web_url = name, False, None, None, None
        f._method_web_urls = {}
        f._lookup = (app_name, name)
        return f

    _lookup: tuple[str, str] | None = None
    _methods: dict | None = None  # of a class looked up by name

    def _ready(self) -> tuple[Client, str]:
        if self._function_id is None and self._lookup is not None:
            client = Client.from_env()
            resp = client.run(client.rpc("FunctionLookup", api_pb2.FunctionLookupRequest(
                app_name=self._lookup[0], name=self._lookup[1]), what=f"looking up {self._lookup[1]}"))
            self._client, self._function_id, self._is_generator = client, resp.function_id, resp.is_generator
            self._web_url = resp.web_url or None
            self._method_web_urls = dict(resp.method_web_urls)
            self._methods = dict(resp.methods) if resp.is_class else None
        if self._function_id is None:
            app = getattr(self._app, "name", None) or "its app"
            raise exception.ExecutionError(
                f"Function {self._name}() belongs to app {app!r}, which is not running. Call it inside "
                "`with app.run():`, from a @app.local_entrypoint() run by `ember run`, or run the "
                f"file with `ember run FILE::{self._name}`.")
        if self._client is None:
            self._client = Client.from_env()
        return self._client, self._function_id

    def _check_not_generator(self, how: str):
        if self._is_generator:
            raise exception.InvalidError(
                f"{self._name}() is a generator function: call it with .remote_gen(), not {how}")

    def _args_payload(self, client: Client, args, kwargs) -> api_pb2.Payload:
        return client.payload(serialize_args(self._name, args, kwargs))

    def _prepare(self, how: str, args, kwargs) -> tuple[Client, str, api_pb2.Payload]:
        """Checks common to every way of calling, then the arguments, pickled (or failing here)."""
        client, fid = self._ready()  # first: a function looked up by name learns what it is here
        if how == ".remote_gen()":
            if not self._is_generator:
                raise exception.InvalidError(f"{self._name}() is not a generator function: call it with .remote()")
        else:
            self._check_not_generator(how)
        return client, fid, self._args_payload(client, args, kwargs)

    def _check_response(self, resp: api_pb2.CallResponse):
        if resp.error:
            raise exception.ExecutionError(f"Cannot call {self._name}(): {resp.error}")

    # ---------------------------------------------------------------- local

    def local(self, *args, **kwargs):
        """Run the function here, in this process."""
        return self._raw_f(*args, **kwargs)

    # ---------------------------------------------------------------- remote

    async def _remote_aio(self, *args, **kwargs):
        client, fid, payload = self._prepare(".remote()", args, kwargs)
        resp = await client.mux.call_async(api_pb2.CallRequest(function_id=fid, call_id=new_id("fc"), args=payload))
        self._check_response(resp)
        await self._wait_for_logs_aio(resp.output.log_seq)
        return await client.bridge.run_async(_output_value(client, resp.output.output, self._name))

    @_aio(_remote_aio)
    def remote(self, *args, **kwargs):
        """Run the function in a container and return its result."""
        client, fid, payload = self._prepare(".remote()", args, kwargs)
        resp = client.mux.call_sync(api_pb2.CallRequest(function_id=fid, call_id=new_id("fc"), args=payload))
        self._check_response(resp)
        self._wait_for_logs(resp.output.log_seq)
        out = resp.output.output
        if out.status == Output.SUCCESS and not out.data.blob_id:
            # The hot path: an inline result, no need to visit the event loop again.
            return deserialize(out.data.data, f"the result of {self._name}()")
        return client.run(_output_value(client, out, self._name))

    def _wait_for_logs(self, log_seq: int):
        """Let what the container printed before its result reach the terminal first."""
        running = getattr(self._app, "_running", None)
        if running is not None and running.logs_behind(log_seq):
            running.wait_for_logs(log_seq)

    async def _wait_for_logs_aio(self, log_seq: int):
        running = getattr(self._app, "_running", None)
        if running is not None and running.logs_behind(log_seq):
            await asyncio.to_thread(running.wait_for_logs, log_seq)

    # ---------------------------------------------------------------- spawn

    async def _spawn_aio(self, *args, **kwargs) -> "FunctionCall":
        client, fid, payload = self._prepare(".spawn()", args, kwargs)
        return await client.bridge.run_async(self._spawn(client, fid, payload))

    @_aio(_spawn_aio)
    def spawn(self, *args, **kwargs) -> "FunctionCall":
        """Start the function in a container; returns a FunctionCall to .get() the result later."""
        client, fid, payload = self._prepare(".spawn()", args, kwargs)
        return client.run(self._spawn(client, fid, payload))

    async def _spawn(self, client: Client, fid: str, payload) -> "FunctionCall":
        call_id = new_id("fc")
        await client.rpc("FunctionCallCreate", api_pb2.FunctionCallCreateRequest(
            function_id=fid, call_id=call_id, inputs=[api_pb2.Input(idx=0, args=payload)], inputs_complete=True),
            what=f"spawning {self._name}()")
        return FunctionCall(call_id, client, self._name)

    # ---------------------------------------------------------------- generators

    async def _remote_gen_aio(self, *args, **kwargs):
        client, fid, payload = self._prepare(".remote_gen()", args, kwargs)
        call_id = (await client.bridge.run_async(self._spawn(client, fid, payload))).object_id
        after = 0
        while True:
            items, after, finished, log_seq, error = await client.bridge.run_async(
                self._gen_items(client, call_id, after))
            await self._wait_for_logs_aio(log_seq)
            for item in items:
                yield item
            if error is not None:
                raise error
            if finished:
                return

    @_aio(_remote_gen_aio)
    def remote_gen(self, *args, **kwargs):
        """Run a generator function remotely; its items arrive here as they are produced."""
        client, fid, payload = self._prepare(".remote_gen()", args, kwargs)
        call_id = client.run(self._spawn(client, fid, payload)).object_id
        after = 0
        while True:
            items, after, finished, log_seq, error = client.run(self._gen_items(client, call_id, after))
            self._wait_for_logs(log_seq)
            yield from items
            if error is not None:
                raise error
            if finished:
                return

    async def _gen_items(self, client: Client, call_id: str, after: int):
        """(items, last seq, finished, log seq, error) from the next batch of a generator's outputs."""
        resp = await client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
            call_id=call_id, after_seq=after, max_outputs=1000, timeout=POLL))
        items = []
        log_seq = 0
        for co in resp.outputs:
            after = co.seq
            log_seq = co.log_seq
            if co.output.status == Output.GENERATOR_ITEM:
                items.append(await _output_value(client, co.output, self._name))
            elif co.output.status == Output.SUCCESS:
                return items, after, True, log_seq, None
            else:
                try:
                    await _output_value(client, co.output, self._name)
                except Exception as e:
                    return items, after, True, log_seq, e
        return items, after, False, log_seq, None

    # ---------------------------------------------------------------- map

    @_aio(lambda self, *its, **kw: self._map_aio(zip(*its), kw))
    def map(self, *iterables, order_outputs: bool = True, return_exceptions: bool = False):
        """Run the function over each item (zipping several iterables), in parallel containers."""
        return self._map(((args, {}) for args in zip(*iterables)), order_outputs, return_exceptions)

    @_aio(lambda self, it, kwargs=None, **kw: self._map_aio(it, dict(kw, kwargs=kwargs)))
    def starmap(self, input_iterator, kwargs: dict | None = None, order_outputs: bool = True,
                return_exceptions: bool = False):
        """Like map, but each item is a tuple of positional arguments."""
        return self._map(((tuple(args), kwargs or {}) for args in input_iterator), order_outputs, return_exceptions)

    async def _for_each_aio(self, *iterables, ignore_exceptions: bool = False):
        async for _ in self._map_aio(zip(*iterables), {"return_exceptions": ignore_exceptions}):
            pass

    @_aio(_for_each_aio)
    def for_each(self, *iterables, ignore_exceptions: bool = False) -> None:
        """Run the function over each item for its effects; results are dropped."""
        for _ in self.map(*iterables, order_outputs=False, return_exceptions=ignore_exceptions):
            pass

    def _map(self, arg_iter, order_outputs: bool, return_exceptions: bool):
        client, fid = self._ready()
        self._check_not_generator(".map()")
        run = _MapRun(self, client, fid, arg_iter)
        return run.results(order_outputs, return_exceptions)

    async def _map_aio(self, args_iter, options: dict):
        """The async twin of map/starmap: the sync machinery on a thread, results on this loop."""
        kwargs = options.pop("kwargs", None)
        pairs = ((tuple(a), kwargs or {}) for a in args_iter)
        gen = self._map(pairs, options.get("order_outputs", True), options.get("return_exceptions", False))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def pump():
            try:
                for item in gen:
                    loop.call_soon_threadsafe(queue.put_nowait, (item, None))
            except BaseException as e:
                loop.call_soon_threadsafe(queue.put_nowait, (None, e))
            loop.call_soon_threadsafe(queue.put_nowait, (done, None))

        threading.Thread(target=pump, name="ember-map", daemon=True).start()
        while True:
            item, err = await queue.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item


def _function_ref(name: str, function_id: str | None, is_generator: bool) -> Function:
    f = Function.__new__(Function)
    f._app, f._raw_f, f._spec, f._name = None, None, None, name
    f._is_generator, f._function_id, f._client, f._serialized = is_generator, function_id, None, False
    return f


class _MapRun:
    """One .map(): a thread sends inputs in batches while the caller reads outputs in batches."""

    def __init__(self, function: Function, client: Client, fid: str, arg_iter):
        self.f = function
        self.client = client
        self.fid = fid
        self.call_id = new_id("fc")
        self.arg_iter = arg_iter
        self.sent = 0
        self.received = 0
        self.send_error: BaseException | None = None
        self.flow = threading.Condition()
        self.created = False
        threading.Thread(target=self._send, name="ember-map-send", daemon=True).start()

    def _send(self):
        batch: list[api_pb2.Input] = []
        size = 0
        started = time.monotonic()
        try:
            for args, kwargs in self.arg_iter:
                payload = self.f._args_payload(self.client, args, kwargs)
                batch.append(api_pb2.Input(idx=self.sent + len(batch), args=payload))
                size += len(payload.data)
                if len(batch) >= MAP_BATCH or size >= MAP_BATCH_BYTES or time.monotonic() - started > MAP_BATCH_AGE:
                    self._flush(batch, False)
                    batch, size, started = [], 0, time.monotonic()
                    with self.flow:
                        self.flow.wait_for(lambda: self.sent - self.received < MAP_OUTSTANDING)
            self._flush(batch, True)
        except BaseException as e:
            self.send_error = e
            if self.created:
                self.client.run(_cancel_call(self.client, self.call_id))
            else:
                self.client.run(self._create([], True))
        finally:
            with self.flow:
                self.flow.notify_all()

    def _flush(self, batch, complete: bool):
        if not self.created:
            self.client.run(self._create(batch, complete))
        else:
            self.client.run(self.client.rpc("FunctionCallPutInputs", api_pb2.PutInputsRequest(
                call_id=self.call_id, inputs=batch, inputs_complete=complete)))
        with self.flow:
            self.sent += len(batch)
            self.created = True
            self.flow.notify_all()

    async def _create(self, batch, complete):
        await self.client.rpc("FunctionCallCreate", api_pb2.FunctionCallCreateRequest(
            function_id=self.fid, call_id=self.call_id, inputs=batch, inputs_complete=complete),
            what=f"mapping {self.f._name}()")

    async def _fetch(self, after: int):
        """Next batch of final outputs as (idx, value or exception, failed)."""
        resp = await self.client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
            call_id=self.call_id, after_seq=after, max_outputs=10_000, timeout=POLL))
        results = []
        log_seq = 0
        for co in resp.outputs:
            after = co.seq
            log_seq = max(log_seq, co.log_seq)
            try:
                results.append((co.output.idx, await _output_value(self.client, co.output, self.f._name), False))
            except Exception as e:
                results.append((co.output.idx, e, True))
        finished = resp.inputs_complete and resp.num_done >= resp.num_inputs and after >= resp.num_done
        return results, after, finished, log_seq

    def results(self, order_outputs: bool, return_exceptions: bool):
        with self.flow:
            self.flow.wait_for(lambda: self.created or self.send_error is not None)
        if self.send_error is not None and not self.created:
            raise self.send_error
        after = 0
        buffered: dict[int, object] = {}
        next_idx = 0
        finished = False
        try:
            while not finished:
                results, after, finished, log_seq = self.client.run(self._fetch(after))
                self.f._wait_for_logs(log_seq)  # what the inputs printed comes first
                with self.flow:
                    self.received += len(results)
                    self.flow.notify_all()
                if self.send_error is not None:
                    raise self.send_error
                for idx, value, failed in results:
                    if failed and not return_exceptions:
                        raise value
                    if not order_outputs:
                        yield value
                        continue
                    buffered[idx] = value
                    while next_idx in buffered:
                        yield buffered.pop(next_idx)
                        next_idx += 1
        except BaseException:  # including GeneratorExit: the caller stopped reading
            self._cancel()
            raise

    def _cancel(self):
        try:
            self.client.run(_cancel_call(self.client, self.call_id))
        except exception.Error:
            pass


async def _cancel_call(client: Client, call_id: str):
    await client.rpc("FunctionCallCancel", api_pb2.FunctionCallRef(call_id=call_id), what=f"cancelling {call_id}")


class FunctionCall:
    """A call started with .spawn(): get its result later, from this or any other process."""

    def __init__(self, call_id: str, client: Client | None = None, function_name: str | None = None):
        self.object_id = call_id
        self._client = client
        self._name = function_name

    def __repr__(self):
        return f"<ember.FunctionCall {self.object_id}>"

    @staticmethod
    def from_id(call_id: str) -> "FunctionCall":
        return FunctionCall(call_id, Client.from_env())

    def _c(self) -> Client:
        if self._client is None:
            self._client = Client.from_env()
        return self._client

    async def _get(self, timeout: float | None):
        client = self._c()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            resp = await client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
                call_id=self.object_id, max_outputs=1000, timeout=left), what=f"getting {self.object_id}")
            name = self._name or resp.function_name or "the function"
            for co in resp.outputs:
                if co.output.status != Output.GENERATOR_ITEM:
                    return await _output_value(client, co.output, name)
            if resp.inputs_complete and resp.num_inputs == 0:
                raise exception.ExecutionError(f"call {self.object_id} of {name}() ended without a result: "
                                               "its app stopped before it ran")
            if deadline is not None and time.monotonic() >= deadline:
                raise exception.TimeoutError(f"call {self.object_id} of {name}() did not finish within {timeout}s")

    async def _get_aio(self, timeout: float | None = None):
        return await self._c().bridge.run_async(self._get(timeout))

    @_aio(_get_aio)
    def get(self, timeout: float | None = None):
        """Wait for the result (at most `timeout` seconds) and return it, or raise its error."""
        return self._c().run(self._get(timeout))

    async def _cancel_aio(self):
        await self._c().bridge.run_async(_cancel_call(self._c(), self.object_id))

    @_aio(_cancel_aio)
    def cancel(self):
        """Cancel the call: queued inputs never run, a running one is interrupted."""
        self._c().run(_cancel_call(self._c(), self.object_id))
