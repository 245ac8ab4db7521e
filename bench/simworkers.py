"""Simulated workers and containers for bench/cluster.py: the real protocols, a trivial runtime.

Each simulated worker is an asyncio task with its own gRPC channel (its own TCP connection),
its own worker id and the worker token: it registers as `ember worker` does, heartbeats and
reports its containers' CPU time every HEARTBEAT, answers BuildImage by reporting each step's
layer as built (no files: nothing runs in the simulated containers), and for each
StartContainer starts a simulated container. Each container is a task with its own channel and
the credential from its StartContainer: it says hello, takes its ContainerInit, asks for
inputs as the real runtime does for a fast function (one, then MAX_PREFETCH at a time) and
answers each with its first argument, pickled, without running any user code. A container the
worker is told to stop ends its stream and is reported EXITED, as the real worker reports it.

Nothing of the control plane is changed or bypassed: these speak WorkerApi and ContainerApi to
a real `ember server` process, which cannot tell them from real ones but by their speed.

    python bench/simworkers.py --server URL --token-file worker-token.json --workers 50 \
        --prefix p0 --stats stats.json

writes its figures to --stats every half second (cluster.py reads them) until SIGTERM.
"""

import argparse
import asyncio
import json
import os
import pathlib
import pickle
import signal
import sys
import time

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from ember._client.auth import Authed, read_token_file  # noqa: E402
from ember.config import GRPC_OPTIONS  # noqa: E402
from ember.container.runtime import FINAL, HEARTBEAT as CONTAINER_HEARTBEAT, MAX_PREFETCH  # noqa: E402
from ember.proto import api_pb2, api_pb2_grpc  # noqa: E402
from ember.worker.main import HEARTBEAT as WORKER_HEARTBEAT, REFUSED  # noqa: E402

Output = api_pb2.Output
# The options of every channel to the control plane (config.open_channel), and each channel its
# own connection, as each real worker and container has (gRPC would otherwise
# share one connection between the channels of a process that go to the same address).
CHANNEL_OPTIONS = [*GRPC_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


class Stats:
    """What this process's workers and containers saw, for cluster.py."""

    def __init__(self):
        self.registered = 0       # workers whose registration was answered
        self.connected = 0        # containers that got their ContainerInit
        self.outputs = 0          # inputs answered
        self.reconnects = 0       # container streams opened again after a break (as the runtime does)
        self.placed: list[tuple[float, float]] = []  # per container: (StartContainer came, its init came), monotonic
        self.errors: list[str] = []

    def write(self, path: pathlib.Path):
        usage = os.times()
        data = {"registered": self.registered, "connected": self.connected, "outputs": self.outputs,
                "reconnects": self.reconnects,
                "placed": self.placed, "errors": self.errors[-20:], "cpu": usage.user + usage.system}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


def answer(inp: api_pb2.Input) -> Output:
    """The trivial runtime: the input's first argument back as its result (ident(x) -> x)."""
    args, _ = pickle.loads(inp.args.data)
    return Output(input_id=inp.input_id, idx=inp.idx, status=Output.SUCCESS,
                  data=api_pb2.Payload(data=pickle.dumps(args[0] if args else None, protocol=pickle.HIGHEST_PROTOCOL)))


class SimContainer:
    def __init__(self, url: str, start: api_pb2.StartContainer, stats: Stats, came: float):
        self.url = url
        self.start = start
        self.stats = stats
        self.came = came                       # when its worker was asked to start it
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.requested = 0                     # inputs asked for, not yet received
        self.target = 1                        # what the runtime holds: one at first, then a batch
        self.initialized = False
        self.closed = False

    def send(self, msg: api_pb2.ContainerMessage):
        self.outbox.put_nowait(msg)

    async def _messages(self):
        # Hello first, whatever was put meanwhile (a heartbeat from its worker's loop).
        yield api_pb2.ContainerMessage(hello=api_pb2.ContainerHello(container_id=self.start.container_id))
        while (msg := await self.outbox.get()) is not None:
            yield msg

    async def run(self):
        """Its stream, opened again after any break but a final one, as the runtime does."""
        cid = self.start.container_id
        async with grpc.aio.insecure_channel(self.url, options=CHANNEL_OPTIONS) as channel:
            stub = Authed(api_pb2_grpc.ContainerApiStub(channel), (cid, self.start.credential))
            while True:
                try:
                    return await self._connect(stub)
                except grpc.aio.AioRpcError as e:
                    if e.code() in FINAL or self.closed:
                        raise
                    self.stats.reconnects += 1
                    when = f"{time.monotonic() - self.came:.1f}s after it was started" + (
                        "" if self.initialized else ", before its init")
                    self.stats.errors.append(f"container {cid} reconnects ({when}): {e.code().name}: {e.details()}")
                    print(self.stats.errors[-1], e.debug_error_string(), file=sys.stderr, flush=True)
                    self.outbox = asyncio.Queue()
                    self.requested = 0
                    await asyncio.sleep(0.1)

    async def _connect(self, stub):
        async for cmd in stub.ContainerConnect(self._messages(), wait_for_ready=True):
            kind = cmd.WhichOneof("cmd")
            if kind == "init":
                if not self.initialized:  # (it comes again after a reconnect)
                    self.initialized = True
                    self.stats.connected += 1
                    self.stats.placed.append((self.came, time.monotonic()))
                self._ask(None)
            elif kind == "inputs":
                self.requested = max(0, self.requested - len(cmd.inputs.inputs))
                self.target = MAX_PREFETCH  # a function this fast: as many as the runtime ever holds
                outputs = [answer(inp) for inp in cmd.inputs.inputs]
                self.stats.outputs += len(outputs)
                self._ask(outputs)
            elif kind == "stop":
                break
            # cancel_input_id: every input is answered as it arrives, so none is running

    def _ask(self, outputs: list[Output] | None):
        want = max(0, self.target - self.requested)
        self.requested += want
        if outputs:
            self.send(api_pb2.ContainerMessage(outputs=api_pb2.OutputBatch(outputs=outputs, want_inputs=want)))
        elif want:
            self.send(api_pb2.ContainerMessage(want_inputs=want))

    def heartbeat(self):
        self.send(api_pb2.ContainerMessage(heartbeat=api_pb2.Empty()))

    def close(self):
        self.closed = True
        self.outbox.put_nowait(None)


class SimWorker:
    def __init__(self, url: str, token: tuple[str, str], name: str, cpu: float, memory_mb: int, stats: Stats):
        self.url = url
        self.token = token
        self.name = name
        self.worker_id = f"wk-{name}"
        self.boot_id = f"boot-{name}-{os.getpid()}-{time.time_ns()}"
        self.cpu = cpu
        self.memory_mb = memory_mb
        self.stats = stats
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.containers: dict[str, tuple[SimContainer, asyncio.Task]] = {}
        self.stopping = False

    def stop(self):
        self.stopping = True
        self.outbox.put_nowait(None)  # ends its stream: the control plane hears it go

    def send(self, msg: api_pb2.WorkerMessage):
        self.outbox.put_nowait(msg)

    async def _messages(self):
        yield api_pb2.WorkerMessage(register=api_pb2.WorkerRegister(
            worker_id=self.worker_id, boot_id=self.boot_id, name=self.name, cpu=self.cpu, memory_mb=self.memory_mb,
            backend=api_pb2.BACKEND_PROCESS, backend_note="simulated (bench/simworkers.py)",
            running_container_ids=list(self.containers)))
        while (msg := await self.outbox.get()) is not None:
            yield msg

    async def run(self):
        """Its stream, opened again after any break but a refusal, as `ember worker` does."""
        beats = asyncio.create_task(self._heartbeats())
        try:
            async with grpc.aio.insecure_channel(self.url, options=CHANNEL_OPTIONS) as channel:
                stub = Authed(api_pb2_grpc.WorkerApiStub(channel), self.token)
                while not self.stopping:
                    try:
                        async for cmd in stub.WorkerConnect(self._messages(), wait_for_ready=True):
                            self._handle(cmd)
                        return
                    except grpc.aio.AioRpcError as e:
                        self.stats.errors.append(f"worker {self.name}: {e.code().name}: {e.details()}")
                        if e.code() in REFUSED:
                            return
                        self.outbox = asyncio.Queue()
                        await asyncio.sleep(0.1)
        finally:
            beats.cancel()
            for container, task in self.containers.values():
                container.close()
                task.cancel()

    def _handle(self, cmd: api_pb2.WorkerCommand):
        kind = cmd.WhichOneof("cmd")
        if kind == "registered":
            self.stats.registered += 1
        elif kind == "start_container":
            sc = cmd.start_container
            container = SimContainer(self.url, sc, self.stats, time.monotonic())
            task = asyncio.create_task(container.run())
            self.containers[sc.container_id] = (container, task)
            task.add_done_callback(lambda t, cid=sc.container_id: self._exited(cid, t))
        elif kind == "stop_container":
            entry = self.containers.get(cmd.stop_container.container_id)
            if entry is not None:
                entry[0].close()  # ends its stream; its exit is reported when its task ends
        elif kind == "build_image":
            b = cmd.build_image
            for step in b.image.steps:  # usable here, no archive: there are no files to keep
                self.send(api_pb2.WorkerMessage(layer_built=api_pb2.LayerBuilt(
                    build_id=b.build_id, layer=api_pb2.Layer(layer_id=step.layer_id))))
            self.send(api_pb2.WorkerMessage(build_done=api_pb2.BuildDone(build_id=b.build_id)))
        elif kind == "shutdown":
            self.stop()

    def _exited(self, container_id: str, task: asyncio.Task):
        self.containers.pop(container_id, None)
        error = None if task.cancelled() else task.exception()
        reason = "exited with code 0" if error is None else f"ended: {error!r}"
        if isinstance(error, grpc.aio.AioRpcError) and error.code() != grpc.StatusCode.NOT_FOUND:
            self.stats.errors.append(f"container {container_id}: {error.code().name}: {error.details()}")
        self.send(api_pb2.WorkerMessage(container_exited=api_pb2.ContainerExited(
            container_id=container_id, cause=api_pb2.ContainerExited.EXITED, exit_code=0 if error is None else 1,
            reason=reason)))

    async def _heartbeats(self):
        """As the worker and the runtime send them: a worker heartbeat and its containers' CPU
        time, and each container's own heartbeat, every HEARTBEAT seconds."""
        assert WORKER_HEARTBEAT == CONTAINER_HEARTBEAT  # one loop beats for both
        while True:
            await asyncio.sleep(WORKER_HEARTBEAT)
            self.send(api_pb2.WorkerMessage(heartbeat=api_pb2.Empty()))
            if self.containers:
                self.send(api_pb2.WorkerMessage(usage=api_pb2.ContainerUsage(containers=[
                    api_pb2.ContainerCpu(container_id=cid, cpu_seconds=0.0) for cid in self.containers])))
            for container, _ in self.containers.values():
                container.heartbeat()


async def run_workers(url: str, token: tuple[str, str], names: list[str], cpu: float, memory_mb: int,
                      stats: Stats, stop: asyncio.Event, stats_file: pathlib.Path | None = None):
    """Run simulated workers until stop is set; their stats go to stats_file every half second."""
    workers = [SimWorker(url, token, name, cpu, memory_mb, stats) for name in names]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        while not stop.is_set():
            if stats_file is not None:
                stats.write(stats_file)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        for w in workers:
            w.stop()
        await asyncio.wait(tasks, timeout=5)
        for t in tasks:
            t.cancel()
        if stats_file is not None:
            stats.write(stats_file)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="the control plane's address, host:port")
    p.add_argument("--token-file", required=True, help="a worker token (ember token new --worker --json)")
    p.add_argument("--workers", type=int, required=True, help="how many simulated workers this process runs")
    p.add_argument("--prefix", default="sim", help="their names: PREFIX-0, PREFIX-1, ...")
    p.add_argument("--cpu", type=float, default=10.0, help="CPU each worker offers")
    p.add_argument("--memory", type=int, default=16384, help="MiB each worker offers")
    p.add_argument("--stats", required=True, help="JSON file its figures are written to")
    args = p.parse_args()
    token = read_token_file(args.token_file)
    names = [f"{args.prefix}-{i}" for i in range(args.workers)]

    async def go():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_workers(args.server, token, names, args.cpu, args.memory, Stats(), stop, pathlib.Path(args.stats))

    asyncio.run(go())


if __name__ == "__main__":
    main()
