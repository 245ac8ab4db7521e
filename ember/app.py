"""ember.App: a named group of functions, run ephemerally with `ember run` or `app.run()`."""

import asyncio
import contextlib
import inspect
import os
import sys

import grpc

from . import config, exception
from ._client import code
from ._client.client import Client, translate
from ._client.local_cluster import LocalCluster
from ._client.stream import Backoff, unavailable
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


async def build_image(client: Client, image: api_pb2.Image):
    """Have the image built (at once if it is already), its build output on this terminal."""
    force = os.environ.get("EMBER_FORCE_BUILD", "") not in ("", "0")
    error = "the control plane ended the build without a result"
    try:
        async for event in client.stub.ImageBuild(api_pb2.ImageBuildRequest(image=image, force=force),
                                                  wait_for_ready=True):
            if event.log:
                sys.stderr.write(event.log)
                sys.stderr.flush()
            if event.done:
                error = event.error
                break
    except grpc.aio.AioRpcError as e:
        raise translate(e, "building the app's image") from None
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
                 scaledown_window=60, block_network: bool = False, schedule=None, ephemeral_disk=None,
                 serialized: bool = False):
        """Decorator: make a function run in containers. Options are validated right here."""
        spec = FunctionSpec(image=image, cpu=cpu, memory=memory, gpu=gpu, timeout=timeout, retries=retries,
                            secrets=secrets, volumes=volumes, max_containers=max_containers,
                            min_containers=min_containers, scaledown_window=scaledown_window,
                            block_network=block_network, schedule=schedule, ephemeral_disk=ephemeral_disk)

        def wrap(raw_f) -> Function:
            if isinstance(raw_f, Function):
                raise exception.InvalidError(f"{raw_f._name} is already an ember function")
            if not callable(raw_f) or inspect.isclass(raw_f):
                raise exception.InvalidError(f"@app.function() decorates functions, not {raw_f!r}")
            fname = name or raw_f.__name__
            if fname in self._functions:
                raise exception.InvalidError(f"app {self.name!r} already has a function named {fname!r}")
            f = Function(fname, app=self, raw_f=raw_f, spec=spec, serialized=serialized)
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
            c = Cls(Function(cname, app=self, raw_f=user_cls, spec=spec, serialized=serialized), user_cls)
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

    def deploy(self, name: str | None = None, *, environment_name: str | None = None) -> int:
        """Deploy the app: its functions stay callable (`Function.from_name`) after this process
        exits, until it is stopped or deployed again. Returns the new version's number."""
        config.check_environment(environment_name, "App.deploy")
        name = name or self.name
        if not name:
            raise exception.InvalidError("a deployed app needs a name: ember.App(\"name\") or deploy(name=...)")
        if config.server_url() is None:
            raise exception.InvalidError(
                "deploying needs a control plane that keeps running: start one with `ember server` and "
                "`ember worker --server URL`, and set EMBER_SERVER_URL")
        client = Client.from_env()
        return client.run(_RunningApp(self, client).deploy(name))

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
                client.run(running.start())
                yield self
            finally:
                self._running = None
                client.run(running.stop())
                for f in self._functions.values():
                    f._hydrate(None, None)
        finally:
            if cluster is not None:
                cluster.stop()


class _RunningApp:
    """An app while it runs: its id, heartbeats, and the prints of its containers. Its methods
    run on the client's event loop."""

    def __init__(self, app: App, client: Client):
        self.app = app
        self.client = client
        self.app_id: str | None = None
        self.log_seq = 0
        self.log_seen = asyncio.Event()  # set (and replaced) each time log_seq moves on
        self.logs_ended = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def start(self):
        resp = await self.create()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._heartbeats(resp.heartbeat_interval)),
                      loop.create_task(self._follow_logs())]

    async def deploy(self, name: str) -> int:
        """Create the app as the next version of the deployed app `name`; its version number."""
        await self.create(deployed_name=name)
        return (await self.client.rpc("AppDeploy", api_pb2.AppRef(app_id=self.app_id))).version

    async def create(self, deployed_name: str | None = None) -> api_pb2.AppCreateResponse:
        """Build the images, check the secrets, create the app and its functions."""
        client = self.client
        functions = self.app._functions
        # Images first: a long build must not outlast the app's first heartbeat.
        images = {}  # one resolve and build per distinct Image object
        for f in functions.values():
            image = f._spec.image
            if id(image) not in images:
                images[id(image)] = await asyncio.to_thread(image._resolve, client.upload_sync)  # hashes local files
                await build_image(client, images[id(image)])
        # Secrets next: a missing one (or a missing required key) fails here, before anything runs.
        secret_ids = {name: [await s._resolve(client) for s in f._spec.secrets] for name, f in functions.items()}
        volume_ids = {name: {path: await v._id() for path, v in f._spec.volumes.items()}
                      for name, f in functions.items()}
        resp = await client.rpc("AppCreate", api_pb2.AppCreateRequest(
            name=deployed_name or self.app.name or "unnamed", deployed=deployed_name is not None))
        self.app_id = resp.app_id
        for note in resp.unisolated_workers:
            print(f"ember: functions run as plain processes, without container isolation, on worker {note}",
                  file=sys.stderr)
        # Packaging code pickles functions and reads files: on a thread, its uploads through this loop.
        definitions = await asyncio.to_thread(self._definitions, images, secret_ids, volume_ids)

        async def create_function(name, d):
            return name, await client.rpc("FunctionCreate", api_pb2.FunctionCreateRequest(
                app_id=self.app_id, definition=d))

        for name, r in await asyncio.gather(*(create_function(n, d) for n, d in definitions.items())):
            functions[name]._hydrate(client, r.function_id, r.web_url, r.method_web_urls)
            urls = {name: r.web_url} if r.web_url else {f"{name}.{m}": url for m, url in r.method_web_urls.items()}
            for endpoint, url in sorted(urls.items()):
                print(f"ember: web endpoint {endpoint} => {url}", flush=True)
        return resp

    def _definitions(self, images, secret_ids, volume_ids) -> dict[str, api_pb2.FunctionDefinition]:
        definitions = {}
        for name, f in self.app._functions.items():
            d = f._spec.definition(name, f._is_generator)
            web = getattr(f._raw_f, "_ember_web", None)
            if web is not None:
                d.web.CopyFrom(web)
            d.max_inputs = getattr(f._raw_f, "_ember_max_inputs", 0)
            d.target_inputs = getattr(f._raw_f, "_ember_target_inputs", 0)
            d.batch_max_size, d.batch_wait_ms = getattr(f._raw_f, "_ember_batched", (0, 0))
            if name in self.app._classes:
                self.app._classes[name]._definition_extras(d)
            code.describe(f._raw_f, d, self.client.upload_sync, by_value=f._serialized)
            d.image.CopyFrom(images[id(f._spec.image)])
            d.secret_ids.extend(secret_ids[name])
            d.volume_mounts.update(volume_ids[name])
            definitions[name] = d
        return definitions

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
        backoff = Backoff()
        try:
            while True:
                try:
                    async for batch in self.client.stub.AppLogs(
                            api_pb2.AppLogsRequest(app_id=self.app_id, after_seq=self.log_seq), wait_for_ready=True):
                        backoff.reset()
                        print_logs(batch)
                        self.log_seq = batch.entries[-1].seq
                        self._logs_moved()
                    return  # the app stopped: everything was printed
                except grpc.aio.AioRpcError as e:
                    if not unavailable(e) or not await backoff.wait():
                        return
        finally:
            self.logs_ended.set()
            self._logs_moved()

    def _logs_moved(self):
        seen, self.log_seen = self.log_seen, asyncio.Event()
        seen.set()

    async def wait_for_logs(self, seq: int):
        """Let what the app printed up to `seq` reach the terminal first (waiting LOG_WAIT at most)."""
        if seq <= self.log_seq or self.logs_ended.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOG_WAIT):
                while seq > self.log_seq and not self.logs_ended.is_set():
                    await self.log_seen.wait()

    async def drain(self):
        """Let the app finish the calls and requests it runs, then stop (a newer version of it
        took over); what it prints meanwhile still shows."""
        await self.client.rpc("AppStop", api_pb2.AppRef(app_id=self.app_id, drain=True))
        self.tasks[0].cancel()  # its heartbeats

    async def stop(self):
        if self.app_id is None:
            return
        try:
            await self.client.rpc("AppStop", api_pb2.AppRef(app_id=self.app_id), retry=False)
        except exception.Error:
            pass
        if self.tasks:  # the log stream ends once the app has stopped and everything it printed was sent
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOG_WAIT):
                    await self.logs_ended.wait()
        for t in self.tasks:
            t.cancel()
