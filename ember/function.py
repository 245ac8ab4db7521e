"""ember.Function and ember.FunctionCall: calling a function that runs in a container.

Every way to call has an async twin under `.aio`: `f.remote(x)` / `await f.remote.aio(x)`,
`f.map(xs)` / `async for y in f.map.aio(xs)`, `call.get()` / `await call.get.aio()`. Each is
written once, as a coroutine on the client's event loop (see _client/bridge.py).
"""

import asyncio
import functools
import inspect
import posixpath
import re
import time
from pathlib import PurePosixPath

from . import _gpu, config, exception, types
from ._client.bridge import in_thread, twin
from ._client.client import Client
from ._client.map_progress import MapProgress
from ._client.serialization import deserialize, exception_from_output, serialize_args
from ._ids import new_id
from .image import DEFAULT_IMAGE, Image
from .logs import LogsManager
from .proto import api_pb2
from .refused import refusal
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
SPAWN_MAP_BATCH = 25_000    # spawn_map's inputs per message: nobody waits for its first results
SPAWN_MAP_BATCH_BYTES = 16 << 20


MAX_EPHEMERAL_DISK = 3 << 20  # MiB, Modal's most

# Where a volume cannot be mounted: the system's own directories and Ember's.
RESERVED_MOUNTS = ("proc", "sys", "dev", "ember", "usr", "bin", "sbin", "lib", "lib64", "etc")


def parse_gpu(gpu) -> str:
    """Validate a GPU request: "any", "H100", "A100:2", ...; returns it normalized ("" for none)."""
    try:
        kind, count = _gpu.parse_request(gpu)
    except _gpu.GpuRequestError as e:
        raise exception.InvalidError(f"gpu={gpu!r}: {e}") from None
    return kind if count <= 1 else f"{kind}:{count}"


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _request_and_limit(option: str, value, default, check, example: str, number_limits: bool = True):
    """cpu= or memory=: a number (reserved, and with number_limits the most it may use), a
    (request, limit) tuple (request reserved, limit the most), or None (the default reserved, no
    limit). Returns both."""
    if value is None:
        return default, 0
    if isinstance(value, tuple):
        if len(value) != 2 or not all(check(v) for v in value):
            raise exception.InvalidError(f"{option}={value!r}: pass (request, limit), e.g. {example}")
        if value[1] < value[0]:
            raise exception.InvalidError(f"{option}={value!r}: its limit ({value[1]}) is below its request "
                                         f"({value[0]}): pass (request, limit) with limit >= request")
        return value
    if not check(value):
        raise exception.InvalidError(f"{option}={value!r}: pass a number, or (request, limit), e.g. {example}")
    return value, value if number_limits else 0


def _cpu_ok(x) -> bool:
    return _number(x) and 0 < x <= 256


def _memory_ok(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4 << 20


# Options Modal has that mean nothing on a self-hosted cluster, or that Ember does not do (yet):
# accepted, and said so when the app runs or deploys. option -> (is it set?, the note).
NOTED_OPTIONS = {
    "cloud": (lambda v: v is not None, "a self-hosted cluster has no cloud providers: any worker runs it"),
    "routing_region": (lambda v: v is not None, "inputs always go through this control plane"),
    "nonpreemptible": (bool, "workers are not preempted here: every container is nonpreemptible"),
    "proxy": (lambda v: v is not None, "Modal Proxies do not exist here: outbound traffic leaves from its worker"),
    "i6pn": (bool, "no private IPv6 network between containers: they reach each other through the control plane"),
    "experimental_options": (bool, "Modal's experimental options have no meaning here"),
}


class FunctionSpec:
    """The validated options of @app.function and @app.cls, with its app's defaults applied
    (`app`: an App's image, secrets, volumes and include_source)."""

    def __init__(self, *, app=None, image=None, cpu=None, memory=None, gpu=None, timeout=300, retries=None,
                 env=None, secrets=(), volumes=None, max_containers=None, min_containers=0, buffer_containers=None,
                 scaledown_window=60, block_network=False, schedule=None, ephemeral_disk=None, startup_timeout=None,
                 max_inputs=None, single_use_containers=False, include_source=None, region=None,
                 enable_memory_snapshot=False, restrict_modal_access=False, cloud=None, routing_region=None,
                 nonpreemptible=False, proxy=None, i6pn=None, experimental_options=None):
        if image is not None and not isinstance(image, Image):
            raise exception.InvalidError(f"image={image!r}: pass an ember.Image, e.g. ember.Image.debian_slim()")
        # A plain cpu= is what is reserved, and the container may use more CPU when it is free
        # (Modal's): a limit there would throttle its start too, its imports at that share of a
        # core (cpu=0.01: a hundred times slower). A plain memory= is reserved and its limit.
        # (request, limit) sets each; unset, a small amount is reserved, with no limit.
        cpu, self.cpu_limit = _request_and_limit("cpu", cpu, 0.125, _cpu_ok, "cpu=0.5, cpu=2 or cpu=(0.5, 2)",
                                                 number_limits=False)
        memory, self.memory_limit = _request_and_limit("memory", memory, 128, _memory_ok,
                                                       "memory=512 (MiB) or memory=(512, 1024)")
        self.cpu_limit = float(self.cpu_limit)
        if ephemeral_disk is not None and (not isinstance(ephemeral_disk, int) or isinstance(ephemeral_disk, bool)
                                           or not 1 <= ephemeral_disk <= MAX_EPHEMERAL_DISK):
            raise exception.InvalidError(f"ephemeral_disk={ephemeral_disk!r}: pass the size of the container's disk "
                                         f"in MiB as an integer, at most {MAX_EPHEMERAL_DISK} (3 TiB), e.g. 10240")
        self.ephemeral_disk = ephemeral_disk or 0  # 0: the worker's default
        if not _number(timeout) or not 0 < timeout <= 86400:
            raise exception.InvalidError(f"timeout={timeout!r}: pass seconds, more than 0 and at most 86400")
        if startup_timeout is not None and (not _number(startup_timeout) or not 0 < startup_timeout <= 86400):
            raise exception.InvalidError(f"startup_timeout={startup_timeout!r}: pass the seconds its container may "
                                         "take to import its code and run its @ember.enter() hooks, at most 86400")
        self.startup_timeout = float(startup_timeout or 0)
        if max_containers is not None and (not isinstance(max_containers, int) or max_containers < 1):
            raise exception.InvalidError(f"max_containers={max_containers!r}: pass a positive integer or None")
        min_containers = min_containers or 0
        if not isinstance(min_containers, int) or min_containers < 0:
            raise exception.InvalidError(f"min_containers={min_containers!r}: pass a non-negative integer")
        if max_containers is not None and min_containers > max_containers:
            raise exception.InvalidError(f"min_containers={min_containers} exceeds max_containers={max_containers}")
        buffer_containers = buffer_containers or 0
        if not isinstance(buffer_containers, int) or isinstance(buffer_containers, bool) \
                or not 0 <= buffer_containers <= 1000:
            raise exception.InvalidError(f"buffer_containers={buffer_containers!r}: pass the number of idle "
                                         "containers to keep while the function is busy, from 0 to 1000")
        self.buffer_containers = buffer_containers
        scaledown_window = 60 if scaledown_window is None else scaledown_window
        if not _number(scaledown_window) or not 0 < scaledown_window <= 86400:
            raise exception.InvalidError(f"scaledown_window={scaledown_window!r}: pass seconds, from 1 to 86400")
        if max_inputs is not None and (not isinstance(max_inputs, int) or isinstance(max_inputs, bool)
                                       or not 1 <= max_inputs <= 1_000_000):
            raise exception.InvalidError(f"max_inputs={max_inputs!r}: pass the number of inputs after which a "
                                         "container stops, e.g. 1 (or single_use_containers=True)")
        if not isinstance(single_use_containers, bool):
            raise exception.InvalidError(f"single_use_containers={single_use_containers!r}: pass True or False")
        if single_use_containers and max_inputs not in (None, 1):
            raise exception.InvalidError(f"single_use_containers=True and max_inputs={max_inputs} disagree: "
                                         "pass one of them")
        self.inputs_per_container = 1 if single_use_containers else (max_inputs or 0)
        self.env = _environment(env)
        if not isinstance(secrets, (list, tuple)) or not all(isinstance(s, Secret) for s in secrets):
            raise exception.InvalidError(f"secrets={secrets!r}: pass a list of ember.Secret")
        volumes = _mount_paths(volumes)
        if schedule is not None and not isinstance(schedule, (Cron, Period)):
            raise exception.InvalidError(f"schedule={schedule!r}: pass ember.Cron(...) or ember.Period(...)")
        if region is not None and not (isinstance(region, str) and region) and not (
                isinstance(region, (list, tuple)) and region and all(isinstance(r, str) and r for r in region)):
            raise exception.InvalidError(f"region={region!r}: pass a region name or a list of them, e.g. \"eu\": "
                                         "workers started with `ember worker --label region=eu` run it")
        self.regions = [region] if isinstance(region, str) else list(region or ())
        if include_source is not None and not isinstance(include_source, bool):
            raise exception.InvalidError(f"include_source={include_source!r}: pass True or False")
        if experimental_options is not None and not isinstance(experimental_options, dict):
            raise exception.InvalidError(f"experimental_options={experimental_options!r}: pass a dict")
        if not isinstance(restrict_modal_access, bool):
            raise exception.InvalidError(f"restrict_modal_access={restrict_modal_access!r}: pass True or False")
        self.restrict_access = restrict_modal_access
        if not isinstance(enable_memory_snapshot, bool):
            raise exception.InvalidError(f"enable_memory_snapshot={enable_memory_snapshot!r}: pass True or False")
        self.memory_snapshot = enable_memory_snapshot
        given = {"cloud": cloud, "routing_region": routing_region,
                 "nonpreemptible": nonpreemptible, "proxy": proxy, "i6pn": i6pn,
                 "experimental_options": experimental_options}
        self.notes = [f"{option}={given[option]!r} is accepted and has no effect here: {note}"
                      for option, (is_set, note) in NOTED_OPTIONS.items() if is_set(given[option])]
        # Its app's defaults: the function's own image wins; its secrets come after the app's (and
        # env= after both); its volumes are the app's, and its own replace any at the same path.
        defaults = getattr(app, "_defaults", None) or {}
        self.image = image if image is not None else defaults.get("image") or DEFAULT_IMAGE
        self.secrets = [*defaults.get("secrets", ()), *secrets]
        self.volumes = {**defaults.get("volumes", {}), **volumes}
        self.include_source = include_source if include_source is not None else defaults.get("include_source", True)
        self.schedule = schedule
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
                                        memory_limit_mb=self.memory_limit, ephemeral_disk_mb=self.ephemeral_disk),
            block_network=self.block_network,
            schedule=self.schedule._proto() if self.schedule is not None else None,
            timeout=self.timeout, retries=self.retries.to_proto(), max_containers=self.max_containers or 0,
            min_containers=self.min_containers, scaledown_window=self.scaledown_window, env=self.env,
            startup_timeout=self.startup_timeout, inputs_per_container=self.inputs_per_container,
            buffer_containers=self.buffer_containers, regions=self.regions, restrict_access=self.restrict_access,
            enable_memory_snapshot=self.memory_snapshot,
            read_only_volumes=read_only_paths(self.volumes))  # their ids come when they are resolved


def _environment(env) -> dict[str, str]:
    """env=: variables set in its containers; a None value leaves that variable out (Modal's rule)."""
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                            for k, v in env.items()):
        raise exception.InvalidError(f"env={env!r}: pass a dict of variable name -> string value")
    bad = [k for k in env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    if bad:
        raise exception.InvalidError(f"env: {bad[0]!r} is not an environment variable name: use letters, "
                                     "digits and _, not starting with a digit")
    return {k: v for k, v in env.items() if v is not None}


def read_only_paths(volumes: dict) -> list[str]:
    """The mount paths of the volumes mounted read-only (Volume.read_only())."""
    return sorted(path for path, v in volumes.items() if v._read_only)


def _mount_paths(volumes) -> dict:
    """volumes=: {mount path: Volume}, the paths normalized; the system's directories refused."""
    volumes = volumes or {}
    if not isinstance(volumes, dict) or not all(isinstance(v, Volume) for v in volumes.values()):
        raise exception.InvalidError(f"volumes={volumes!r}: pass a dict of mount path -> ember.Volume")
    for path in volumes:
        clean = posixpath.normpath(str(path)) if isinstance(path, (str, PurePosixPath)) else ""
        if not clean.startswith("/") or clean == "/" or clean.split("/")[1] in RESERVED_MOUNTS:
            raise exception.InvalidError(f"volumes: {path!r} cannot be a mount path: pass an absolute path "
                                         f"outside {', '.join('/' + r for r in RESERVED_MOUNTS)}, e.g. \"/data\"")
    return {posixpath.normpath(str(p)): v for p, v in volumes.items()}


class FunctionStats:
    """What a function is doing now (Modal's FunctionStats): inputs queued and not yet running
    (backlog), inputs its containers hold, and its containers."""

    def __init__(self, backlog: int, num_total_runners: int, num_running_inputs: int = 0):
        self.backlog = backlog
        self.num_total_runners = num_total_runners
        self.num_running_inputs = num_running_inputs

    def __repr__(self):
        return (f"FunctionStats(backlog={self.backlog}, num_total_runners={self.num_total_runners}, "
                f"num_running_inputs={self.num_running_inputs})")


_UNSET = object()


class Options:
    """What with_options, with_concurrency and with_batching change of a function: validated here
    as @app.function validates them, sent to the control plane as FunctionOptions (its secrets
    and volumes resolved to ids when first called)."""

    def __init__(self, proto: api_pb2.FunctionOptions | None = None, secrets=None, volumes=None):
        self.proto = proto or api_pb2.FunctionOptions()
        self.secrets = secrets      # None: the parent's
        self.volumes = volumes

    def merged(self, *, cpu=_UNSET, memory=_UNSET, gpu=_UNSET, retries=_UNSET, timeout=_UNSET, secrets=_UNSET,
               volumes=_UNSET, scaledown_window=_UNSET, min_containers=_UNSET, max_containers=_UNSET,
               buffer_containers=_UNSET, max_inputs=_UNSET, target_inputs=_UNSET, batch_max_size=_UNSET,
               batch_wait_ms=_UNSET) -> "Options":
        given = {k: v for k, v in locals().items() if k != "self" and v is not _UNSET}
        spec_args = {k: v for k, v in given.items() if k in (
            "cpu", "memory", "gpu", "retries", "timeout", "secrets", "volumes", "scaledown_window",
            "min_containers", "max_containers", "buffer_containers") and v is not None}
        spec = FunctionSpec(**spec_args)  # the same checks, and errors, as @app.function's
        o = api_pb2.FunctionOptions()
        o.CopyFrom(self.proto)
        if "cpu" in spec_args:
            o.cpu = spec.cpu
        if "memory" in spec_args:
            o.memory_mb = spec.memory
        if "gpu" in given:
            o.gpu = spec.gpu
        if "timeout" in spec_args:
            o.timeout = spec.timeout
        if "retries" in given:
            o.retries.CopyFrom(spec.retries.to_proto())
        if "scaledown_window" in spec_args:
            o.scaledown_window = spec.scaledown_window
        if "min_containers" in spec_args:
            o.min_containers = spec.min_containers
        if "max_containers" in given:
            o.max_containers = spec.max_containers or 0
        if "buffer_containers" in given:
            o.buffer_containers = spec.buffer_containers
        for k in ("max_inputs", "target_inputs", "batch_max_size", "batch_wait_ms"):
            if k in given:
                setattr(o, k, given[k])
        return Options(o, spec.secrets if "secrets" in spec_args else self.secrets,
                       spec.volumes if "volumes" in spec_args else self.volumes)

    async def to_proto(self, client: Client) -> api_pb2.FunctionOptions:
        o = api_pb2.FunctionOptions()
        o.CopyFrom(self.proto)
        if self.secrets is not None:
            o.replace_secrets = True
            o.secret_ids.extend([await s._resolve(client) for s in self.secrets])
        if self.volumes is not None:
            o.replace_volumes = True
            for path, v in self.volumes.items():
                o.volume_mounts[path] = await v._id()
            o.read_only_volumes.extend(read_only_paths(self.volumes))
        return o


def check_concurrency(max_inputs, target_inputs):
    if not isinstance(max_inputs, int) or isinstance(max_inputs, bool) or not 1 <= max_inputs <= 10_000:
        raise exception.InvalidError(f"max_inputs={max_inputs!r}: pass a positive integer, at most 10000")
    if target_inputs is not None and (not isinstance(target_inputs, int) or isinstance(target_inputs, bool)
                                      or not 1 <= target_inputs <= max_inputs):
        raise exception.InvalidError(f"target_inputs={target_inputs!r}: pass an integer from 1 to max_inputs "
                                     f"({max_inputs})")


def check_batching(max_batch_size, wait_ms):
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or not 1 <= max_batch_size <= 1000:
        raise exception.InvalidError(f"max_batch_size={max_batch_size!r}: pass an integer from 1 to 1000")
    if not isinstance(wait_ms, int) or isinstance(wait_ms, bool) or not 0 <= wait_ms < 10 * 60 * 1000:
        raise exception.InvalidError(f"wait_ms={wait_ms!r}: pass milliseconds as an integer, from 0 to "
                                     "less than 600000 (10 minutes)")


# What this process's calls came to (a generator's items aside): `ember run` ends with them.
outcomes = {"done": 0, "failed": 0}


def _note_outcome(out: api_pb2.Output):
    if out.status != Output.GENERATOR_ITEM:
        outcomes["done" if out.status == Output.SUCCESS else "failed"] += 1


async def _output_value(client: Client, out: api_pb2.Output, name: str):
    """The value an output carries, or the exception it describes (raised)."""
    if not out.data.blob_id:
        return _inline_value(out, name)
    _note_outcome(out)
    return _value(out, await client.payload_bytes(out.data), name)


def _inline_value(out: api_pb2.Output, name: str):
    """_output_value of an output whose data is in the message (no blob to fetch): no await."""
    _note_outcome(out)
    return _value(out, out.data.data, name)


def _value(out: api_pb2.Output, data: bytes, name: str):
    if out.status in (Output.SUCCESS, Output.GENERATOR_ITEM):
        return deserialize(data, f"the result of {name}()")
    raise exception_from_output(out, data, name)


def _cannot_call(name: str, cause: str) -> exception.NotFoundError:
    """The error for a call the control plane refused (the function's app is not running, the
    function is gone), the same whichever way it was called: .remote(), .spawn(), .map(), ..."""
    # Its refusals of .spawn() and .map() begin with the call's or the function's id: the cause is what counts.
    cause = re.sub(r"^cannot (call function|add inputs to) \S+: ", "", cause)
    return exception.NotFoundError(f"Cannot call {name}(): {cause}")


async def _cancel_call(client: Client, call_id: str, *, quietly: bool = False, terminate_containers: bool = False):
    """Cancel a call: its queued inputs never run, a running one is interrupted. Quietly: as the
    cleanup after a caller stopped, which fails at once, and silently, if the control plane is gone."""
    try:
        await client.rpc("FunctionCallCancel", api_pb2.FunctionCallRef(
            call_id=call_id, terminate_containers=terminate_containers), retry=not quietly,
                         what=f"cancelling {call_id}")
    except exception.Error:
        if not quietly:
            raise


def _zipped(iterables):
    """map's inputs: read only when the first is needed (on the sender's thread)."""
    for args in zip(*iterables):
        yield args, {}


def _starred(input_iterator, kwargs: dict | None):
    for args in input_iterator:
        yield tuple(args), kwargs or {}


class Function:
    """A function of an App; call it with .remote(), .map(), .spawn() and friends."""

    def __init__(self, name: str, *, app=None, raw_f=None, spec: FunctionSpec | None = None, serialized: bool = False,
                 is_generator: bool | None = None, function_id: str | None = None, web_url: str | None = None,
                 method_web_urls: dict | None = None, lookup: tuple[str, str] | None = None, method: str = ""):
        """Every Function is made here: one decorated in an app (app, raw_f, spec), one looked up
        by name (lookup), one unpickled in another function's container (what was known of it
        where it was pickled), and a method of a class instance (method)."""
        self._name = name
        self._app = app
        self._raw_f = raw_f
        self._spec = spec
        self._serialized = serialized  # ship by value (cloudpickle) even from an importable file
        if is_generator is None:
            is_generator = inspect.isgeneratorfunction(raw_f) or inspect.isasyncgenfunction(raw_f)
        self._is_generator = is_generator
        self._function_id = function_id
        self._web_url = web_url or None
        self._method_web_urls = dict(method_web_urls or {})  # a class's web methods
        self._lookup = lookup  # (app, function) of a deployed app's function, looked up when first used
        self._methods: dict[str, bool] | None = None  # a class looked up by name: its methods (is generator)
        self._method = method  # the method of a class instance that its inputs call
        self._client: Client | None = None
        # A handle with options of its own (with_options and friends): the function it was made
        # of, what it changes, and the function the control plane made of both (parent id, id).
        self._base: Function | None = None
        self._options: Options | None = None
        self._variant_ids: tuple[str, str] | None = None
        if inspect.isroutine(raw_f):
            functools.update_wrapper(self, raw_f)

    def __repr__(self):
        return f"<ember.Function {self._name}>"

    def __reduce__(self):
        if self._base is not None:
            raise TypeError(f"{self._name} with options cannot be passed to a function: pass {self._name} "
                            "and call .with_options() over there")
        # Pickled (passed to another function): the same function over there, with all that is known of it.
        return _function_ref, ({"name": self._name, "is_generator": self._is_generator,
                                 "function_id": self._function_id, "web_url": self._web_url,
                                 "method_web_urls": self._method_web_urls, "lookup": self._lookup},)

    @property
    def object_id(self) -> str | None:
        return self._function_id

    def get_raw_f(self):
        return self._raw_f

    def _hydrate(self, client: Client | None, function_id: str | None, web_url: str = "", method_web_urls=None):
        """What the control plane made of it as its app started (None and None as the app stops)."""
        self._client, self._function_id, self._web_url = client, function_id, web_url or None
        self._method_web_urls = dict(method_web_urls or {})

    @property
    def app(self):
        """The App it was decorated in (None for one looked up with from_name or from_id)."""
        return self._app

    @classmethod
    def from_id(cls, function_id: str) -> "Function":
        """A function of a running app (of this workspace) by its id (`f.object_id`), looked up now."""
        if not isinstance(function_id, str) or not re.fullmatch(r"fu-[0-9a-f]{1,64}", function_id):
            raise exception.InvalidError(f"Function.from_id({function_id!r}): a function's id looks like 'fu-' and "
                                         "hex digits (f.object_id)")
        f = cls(function_id, function_id=function_id)
        client = f._get_client()
        try:
            resp = client.run(client.rpc("FunctionLookup", api_pb2.FunctionLookupRequest(function_id=function_id),
                                         what=f"looking up {function_id}"))
        except exception.NotFoundError as e:
            raise _cannot_call(function_id, str(e)) from None
        f._name = resp.name
        f._looked_up(resp)
        return f

    def _looked_up(self, resp: api_pb2.FunctionLookupResponse):
        self._is_generator, self._web_url = resp.is_generator, resp.web_url or None
        self._method_web_urls = dict(resp.method_web_urls)
        self._methods = dict(resp.methods) if resp.is_class else None
        self._function_id = resp.function_id

    @classmethod
    def from_name(cls, app_name: str, name: str, *, environment_name: str | None = None) -> "Function":
        """A function of a deployed app, from any process; looked up when first called. Calls
        always reach the app's current version."""
        config.check_environment(environment_name, f"Function.from_name({app_name!r}, {name!r})")
        return cls(name, lookup=(app_name, name))

    def _get_client(self) -> Client:
        """The client its calls go through; what can be told without one is told first."""
        if self._base is not None:
            return self._base._get_client()
        if self._client is None:
            if self._function_id is None and self._lookup is None:
                app = getattr(self._app, "name", None) or "its app"
                raise exception.ExecutionError(
                    f"Function {self._name}() belongs to app {app!r}, which is not running. Call it inside "
                    "`with app.run():`, from a @app.local_entrypoint() run by `ember run`, or run the "
                    f"file with `ember run FILE::{self._name}`.")
            self._client = Client.from_env()
        return self._client

    def _loop(self):
        return self._get_client().bridge

    async def _resolve(self) -> tuple[Client, str]:
        """The client and the function's id for a call; a function by name is looked up first."""
        if self._base is not None:
            return await self._resolve_variant()
        client = self._get_client()
        if self._function_id is None:
            app_name, name = self._lookup
            try:
                resp = await client.rpc("FunctionLookup", api_pb2.FunctionLookupRequest(app_name=app_name, name=name),
                                        what=f"looking up {name}")
            except exception.NotFoundError as e:
                raise _cannot_call(name, str(e)) from None
            self._looked_up(resp)
        return client, self._function_id

    async def _resolve_variant(self) -> tuple[Client, str]:
        """A handle with options: the control plane's function of its parent with them (made once)."""
        client, parent_id = await self._base._resolve()
        self._is_generator = self._base._is_generator
        if self._variant_ids is None or self._variant_ids[0] != parent_id:
            resp = await client.rpc("FunctionBind", api_pb2.FunctionBindRequest(
                function_id=parent_id, options=await self._options.to_proto(client)),
                what=f"{self._name}() with options")
            self._variant_ids = (parent_id, resp.function_id)
        return client, self._variant_ids[1]

    @twin
    async def hydrate(self) -> "Function":
        """Look the function up now (one from Function.from_name is looked up when first used)."""
        await self._resolve()
        return self

    # ---------------------------------------------------------------- options

    def _with(self, **changes) -> "Function":
        """A handle on this function whose calls run with these options (the control plane makes
        a function of its own of it, with its own containers, when it is first called)."""
        if self._method:
            raise exception.InvalidError(f"{self._name}: set options on the class, "
                                         f"e.g. {self._name.split('.')[0]}.with_options(...)")
        base = self._base or self
        variant = Function(self._name, app=self._app, raw_f=self._raw_f, spec=self._spec,
                           serialized=self._serialized, is_generator=self._is_generator,
                           web_url=self._web_url, lookup=self._lookup)
        variant._base = base
        variant._options = (self._options or Options()).merged(**changes)
        return variant

    def with_options(self, *, cpu=_UNSET, memory=_UNSET, gpu=_UNSET, retries=_UNSET, timeout=_UNSET,
                     secrets=_UNSET, volumes=_UNSET, scaledown_window=_UNSET, min_containers=_UNSET,
                     max_containers=_UNSET, buffer_containers=_UNSET) -> "Function":
        """The same function with other resources or policies for the calls made through what
        this returns; the original keeps its own."""
        given = {k: v for k, v in locals().items() if k != "self" and v is not _UNSET}
        return self._with(**given)

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> "Function":
        """The same function, its containers each running up to max_inputs inputs at once."""
        check_concurrency(max_inputs, target_inputs)
        return self._with(max_inputs=max_inputs, target_inputs=target_inputs or 0)

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> "Function":
        """The same function, called with lists of up to max_batch_size inputs (see @ember.batched)."""
        check_batching(max_batch_size, wait_ms)
        return self._with(batch_max_size=max_batch_size, batch_wait_ms=wait_ms)

    # ---------------------------------------------------------------- autoscaler

    @twin
    async def get_current_stats(self) -> FunctionStats:
        """Its backlog (inputs waiting for a container), the inputs running, and its containers."""
        client, fid = await self._resolve()
        r = await client.rpc("FunctionGetStats", api_pb2.FunctionRef(function_id=fid),
                             what=f"getting the stats of {self._name}")
        return FunctionStats(r.backlog, r.num_total_runners, r.num_running_inputs)

    @twin
    async def update_autoscaler(self, *, min_containers: int | None = None, max_containers=_UNSET,
                                buffer_containers: int | None = None, scaledown_window: int | None = None) -> None:
        """Change how it scales, now and without a redeploy; the next deploy of its app brings back
        its decorator's settings. Arguments not given (or None) keep their current values, but
        max_containers=None lifts the limit, as in @app.function."""
        given = {"min_containers": min_containers, "max_containers": max_containers,
                 "buffer_containers": buffer_containers, "scaledown_window": scaledown_window}
        given = {k: v for k, v in given.items() if v is not None and v is not _UNSET}
        FunctionSpec(**given)  # @app.function's checks and errors
        if max_containers is None:
            given["max_containers"] = 0  # no limit
        client, fid = await self._resolve()
        req = api_pb2.FunctionUpdateAutoscalerRequest(function_id=fid, **given)
        try:
            await client.rpc("FunctionUpdateAutoscaler", req, what=f"updating the autoscaler of {self._name}")
        except exception.InvalidError as e:
            raise exception.InvalidError(f"{self._name}.update_autoscaler(): {e}") from None

    async def _described(self, with_definition: bool = False) -> tuple[Client, api_pb2.FunctionLookupResponse]:
        """What the control plane has of it: its app, its name there, and with_definition, its options."""
        client, fid = await self._resolve()
        resp = await client.rpc("FunctionLookup", api_pb2.FunctionLookupRequest(
            function_id=fid, with_definition=with_definition), what=f"looking up {self._name}")
        return client, resp

    @twin
    async def info(self) -> types.FunctionInfo:
        """Its resources and options, as the control plane runs it (of a handle with options, its own)."""
        _, resp = await self._described(with_definition=True)
        return types.FunctionInfo.of(resp.definition, resp.web_url)

    @property
    def logs(self) -> LogsManager:
        """What its containers printed: .fetch(since=, until=), .tail(n), .stream(timeout=)."""
        async def target():
            client, resp = await self._described()
            return client, api_pb2.AppLogsRequest(app_id=resp.app_id, function_name=resp.name)
        return LogsManager(self, target, self._function_id or self._name)

    def stats(self, *args, **kwargs):
        raise refusal("Function.stats")

    @property
    def metrics(self):
        raise refusal("Function.metrics")

    @property
    def autoscaler(self):
        raise refusal("Function.autoscaler")

    def get_web_url(self) -> str | None:
        """Where the function's web endpoint is served (None if it has none)."""
        if self._function_id is None:
            self.hydrate()
        return self._web_url

    def _check_kind(self, how: str):
        if how == ".remote_gen()":
            if not self._is_generator:
                raise exception.InvalidError(f"{self._name}() is not a generator function: call it with .remote()")
        elif self._is_generator:
            raise exception.InvalidError(
                f"{self._name}() is a generator function: call it with .remote_gen(), not {how}")

    async def _payload(self, client: Client, data: bytes) -> api_pb2.Payload:
        payload = await client.payload(data)
        payload.method = self._method
        return payload

    async def _prepare(self, how: str, args, kwargs) -> tuple[Client, str, api_pb2.Payload]:
        """What a call with one input starts with: the function resolved (one by name learns here
        what it is), the way of calling checked, and the arguments pickled (or failing here)."""
        client, fid = await self._resolve()
        self._check_kind(how)
        return client, fid, await self._payload(client, serialize_args(self._name, args, kwargs))

    async def _submit(self, client: Client, *, unary: bool = False, **op):
        """Create a call (create=), or add inputs to one (put=): on MapStream, or with unary=
        by its RPC (a call of one input: gRPC's keepalive moves it off a leader that froze); a
        refusal is the same error for every way of calling."""
        what = f"calling {self._name}()"
        try:
            if unary:
                (kind, request), = op.items()
                return await client.rpc({"create": "FunctionCallCreate", "put": "FunctionCallPutInputs"}[kind],
                                        request, what=what)
            return await client.call_op(what, **op)
        except exception.NotFoundError as e:
            raise _cannot_call(self._name, str(e)) from None

    async def _start_call(self, how: str, args, kwargs) -> tuple[Client, str]:
        """A call of one input (.spawn(), .remote_gen()): its client and id."""
        client, fid, payload = await self._prepare(how, args, kwargs)
        call_id = new_id("fc")
        await self._submit(client, unary=True, create=api_pb2.FunctionCallCreateRequest(
            function_id=fid, call_id=call_id, inputs=[api_pb2.Input(idx=0, args=payload)], inputs_complete=True))
        return client, call_id

    async def _wait_for_logs(self, log_seq: int):
        """Let what the container printed before its result reach the terminal first."""
        running = getattr(self._app, "_running", None)
        if running is not None:
            await running.wait_for_logs(log_seq)

    # ---------------------------------------------------------------- local

    def local(self, *args, **kwargs):
        """Run the function here, in this process."""
        return self._raw_f(*args, **kwargs)

    # ---------------------------------------------------------------- remote

    @twin
    async def remote(self, *args, **kwargs):
        """Run the function in a container and return its result."""
        client, fid, payload = await self._prepare(".remote()", args, kwargs)
        call_id = new_id("fc")
        try:
            resp = await client.mux.call(api_pb2.CallRequest(function_id=fid, call_id=call_id, args=payload))
        except asyncio.CancelledError:
            await _cancel_call(client, call_id, quietly=True)
            raise
        if resp.disk_full:
            raise exception.ResourceExhaustedError(f"Cannot call {self._name}(): {resp.error}")
        if resp.error:
            raise _cannot_call(self._name, resp.error)
        await self._wait_for_logs(resp.output.log_seq)
        return await _output_value(client, resp.output.output, self._name)

    @twin
    async def spawn(self, *args, **kwargs) -> "FunctionCall":
        """Start the function in a container; returns a FunctionCall to .get() the result later
        (or, of a generator function, to .iter() over its items)."""
        how = ".remote_gen()" if self._is_generator else ".spawn()"  # a generator's items come by .iter()
        client, call_id = await self._start_call(how, args, kwargs)
        return FunctionCall(call_id, client, self._name)

    @twin
    async def spawn_map(self, *iterables, kwargs: dict | None = None) -> "FunctionCall":
        """Start the function over each item (zipping several iterables) and return once every
        input is accepted, without waiting for results: the FunctionCall's .get(index=i) gives
        the i-th later. Inputs go to the control plane in batches, as .map()'s do."""
        client, fid = await self._resolve()
        self._check_kind(".spawn_map()")
        run = _MapRun(self, client, fid, batch=SPAWN_MAP_BATCH, batch_bytes=SPAWN_MAP_BATCH_BYTES, batch_age=None)
        await run.send(((args, dict(kwargs or {})) for args in zip(*iterables)), wait_for_results=False)
        if run.error is not None:
            raise run.error
        return FunctionCall(run.call_id, client, self._name)

    @twin
    async def remote_gen(self, *args, **kwargs):
        """Run a generator function remotely; its items arrive here as they are produced."""
        client, call_id = await self._start_call(".remote_gen()", args, kwargs)
        after, finished = 0, False
        try:
            while not finished:
                resp = await client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
                    call_id=call_id, after_seq=after, max_outputs=1000, timeout=POLL))
                for co in resp.outputs:
                    after = co.seq
                    await self._wait_for_logs(co.log_seq)
                    if co.output.status != Output.GENERATOR_ITEM:
                        finished = True
                        if co.output.status != Output.SUCCESS:
                            await _output_value(client, co.output, self._name)  # raises its error
                        _note_outcome(co.output)
                        break
                    yield await _output_value(client, co.output, self._name)
        finally:
            if not finished:  # the caller stopped early: so does the generator
                await _cancel_call(client, call_id, quietly=True)

    # ---------------------------------------------------------------- map

    # The results come a batch (a list) at a time: the caller gets them one by one (twin.of_batches).

    @twin.of_batches
    async def map(self, *iterables, order_outputs: bool = True, return_exceptions: bool = False):
        """Run the function over each item (zipping several iterables), in parallel containers."""
        async for values in self._map(_zipped(iterables), order_outputs, return_exceptions):
            yield values

    @twin.of_batches
    async def starmap(self, input_iterator, kwargs: dict | None = None, order_outputs: bool = True,
                      return_exceptions: bool = False):
        """Like map, but each item is a tuple of positional arguments."""
        async for values in self._map(_starred(input_iterator, kwargs), order_outputs, return_exceptions):
            yield values

    @twin
    async def for_each(self, *iterables, ignore_exceptions: bool = False) -> None:
        """Run the function over each item for its effects; results are dropped."""
        async for _ in self._map(_zipped(iterables), False, ignore_exceptions):
            pass

    async def _map(self, arg_iter, order_outputs: bool, return_exceptions: bool):
        """The results of a call over (args, kwargs) pairs, as they come or in order, in lists."""
        client, fid = await self._resolve()
        self._check_kind(".map()")
        run = _MapRun(self, client, fid, bar=MapProgress(self._name))
        sender = asyncio.get_running_loop().create_task(run.send(arg_iter))
        try:
            async for values in run.results(order_outputs, return_exceptions):
                yield values
        finally:
            run.bar.close()
            sender.cancel()
            if not run.finished:  # stopped early, or failed: the rest need not run
                await run.cancel()


def _function_ref(fields: dict) -> Function:
    return Function(**fields)


class _MapRun:
    """One .map(): a task sends the inputs in batches while the caller reads outputs in batches.
    The caller's iterator is read, and its items pickled, on a thread: it may block, or call
    Ember itself."""

    def __init__(self, function: Function, client: Client, fid: str, *, batch: int = MAP_BATCH,
                 batch_bytes: int = MAP_BATCH_BYTES, batch_age: float | None = MAP_BATCH_AGE,
                 bar: MapProgress | None = None):
        self.batch, self.batch_bytes, self.batch_age = batch, batch_bytes, batch_age
        self.f = function
        self.client = client
        self.fid = fid
        self.call_id = new_id("fc")
        self.sent = 0
        self.received = 0
        self.created = False
        self.finished = False
        self.cancelled = False
        self.error: Exception | None = None  # why sending failed: the caller's error, raised once
        self.progress = asyncio.Condition()
        self.bar = bar  # the progress bar on the terminal, moved as outputs arrive
        self.failed = 0

    async def send(self, arg_iter, wait_for_results: bool = True):
        """Send the inputs in batches. Without results to wait for (spawn_map), the next batch is
        pickled while the last one is on its way."""
        ahead = None
        try:
            complete = False
            while not complete:
                if ahead is not None:
                    batch, complete = await ahead
                else:
                    batch, complete = await in_thread(self._next_batch, arg_iter)
                if not wait_for_results and not complete:
                    ahead = asyncio.ensure_future(in_thread(self._next_batch, arg_iter))
                if self.created:
                    request = api_pb2.PutInputsRequest(call_id=self.call_id, inputs_complete=complete)
                else:
                    request = api_pb2.FunctionCallCreateRequest(function_id=self.fid, call_id=self.call_id,
                                                                inputs_complete=complete)
                await self._add_inputs(request.inputs, batch)
                await self.f._submit(self.client, **{"put" if self.created else "create": request})
                async with self.progress:
                    self.sent += len(batch)
                    self.created = True
                    self.progress.notify_all()
                    if wait_for_results:  # a map reads as it sends: hold back a sender far ahead of it
                        await self.progress.wait_for(lambda: self.sent - self.received < MAP_OUTSTANDING)
        except Exception as e:  # noqa: BLE001 - the caller's iterator's error, or pickling's: the caller's
            self.error = e
            await self.cancel()  # the caller waits for outputs: it hears of this at once
            async with self.progress:
                self.progress.notify_all()
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()

    async def _add_inputs(self, inputs, batch: list[bytes]):
        """A batch of pickled arguments as the request's inputs, numbered on from those sent;
        filled in place (building each Input apart and adding it would copy it again)."""
        method, threshold = self.f._method, config.BLOB_THRESHOLD
        for i, data in enumerate(batch, self.sent):
            inp = inputs.add()
            inp.idx = i
            if len(data) > threshold:
                inp.args.CopyFrom(await self.f._payload(self.client, data))
            else:
                inp.args.data = data
                inp.args.method = method

    def _next_batch(self, arg_iter) -> tuple[list[bytes], bool]:
        """The next batch of pickled arguments from the caller's iterator, and whether it is over."""
        batch, size, started = [], 0, time.monotonic()
        for args, kwargs in arg_iter:
            data = serialize_args(self.f._name, args, kwargs)
            batch.append(data)
            size += len(data)
            if len(batch) >= self.batch or size >= self.batch_bytes or (
                    self.batch_age is not None and time.monotonic() - started > self.batch_age):
                return batch, False
        return batch, True

    async def cancel(self):
        if self.created and not self.cancelled:
            self.cancelled = True
            await _cancel_call(self.client, self.call_id, quietly=True)

    async def results(self, order_outputs: bool, return_exceptions: bool):
        async with self.progress:
            await self.progress.wait_for(lambda: self.created or self.error is not None)
        after, next_idx, buffered = 0, 0, {}
        while self.error is None and not self.finished:
            resp = await self.client.outputs(api_pb2.GetOutputsRequest(
                call_id=self.call_id, after_seq=after, max_outputs=10_000, timeout=POLL))
            if resp.outputs:
                after = resp.outputs[-1].seq
                await self.f._wait_for_logs(max(co.log_seq for co in resp.outputs))  # what they printed first
            self.finished = resp.inputs_complete and resp.num_done >= resp.num_inputs and after >= resp.num_done
            async with self.progress:
                self.received += len(resp.outputs)
                self.progress.notify_all()
            if self.bar is not None:
                self.failed += sum(co.output.status != Output.SUCCESS for co in resp.outputs)
                self.bar.update(max(self.sent, resp.num_inputs), self.received, self.failed, resp.inputs_complete)
            name, values = self.f._name, []
            for co in resp.outputs:
                if self.error is not None:
                    break
                out = co.output
                try:
                    value = await _output_value(self.client, out, name) if out.data.blob_id else \
                        _inline_value(out, name)
                except Exception as e:  # the function's own error, whatever it is
                    if not return_exceptions:
                        if values:  # those before it first, as the caller would have had them one by one
                            yield values
                        raise
                    value = e
                if not order_outputs:
                    values.append(value)
                    continue
                idx = out.idx
                if idx == next_idx and not buffered:  # the usual case: in order already
                    values.append(value)
                    next_idx += 1
                    continue
                buffered[idx] = value
                while next_idx in buffered:
                    values.append(buffered.pop(next_idx))
                    next_idx += 1
            if values:
                yield values
        if self.error is not None:
            raise self.error
        if self.received < self.sent or buffered:
            # Never a short result: the caller would take it for the whole.
            raise exception.Error(f"{self.f._name}.map(): the control plane ended call {self.call_id} with "
                                  f"{self.received} of its {self.sent} outputs; this is a bug of Ember's: "
                                  "please report it (its outputs stay fetchable with FunctionCall.from_id)")


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
        return FunctionCall(call_id)

    def _get_client(self) -> Client:
        if self._client is None:
            self._client = Client.from_env()
        return self._client

    def _loop(self):
        return self._get_client().bridge

    @twin
    async def get(self, timeout: float | None = None, *, index: int = 0):
        """Wait for the result (at most `timeout` seconds) and return it, or raise its error; of a
        call of several inputs (.spawn_map()), the result of the index-th."""
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise exception.InvalidError(f"index={index!r}: pass the input's position in the call, from 0")
        client = self._get_client()
        deadline = None if timeout is None else time.monotonic() + timeout
        # The newest final output counts: a call whose failed input was retried (`ember call
        # retry`) ends again, after its first end.
        after_seq, final = 0, None
        while True:
            left = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            resp = await client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
                call_id=self.object_id, after_seq=after_seq, max_outputs=1000, timeout=left),
                what=f"getting {self.object_id}")
            name = self._name or resp.function_name or "the function"
            if resp.is_generator:
                raise exception.InvalidError(f"call {self.object_id} is of a generator function, {name}(): "
                                             "read its items with .iter(), not .get()")
            for co in resp.outputs:
                after_seq = co.seq
                if co.output.status != Output.GENERATOR_ITEM and co.output.idx == index:
                    final = co.output
            caught_up = len(resp.outputs) < 1000
            if final is not None and caught_up and (resp.num_inputs > 1 or resp.num_done >= resp.num_inputs):
                return await _output_value(client, final, name)
            if resp.inputs_complete and resp.num_inputs == 0:
                raise exception.ExecutionError(f"call {self.object_id} of {name}() ended without a result: "
                                               "its app stopped before it ran")
            if resp.inputs_complete and index >= resp.num_inputs:
                raise exception.InvalidError(f"index={index}: call {self.object_id} of {name}() has "
                                             f"{resp.num_inputs} inputs (pass 0 to {resp.num_inputs - 1})")
            if deadline is not None and time.monotonic() >= deadline:
                raise exception.TimeoutError(f"call {self.object_id} of {name}() did not finish within {timeout}s")

    @twin
    async def iter(self, *, start: int = 0, end: int | None = None):
        """The items of a generator function's call (.spawn() of one), as they are produced,
        from the start-th to before the end-th."""
        client = self._get_client()
        after, n = 0, 0
        while True:
            resp = await client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
                call_id=self.object_id, after_seq=after, max_outputs=1000, timeout=POLL),
                what=f"reading {self.object_id}")
            name = self._name or resp.function_name or "the function"
            if not resp.is_generator:
                raise exception.InvalidError(f"call {self.object_id} of {name}() is not of a generator "
                                             "function: get its result with .get()")
            for co in resp.outputs:
                after = co.seq
                if co.output.status != Output.GENERATOR_ITEM:
                    if co.output.status != Output.SUCCESS:
                        await _output_value(client, co.output, name)  # raises its error
                    _note_outcome(co.output)
                    return
                if end is not None and n >= end:
                    return
                if n >= start:
                    yield await _output_value(client, co.output, name)
                n += 1
            if resp.inputs_complete and resp.num_inputs == 0:
                return

    @twin
    async def num_inputs(self) -> int:
        """How many inputs the call has: 1 of .spawn(), more of .spawn_map()."""
        resp = await self._get_client().rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
            call_id=self.object_id, max_outputs=1, timeout=0), what=f"getting {self.object_id}")
        return resp.num_inputs

    @property
    def logs(self) -> LogsManager:
        """What its inputs printed: .fetch(since=, until=), .tail(n), .stream(timeout=)."""
        async def target():
            return self._get_client(), api_pb2.AppLogsRequest(call_id=self.object_id)
        return LogsManager(self, target, self.object_id)

    def get_call_graph(self, *args, **kwargs):
        raise refusal("FunctionCall.get_call_graph")

    @staticmethod
    def gather(*calls: "FunctionCall") -> list:
        """Wait for all the calls and return their results, in order; the first error is raised."""
        return calls[0]._loop().run(_gather(calls)) if calls else []

    @twin
    async def cancel(self, terminate_containers: bool = False):
        """Cancel the call: queued inputs never run, a running one is interrupted; with
        terminate_containers=True, the containers running its inputs are killed too."""
        await _cancel_call(self._get_client(), self.object_id, terminate_containers=terminate_containers)


async def _gather(calls) -> list:
    return list(await asyncio.gather(*(FunctionCall.get.op(c) for c in calls)))


async def _gather_aio(*calls) -> list:
    return await calls[0]._loop().run_async(_gather(calls)) if calls else []


FunctionCall.gather.aio = _gather_aio
