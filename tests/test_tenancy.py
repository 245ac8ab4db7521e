"""Identity and tenancy, tried as an attacker with real processes: an unauthenticated client, a
client of workspace B, a fake worker, a process reusing a live container's id, and a container
of workspace B each try to reach workspace A's objects; every try fails with the right error,
and A's work goes on unharmed. Also: zero setup, token expiry and revocation."""

import json
import os
import queue
import stat
import subprocess

import grpc
import pytest

from conftest import APPS, PY, ROOT, Cluster, on_both_stores, wait_for
from test_transport import MESSAGE, exchange, frame, hello, status_of
import ember
from ember._client.auth import metadata
from ember.proto import api_pb2, api_pb2_grpc

Code = grpc.StatusCode
SERVICES = api_pb2.DESCRIPTOR.services_by_name


def cli(env, *args, check=True):
    out = subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(APPS), **env))
    assert out.returncode == 0 or not check, out.stderr
    return out


def sdk(env, code: str):
    """Run code with the SDK as the holder of env's token; its last line printed is JSON."""
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(APPS), **env))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def code_of(call) -> Code | None:
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return None


class Raw:
    """gRPC calls as anyone: with a token (id, secret), or none."""

    def __init__(self, url: str, token=None, admin=None):
        self.url, self.token, self.admin = url, token, admin  # admin: a token that may ask where frames are
        self.channel = grpc.insecure_channel(url)
        self.md = metadata(token)
        self.client = api_pb2_grpc.ClientApiStub(self.channel)
        self.worker = api_pb2_grpc.WorkerApiStub(self.channel)
        self.container = api_pb2_grpc.ContainerApiStub(self.channel)

    def __call__(self, name, request, **kw):
        return getattr(self.client, name)(request, metadata=self.md, timeout=30, **kw)

    def error(self, name, request) -> tuple[Code | None, str]:
        try:
            self(name, request)
        except grpc.RpcError as e:
            return e.code(), e.details()
        return None, ""

    def every_rpc(self, service: str) -> dict[str, Code | None]:
        """Each RPC of a service called with an empty request: the status it ends with."""
        codes = {}
        for m in SERVICES[service].methods:
            path = f"/{SERVICES[service].full_name}/{m.name}"
            request = getattr(api_pb2, m.input_type.name)()
            kind = ("stream" if m.client_streaming else "unary") + "_" + ("stream" if m.server_streaming else "unary")
            rpc = getattr(self.channel, kind)(path, request_serializer=lambda r: r.SerializeToString(),
                                              response_deserializer=lambda b: b)
            arg = iter([request]) if m.client_streaming else request
            if m.server_streaming:
                codes[m.name] = code_of(lambda rpc=rpc, arg=arg: next(iter(rpc(arg, metadata=self.md, timeout=30))))
            else:
                codes[m.name] = code_of(lambda rpc=rpc, arg=arg: rpc(arg, metadata=self.md, timeout=30))
        return codes

    def connect_container(self, container_id: str):
        hello = api_pb2.ContainerMessage(hello=api_pb2.ContainerHello(container_id=container_id))
        return next(iter(self.container.ContainerConnect(iter([hello]), metadata=self.md, timeout=30)))

    def connect_container_over_frames(self, container_id: str) -> str:
        """The same, on the frame transport: the status its stream ends with, by name."""
        port = Raw(self.url, self.admin)("TransportEndpoint", api_pb2.Empty()).port
        first = api_pb2.ContainerMessage(hello=api_pb2.ContainerHello(container_id=container_id))
        return status_of(exchange(port, hello(self.token or ("", ""), "ContainerConnect") + frame(MESSAGE, first),
                                  None))[0]

    def register(self, **reg):
        msg = api_pb2.WorkerMessage(register=api_pb2.WorkerRegister(**reg))
        return next(iter(self.worker.WorkerConnect(iter([msg]), metadata=self.md, timeout=30)))


def token_of(env) -> tuple[str, str]:
    return env["EMBER_TOKEN_ID"], env["EMBER_TOKEN_SECRET"]


@pytest.fixture(scope="module")
def tenants(tmp_path_factory, request):
    c = Cluster(tmp_path_factory.mktemp("tenancy"), store=getattr(request, "param", "sqlite"))
    c.start_server()
    c.start_worker()
    a = dict(c.env)
    try:
        cli(a, "workspace", "create", "b")
        t = json.loads(cli(a, "token", "new", "--workspace", "b", "--json").stdout)
        b = dict(c.env, EMBER_TOKEN_ID=t["token_id"], EMBER_TOKEN_SECRET=t["token_secret"])
        # Workspace A: a deployed app with a secret, a dict, a queue and a volume.
        cli(a, "secret", "create", "creds", "KEY=a-value")
        cli(a, "deploy", str(APPS / "tenant_app.py"), "--name", "tenant")
        cli(a, "volume", "create", "a-vol")
        sdk(a, "import ember, json\n"
               "ember.Dict.from_name('a-dict', create_if_missing=True)['k'] = 'a-data'\n"
               "ember.Queue.from_name('a-queue', create_if_missing=True).put('a-item')\n"
               "print(json.dumps(True))")
        yield c, a, b
    finally:
        c.stop()


def ids_of(c, env) -> dict:
    """The ids of A's objects, as A sees them (what an attacker might have learned)."""
    raw = Raw(c.url, token_of(env))
    fn = raw("FunctionLookup", api_pb2.FunctionLookupRequest(app_name="tenant", name="whoami"))
    ids = {"function_id": fn.function_id,
           "secret_id": raw("SecretLookup", api_pb2.SecretLookupRequest(name="creds")).secret_id}
    for kind, name in ((api_pb2.OBJECT_KIND_DICT, "a-dict"), (api_pb2.OBJECT_KIND_QUEUE, "a-queue"),
                       (api_pb2.OBJECT_KIND_VOLUME, "a-vol")):
        ids[name] = raw("ObjectGet", api_pb2.ObjectGetRequest(kind=kind, name=name)).object_id
    ids["app_id"] = next(a.app_id for a in raw("AppList", api_pb2.Empty()).apps if a.name == "tenant")
    ids["call_id"] = raw("FunctionCallCreate", api_pb2.FunctionCallCreateRequest(
        function_id=fn.function_id, call_id="fc-a-1", inputs_complete=True, inputs=[api_pb2.Input(
            idx=0, args=api_pb2.Payload(data=__import__("pickle").dumps(((), {}))))])).call_id
    return ids


def a_is_unharmed(env):
    got = sdk(env, "import ember, json\n"
                   "f = ember.Function.from_name('tenant', 'whoami')\n"
                   "print(json.dumps([f.remote()['key'], ember.Dict.from_name('a-dict')['k'], "
                   "ember.Queue.from_name('a-queue').len()]))")
    assert got == ["a-value", "a-data", 1]


def test_without_a_token_nothing_runs(tenants):
    c, a, _ = tenants
    anonymous = Raw(c.url)
    for service in ("ClientApi", "WorkerApi", "ContainerApi"):
        codes = anonymous.every_rpc(service)
        assert set(codes.values()) == {Code.UNAUTHENTICATED}, (service, codes)
    code, details = Raw(c.url, ("tk-made-up", "guess")).error("AppList", api_pb2.Empty())
    assert code == Code.UNAUTHENTICATED and "not valid" in details and "ember token" in details
    # The SDK and the CLI say what is missing and how to get a token.
    out = cli({"EMBER_SERVER_URL": c.url, "EMBER_TOKEN_ID": "", "EMBER_TOKEN_SECRET": ""}, "app", "list",
              check=False)
    assert out.returncode == 1 and "carries no Ember token" in out.stderr and "ember token new" in out.stderr
    a_is_unharmed(a)


@on_both_stores("tenants")
def test_a_client_of_another_workspace_reaches_nothing_of_a(tenants):
    c, a, b = tenants
    ids = ids_of(c, a)
    raw = Raw(c.url, token_of(b))

    def not_found(name, request, like=None, names=("x", "")):
        code, details = raw.error(name, request)
        assert code == Code.NOT_FOUND, (name, code, details)
        if like is not None:  # the same answer as for something that does not exist at all
            assert details == raw.error(name, like)[1].replace(*names), details
        return details

    # Listings show only B's own (nothing yet).
    assert raw("AppList", api_pb2.Empty()).apps == []
    assert raw("SecretList", api_pb2.Empty()).secrets == []
    assert raw("ObjectList", api_pb2.ObjectListRequest(kind=api_pb2.OBJECT_KIND_DICT)).objects == []
    assert raw("ProxyTokenList", api_pb2.Empty()).tokens == []
    assert {t.workspace for t in raw("TokenList", api_pb2.Empty()).tokens} == {"b"}
    # By name: as if it did not exist.
    not_found("FunctionLookup", api_pb2.FunctionLookupRequest(app_name="tenant", name="whoami"),
              like=api_pb2.FunctionLookupRequest(app_name="nothing", name="whoami"),
              names=("nothing", "tenant"))
    not_found("SecretLookup", api_pb2.SecretLookupRequest(name="creds"),
              like=api_pb2.SecretLookupRequest(name="nosuch"), names=("nosuch", "creds"))
    not_found("ObjectGet", api_pb2.ObjectGetRequest(kind=api_pb2.OBJECT_KIND_DICT, name="a-dict"),
              like=api_pb2.ObjectGetRequest(kind=api_pb2.OBJECT_KIND_DICT, name="nosuch"), names=("nosuch", "a-dict"))
    not_found("AppStop", api_pb2.AppRef(name="tenant"))
    not_found("AppHistory", api_pb2.AppRef(name="tenant"))
    # By id: calls, spawns, outputs, volumes, deletes.
    not_found("FunctionCallCreate", api_pb2.FunctionCallCreateRequest(
        function_id=ids["function_id"], call_id="fc-b-1", inputs_complete=True))
    not_found("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(call_id=ids["call_id"]))
    not_found("FunctionBind", api_pb2.FunctionBindRequest(function_id=ids["function_id"]))
    not_found("FunctionBind", api_pb2.FunctionBindRequest(function_id=ids["function_id"],
                                                          options=api_pb2.FunctionOptions(timeout=5)))
    not_found("FunctionGetStats", api_pb2.FunctionRef(function_id=ids["function_id"]))
    not_found("FunctionLookup", api_pb2.FunctionLookupRequest(function_id=ids["function_id"], with_definition=True))
    not_found("SecretCreate", api_pb2.SecretCreateRequest(name="creds", env={"KEY": "b"}, merge=True))  # .update
    with pytest.raises(grpc.RpcError) as logs:  # a call's logs (call.logs)
        list(raw("AppLogs", api_pb2.AppLogsRequest(call_id=ids["call_id"], stop_at_end=True)))
    assert logs.value.code() == Code.NOT_FOUND, logs.value.details()
    not_found("FunctionUpdateAutoscaler", api_pb2.FunctionUpdateAutoscalerRequest(
        function_id=ids["function_id"], min_containers=1))
    not_found("VolumeGet", api_pb2.VolumeRef(volume_id=ids["a-vol"]))
    not_found("VolumeCommit", api_pb2.VolumeCommitRequest(volume_id=ids["a-vol"], deleted=["x"]))
    not_found("ObjectDelete", api_pb2.ObjectRef(kind=api_pb2.OBJECT_KIND_DICT, object_id=ids["a-dict"]))
    not_found("AppHeartbeat", api_pb2.AppRef(app_id=ids["app_id"]))
    not_found("AppDeploy", api_pb2.AppRef(app_id=ids["app_id"]))
    raw("AppStop", api_pb2.AppRef(app_id=ids["app_id"]))  # nothing of B's to stop: nothing happens
    raw("FunctionCallCancel", api_pb2.FunctionCallRef(call_id=ids["call_id"]))
    stream = raw.client.CallStream(iter([api_pb2.CallRequest(tag=1, function_id=ids["function_id"],
                                                             call_id="fc-b-2")]), metadata=raw.md, timeout=30)
    assert "there is no function" in next(iter(stream)).error
    # Dicts and queues by id, over the object stream.
    ops = [api_pb2.ObjectOp(tag=1, dict=api_pb2.DictRequest(dict_id=ids["a-dict"], op=api_pb2.DictRequest.GET,
                                                            keys=[b"k"])),
           api_pb2.ObjectOp(tag=2, dict=api_pb2.DictRequest(dict_id=ids["a-dict"], op=api_pb2.DictRequest.CLEAR)),
           api_pb2.ObjectOp(tag=3, queue=api_pb2.QueueRequest(queue_id=ids["a-queue"], op=api_pb2.QueueRequest.GET,
                                                              timeout=1)),
           api_pb2.ObjectOp(tag=4, queue=api_pb2.QueueRequest(queue_id=ids["a-queue"], op=api_pb2.QueueRequest.PUT,
                                                              values=[b"x"]))]
    results = list(raw.client.ObjectStream(iter(ops), metadata=raw.md, timeout=30))
    assert len(results) == 4 and all(r.not_found and "does not exist" in r.error for r in results), results
    # A function of B's that names A's secret or volume by id is refused.
    app_id = raw("AppCreate", api_pb2.AppCreateRequest(name="thief")).app_id
    code = {"module": "tenant_app", "qualname": "whoami", "resources": api_pb2.Resources(cpu=1, memory_mb=128)}
    for definition in (api_pb2.FunctionDefinition(name="f", secret_ids=[ids["secret_id"]], **code),
                       api_pb2.FunctionDefinition(name="g", volume_mounts={"/data": ids["a-vol"]}, **code)):
        not_found("FunctionCreate", api_pb2.FunctionCreateRequest(app_id=app_id, definition=definition))
    # An image whose build step names A's secret (to read its values in the build) is refused,
    # when built and in a function's definition.
    image = ember.Image.debian_slim().run_commands("env > /stolen")._resolve(lambda data: "")
    image.steps[-1].secret_ids.append(ids["secret_id"])
    with pytest.raises(grpc.RpcError) as refused:
        list(raw("ImageBuild", api_pb2.ImageBuildRequest(image=image)))
    assert refused.value.code() == Code.NOT_FOUND and "there is no secret" in refused.value.details()
    not_found("FunctionCreate", api_pb2.FunctionCreateRequest(app_id=app_id, definition=api_pb2.FunctionDefinition(
        name="i", image=image, **code)))
    # ... and so is a handle with options (with_options) of B's own function naming them.
    own = raw("FunctionCreate", api_pb2.FunctionCreateRequest(app_id=app_id, definition=api_pb2.FunctionDefinition(
        name="h", **code))).function_id
    for options in (api_pb2.FunctionOptions(replace_secrets=True, secret_ids=[ids["secret_id"]]),
                    api_pb2.FunctionOptions(replace_volumes=True, volume_mounts={"/data": ids["a-vol"]})):
        not_found("FunctionBind", api_pb2.FunctionBindRequest(function_id=own, options=options))
    assert raw("FunctionBind", api_pb2.FunctionBindRequest(
        function_id=own, options=api_pb2.FunctionOptions(timeout=5))).function_id not in ("", own)
    raw("AppStop", api_pb2.AppRef(app_id=app_id))
    # No minting beyond its workspace, no workspaces, no workers.
    Role = api_pb2.TokenCreateRequest.Role
    for request in (api_pb2.TokenCreateRequest(workspace="main"), api_pb2.TokenCreateRequest(role=Role.ROLE_ADMIN),
                    api_pb2.TokenCreateRequest(role=Role.ROLE_WORKER)):
        assert raw.error("TokenCreate", request)[0] == Code.PERMISSION_DENIED, request
    for name in ("WorkspaceList", "WorkerList"):
        assert raw.error(name, api_pb2.Empty())[0] == Code.PERMISSION_DENIED
    assert raw.error("WorkspaceCreate", api_pb2.WorkspaceRequest(name="c"))[0] == Code.PERMISSION_DENIED
    assert raw.error("WorkerDrain", api_pb2.WorkerRef(name="w1"))[0] == Code.PERMISSION_DENIED
    assert raw.error("TokenRevoke", api_pb2.TokenInfo(token_id=a["EMBER_TOKEN_ID"]))[0] == Code.NOT_FOUND
    # A workspace token is not a worker's, nor a container's.
    assert code_of(lambda: raw.register(worker_id="wk-evil", name="evil", cpu=64, memory_mb=1 << 20)) == \
        Code.PERMISSION_DENIED
    assert code_of(lambda: raw.connect_container("ct-anything")) == Code.PERMISSION_DENIED
    a_is_unharmed(a)


def test_workers_need_a_worker_token_within_its_limits(tenants):
    c, a, _ = tenants
    reg = {"worker_id": "wk-fake", "boot_id": "boot-1", "name": "fake", "cpu": 2, "memory_mb": 1024,
           "backend": api_pb2.BACKEND_PROCESS}
    assert code_of(lambda: Raw(c.url).register(**reg)) == Code.UNAUTHENTICATED
    t = json.loads(cli(a, "token", "new", "--worker", "--max-cpu", "4", "--max-memory", "8G", "--json").stdout)
    worker = Raw(c.url, (t["token_id"], t["token_secret"]))
    for bad, code in (({"cpu": 0}, Code.INVALID_ARGUMENT), ({"cpu": -1}, Code.INVALID_ARGUMENT),
                      ({"memory_mb": 0}, Code.INVALID_ARGUMENT), ({"cpu": 64}, Code.PERMISSION_DENIED),
                      ({"memory_mb": 9 * 1024}, Code.PERMISSION_DENIED)):
        assert code_of(lambda bad=bad: worker.register(**dict(reg, **bad))) == code, bad
    # The real worker's id stays with the token it first registered with.
    real_id = (c.tmp / "w1" / "worker_id").read_text().strip()
    assert code_of(lambda: worker.register(**dict(reg, worker_id=real_id))) == Code.PERMISSION_DENIED
    # The token in the environment works too; revoking it ends that worker.
    log = open(c.tmp / "worker-env.log", "wb")
    w = subprocess.Popen([PY, "-m", "ember.cli.main", "worker", "--server", c.url, "--data-dir", str(c.tmp / "w-env"),
                          "--name", "w-env", "--backend", "process", "--cpu", "1", "--memory", "1024"],
                         env=dict(os.environ, EMBER_WORKER_TOKEN_ID=t["token_id"],
                                  EMBER_WORKER_TOKEN_SECRET=t["token_secret"]), stdout=log, stderr=log)
    try:
        wait_for(lambda: "w-env\t" in cli(a, "worker", "list").stdout, what="the worker to join")
        cli(a, "token", "revoke", t["token_id"])
        assert w.wait(30) == 1
    finally:
        w.kill()
    assert "refused this worker" in (c.tmp / "worker-env.log").read_text()
    # Without a token file, `ember worker` says how to get one; with a bad one, that it was refused.
    out = cli({}, "worker", "--server", c.url, "--data-dir", str(c.tmp / "w9"), check=False)
    assert out.returncode == 2 and "ember token new --worker" in out.stderr
    bad = c.tmp / "bad-token.json"
    bad.write_text(json.dumps({"token_id": t["token_id"], "token_secret": "wrong"}))
    out = cli({}, "worker", "--server", c.url, "--data-dir", str(c.tmp / "w9"), "--token-file", str(bad),
              check=False)
    assert out.returncode == 1 and "refused this worker" in out.stderr
    a_is_unharmed(a)


def test_a_containers_identity_cannot_be_taken(tenants):
    c, a, _ = tenants
    me = sdk(a, "import ember, json\nprint(json.dumps(ember.Function.from_name('tenant', 'whoami').remote()))")
    cid, (token_id, secret) = me["container"], me["token"]
    assert token_id == cid and secret and secret not in c.log()  # its secret is not in the server's log
    # Its id (seen in logs) with a guessed secret, or with another valid token: refused.
    assert code_of(lambda: Raw(c.url, (cid, "guess")).connect_container(cid)) == Code.UNAUTHENTICATED
    assert code_of(lambda: Raw(c.url, token_of(a)).connect_container(cid)) == Code.PERMISSION_DENIED
    # Even its own credential cannot open a second stream while it is connected.
    assert code_of(lambda: Raw(c.url, (cid, secret)).connect_container(cid)) == Code.UNAVAILABLE
    # The same on the frame transport (where its own stream is), checked by the same handler;
    # and a worker's token is no container's either.
    worker = json.loads(c.worker_token_file.read_text())
    for token, code in (((cid, "guess"), "UNAUTHENTICATED"), (token_of(a), "PERMISSION_DENIED"),
                        ((worker["token_id"], worker["token_secret"]), "PERMISSION_DENIED"),
                        ((cid, secret), "UNAVAILABLE"), (None, "UNAUTHENTICATED")):
        assert Raw(c.url, token, admin=token_of(a)).connect_container_over_frames(cid) == code, token
    # Nor can a function's code list, enter or stop containers (its own included).
    raw = Raw(c.url, (cid, secret))
    assert raw.error("ContainerList", api_pb2.ContainerListRequest())[0] == Code.PERMISSION_DENIED
    start = api_pb2.ContainerExecRequest(start=api_pb2.ExecStart(container_id=cid, argv=["true"]))
    assert code_of(lambda: list(raw.client.ContainerExec(iter([start]), metadata=raw.md, timeout=30))) \
        == Code.PERMISSION_DENIED
    a_is_unharmed(a)


def test_a_container_of_another_workspace_reaches_nothing_of_a(tenants):
    c, a, b = tenants
    ids = ids_of(c, a)
    me = sdk(a, "import ember, json\nprint(json.dumps(ember.Function.from_name('tenant', 'whoami').remote()))")
    cli(b, "secret", "create", "creds", "KEY=b-value")
    cli(b, "deploy", str(APPS / "tenant_app.py"), "--name", "tenant")  # the same name, in B
    target = {"dict": "a-dict", "queue": "a-queue", "secret": "creds-a", "function_id": ids["function_id"],
              "call_id": ids["call_id"], "container": me["container"]}
    got = sdk(b, "import ember, json\n"
                 "print(json.dumps([ember.Function.from_name('tenant', 'whoami').remote()['key'], "
                 f"ember.Function.from_name('tenant', 'attack').remote({target!r})]))")
    key, results = got
    assert key == "b-value"  # B's own secret of that name, not A's
    for name in ("dict by name", "queue by name", "secret by name", "call by id", "outputs by call id"):
        assert results[name].startswith("NotFoundError"), (name, results[name])
    assert results["mint a token"].startswith("PermissionDeniedError"), results["mint a token"]  # an AuthError
    assert "PERMISSION_DENIED" in results["connect as another container"], results
    assert "PERMISSION_DENIED" in results["connect as another container over frames"], results
    a_is_unharmed(a)


def test_tokens_expire_and_revoke(tenants):
    c, a, _ = tenants
    t = json.loads(cli(a, "token", "new", "--name", "short", "--expires-in", "2s", "--json").stdout)
    short = Raw(c.url, (t["token_id"], t["token_secret"]))
    short("AppList", api_pb2.Empty())  # works at first (its 2 s start when it is made)
    wait_for(lambda: short.error("AppList", api_pb2.Empty())[0] == Code.UNAUTHENTICATED, what="the token to expire")
    assert "expired" in short.error("AppList", api_pb2.Empty())[1]
    t = json.loads(cli(a, "token", "new", "--json").stdout)
    env = dict(a, EMBER_TOKEN_ID=t["token_id"], EMBER_TOKEN_SECRET=t["token_secret"])
    assert t["token_id"] in cli(a, "token", "list").stdout
    cli(env, "app", "list")
    # A stream it opened: answered while the token is valid, ended at its first use after.
    raw = Raw(c.url, token_of(env))
    dict_id = raw("ObjectGet", api_pb2.ObjectGetRequest(kind=api_pb2.OBJECT_KIND_DICT, ephemeral=True)).object_id
    ops = queue.Queue()
    results = raw.client.ObjectStream(iter(ops.get, None), metadata=raw.md, timeout=60)
    op = api_pb2.ObjectOp(tag=1, dict=api_pb2.DictRequest(dict_id=dict_id, op=api_pb2.DictRequest.LEN))
    ops.put(op)
    assert next(results).tag == 1
    cli(a, "token", "revoke", t["token_id"])
    ops.put(op)
    with pytest.raises(grpc.RpcError) as info:
        next(results)
    assert info.value.code() == Code.UNAUTHENTICATED and "revoked" in info.value.details()
    out = cli(env, "app", "list", check=False)
    assert out.returncode == 1 and "revoked" in out.stderr


def test_a_new_control_plane_makes_its_first_tokens(tenants):
    c, _, _ = tenants
    for name in ("admin-token.json", "worker-token.json"):
        path = c.tmp / "server" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert set(json.loads(path.read_text())) == {"token_id", "token_secret"}
        assert str(path) in c.log()
    # Only the hash of a secret is stored.
    secret = json.loads((c.tmp / "server" / "admin-token.json").read_text())["token_secret"]
    assert secret.encode() not in (c.tmp / "server" / "ember.db").read_bytes()  # nor in its WAL:
    wal = c.tmp / "server" / "ember.db-wal"
    assert not wal.exists() or secret.encode() not in wal.read_bytes()


def test_environments_are_refused_not_ignored():
    import ember
    from ember import exception

    for make in (lambda: ember.Dict.from_name("d", environment_name="dev"),
                 lambda: ember.Function.from_name("app", "f", environment_name="dev"),
                 lambda: ember.Secret.from_name("s", environment_name="dev")):
        with pytest.raises(exception.InvalidError, match="no environments.*workspaces"):
            make()
    ember.Dict.from_name("d", environment_name=None)  # leaving it out is fine
    out = cli({}, "deploy", "-e", "dev", str(APPS / "tenant_app.py"), check=False)
    assert out.returncode == 1 and "no environments" in out.stderr


def test_workers_are_listed_drained_and_removed(cluster, tmp_path):
    env = cluster.env
    w2 = cluster.start_worker(name="w2")
    wait_for(lambda: "w2" in cli(env, "worker", "list").stdout, what="w2 to join")
    cli(env, "secret", "create", "creds", "KEY=v")
    cli(env, "deploy", str(APPS / "tenant_app.py"), "--name", "tenant")
    whoami = "import ember, json\nprint(json.dumps(ember.Function.from_name('tenant', 'whoami').remote()))"
    assert "draining" in cli(env, "worker", "drain", "w1").stdout
    listing = cli(env, "worker", "list").stdout
    assert [line.split("\t")[-1] for line in listing.splitlines() if line.startswith("w1")] == ["draining"]
    # New containers go to w2 only.
    cid = sdk(env, whoami)["container"]
    assert f"container {cid} started" in cluster.log("worker-w2") and cid not in cluster.log("worker-w1")
    assert "removed" in cli(env, "worker", "remove", "w2").stdout
    w2.wait(30)  # it was told to exit
    assert "w2" not in cli(env, "worker", "list").stdout
    out = cli(env, "worker", "drain", "nope", check=False)
    assert out.returncode == 1 and "no worker named 'nope'" in out.stderr
