"""ember.App: a named group of functions, run ephemerally with `ember run` or `app.run()`."""

import asyncio
import contextlib
import inspect
import os
import sys

import grpc

from . import config, exception, types
from ._client import code
from ._client.bridge import twin
from ._client.build_progress import BuildProgress
from ._client.client import Client, translate
from ._client.local_cluster import LocalCluster
from ._client.stream import Backoff, unavailable
from .cls import Cls
from .function import Function, FunctionSpec
from .image import Image
from .logs import LogsManager
from .proto import api_pb2
from .refused import refusal

LOG_WAIT = 2.0  # seconds a result waits at most for the prints that came before it


EVENT = 3  # LogEntry.fd of Ember's own events about an app (a container started or exited, a scheduled run)


def print_logs(batch: api_pb2.LogBatch, events: bool = False):
    """What the app's containers printed, on this terminal's stdout and stderr (with events, Ember's
    own events about the app too, on stderr). Each run of lines of one stream is one write: a
    batch of thousands of lines costs a few system calls, not thousands."""
    out, text = None, []
    for e in batch.entries:
        if e.fd == EVENT and not events:
            continue
        to = sys.stdout if e.fd == 1 else sys.stderr
        if to is not out and text:
            _write(out, text)
            text = []
        out = to
        text.append(e.data)
    if text:
        _write(out, text)


def _write(out, text: list[str]):
    data = "".join(text)
    out.write(data)
    # Above a live display (_client/terminal.py) a flush ends the line: one that comes in
    # several entries waits for its end there.
    if data.endswith("\n") or not hasattr(out, "rich_proxied_file"):
        out.flush()


async def build_image(client: Client, image: api_pb2.Image, sources: list[str] | None = None):
    """Have the image built (at once if it is already), its progress on this terminal (see
    build_progress.py; `sources`: where each step's local files come from, Image._sources())."""
    force = os.environ.get("EMBER_FORCE_BUILD", "") not in ("", "0")
    error = "the control plane ended the build without a result"
    backoff = Backoff(max_delay=client.servers.max_delay)
    progress = BuildProgress(image, sources)
    try:
        while True:
            url = client.servers.url
            try:
                async for event in client.stub.ImageBuild(api_pb2.ImageBuildRequest(image=image, force=force),
                                                          wait_for_ready=client.servers.wait_for_ready):
                    progress.event(event)
                    if event.done:
                        error = event.error
                        break
                break
            except grpc.aio.AioRpcError as e:
                # Another of several control planes may lead: asked again, a built image is there at once.
                if unavailable(e) and client.servers.several and await backoff.wait():
                    client.servers.failed(url, e)
                    progress.close("")
                    progress = BuildProgress(image, sources)  # the build's events start over
                    continue
                raise translate(e, "building the app's image") from None
    finally:
        progress.close(error)
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
    """A named group of functions and classes, run with `ember run` or `app.run()`, or deployed.

    image=, secrets=, volumes= and include_source= are defaults for every function and class of
    the app: a function's own image and include_source win, its secrets are added to the app's,
    and its volumes to the app's (its own win at the same path). tags= are kept on the App.
    """

    def __init__(self, name: str | None = None, *, image: Image | None = None, secrets=(), volumes=None,
                 include_source: bool | None = None, tags: dict[str, str] | None = None):
        if name is not None and not isinstance(name, str):
            raise exception.InvalidError(f"App(name={name!r}): the name must be a string")
        if tags is not None and not (isinstance(tags, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in tags.items())):
            raise exception.InvalidError(f"App(tags={tags!r}): pass a dict of strings")
        try:  # checked as a function's options are
            spec = FunctionSpec(image=image, secrets=secrets, volumes=volumes, include_source=include_source)
        except exception.InvalidError as e:
            raise exception.InvalidError(f"App({name!r}): {e}") from None
        self._name = name
        self.tags = dict(tags or {})
        self._defaults = {"image": image, "secrets": spec.secrets, "volumes": spec.volumes,
                          "include_source": include_source if include_source is not None else True}
        self._functions: dict[str, Function] = {}
        self._classes: dict[str, Cls] = {}  # their functions are in _functions too
        self._entrypoints: dict[str, LocalEntrypoint] = {}
        self._running: _RunningApp | None = None
        self._looked_up_id: str | None = None  # App.lookup's: the deployed app it stands for

    def __repr__(self):
        return f"<ember.App {self.name or '(unnamed)'}>"

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def app_id(self) -> str | None:
        return self._running.app_id if self._running else self._looked_up_id

    def _loop(self):
        return self._client().bridge

    def _client(self) -> Client:
        return self._running.client if self._running else Client.from_env()

    def _ensure_app_id(self, what: str) -> str:
        if self.app_id is None:
            raise exception.InvalidError(
                f"App.{what}() of app {self.name!r}: the app is not running here. Call it inside `with app.run():` "
                f"or on a deployed app's handle, ember.App.lookup({self.name or 'NAME'!r})")
        return self.app_id

    @twin
    async def stop(self) -> None:
        """Stop the app: its containers are stopped and it takes no more calls (a deployed
        app's current version too: `ember app stop` does the same)."""
        app_id = self._ensure_app_id("stop")
        await self._client().rpc("AppStop", api_pb2.AppRef(app_id=app_id), what=f"stopping app {self.name or app_id}")

    @property
    def logs(self) -> LogsManager:
        """What its containers printed: .fetch(since=, until=), .tail(n), .stream(timeout=)."""
        app_id = self._ensure_app_id("logs")

        async def target():
            return self._client(), api_pb2.AppLogsRequest(app_id=app_id)
        return LogsManager(self, target, app_id)

    async def _listed(self, what: str) -> api_pb2.AppInfo:
        app_id = self._ensure_app_id(what)
        for a in (await self._client().rpc("AppList", api_pb2.Empty(), what=f"App.{what}()")).apps:
            if a.app_id == app_id:
                return a
        raise exception.NotFoundError(f"App.{what}(): app {self.name or app_id} ({app_id}) is not running any more")

    @twin
    async def info(self, refresh: bool = False) -> types.AppInfo:
        """Its id, name and functions' ids, as the control plane has them now."""
        a = await self._listed("info")
        return types.AppInfo(app_id=a.app_id, description=a.name, functions=dict(a.functions), servers={},
                             deployed=a.deployed, version=a.version)

    @twin
    async def get_dashboard_url(self) -> str:
        """Its page on the control plane's web dashboard (README, Dashboard)."""
        return (await self._listed("get_dashboard_url")).dashboard_url

    def server(self, *args, **kwargs):
        raise refusal("App.server")

    def stats(self, *args, **kwargs):
        raise refusal("App.stats")

    @property
    def sandboxes(self):
        raise refusal("App.sandboxes")

    @property
    def registered_functions(self) -> dict[str, Function]:
        return dict(self._functions)

    @property
    def registered_classes(self) -> dict[str, Cls]:
        return dict(self._classes)

    @property
    def registered_entrypoints(self) -> dict[str, "LocalEntrypoint"]:
        return dict(self._entrypoints)

    @property
    def registered_web_endpoints(self) -> list[str]:
        """The names of its functions served over HTTP (and a class's web methods, as "Cls.method")."""
        names = [n for n, f in self._functions.items() if getattr(f._raw_f, "_ember_web", None) is not None]
        for cls_name, c in self._classes.items():
            names += [f"{cls_name}.{m}" for m in c._web_methods]
        return names

    @property
    def description(self) -> str | None:
        return self.name

    def get_tags(self) -> dict[str, str]:
        """Its tags (tags= and set_tags): kept on this App object; the control plane has none."""
        return dict(self.tags)

    def set_tags(self, tags: dict[str, str]) -> None:
        if not (isinstance(tags, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())):
            raise exception.InvalidError(f"App.set_tags({tags!r}): pass a dict of strings")
        self.tags.update(tags)

    @staticmethod
    def lookup(name: str, *, create_if_missing: bool = False, environment_name: str | None = None) -> "App":
        """A handle on the deployed app `name` (its current version): its app_id, for what takes
        an app. With create_if_missing, an app of that name with no functions is deployed if none
        is. Needs a control plane that keeps running (EMBER_SERVER_URL)."""
        config.check_environment(environment_name, f"App.lookup({name!r})")
        if not isinstance(name, str) or not name:
            raise exception.InvalidError(f"App.lookup({name!r}): pass the name of a deployed app")
        if config.server_url() is None:
            raise exception.InvalidError(
                f"App.lookup({name!r}) needs a control plane that keeps running: start one with `ember server` "
                "and `ember worker --server URL`, and set EMBER_SERVER_URL")
        app = App(name)
        client = Client.from_env()
        app._looked_up_id = client.run(_lookup_app(client, name, create_if_missing))
        return app

    def include(self, other_app: "App", inherit_tags: bool = True) -> "App":
        """Make another app's functions and classes part of this one (apps split over several
        files): they run, deploy and are called with this app. Its tags join this app's (this
        app's win). Returns this app."""
        if not isinstance(other_app, App):
            raise exception.InvalidError(f"app.include({other_app!r}): pass an ember.App")
        if self._running is not None:
            raise exception.InvalidError(f"app {self.name!r} is running: include other apps before it runs")
        clash = sorted(set(self._functions) & set(other_app._functions))
        if clash:
            raise exception.InvalidError(f"app {self.name!r} and the included app {other_app.name!r} both have "
                                         f"a function or class named {clash[0]!r}: rename one (name=...)")
        for fname, f in other_app._functions.items():
            self._functions[fname] = f
            f._app = self  # it runs, and is called, with this app
        self._classes.update(other_app._classes)
        for ep_name, ep in other_app._entrypoints.items():
            self._entrypoints.setdefault(ep_name, ep)
        if inherit_tags:
            self.tags = {**other_app.tags, **self.tags}
        return self

    def _spec(self, where: str, options: dict) -> FunctionSpec:
        try:
            return FunctionSpec(app=self, **options)
        except TypeError as e:  # an option neither Ember nor Modal has
            raise exception.InvalidError(f"{where}: {e}".replace("__init__()", "")) from None

    def function(self, _f=None, *, name: str | None = None, serialized: bool = False, is_generator: bool | None = None,
                 **options):
        """Decorator: make a function run in containers. Options (Modal's: image, cpu, memory,
        gpu, timeout, retries, env, secrets, volumes, ...; see the README) are validated here."""
        spec = self._spec("@app.function()", options)
        if is_generator is not None and not isinstance(is_generator, bool):
            raise exception.InvalidError(f"is_generator={is_generator!r}: pass True or False")

        def wrap(raw_f) -> Function:
            if isinstance(raw_f, Function):
                raise exception.InvalidError(f"{raw_f._name} is already an ember function")
            if not callable(raw_f) or inspect.isclass(raw_f):
                raise exception.InvalidError(f"@app.function() decorates functions, not {raw_f!r}")
            fname = name or raw_f.__name__
            if fname in self._functions:
                raise exception.InvalidError(f"app {self.name!r} already has a function named {fname!r}")
            f = Function(fname, app=self, raw_f=raw_f, spec=spec, serialized=serialized, is_generator=is_generator)
            self._functions[fname] = f
            return f

        return wrap(_f) if _f is not None else wrap

    def cls(self, _cls=None, *, name: str | None = None, serialized: bool = False, **options):
        """Decorator: a class whose @ember.method()s run in containers; takes @app.function's
        options. `@ember.enter()` methods run once per container, `@ember.exit()` ones at its end."""
        spec = self._spec("@app.cls()", options)

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


async def _lookup_app(client: Client, name: str, create: bool) -> str:
    """The id of the current version of the deployed app `name`; with create, a new app of
    that name with no functions is deployed if there is none."""
    apps = (await client.rpc("AppList", api_pb2.Empty())).apps
    for a in apps:
        if a.deployed and a.name == name and a.state == api_pb2.APP_STATE_RUNNING:
            return a.app_id
    if not create:
        raise exception.NotFoundError(f"there is no deployed app named {name!r}: deploy it with "
                                      f"`ember deploy FILE --name {name}`, or pass create_if_missing=True")
    app_id = (await client.rpc("AppCreate", api_pb2.AppCreateRequest(name=name, deployed=True))).app_id
    await client.rpc("AppDeploy", api_pb2.AppRef(app_id=app_id))
    return app_id


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
                secret_ids = {id(s): await s._resolve(client) for s in image._build_secrets()}
                images[id(image)] = await asyncio.to_thread(image._resolve, client.upload_sync,
                                                            secret_ids)  # hashes local files
                await build_image(client, images[id(image)], image._sources())
                image._image_id = images[id(image)].image_id
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
        for name, f in functions.items():
            for note in f._spec.notes:
                print(f"ember: {name}: {note}", file=sys.stderr)
            if f._spec.memory_snapshot and deployed_name is None:
                print(f"ember: {name}: enable_memory_snapshot=True serves deployed apps (ember deploy): the "
                      "containers of this run start afresh", file=sys.stderr)
        if self.app.tags:
            print(f"ember: app tags {self.app.tags} are kept on the App object only: the control plane has none",
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
            code.describe(f._raw_f, d, self.client.upload_sync, by_value=f._serialized,
                          include_source=f._spec.include_source)
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
        backoff = Backoff(max_delay=self.client.servers.max_delay)
        try:
            while True:
                url = self.client.servers.url
                try:
                    async for batch in self.client.stub.AppLogs(
                            api_pb2.AppLogsRequest(app_id=self.app_id, after_seq=self.log_seq),
                            wait_for_ready=self.client.servers.wait_for_ready):
                        backoff.reset()
                        print_logs(batch)
                        self.log_seq = batch.entries[-1].seq
                        self._logs_moved()
                    return  # the app stopped: everything was printed
                except grpc.aio.AioRpcError as e:
                    if not unavailable(e) or not await backoff.wait():
                        return
                    self.client.servers.failed(url, e)
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
