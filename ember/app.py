"""ember.App: a named group of functions, run ephemerally with `ember run` or `app.run()`."""

import asyncio
import contextlib
import inspect
import os
import sys
import threading

import grpc

from . import config, exception
from ._client import code
from ._client.client import Client
from ._client.local_cluster import LocalCluster
from .cls import Cls
from .function import Function, FunctionSpec
from .proto import api_pb2

LOG_WAIT = 2.0  # seconds a result waits at most for the prints that came before it


def print_logs(batch: api_pb2.LogBatch):
    """What the app's containers printed, on this terminal's stdout and stderr."""
    for e in batch.entries:
        out = sys.stderr if e.fd == 2 else sys.stdout
        out.write(e.data)
        out.flush()


def build_image(client: Client, image: api_pb2.Image):
    """Have the image built (at once if it is already), its build output on this terminal."""
    force = os.environ.get("EMBER_FORCE_BUILD", "") not in ("", "0")

    async def follow():
        async for event in client.stub.ImageBuild(api_pb2.ImageBuildRequest(image=image, force=force),
                                                  wait_for_ready=True):
            if event.log:
                sys.stderr.write(event.log)
                sys.stderr.flush()
            if event.done:
                return event.error
        return "the control plane ended the build without a result"

    error = client.run(follow())
    if error:
        raise exception.ImageBuildError(f"Image build failed: {error}")


class LocalEntrypoint:
    """A function that runs here, on the caller's machine, while the app runs remotely."""

    def __init__(self, app: "App", raw_f, name: str):
        self.app = app
        self.raw_f = raw_f
        self.name = name

    def __call__(self, *args, **kwargs):
        return self.raw_f(*args, **kwargs)


class App:
    def __init__(self, name: str | None = None):
        if name is not None and not isinstance(name, str):
            raise exception.InvalidError(f"App(name={name!r}): the name must be a string")
        self.name = name
        self._functions: dict[str, Function] = {}
        self._classes: dict[str, Cls] = {}  # their functions are in _functions too
        self._entrypoints: dict[str, LocalEntrypoint] = {}
        self._running: _RunningApp | None = None

    def __repr__(self):
        return f"<ember.App {self.name or '(unnamed)'}>"

    @property
    def app_id(self) -> str | None:
        return self._running.app_id if self._running else None

    @property
    def registered_functions(self) -> dict[str, Function]:
        return dict(self._functions)

    def function(self, _f=None, *, name: str | None = None, image=None, cpu=None, memory=None, gpu=None,
                 timeout=300, retries=None, secrets=(), volumes=None, max_containers=None, min_containers=0,
                 scaledown_window=60, block_network: bool = False, schedule=None, serialized: bool = False):
        """Decorator: make a function run in containers. Options are validated right here."""
        spec = FunctionSpec(image=image, cpu=cpu, memory=memory, gpu=gpu, timeout=timeout, retries=retries,
                            secrets=secrets, volumes=volumes, max_containers=max_containers,
                            min_containers=min_containers, scaledown_window=scaledown_window,
                            block_network=block_network, schedule=schedule)

        def wrap(raw_f) -> Function:
            if isinstance(raw_f, Function):
                raise exception.InvalidError(f"{raw_f._name} is already an ember function")
            if not callable(raw_f) or inspect.isclass(raw_f):
                raise exception.InvalidError(f"@app.function() decorates functions, not {raw_f!r}")
            fname = name or raw_f.__name__
            if fname in self._functions:
                raise exception.InvalidError(f"app {self.name!r} already has a function named {fname!r}")
            f = Function(self, raw_f, spec, fname, serialized=serialized)
            self._functions[fname] = f
            return f

        return wrap(_f) if _f is not None else wrap

    def cls(self, _cls=None, *, name: str | None = None, serialized: bool = False, **options):
        """Decorator: a class whose @ember.method()s run in containers; takes @app.function's
        options. `@ember.enter()` methods run once per container, `@ember.exit()` ones at its end."""
        try:
            spec = FunctionSpec(**options)
        except TypeError as e:
            raise exception.InvalidError(f"@app.cls(): {e}") from None

        def wrap(user_cls) -> Cls:
            if not inspect.isclass(user_cls):
                raise exception.InvalidError(f"@app.cls() decorates classes, not {user_cls!r}")
            cname = name or user_cls.__name__
            if cname in self._functions:
                raise exception.InvalidError(f"app {self.name!r} already has a function or class named {cname!r}")
            c = Cls(self, user_cls, spec, cname, serialized)
            if not c._methods and not c._web_methods:
                raise exception.InvalidError(f"class {cname} has no method marked @ember.method() "
                                             "(or a web endpoint decorator)")
            self._classes[cname] = c
            self._functions[cname] = c._function
            return c

        return wrap(_cls) if _cls is not None else wrap

    def local_entrypoint(self, _f=None, *, name: str | None = None):
        """Decorator: the function `ember run FILE` calls, on this machine, with the app running."""
        def wrap(raw_f):
            ep = LocalEntrypoint(self, raw_f, name or raw_f.__name__)
            self._entrypoints[ep.name] = ep
            return ep

        return wrap(_f) if _f is not None else wrap

    def deploy(self, name: str | None = None) -> int:
        """Deploy the app: its functions stay callable (`Function.from_name`) after this process
        exits, until it is stopped or deployed again. Returns the new version's number."""
        name = name or self.name
        if not name:
            raise exception.InvalidError("a deployed app needs a name: ember.App(\"name\") or deploy(name=...)")
        if config.server_url() is None:
            raise exception.InvalidError(
                "deploying needs a control plane that keeps running: start one with `ember server` and "
                "`ember worker --server URL`, and set EMBER_SERVER_URL")
        client = Client.from_env()
        deployment = _RunningApp(self, client)
        deployment.create(deployed_name=name)
        resp = client.run(client.rpc("AppDeploy", api_pb2.AppRef(app_id=deployment.app_id)))
        return resp.version

    @contextlib.contextmanager
    def run(self):
        """Run the app for the duration of the block (an ephemeral app).

        With no EMBER_SERVER_URL, a local cluster (control plane and one worker) starts for the
        block and stops after it.
        """
        if self._running is not None:
            raise exception.InvalidError(f"app {self.name!r} is already running")
        cluster = LocalCluster.start() if config.server_url() is None else None
        try:
            client = Client.from_env()
            running = _RunningApp(self, client)
            self._running = running
            try:
                running.start()
                yield self
            finally:
                self._running = None
                running.stop()
                for f in self._functions.values():
                    f._hydrate(None, None)
        finally:
            if cluster is not None:
                cluster.stop()


class _RunningApp:
    """An app while it runs: its id, heartbeats, and the prints of its containers."""

    def __init__(self, app: App, client: Client):
        self.app = app
        self.client = client
        self.app_id: str | None = None
        self.log_seq = 0
        self.log_cond = threading.Condition()
        self.tasks: list[asyncio.Task] = []
        self.logs_done = threading.Event()

    def start(self):
        resp = self.create()
        self.client.bridge.call_soon(self._start_tasks, resp.heartbeat_interval)

    def create(self, deployed_name: str | None = None) -> api_pb2.AppCreateResponse:
        """Build the images, check the secrets, create the app and its functions."""
        client = self.client
        # Images first: a long build must not outlast the app's first heartbeat.
        images = {}  # one resolve and build per distinct Image object
        for f in self.app._functions.values():
            image = f._spec.image
            if id(image) not in images:
                images[id(image)] = image._resolve(client.upload_sync)
                build_image(client, images[id(image)])
        # Secrets next: a missing one (or a missing required key) fails here, before anything runs.
        secret_ids = {name: [s._resolve(client) for s in f._spec.secrets] for name, f in self.app._functions.items()}
        resp = client.run(client.rpc("AppCreate", api_pb2.AppCreateRequest(
            name=deployed_name or self.app.name or "", deployed=deployed_name is not None)))
        self.app_id = resp.app_id
        for note in resp.unisolated_workers:
            print(f"ember: functions run as plain processes, without container isolation, on worker {note}",
                  file=sys.stderr)
        # Package code here, on the caller's thread: uploads go through the event loop.
        definitions = {}
        for name, f in self.app._functions.items():
            d = f._spec.definition(name, f._is_generator)
            web = getattr(f._raw_f, "_ember_web", None)
            if web is not None:
                d.web.CopyFrom(web)
            d.max_inputs = getattr(f._raw_f, "_ember_max_inputs", 0)
            if name in self.app._classes:
                self.app._classes[name]._definition_extras(d)
            code.describe(f._raw_f, d, client.upload_sync, by_value=f._serialized)
            d.image.CopyFrom(images[id(f._spec.image)])
            d.secret_ids.extend(secret_ids[name])
            for path, volume in f._spec.volumes.items():
                d.volume_mounts[path] = volume._id()
            definitions[name] = d
        created = client.run(self._create_functions(definitions))
        for name, r in created.items():
            self.app._functions[name]._hydrate(client, r.function_id, r.web_url, r.method_web_urls)
            urls = {name: r.web_url} if r.web_url else {f"{name}.{m}": url for m, url in r.method_web_urls.items()}
            for endpoint, url in sorted(urls.items()):
                print(f"ember: web endpoint {endpoint} => {url}", flush=True)
        return resp

    async def _create_functions(self, definitions) -> dict[str, api_pb2.FunctionCreateResponse]:
        async def one(name, d):
            return name, await self.client.rpc("FunctionCreate", api_pb2.FunctionCreateRequest(
                app_id=self.app_id, definition=d))
        return dict(await asyncio.gather(*(one(n, d) for n, d in definitions.items())))

    def _start_tasks(self, heartbeat_interval: float):
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._heartbeats(heartbeat_interval)), loop.create_task(self._follow_logs())]

    async def _heartbeats(self, interval: float):
        while True:
            await asyncio.sleep(interval)
            try:
                await self.client.rpc("AppHeartbeat", api_pb2.AppRef(app_id=self.app_id))
            except exception.NotFoundError:
                print(f"ember: app {self.app.name or self.app_id} was stopped by the control plane",
                      file=sys.stderr)
                return
            except exception.Error:
                pass

    async def _follow_logs(self):
        try:
            while True:
                try:
                    async for batch in self.client.stub.AppLogs(
                            api_pb2.AppLogsRequest(app_id=self.app_id, after_seq=self.log_seq), wait_for_ready=True):
                        print_logs(batch)
                        with self.log_cond:
                            self.log_seq = batch.entries[-1].seq
                            self.log_cond.notify_all()
                    return  # the app stopped: everything was printed
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        return
                    await asyncio.sleep(0.2)
        finally:
            self.logs_done.set()
            with self.log_cond:
                self.log_cond.notify_all()

    def logs_behind(self, seq: int) -> bool:
        return seq > self.log_seq and not self.logs_done.is_set()

    def wait_for_logs(self, seq: int):
        with self.log_cond:
            self.log_cond.wait_for(lambda: self.log_seq >= seq or self.logs_done.is_set(), LOG_WAIT)

    def drain(self):
        """Let the app finish the calls and requests it runs, then stop (a newer version of it
        took over); what it prints meanwhile still shows."""
        self.client.run(self.client.rpc("AppStop", api_pb2.AppRef(app_id=self.app_id, drain=True)))
        self.client.bridge.call_soon(self.tasks[0].cancel)  # its heartbeats

    def stop(self):
        if self.app_id is None:
            return
        try:
            self.client.run(self.client.rpc("AppStop", api_pb2.AppRef(app_id=self.app_id), retry=False))
        except exception.Error:
            pass
        # The log stream ends once the app has stopped and everything it printed was sent.
        self.logs_done.wait(LOG_WAIT)
        for t in self.tasks:
            self.client.bridge.call_soon(t.cancel)
