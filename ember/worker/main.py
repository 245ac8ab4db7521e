"""`ember worker`: one daemon per machine that starts, watches and stops containers.

It keeps one stream open to the control plane: it registers its resources, heartbeats, runs
the StartContainer/StopContainer commands it receives, and reports every container exit with
its cause. When the control plane goes away it keeps its containers running and reconnects,
telling the new control plane which containers it still runs. It joins with a worker token; a
control plane that refuses it (no valid token, or more resources than the token allows) ends it.
"""

import asyncio
import collections
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import sys

import grpc

from .. import exception
from .._client.auth import Authed, read_token_file
from .._ids import new_id
from .. import config
from ..config import server_url
from .._client.servers import Servers
from .._client.stream import ReconnectingStream, unavailable
from ..proto import api_pb2, api_pb2_grpc
from . import backend as backends
from . import gpus, images, runtime_files
from .container import ContainerBackend
from .execs import Execs
from .frames import Frames
from .network import NetworkError
from .process import ProcessBackend

log = logging.getLogger("ember.worker")

HEARTBEAT = 1.0  # seconds; a worker silent for the worker timeout is given up
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
# The runtime backends, in order of preference: `--backend auto` runs the first available.
BACKENDS = (ContainerBackend, ProcessBackend)


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024


class Worker:
    def __init__(self, server_url: str, token: tuple[str, str], data_dir: pathlib.Path, cpu: float, memory_mb: int,
                 name: str, backend: str = "auto", cache_dir: pathlib.Path | None = None,
                 labels: dict[str, str] | None = None, warm_parents: bool = True):
        chosen, self.why = backends.choose(backend, BACKENDS)  # why: the reason it runs without isolation
        self.server_url = server_url
        self.token = token
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        id_file = data_dir / "worker_id"
        if not id_file.exists():
            id_file.write_text(new_id("wk"))
        self.worker_id = id_file.read_text().strip()
        self.boot_id = new_id("boot")
        self.cpu = cpu
        self.memory_mb = memory_mb
        self.name = name
        self.labels = dict(labels or {})  # --label KEY=VALUE: region= places by its `region`
        self.stub = None  # the control plane, while connected
        cache_dir = cache_dir or data_dir
        self.gpus = gpus.discover()
        self.frames = Frames(server_url)
        self.backend: backends.RuntimeBackend = chosen(backends.Context(
            data_dir=data_dir, cache_dir=cache_dir, server_url=server_url,
            runtime_dir=runtime_files.prepare(cache_dir / "runtime"), stub=self._stub, gpus=self.gpus,
            worker_id=self.worker_id,
            ca_file=_keep_ca(data_dir, server_url), warm_parents=warm_parents, frames=self.frames))
        self.backend_note = f"{self.backend.name} backend" + (f" (no isolation: {self.why})" if self.why else "")
        log.info("%s; isolation: %s", self.backend_note, self.backend.isolation())
        self.tasks: dict[str, asyncio.Task] = {}
        self.execs = Execs(self.backend, lambda out: self._send(api_pb2.WorkerMessage(exec_output=out)), self.tasks.get)
        self.backend.on_started = self.execs.container_started
        self.stops: set[asyncio.Task] = set()  # stops of containers asked while they start
        self.stream: ReconnectingStream | None = None  # to the control plane, once run() starts
        self.builds: dict[str, asyncio.Task] = {}  # image builds and snapshots, by id
        self.stopping = False
        # Exits are resent after every reconnect: the control plane ignores ones it knows.
        self.recent_exits: collections.deque = collections.deque(maxlen=1000)
        self.refused: str | None = None  # why the control plane refused this worker, if it did

    def _stub(self):
        if self.stub is None:
            raise images.BuildError("the worker lost its connection to the control plane")
        return self.stub

    async def run(self, stop: asyncio.Event):
        self.stop_event = stop
        # One address, or several of control planes of which one leads: the stream moves on to
        # another when the one it uses is unavailable (servers.py).
        self.servers = servers = Servers(self.server_url,
                                         lambda channel: Authed(api_pb2_grpc.WorkerApiStub(channel), self.token))
        try:
            watch = asyncio.create_task(self._watch(servers.channel()))
            # Any break but a refusal is retried, forever: a worker outlives control-plane restarts.
            stream = ReconnectingStream(self._open, self._handle,
                                        on_connect=lambda outbox: self._connected(outbox, servers.stub()),
                                        on_disconnect=self._disconnected, retry=lambda e: e.code() not in REFUSED,
                                        max_delay=servers.max_delay)
            self.stream = stream
            session = asyncio.create_task(stream.run())
            session.add_done_callback(lambda _: stop.set())
            beats = asyncio.create_task(self._heartbeats())
            try:
                await stop.wait()
                self.stopping = True
                await self.backend.drain()  # while still connected
                beats.cancel()
                # End the stream after what is queued, so that the control plane hears all of it
                # (when there is one to hear it: a worker stopping while it reconnects does not wait,
                # or whoever stops it may lose patience before its containers and disks are cleaned up).
                stream.close()
                if self.stub is not None:
                    await asyncio.wait([session], timeout=2)
                if session.done() and not session.cancelled():
                    session.exception()  # a refusal: self.refused says it
            finally:  # whatever happened above, its containers (and their disks) go with it
                session.cancel()
                watch.cancel()
                self.execs.stop_all()
                await self.backend.stop_all()
        finally:
            await servers.close()

    def _open(self, messages):
        self.connecting_to = self.servers.url
        return self.servers.stub().WorkerConnect(messages, wait_for_ready=self.servers.wait_for_ready)

    async def _watch(self, channel: grpc.aio.Channel):
        """Say why, when the control plane is there but TLS keeps us out: the stream itself
        waits for the channel in silence (wait_for_ready), and would wait forever."""
        if self.servers.several:
            return  # each address is tried in turn: none waits in silence
        state = channel.get_state(try_to_connect=True)
        while True:
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                problem = await asyncio.to_thread(config.tls_problem, self.servers.url)
                if problem:
                    log.error("cannot connect to the control plane: %s", problem)
            await channel.wait_for_state_change(state)
            state = channel.get_state()

    def _send(self, msg: api_pb2.WorkerMessage):
        """To the control plane, if connected (what must survive a reconnect is sent again then)."""
        if self.stream is not None:
            self.stream.send(msg)

    async def _heartbeats(self):
        """A heartbeat, and the CPU time its containers have used so far (usage accounting) and the
        memory they use (the dashboard's containers page)."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            self._send(api_pb2.WorkerMessage(heartbeat=api_pb2.Empty()))
            used = [api_pb2.ContainerCpu(container_id=cid, cpu_seconds=cpu,
                                         memory_bytes=self.backend.memory_bytes(cid) or 0)
                    for cid in self.backend.running() if (cpu := self.backend.cpu_seconds(cid)) is not None]
            if used:
                self._send(api_pb2.WorkerMessage(usage=api_pb2.ContainerUsage(containers=used)))

    def _connected(self, outbox, stub):
        """A new attempt of the stream: register first, then the exits it may have missed."""
        outbox.put(api_pb2.WorkerMessage(register=api_pb2.WorkerRegister(
            worker_id=self.worker_id, boot_id=self.boot_id, name=self.name, cpu=self.cpu,
            memory_mb=self.memory_mb, running_container_ids=list(self.backend.running()),
            backend=api_pb2.Backend.Value(f"BACKEND_{self.backend.name.upper()}"),
            gpus=[g.kind for g in self.gpus], backend_note=self.why,
            own_network=self.backend.capabilities.own_network, labels=self.labels)))
        for e in self.recent_exits:  # the control plane ignores the ones it knows
            outbox.put(api_pb2.WorkerMessage(container_exited=e))
        self.stub = stub
        if not self.stopping:  # reconnecting while it stops (drained): no archive starts now
            self.backend.resume_uploads(
                lambda layer: self._send(api_pb2.WorkerMessage(layer_built=api_pb2.LayerBuilt(layer=layer))))

    def _disconnected(self, error: grpc.aio.AioRpcError | None):
        self.stub = None
        self.execs.stop_all()  # their clients' streams went through the control plane: they are gone
        for t in self.builds.values():  # the control plane fails them: it lost us
            t.cancel()
        if error is not None and error.code() in REFUSED:
            self.refused = error.details()
        elif error is not None and unavailable(error):
            log.info("control plane at %s unavailable (%s); retrying", self.connecting_to, error.details())
        if error is None or unavailable(error):
            self.servers.failed(self.connecting_to, error)
        elif error is not None:
            log.warning("stream to the control plane broke: %s", error.details())

    def _handle(self, cmd: api_pb2.WorkerCommand):
        try:
            self._run_command(cmd)
        except Exception:  # one bad command must not end the worker's stream
            log.exception("command %s failed", cmd.WhichOneof("cmd"))

    def _run_command(self, cmd: api_pb2.WorkerCommand):
        kind = cmd.WhichOneof("cmd")
        if kind == "registered":
            log.info("registered with %s as %s (%.1f CPU, %d MiB, %d GPUs, %s)", self.servers.url,
                     self.name, self.cpu, self.memory_mb, len(self.gpus), self.backend_note)
        elif kind == "frames":
            self.frames.update(cmd.frames)
        elif kind == "start_container":
            sc = cmd.start_container
            self.tasks[sc.container_id] = asyncio.create_task(self._run_container(sc))
        elif kind == "stop_container":
            stop = cmd.stop_container
            if stop.container_id in self.tasks and stop.container_id not in self.execs.started:
                # Asked while it starts (a sandbox terminated as soon as it was made): once started.
                task = asyncio.create_task(self._stop_once_started(stop))
                self.stops.add(task)
                task.add_done_callback(self.stops.discard)
            else:
                self.backend.stop(stop.container_id, kill=stop.kill)
        elif kind == "build_image":
            b = cmd.build_image
            self.builds[b.build_id] = asyncio.create_task(self._build(b))
        elif kind == "exec_start":
            self.execs.start(cmd.exec_start)
        elif kind == "exec_input":
            self.execs.input(cmd.exec_input)
        elif kind == "snapshot_container":
            self.builds[cmd.snapshot_container.snapshot_id] = asyncio.create_task(
                self._snapshot(cmd.snapshot_container))
        elif kind == "shutdown":
            log.warning("the control plane removed this worker: stopping its containers and exiting")
            self.stop_event.set()

    async def _build(self, b: api_pb2.BuildImage):
        def log_fn(text: str):
            self._send(api_pb2.WorkerMessage(build_log=api_pb2.BuildLog(build_id=b.build_id, data=text)))

        def report(layer: api_pb2.Layer):
            self._send(api_pb2.WorkerMessage(layer_built=api_pb2.LayerBuilt(build_id=b.build_id, layer=layer)))

        def on_step(index: int, state: int):
            step = api_pb2.BuildStep(index=index + 1, total=len(b.image.steps), state=state)
            self._send(api_pb2.WorkerMessage(build_log=api_pb2.BuildLog(build_id=b.build_id, step=step)))

        error = ""
        try:
            self._check_capabilities(b.image)
            known = {layer.layer_id: layer.blob_id for layer in b.layers}
            await self.backend.build(with_secret_env(b), known, b.force, log_fn, report, b.workspace, on_step)
        except images.BuildError as e:
            error = str(e)
        except Exception as e:
            log.exception("image build %s failed", b.build_id)
            error = f"the build failed on worker {self.name}: {e!r}"
        finally:
            self.builds.pop(b.build_id, None)
        self._send(api_pb2.WorkerMessage(build_done=api_pb2.BuildDone(build_id=b.build_id, error=error)))

    async def _stop_once_started(self, stop: api_pb2.StopContainer):
        await self.execs.until_started(stop.container_id)
        self.backend.stop(stop.container_id, kill=stop.kill)

    async def _snapshot(self, cmd: api_pb2.SnapshotContainer):
        done = api_pb2.SnapshotDone(snapshot_id=cmd.snapshot_id)
        try:
            await self.execs.until_started(cmd.container_id)  # a sandbox just placed: once it is started
            done.layer.CopyFrom(await self.backend.snapshot(cmd.container_id, cmd.parent_layer_id, cmd.workspace))
        except images.BuildError as e:
            done.error = str(e)
        except Exception as e:
            log.exception("snapshot %s of container %s failed", cmd.snapshot_id, cmd.container_id)
            done.error = f"the snapshot failed on worker {self.name}: {e!r}"
        finally:
            self.builds.pop(cmd.snapshot_id, None)
        self._send(api_pb2.WorkerMessage(snapshot_done=done))

    def _check_capabilities(self, image: api_pb2.Image, start: api_pb2.StartContainer | None = None):
        """Raise BuildError if the image (or the container) needs what the backend has not got."""
        refusal = backends.refusal(self.backend, self.why, image, start)
        if refusal:
            raise images.BuildError(refusal)

    async def _run_container(self, sc: api_pb2.StartContainer):
        Exited = api_pb2.ContainerExited
        try:
            self._check_capabilities(sc.image, sc)
            ended = await self.backend.run(sc)
            exit_code, reason, tail = ended.exit_code, ended.reason, ended.log_tail
            cause = Exited.OUT_OF_MEMORY if ended.out_of_memory else Exited.EXITED
            cpu = ended.cpu_seconds
        except images.BuildError as e:
            cpu = 0.0
            exit_code, reason, tail, cause = -1, f"could not start: {e}", "", Exited.START_FAILED
        except Exception as e:
            log.exception("container %s failed to start", sc.container_id)
            cpu = 0.0
            exit_code, reason, tail, cause = -1, f"failed to start: {e!r}", "", Exited.WORKER_ERROR
        finally:
            self.tasks.pop(sc.container_id, None)
        self.execs.container_ended(sc.container_id, reason)  # its commands end first, saying why
        event = Exited(container_id=sc.container_id, cause=cause, exit_code=exit_code, reason=reason, log_tail=tail,
                       cpu_seconds=cpu)
        self.recent_exits.append(event)
        self._send(api_pb2.WorkerMessage(container_exited=event))


def with_secret_env(b: api_pb2.BuildImage) -> api_pb2.Image:
    """The image to build, each step's build environment with its secrets' variables (env= wins,
    as it is the step's own). Layer ids are the control plane's and stay as given."""
    image = api_pb2.Image()
    image.CopyFrom(b.image)
    for index, secret in b.secret_env.items():
        if index < len(image.steps):
            step = image.steps[index]
            env = {**secret.env, **step.env}
            step.env.clear()
            step.env.update(env)
    return image


def _keep_ca(data_dir: pathlib.Path, url: str) -> pathlib.Path | None:
    """A copy of the CA certificate the worker trusts, for its containers (a file of the worker's
    own that it can bind into them, whatever happens to the original); None if there is none."""
    if not config.is_tls(url) or not config.ca_cert_path():
        return None
    path = data_dir / "ca.pem"
    path.write_bytes(config.ca_pem())
    return path


def parse_labels(given: list[str]) -> dict[str, str]:
    """--label KEY=VALUE options (repeatable); ValueError says which one is not of that form."""
    labels = {}
    for item in given:
        key, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", key) or not value or len(value) > 128:
            raise ValueError(f"--label {item!r}: pass KEY=VALUE, e.g. --label region=eu (KEY: letters, digits, "
                             "_, - and .; VALUE: 1 to 128 characters)")
        labels[key] = value
    return labels


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s worker %(levelname)s %(message)s")
    url = args.server or server_url()
    if not url:
        print("ember worker: no control plane given. Pass --server URL or set EMBER_SERVER_URL "
              "(start one with `ember server`).", file=sys.stderr)
        return 2
    data_dir = pathlib.Path(args.data_dir).expanduser()
    token_file = args.token_file or os.environ.get("EMBER_WORKER_TOKEN_FILE")
    token = (os.environ.get("EMBER_WORKER_TOKEN_ID"), os.environ.get("EMBER_WORKER_TOKEN_SECRET"))
    if not token_file and not all(token):
        print("ember worker: no worker token. Pass --token-file FILE (or set EMBER_WORKER_TOKEN_FILE) with a token "
              "an admin made with `ember token new --worker --json > FILE`, or set EMBER_WORKER_TOKEN_ID and "
              "EMBER_WORKER_TOKEN_SECRET; a new `ember server` writes one to <data-dir>/worker-token.json.",
              file=sys.stderr)
        return 2
    try:
        token = read_token_file(token_file) if token_file else token
    except exception.AuthError as e:
        print(f"ember worker: {e}", file=sys.stderr)
        return 2
    try:
        labels = parse_labels(args.label)
    except ValueError as e:
        print(f"ember worker: {e}", file=sys.stderr)
        return 2
    try:
        worker = Worker(url, token, data_dir, cpu=args.cpu or float(os.cpu_count() or 1),
                        memory_mb=args.memory or _memory_mb(), name=args.name or socket.gethostname(),
                        backend=args.backend, labels=labels, warm_parents=args.warm_parents == "on",
                        cache_dir=pathlib.Path(args.cache_dir).expanduser() if args.cache_dir else None)
    except (backends.Unavailable, NetworkError) as e:
        print(f"ember worker: {e}", file=sys.stderr)
        return 2

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    # Plain asyncio, not uvloop: uvloop starts children with fork(), which runs gRPC's fork
    # handlers in the child, and those can crash it while other threads use gRPC; asyncio's
    # subprocesses use vfork and run none. The worker is not on the hot path of calls.
    asyncio.run(main())
    shutil.rmtree(data_dir / "containers", ignore_errors=True)
    if worker.refused:
        print(f"ember worker: the control plane at {url} refused this worker: {worker.refused}", file=sys.stderr)
        return 1
    return 0
