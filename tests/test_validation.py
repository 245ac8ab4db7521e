"""The control plane checks what it is sent, whoever sends it: raw requests through the
generated stubs (not the SDK, which checks first) to a real control plane, refused with
INVALID_ARGUMENT naming the field; a malformed message answered once, with one log line; bad
content on a worker's or a container's stream dropped without breaking the stream."""

import json
import math
import queue

import grpc
import pytest

from ember import exception
from ember.proto import api_pb2, api_pb2_grpc
from conftest import Cluster, run_py, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
Step = api_pb2.ImageStep
LAYER = "a" * 64
IMAGE = api_pb2.Image(image_id=LAYER, steps=[Step(kind=Step.DEBIAN_SLIM, layer_id=LAYER)])
STUBS = {"ClientApi": api_pb2_grpc.ClientApiStub, "WorkerApi": api_pb2_grpc.WorkerApiStub,
         "ContainerApi": api_pb2_grpc.ContainerApiStub}
STREAMING = {"CallStream": "stream_stream", "ObjectStream": "stream_stream", "WorkerConnect": "stream_stream",
             "ContainerConnect": "stream_stream", "ImageBuild": "unary_stream", "AppLogs": "unary_stream",
             "BlobGet": "unary_stream", "BlobPut": "stream_unary"}
_channels: dict[str, grpc.Channel] = {}
_tokens: dict[str, dict[str, tuple[str, str]]] = {}  # url -> service -> the token its calls carry


def serving(c: Cluster) -> Cluster:
    """The cluster, its tokens known to rpc(): the admin's for ClientApi, the worker token for WorkerApi."""
    tokens = {}
    for service, path in (("ClientApi", c.token_file), ("WorkerApi", c.worker_token_file)):
        t = json.loads(path.read_text())
        tokens[service] = (t["token_id"], t["token_secret"])
    _tokens[c.url] = tokens
    return c


def rpc(url, method, request, service="ClientApi", raw=False, timeout=30, token=None):
    """Every call of these tests. raw: `request` is bytes (or an iterator of bytes), sent as
    they are, without the stub's serializer. token: (id, secret), else the service's for url."""
    channel = _channels.get(url) or _channels.setdefault(url, grpc.insecure_channel(url))
    if raw:
        call = getattr(channel, STREAMING.get(method, "unary_unary"))(f"/ember.v1.{service}/{method}")
    else:
        call = getattr(STUBS[service](channel), method)
    token = token or _tokens.get(url, {}).get(service)
    md = (("ember-token-id", token[0]), ("ember-token-secret", token[1])) if token else ()
    return call(request, timeout=timeout, metadata=md)


def refused(url, method, request, field, service="ClientApi") -> str:
    """The request is refused with INVALID_ARGUMENT naming the field; the details."""
    with pytest.raises(grpc.RpcError) as info:
        result = rpc(url, method, request, service)
        if method in STREAMING:
            list(result)
    assert info.value.code() == INVALID, info.value.details()
    assert field in info.value.details()
    return info.value.details()


class Stream:
    """A bidirectional stream the test drives: send() its requests, recv() its responses."""

    def __init__(self, url, method, service="ClientApi", raw=False, token=None):
        self.requests = queue.Queue()
        self.responses = rpc(url, method, iter(self.requests.get, None), service, raw=raw, token=token)

    def send(self, msg):
        self.requests.put(msg)

    def recv(self):
        return next(self.responses)

    def close(self):
        self.requests.put(None)


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """A control plane without workers, shared by the tests that only send requests."""
    c = Cluster(tmp_path_factory.mktemp("plane"))
    c.start_server()
    yield serving(c)
    c.stop()


@pytest.fixture
def fresh(tmp_path):
    """A control plane of the test's own: its log holds only what the test caused."""
    c = Cluster(tmp_path)
    c.start_server()
    yield serving(c)
    c.stop()


def definition(**fields) -> api_pb2.FunctionDefinition:
    """A definition the control plane accepts, with `fields` changed."""
    d = api_pb2.FunctionDefinition(name="f", module="m", qualname="f", timeout=60, image=IMAGE,
                                   resources=api_pb2.Resources(cpu=1, memory_mb=128))
    for k, v in fields.items():
        setattr(d, k, v)
    return d


def new_app(url) -> str:
    return rpc(url, "AppCreate", api_pb2.AppCreateRequest(name="validation")).app_id


def new_function(url, app_id, d=None) -> str:
    return rpc(url, "FunctionCreate", api_pb2.FunctionCreateRequest(app_id=app_id, definition=d or definition())
               ).function_id


def test_an_app_needs_a_name(plane):
    refused(plane.url, "AppCreate", api_pb2.AppCreateRequest(), "AppCreateRequest.name")
    assert rpc(plane.url, "AppCreate", api_pb2.AppCreateRequest(name="named")).app_id


def _with(path, value):
    """A change to a definition: set the field at a dotted path."""
    def change(d):
        *parents, last = path.split(".")
        msg = d
        for p in parents:
            msg = getattr(msg, p)
        setattr(msg, last, value)
    return change


BAD_DEFINITIONS = {
    "no name": (_with("name", ""), "FunctionDefinition.name is required"),
    "no code": (_with("module", ""), "FunctionDefinition.module"),
    "no cpu": (_with("resources.cpu", 0.0), "FunctionDefinition.resources.cpu must be > 0 (got 0)"),
    "negative cpu": (_with("resources.cpu", -1.0), "FunctionDefinition.resources.cpu"),
    "no memory": (_with("resources.memory_mb", 0), "FunctionDefinition.resources.memory_mb must be > 0"),
    "a disk beyond 3 TiB": (_with("resources.ephemeral_disk_mb", 4 << 20),
                            "FunctionDefinition.resources.ephemeral_disk_mb must be <= 3145728"),
    "a gpu that does not parse": (_with("resources.gpu", "H9000:two"), "FunctionDefinition.resources.gpu"),
    "negative timeout": (_with("timeout", -1.0), "FunctionDefinition.timeout"),
    "NaN timeout": (_with("timeout", math.nan), "FunctionDefinition.timeout"),
    "endless retries": (_with("retries.max_retries", 1000), "FunctionDefinition.retries.max_retries"),
    "negative backoff": (_with("retries.initial_delay", -1.0), "FunctionDefinition.retries.initial_delay"),
    "min above max": (lambda d: (_with("min_containers", 3)(d), _with("max_containers", 2)(d)),
                      "FunctionDefinition.min_containers"),
    "huge concurrency": (_with("max_inputs", 10**6), "FunctionDefinition.max_inputs"),
    "negative scaledown": (_with("scaledown_window", -5.0), "FunctionDefinition.scaledown_window"),
    "an unknown web kind": (_with("web.kind", 99), "FunctionDefinition.web.kind"),
    "an image without steps": (lambda d: d.image.ClearField("steps"), "FunctionDefinition.image.steps"),
    "a layer id that is a path": (lambda d: setattr(d.image.steps[0], "layer_id", "../../x"),
                                  "FunctionDefinition.image.steps[0].layer_id"),
    "an unknown step kind": (lambda d: setattr(d.image.steps[0], "kind", 0), "FunctionDefinition.image.steps[0].kind"),
    "a cron that does not parse": (_with("schedule.cron", "every day"), "FunctionDefinition.schedule.cron"),
    "a mount path that climbs out": (lambda d: d.volume_mounts.update({"/data/../etc": "vo-1"}),
                                     "FunctionDefinition.volume_mounts"),
}


@pytest.mark.parametrize("case", BAD_DEFINITIONS)
def test_a_function_definition_that_makes_no_sense_is_refused(plane, case):
    change, field = BAD_DEFINITIONS[case]
    app_id = new_app(plane.url)
    d = definition()
    change(d)
    refused(plane.url, "FunctionCreate", api_pb2.FunctionCreateRequest(app_id=app_id, definition=d), field)
    assert new_function(plane.url, app_id)  # the same request, made right, is taken


def test_requests_without_what_they_are_about_are_refused(plane):
    for method, request, field in [
        ("AppHeartbeat", api_pb2.AppRef(), "AppRef.app_id"),
        ("AppStop", api_pb2.AppRef(), "AppRef.app_id"),
        ("AppLogs", api_pb2.AppLogsRequest(), "AppLogsRequest.app_id"),
        ("FunctionCreate", api_pb2.FunctionCreateRequest(app_id="ap-x"), "FunctionCreateRequest.definition"),
        ("FunctionLookup", api_pb2.FunctionLookupRequest(app_name="a"), "FunctionLookupRequest.name"),
        ("ImageBuild", api_pb2.ImageBuildRequest(), "ImageBuildRequest.image.steps"),
        ("FunctionCallCancel", api_pb2.FunctionCallRef(), "FunctionCallRef.call_id"),
        ("SecretLookup", api_pb2.SecretLookupRequest(), "SecretLookupRequest.name"),
        ("ObjectDelete", api_pb2.ObjectRef(kind=api_pb2.OBJECT_KIND_DICT), "ObjectRef.name"),
        ("VolumeCommit", api_pb2.VolumeCommitRequest(volume_id="vo-x", files=[api_pb2.VolumeFile(path="a")]),
         "VolumeCommitRequest.files[0].blob_id"),
    ]:
        refused(plane.url, method, request, field)


def test_inputs_must_fit_their_call(plane):
    fid = new_function(plane.url, new_app(plane.url))
    args = api_pb2.Payload(data=b"x")

    def create(call_id, idxs, complete=True):
        return rpc(plane.url, "FunctionCallCreate", api_pb2.FunctionCallCreateRequest(
            function_id=fid, call_id=call_id, inputs=[api_pb2.Input(idx=i, args=args) for i in idxs],
            inputs_complete=complete))

    for call_id, idxs, field in [("", [0], "FunctionCallCreateRequest.call_id"),
                                 ("fc-dup", [0, 0], "FunctionCallCreateRequest.inputs[1].idx"),
                                 ("fc-past", [0, 5], "FunctionCallCreateRequest.inputs[1].idx")]:
        with pytest.raises(grpc.RpcError) as info:
            create(call_id, idxs)
        assert info.value.code() == INVALID and field in info.value.details()
    assert "appears twice" in refused(plane.url, "FunctionCallPutInputs", api_pb2.PutInputsRequest(
        call_id="fc-any", inputs=[api_pb2.Input(idx=3), api_pb2.Input(idx=3)]), "PutInputsRequest.inputs[1].idx")

    create("fc-ok", [0, 1])
    put = api_pb2.PutInputsRequest(call_id="fc-ok", inputs=[api_pb2.Input(idx=1, args=args)])
    rpc(plane.url, "FunctionCallPutInputs", put)  # a resend of an input it has: nothing new
    put.inputs.add(idx=2, args=args)
    assert "complete" in refused(plane.url, "FunctionCallPutInputs", put, "PutInputsRequest.inputs[1].idx")

    refused(plane.url, "FunctionCallGetOutputs", api_pb2.GetOutputsRequest(call_id="fc-ok", timeout=-1),
            "GetOutputsRequest.timeout")
    refused(plane.url, "FunctionCallGetOutputs", api_pb2.GetOutputsRequest(call_id="fc-ok", max_outputs=10**6),
            "GetOutputsRequest.max_outputs")
    resp = rpc(plane.url, "FunctionCallGetOutputs", api_pb2.GetOutputsRequest(call_id="fc-ok"))
    assert (resp.num_inputs, list(resp.outputs)) == (2, [])
    rpc(plane.url, "FunctionCallCancel", api_pb2.FunctionCallRef(call_id="fc-ok"))


def test_a_bad_call_on_the_call_stream_is_answered_and_the_stream_goes_on(plane):
    fid = new_function(plane.url, new_app(plane.url))
    stream = Stream(plane.url, "CallStream")
    try:
        stream.send(api_pb2.CallRequest(tag=1, function_id=fid))
        first = stream.recv()
        assert first.tag == 1 and "CallRequest.call_id is required" in first.error
        stream.send(api_pb2.CallRequest(tag=2, function_id="fu-none", call_id="fc-s"))
        second = stream.recv()
        assert second.tag == 2 and "there is no function" in second.error
    finally:
        stream.close()


def test_a_bad_dict_or_queue_operation_is_answered_and_the_stream_goes_on(plane):
    def new(kind):
        return rpc(plane.url, "ObjectGet", api_pb2.ObjectGetRequest(kind=kind, ephemeral=True)).object_id

    d, q = new(api_pb2.OBJECT_KIND_DICT), new(api_pb2.OBJECT_KIND_QUEUE)
    Dict, Queue = api_pb2.DictRequest, api_pb2.QueueRequest
    ops = [
        (api_pb2.ObjectOp(dict=Dict(dict_id=d, op=Dict.GET)), "DictRequest.keys"),
        (api_pb2.ObjectOp(dict=Dict(dict_id=d, op=Dict.PUT, keys=[b"k"])), "DictRequest.values"),
        (api_pb2.ObjectOp(dict=Dict(dict_id=d, op=99)), "DictRequest.op"),
        (api_pb2.ObjectOp(), "ObjectOp.op"),
        (api_pb2.ObjectOp(queue=Queue(queue_id=q, op=Queue.PUT)), "QueueRequest.values"),
        (api_pb2.ObjectOp(queue=Queue(queue_id=q, op=Queue.GET, timeout=-1)), "QueueRequest.timeout"),
    ]
    stream = Stream(plane.url, "ObjectStream")
    try:
        for tag, (op, _) in enumerate(ops, 1):
            op.tag = tag
            stream.send(op)
        stream.send(api_pb2.ObjectOp(tag=100, dict=Dict(dict_id=d, op=Dict.LEN)))
        results = {r.tag: r for r in (stream.recv() for _ in range(len(ops) + 1))}
    finally:
        stream.close()
    for tag, (_, field) in enumerate(ops, 1):
        assert field in results[tag].error and not results[tag].not_found
    assert not results[100].error and results[100].dict.count == 0


def _new_log_lines(cluster, before: int) -> list[str]:
    return cluster.log().splitlines()[before:]


@pytest.mark.parametrize("method,service", [("AppCreate", "ClientApi"), ("ImageBuild", "ClientApi"),
                                            ("BlobPut", "ClientApi"), ("CallStream", "ClientApi"),
                                            ("WorkerConnect", "WorkerApi")])
def test_a_malformed_message_is_one_error_and_one_log_line(fresh, method, service):
    garbage = b"\xff\xff\xff\xff"
    before = len(fresh.log().splitlines())
    request = garbage if STREAMING.get(method, "unary_unary").startswith("unary") else iter([garbage] * 5)
    with pytest.raises(grpc.RpcError) as info:
        result = rpc(fresh.url, method, request, service, raw=True)
        if STREAMING.get(method, "").endswith("_stream"):
            list(result)
    assert info.value.code() == INVALID
    assert "could not be parsed" in info.value.details() and method in info.value.details()
    assert rpc(fresh.url, "AppCreate", api_pb2.AppCreateRequest(name="after")).app_id  # still serving
    (line,) = _new_log_lines(fresh, before)
    assert "WARNING refused a malformed request" in line and method in line


def _worker(url, name, cpu=4.0) -> Stream:
    w = Stream(url, "WorkerConnect", "WorkerApi")
    w.send(api_pb2.WorkerMessage(register=api_pb2.WorkerRegister(
        worker_id=name, boot_id="b1", name=name, cpu=cpu, memory_mb=4096, backend=api_pb2.BACKEND_PROCESS)))
    assert w.recv().HasField("registered")
    assert w.recv().HasField("frames")  # where its containers' streams go, told right after registered
    return w


def test_a_worker_that_registers_nonsense_is_refused(fresh):
    w = Stream(fresh.url, "WorkerConnect", "WorkerApi")
    w.send(api_pb2.WorkerMessage(register=api_pb2.WorkerRegister(worker_id="w", boot_id="b", memory_mb=64,
                                                                 backend=api_pb2.BACKEND_PROCESS)))
    with pytest.raises(grpc.RpcError) as info:
        w.recv()
    w.close()
    assert info.value.code() == INVALID and "WorkerRegister.cpu must be > 0" in info.value.details()


def test_bad_reports_on_worker_and_container_streams_are_dropped(fresh):
    """Another worker's word on a container, and an output with a status nobody knows, are
    dropped with a warning; the streams and the call go on."""
    a = _worker(fresh.url, "wa")
    fid = new_function(fresh.url, new_app(fresh.url))
    rpc(fresh.url, "FunctionCallCreate", api_pb2.FunctionCallCreateRequest(
        function_id=fid, call_id="fc-w", inputs=[api_pb2.Input(idx=0, args=api_pb2.Payload(data=b"x"))],
        inputs_complete=True))
    start = a.recv().start_container
    cid = start.container_id
    b = _worker(fresh.url, "wb", cpu=0.5)  # too small for the function: nothing is started on it
    c = None
    try:
        b.send(api_pb2.WorkerMessage(container_exited=api_pb2.ContainerExited(
            container_id=cid, cause=api_pb2.ContainerExited.EXITED, reason="made up")))
        wait_for(lambda: f"exit of container {cid}, which runs on worker wa: ignored" in fresh.log(),
                 what="the warning about worker wb's report")
        c = Stream(fresh.url, "ContainerConnect", "ContainerApi", token=(cid, start.credential))
        c.send(api_pb2.ContainerMessage(hello=api_pb2.ContainerHello(container_id=cid)))
        assert c.recv().init.function_id == fid  # still known: wb's report did not end it
        c.send(api_pb2.ContainerMessage(want_inputs=1))
        (inp,) = c.recv().inputs.inputs
        c.send(api_pb2.ContainerMessage(outputs=api_pb2.OutputBatch(outputs=[
            api_pb2.Output(input_id=inp.input_id, status=99)])))
        wait_for(lambda: "Output.status must be one of" in fresh.log(), what="the warning about the output")
        c.send(api_pb2.ContainerMessage(outputs=api_pb2.OutputBatch(outputs=[
            api_pb2.Output(input_id=inp.input_id, idx=7, status=api_pb2.Output.SUCCESS)])))
        resp = rpc(fresh.url, "FunctionCallGetOutputs", api_pb2.GetOutputsRequest(call_id="fc-w", timeout=20))
        assert [(o.output.status, o.output.idx) for o in resp.outputs] == [(api_pb2.Output.SUCCESS, 0)]
    finally:
        for s in (a, b, c):
            if s is not None:
                s.close()


def test_the_sdk_refuses_the_same_options_itself_and_runs_unnamed_apps(tmp_path, monkeypatch):
    import ember
    app = ember.App("sdk-checks")
    for options, word in [({"cpu": 0}, "cpu=0"), ({"memory": -1}, "memory=-1"), ({"timeout": -1}, "timeout=-1"),
                          ({"gpu": "H9000"}, "H9000"), ({"min_containers": 3, "max_containers": 2}, "min_containers")]:
        with pytest.raises(exception.InvalidError, match=word):
            app.function(**options)(lambda: None)
    # An App without a name still runs: the SDK names it, since the control plane requires one.
    c = Cluster(tmp_path)
    c.start_server()
    c.start_worker()
    try:
        r = run_py("import ember\napp = ember.App()\n@app.function(serialized=True)\ndef f(x):\n    return x + 1\n"
                   "with app.run():\n    print(f.remote(1))\n", env_extra=c.env)
        assert r.returncode == 0 and r.stdout.strip().endswith("2"), r.stderr
    finally:
        c.stop()
