"""What the control plane accepts: the rules a request must meet, whoever sent it.

The SDK checks a user's options where they are written, in the user's terms; any program can
speak the protocol, though, so the control plane checks again here, before a wrong value
reaches its state (a function no container can fit, a call that never ends, a layer id that
names a path). One function per kind of message; each raises Invalid, naming the field, which
the server answers with INVALID_ARGUMENT (refusals.py). Rules that need the control plane's state
(an input beyond its call's end, a container of another worker) live where that state is, and
raise Invalid too.
"""

import math
import posixpath
import re
import zoneinfo

from .. import _cidr, _gpu
from ..proto import api_pb2
from ..schedule import CronError, parse_cron
from .blobs import is_blob_id

MAX_OUTPUTS = 10_000      # outputs one FunctionCallGetOutputs may ask for (the SDK asks up to this)
MAX_INPUTS_AT_ONCE = 10_000  # @ember.concurrent's limit: threads one container starts
MAX_BATCH = 1000          # @ember.batched's max_batch_size limit (Modal's)
MAX_BATCH_WAIT_MS = 10 * 60 * 1000
MAX_RETRIES = 10          # Retries' limit (Modal's)
MAX_EPHEMERAL_DISK_MB = 3 << 20  # a container's disk: 3 TiB, Modal's most
MAX_NAME = 128            # characters in an app's or a function's name
MAX_SEARCH = 1000         # characters of a filter of AppLogs
MAX_BUFFER_CONTAINERS = 1000  # idle containers a busy function keeps beyond its need
MAX_ENV_VALUE = 32 << 10  # characters in one environment variable of env=
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LABEL = re.compile(r"[A-Za-z0-9_.-]{1,63}")  # a worker label's key


class Invalid(ValueError):
    """A request the control plane refuses: `field` ("FunctionDefinition.cpu") and what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field = field


# ---------------------------------------------------------------- field rules


def required(msg, *fields: str):
    """Each field must be set (not "" or 0): a message missing it means nothing."""
    for f in fields:
        if not getattr(msg, f):
            raise Invalid(f"{type(msg).__name__}.{f}", "is required")


def number(field: str, value: float, *, low: float = 0.0, above: bool = False, high: float = math.inf):
    """A finite number, at least `low` (more than it, if `above`), at most `high`."""
    if not math.isfinite(value) or value < low or (above and value == low) or value > high:
        bound = f"> {low:g}" if above else f">= {low:g}"
        if high != math.inf:
            bound += f" and <= {high:g}"
        raise Invalid(field, f"must be {bound} (got {value:g})")


# Each enum's values, by its full name: enum.values() makes a new list each time, and dict and
# queue operations check theirs on every request.
_VALUES: dict[str, frozenset[int]] = {}


def known(field: str, enum, value: int, *, unspecified_ok: bool = False):
    """An enum value this control plane knows (a newer client may send one it does not)."""
    values = _VALUES.get(enum.DESCRIPTOR.full_name)
    if values is None:
        values = _VALUES[enum.DESCRIPTOR.full_name] = frozenset(enum.values())
    if value not in values or (value == 0 and not unspecified_ok):
        names = ", ".join(n for n in enum.keys() if not n.endswith("UNSPECIFIED"))
        raise Invalid(field, f"must be one of {names} (got {value})")


# ---------------------------------------------------------------- apps and functions


def app_create(req: api_pb2.AppCreateRequest):
    required(req, "name")
    if len(req.name) > MAX_NAME:
        raise Invalid("AppCreateRequest.name", f"must be at most {MAX_NAME} characters (got {len(req.name)})")


def app_id(req: api_pb2.AppRef):
    """AppHeartbeat, AppDeploy: an app by id."""
    required(req, "app_id")


def app_name(req: api_pb2.AppRef):
    """AppHistory: a deployed app by name."""
    required(req, "name")


def app_by_id_or_name(req: api_pb2.AppRef | api_pb2.AppLogsRequest):
    """AppStop, AppLogs: an app by id, or a deployed app by name."""
    name = "app_name" if isinstance(req, api_pb2.AppLogsRequest) else "name"
    if not req.app_id and not getattr(req, name):
        raise Invalid(f"{type(req).__name__}.app_id", f"or .{name} is required")


def app_logs(req: api_pb2.AppLogsRequest):
    # A container's logs are found by its id alone (`ember container logs`), a call's by its id (call.logs).
    if not req.container_id and not req.call_id:
        app_by_id_or_name(req)
    number("AppLogsRequest.since", req.since)
    number("AppLogsRequest.until", req.until)
    if req.until and req.since > req.until:
        raise Invalid("AppLogsRequest.until", f"must not be before since ({req.until} < {req.since})")
    for field in ("search", "function_name", "container_id", "call_id"):
        if len(getattr(req, field)) > MAX_SEARCH:
            raise Invalid(f"AppLogsRequest.{field}", f"must be at most {MAX_SEARCH} characters")


def function_create(req: api_pb2.FunctionCreateRequest):
    required(req, "app_id")
    if not req.HasField("definition"):
        raise Invalid("FunctionCreateRequest.definition", "is required")
    function_definition(req.definition)


def function_definition(d: api_pb2.FunctionDefinition):
    where = "FunctionDefinition"
    required(d, "name")
    if len(d.name) > MAX_NAME:
        raise Invalid(f"{where}.name", f"must be at most {MAX_NAME} characters (got {len(d.name)})")
    if not (d.module and d.qualname) and not (d.pickled.data or d.pickled.blob_id):
        raise Invalid(f"{where}.module", "and .qualname, or .pickled, are required: where its code comes from")
    resources(d.resources)
    number(f"{where}.timeout", d.timeout)
    number(f"{where}.scaledown_window", d.scaledown_window)
    r = d.retries
    if r.max_retries > MAX_RETRIES:
        raise Invalid(f"{where}.retries.max_retries", f"must be <= {MAX_RETRIES} (got {r.max_retries})")
    for f in ("backoff_coefficient", "initial_delay", "max_delay"):
        number(f"{where}.retries.{f}", getattr(r, f))
    if d.max_containers and d.min_containers > d.max_containers:
        raise Invalid(f"{where}.min_containers",
                      f"must be <= max_containers (got {d.min_containers} > {d.max_containers})")
    if d.max_inputs > MAX_INPUTS_AT_ONCE:
        raise Invalid(f"{where}.max_inputs", f"must be <= {MAX_INPUTS_AT_ONCE} (got {d.max_inputs})")
    if d.target_inputs > max(1, d.max_inputs):
        raise Invalid(f"{where}.target_inputs", f"must be <= max_inputs (got {d.target_inputs} > {d.max_inputs})")
    if d.batch_max_size > MAX_BATCH:
        raise Invalid(f"{where}.batch_max_size", f"must be <= {MAX_BATCH} (got {d.batch_max_size})")
    if d.batch_wait_ms > MAX_BATCH_WAIT_MS:
        raise Invalid(f"{where}.batch_wait_ms", f"must be <= {MAX_BATCH_WAIT_MS} (got {d.batch_wait_ms})")
    if d.batch_max_size and d.max_inputs > 1:
        raise Invalid(f"{where}.batch_max_size", "cannot be set with max_inputs > 1: a function is batched "
                      "or concurrent, not both")
    if d.HasField("image"):
        image(d.image, f"{where}.image")
    number(f"{where}.startup_timeout", d.startup_timeout)
    if d.buffer_containers > MAX_BUFFER_CONTAINERS:
        raise Invalid(f"{where}.buffer_containers", f"must be <= {MAX_BUFFER_CONTAINERS} (got {d.buffer_containers})")
    environment(d.env, f"{where}.env")
    for i, region in enumerate(d.regions):
        if not region or len(region) > MAX_NAME:
            raise Invalid(f"{where}.regions[{i}]", f"must be 1 to {MAX_NAME} characters (got {region!r})")
    cidr_allowlist(d, where)
    _secrets_and_volumes(d, where)
    schedule(d.schedule)
    if d.web.kind:
        web_endpoint(d.web, f"{where}.web")
    for method, web in d.web_methods.items():
        web_endpoint(web, f"{where}.web_methods[{method!r}]")


def cidr_allowlist(d: api_pb2.FunctionDefinition, where: str):
    """The only networks its containers reach, if any: IPv4 networks, not with block_network."""
    if d.cidr_allowlist:
        try:
            _cidr.check_allowlist(list(d.cidr_allowlist), d.block_network)
        except ValueError as e:
            raise Invalid(f"{where}.cidr_allowlist", str(e)) from None


def resources(r: api_pb2.Resources):
    where = "FunctionDefinition.resources"
    # Every container reserves its function's CPU and memory: none at all would let a worker
    # take containers without end.
    number(f"{where}.cpu", r.cpu, above=True)
    if r.memory_mb <= 0:
        raise Invalid(f"{where}.memory_mb", f"must be > 0 (got {r.memory_mb})")
    number(f"{where}.cpu_limit", r.cpu_limit)
    # A limit below what is reserved could never be used: (request, limit) needs limit >= request.
    if r.cpu_limit and r.cpu_limit + 1e-9 < r.cpu:
        raise Invalid(f"{where}.cpu_limit", f"must be >= cpu (got {r.cpu_limit} < {r.cpu})")
    if r.memory_limit_mb and r.memory_limit_mb < r.memory_mb:
        raise Invalid(f"{where}.memory_limit_mb", f"must be >= memory_mb (got {r.memory_limit_mb} < {r.memory_mb})")
    if r.ephemeral_disk_mb > MAX_EPHEMERAL_DISK_MB:  # 0 is the worker's default
        raise Invalid(f"{where}.ephemeral_disk_mb", f"must be <= {MAX_EPHEMERAL_DISK_MB} (got {r.ephemeral_disk_mb})")
    try:
        _gpu.parse_request(r.gpu)
    except _gpu.GpuRequestError as e:
        raise Invalid(f"{where}.gpu", f"cannot be parsed: {e}") from None


def schedule(s: api_pb2.Schedule):
    where = "FunctionDefinition.schedule"
    if s.cron and s.period_seconds:
        raise Invalid(f"{where}.cron", "and .period_seconds cannot both be set")
    if s.period_seconds or math.isnan(s.period_seconds):
        number(f"{where}.period_seconds", s.period_seconds, low=1.0)
    if s.cron:
        # The control plane runs it on every tick: one that cannot parse would fail every tick.
        try:
            parse_cron(s.cron)
        except CronError as e:
            raise Invalid(f"{where}.cron", f"cannot be parsed: {e}") from None
    if s.timezone:
        try:
            zoneinfo.ZoneInfo(s.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise Invalid(f"{where}.timezone", f"is not a known timezone (got {s.timezone!r})") from None


def web_endpoint(w: api_pb2.WebEndpoint, where: str):
    known(f"{where}.kind", api_pb2.WebEndpoint.Kind, w.kind)
    if w.kind == api_pb2.WebEndpoint.WEB_SERVER and not 1 <= w.port <= 65535:
        raise Invalid(f"{where}.port", f"must be 1 to 65535 (got {w.port})")
    number(f"{where}.startup_timeout", w.startup_timeout)


BUILT_WITH_SECRETS = (api_pb2.ImageStep.PIP_INSTALL, api_pb2.ImageStep.APT_INSTALL, api_pb2.ImageStep.RUN_COMMANDS,
                      api_pb2.ImageStep.RUN_FUNCTION)


def image(img: api_pb2.Image, where: str = "Image"):
    """An image as resolved by the SDK: a base step first, each layer named by its sha256 (the
    workers' cache directories are named by these ids), the image by its last layer."""
    if not img.steps:
        raise Invalid(f"{where}.steps", "is empty: an image starts from a base, e.g. Image.debian_slim()")
    for i, step in enumerate(img.steps):
        known(f"{where}.steps[{i}].kind", api_pb2.ImageStep.Kind, step.kind)
        if not is_blob_id(step.layer_id):
            raise Invalid(f"{where}.steps[{i}].layer_id", f"must be 64 lowercase hex digits (got {step.layer_id!r})")
        if step.kind == api_pb2.ImageStep.SNAPSHOT and (i == 0 or not is_blob_id(step.blob_id)):
            raise Invalid(f"{where}.steps[{i}]", "a snapshot step follows its sandbox's image and names its layer's "
                          "archive (blob_id): pass the image sb.snapshot_filesystem() returned")
        if step.secret_ids and step.kind not in BUILT_WITH_SECRETS:
            raise Invalid(f"{where}.steps[{i}].secret_ids", "only steps that run something have secrets")
        for j, sid in enumerate(step.secret_ids):
            if not sid:
                raise Invalid(f"{where}.steps[{i}].secret_ids[{j}]", "is empty")
    if img.image_id != img.steps[-1].layer_id:
        raise Invalid(f"{where}.image_id", f"must be its last step's layer_id (got {img.image_id!r})")


def image_build(req: api_pb2.ImageBuildRequest):
    image(req.image, "ImageBuildRequest.image")


def function_lookup(req: api_pb2.FunctionLookupRequest):
    if not req.function_id:  # else a function by id (Function.from_id)
        required(req, "app_name", "name")


def function_bind(req: api_pb2.FunctionBindRequest):
    required(req, "function_id")
    o = req.options
    for f in ("cpu", "timeout", "scaledown_window"):
        if o.HasField(f):
            number(f"FunctionBindRequest.options.{f}", getattr(o, f))


def function_ref(req: api_pb2.FunctionRef):
    required(req, "function_id")


def update_autoscaler(req: api_pb2.FunctionUpdateAutoscalerRequest):
    required(req, "function_id")
    if req.HasField("scaledown_window"):
        number("FunctionUpdateAutoscalerRequest.scaledown_window", req.scaledown_window)
        if not 0 < req.scaledown_window <= 86400:
            raise Invalid("FunctionUpdateAutoscalerRequest.scaledown_window",
                          f"must be from 1 to 86400 seconds (got {req.scaledown_window})")


# ---------------------------------------------------------------- calls


def call_request(req: api_pb2.CallRequest):
    required(req, "function_id", "call_id")


def function_call_create(req: api_pb2.FunctionCallCreateRequest):
    required(req, "function_id", "call_id")
    # The call's number of inputs is that of this batch: each index must be below it.
    inputs(req, len(req.inputs) if req.inputs_complete else None)


def put_inputs(req: api_pb2.PutInputsRequest):
    required(req, "call_id")
    inputs(req, None)


def inputs(req, num_inputs: int | None):
    """A batch of a call's inputs: each index once, and below the call's number of inputs if known."""
    idxs = [inp.idx for inp in req.inputs]
    if len(set(idxs)) == len(idxs) and (num_inputs is None or not idxs or max(idxs) < num_inputs):
        return  # the usual case, checked without a loop in Python
    seen = set()
    for i, idx in enumerate(idxs):
        field = f"{type(req).__name__}.inputs[{i}].idx"
        if idx in seen:
            raise Invalid(field, f"{idx} appears twice in one request")
        seen.add(idx)
        if num_inputs is not None and idx >= num_inputs:
            raise Invalid(field, f"must be < the call's {num_inputs} inputs (got {idx})")


def get_outputs(req: api_pb2.GetOutputsRequest):
    required(req, "call_id")
    number("GetOutputsRequest.timeout", req.timeout)
    if req.max_outputs > MAX_OUTPUTS:
        raise Invalid("GetOutputsRequest.max_outputs", f"must be <= {MAX_OUTPUTS} (got {req.max_outputs})")


def call_ref(req: api_pb2.FunctionCallRef):
    required(req, "call_id")


def call_retry(req: api_pb2.FunctionCallRetryRequest):
    required(req, "call_id")
    if len(req.idx) > MAX_OUTPUTS:
        raise Invalid("FunctionCallRetryRequest.idx", f"at most {MAX_OUTPUTS} inputs at a time (got {len(req.idx)})")


# ---------------------------------------------------------------- secrets, objects, volumes, tokens


def secret_name(req: api_pb2.SecretLookupRequest | api_pb2.SecretRef):
    required(req, "name")


def object_ref(req: api_pb2.ObjectRef):
    if not req.name and not req.object_id:
        raise Invalid("ObjectRef.name", "or .object_id is required")


def volume_ref(req: api_pb2.VolumeRef):
    required(req, "volume_id")


def volume_commit(req: api_pb2.VolumeCommitRequest):
    required(req, "volume_id")
    for i, f in enumerate(req.files):
        if not is_blob_id(f.blob_id):
            raise Invalid(f"VolumeCommitRequest.files[{i}].blob_id",
                          f"must name a blob: 64 lowercase hex digits (got {f.blob_id!r})")


def proxy_token(req: api_pb2.ProxyToken):
    required(req, "token_id")


def object_op(op: api_pb2.ObjectOp):
    kind = op.WhichOneof("op")
    if kind == "dict":
        dict_request(op.dict)
    elif kind == "queue":
        queue_request(op.queue)
    else:
        raise Invalid("ObjectOp.op", "is required: set dict or queue")


Dict = api_pb2.DictRequest
Queue = api_pb2.QueueRequest


def dict_request(req: api_pb2.DictRequest):
    required(req, "dict_id")
    known("DictRequest.op", Dict.Op, req.op, unspecified_ok=True)  # GET is 0
    if req.op in (Dict.GET, Dict.POP, Dict.CONTAINS) and len(req.keys) != 1:
        raise Invalid("DictRequest.keys", f"must hold one key for {Dict.Op.Name(req.op)} (got {len(req.keys)})")
    if req.op == Dict.PUT:
        if not req.keys:
            raise Invalid("DictRequest.keys", "must hold at least one key for PUT")
        if len(req.keys) != len(req.values):
            raise Invalid("DictRequest.values", f"must hold one value per key (got {len(req.values)} values "
                                                f"for {len(req.keys)} keys)")


def queue_request(req: api_pb2.QueueRequest):
    required(req, "queue_id")
    known("QueueRequest.op", Queue.Op, req.op, unspecified_ok=True)  # PUT is 0
    if req.op == Queue.PUT and not req.values:
        raise Invalid("QueueRequest.values", "must hold at least one value for PUT")
    number("QueueRequest.timeout", req.timeout)


# ---------------------------------------------------------------- workers and containers


def environment(env, where: str):
    """Environment variables: names a process can have, values without NUL bytes."""
    for key, value in env.items():
        if not ENV_NAME.fullmatch(key):
            raise Invalid(where, f"{key!r} is not an environment variable name (letters, digits and _)")
        if "\0" in value or len(value) > MAX_ENV_VALUE:
            raise Invalid(f"{where}[{key!r}]", f"must be at most {MAX_ENV_VALUE} characters, without NUL")


def worker_register(reg: api_pb2.WorkerRegister):
    required(reg, "worker_id", "boot_id")
    for key, value in reg.labels.items():
        if not LABEL.fullmatch(key) or not value or len(value) > MAX_NAME:
            raise Invalid("WorkerRegister.labels", f"{key}={value!r}: a label is KEY=VALUE, KEY of letters, digits, "
                          f"_, - and ., VALUE 1 to {MAX_NAME} characters")
    number("WorkerRegister.cpu", reg.cpu, above=True)
    if reg.memory_mb <= 0:
        raise Invalid("WorkerRegister.memory_mb", f"must be > 0 (got {reg.memory_mb})")
    known("WorkerRegister.backend", api_pb2.Backend, reg.backend)


def container_hello(hello: api_pb2.ContainerHello):
    required(hello, "container_id")


def output(out: api_pb2.Output):
    """A container's output: its status says what the caller gets, so it must be one we know."""
    known("Output.status", api_pb2.Output.Status, out.status)


MAX_EXEC_ARGS = 4096      # arguments of a command run in a container
MAX_EXEC_ARG = 128 << 10  # characters in one of them
MAX_EXEC_INPUT = 1 << 20  # bytes of stdin in one message


def exec_start(start: api_pb2.ExecStart):
    """ContainerExec's first request: a container and a command to run in it."""
    required(start, "container_id")
    if not start.argv or not start.argv[0]:
        raise Invalid("ExecStart.argv", "is required: the command to run and its arguments")
    if len(start.argv) > MAX_EXEC_ARGS or any(len(a) > MAX_EXEC_ARG or "\0" in a for a in start.argv):
        raise Invalid("ExecStart.argv", f"must be at most {MAX_EXEC_ARGS} arguments of at most {MAX_EXEC_ARG} "
                      "characters each, without NUL")
    if "\0" in start.workdir or (start.workdir and not start.workdir.startswith("/")):
        raise Invalid("ExecStart.workdir", f"must be an absolute path (got {start.workdir!r})")
    environment(start.env, "ExecStart.env")
    if start.rows > 10000 or start.cols > 10000:
        raise Invalid("ExecStart.rows", "and cols must be at most 10000")
    if start.port:
        raise Invalid("ExecStart.port", "is the control plane's own (a sandbox's tunnel): reach a port through "
                      "the sandbox's tunnel URL (encrypted_ports=, sb.tunnels())")


def _secrets_and_volumes(d: api_pb2.FunctionDefinition, where: str):
    for i, sid in enumerate(d.secret_ids):
        if not sid:
            raise Invalid(f"{where}.secret_ids[{i}]", "is empty")
    for path, volume_id in d.volume_mounts.items():
        # The worker mounts it inside the container's root: a path that climbs out of it must not pass.
        if not path.startswith("/") or posixpath.normpath(path) != path or path == "/":
            raise Invalid(f"{where}.volume_mounts", f"key {path!r} must be a normalized absolute path, not /")
        if not volume_id:
            raise Invalid(f"{where}.volume_mounts[{path!r}]", "is empty: pass a volume id")
    for path in d.read_only_volumes:
        if path not in d.volume_mounts:
            raise Invalid(f"{where}.read_only_volumes", f"{path!r} is not a path of volume_mounts")


MAX_TAGS = 64  # tags on one sandbox
MAX_TUNNELS = 16  # ports one sandbox serves through tunnels


def sandbox_create(req: api_pb2.SandboxCreateRequest):
    """Sandbox.create: its container (the definition's image, resources, env, secrets and
    volumes), its command, its limits and its name."""
    required(req, "app_id")
    d, where = req.definition, "SandboxCreateRequest.definition"
    resources(d.resources)
    if d.HasField("image"):
        image(d.image, f"{where}.image")
    environment(d.env, f"{where}.env")
    cidr_allowlist(d, where)
    _secrets_and_volumes(d, where)
    if len(req.argv) > MAX_EXEC_ARGS or any(len(a) > MAX_EXEC_ARG or "\0" in a for a in req.argv):
        raise Invalid("SandboxCreateRequest.argv", f"must be at most {MAX_EXEC_ARGS} arguments of at most "
                      f"{MAX_EXEC_ARG} characters each, without NUL")
    if req.argv and not req.argv[0]:
        raise Invalid("SandboxCreateRequest.argv", "starts with an empty command")
    if "\0" in req.workdir or (req.workdir and not req.workdir.startswith("/")):
        raise Invalid("SandboxCreateRequest.workdir", f"must be an absolute path (got {req.workdir!r})")
    number("SandboxCreateRequest.timeout", req.timeout, above=True, high=86400)
    number("SandboxCreateRequest.idle_timeout", req.idle_timeout, high=86400)
    sandbox_name(req.name, "SandboxCreateRequest.name")
    ports = [*req.encrypted_ports, *req.unencrypted_ports]
    if len(ports) > MAX_TUNNELS or len(set(ports)) != len(ports) or not all(0 < p < 65536 for p in ports):
        raise Invalid("SandboxCreateRequest.encrypted_ports", f"and unencrypted_ports must be at most {MAX_TUNNELS} "
                      f"TCP ports (1 to 65535), each named once (got {ports})")


def sandbox_name(name: str, where: str):
    if len(name) > MAX_NAME or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise Invalid(where, f"must be at most {MAX_NAME} letters, digits, -, _ and . (got {name!r})")


def sandbox_tags(tags, where: str):
    if len(tags) > MAX_TAGS or any(not k or len(k) > MAX_NAME or len(v) > MAX_NAME for k, v in tags.items()):
        raise Invalid(where, f"must be at most {MAX_TAGS} tags, each key 1 to {MAX_NAME} characters and each value "
                      f"at most {MAX_NAME}")


def exec_input(inp: api_pb2.ExecInput):
    if len(inp.data) > MAX_EXEC_INPUT:
        raise Invalid("ExecInput.data", f"must be at most {MAX_EXEC_INPUT} bytes a message")
    if inp.rows > 10000 or inp.cols > 10000:
        raise Invalid("ExecInput.rows", "and cols must be at most 10000")
