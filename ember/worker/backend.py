"""The runtime backend: how a worker runs containers, behind one interface.

A worker knows several backends, in order of preference, and runs one: the first that can
run on its machine, or the one it is told to. Each backend declares what it can give a
container (its Capabilities), so that the worker refuses what its backend lacks in one place,
with one kind of error that names the cause and the fix, rather than each backend failing in
its own way or quietly doing less than was asked.
"""

import abc
import dataclasses
import pathlib
import typing

from ..proto import api_pb2
from .frames import Frames
from .gpus import Gpu
from .images import BuildError, Log, Step, StepReport, describe_step

NETWORK_MODES = ("host", "none")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a backend can give the containers it runs."""
    isolation: bool  # namespaces, a root filesystem of their own, cgroup limits
    volumes: bool  # ember.Volume mounts
    gpus: bool  # the GPUs a container is given are usable in it
    network_modes: frozenset[str]  # of NETWORK_MODES: the machine's network; none (block_network=True)
    root_filesystem_steps: bool  # image steps that change files outside a Python environment
    disk_limit: bool = False  # ephemeral_disk= is enforced: a container's writes stop at its size
    # Each container has a network namespace of its own: its servers' ports are its own, so
    # containers of one @web_server function can share a worker.
    own_network: bool = False


@dataclasses.dataclass(frozen=True)
class Exit:
    """How a container ended."""
    exit_code: int  # -N: killed by signal N
    reason: str  # in words, for people: "exited with code 1"
    log_tail: str  # the last of what it wrote before its runtime took over its output
    out_of_memory: bool = False  # the kernel killed it for exceeding its memory limit
    cpu_seconds: float = 0.0  # the CPU time it used in all (user and system), as cpu_seconds() measures


@dataclasses.dataclass(frozen=True)
class Context:
    """What a worker gives the backend it runs."""
    data_dir: pathlib.Path  # the worker's own state
    cache_dir: pathlib.Path  # image layers and build caches, which workers on one machine may share
    server_url: str  # the control plane, as containers reach it
    runtime_dir: pathlib.Path  # Ember's in-container runtime (runtime_files.prepare)
    stub: typing.Callable  # () -> the connected control plane (for its blob store); BuildError if none
    gpus: list[Gpu]  # the machine's GPUs, by index
    worker_id: str  # the worker's own, stable across its restarts
    # The CA certificate (a PEM file the worker keeps) that containers check the control plane's
    # TLS certificate against; None: the system's CAs, or no TLS.
    ca_file: pathlib.Path | None = None
    warm_parents: bool = True  # cold starts fork from a warm parent where they can (parents.py)
    frames: Frames | None = None  # where its containers reach the frame transport (frames.py); None: nowhere


class RuntimeBackend(abc.ABC):
    """How a worker runs containers. A backend is made with the worker's Context."""
    name: typing.ClassVar[str]  # as in `ember worker --backend NAME`, and api_pb2.Backend
    capabilities: typing.ClassVar[Capabilities]
    on_started: typing.Callable[[str], None] | None = None  # the worker's: execs.Execs.container_started

    def started(self, container_id: str):
        """The container runs: exec_start finds it from now on (execs that came with its start wait for this)."""
        if self.on_started is not None:
            self.on_started(container_id)

    @staticmethod
    @abc.abstractmethod
    def available() -> str | None:
        """None if this backend can run on this machine, else why not (and the fix, if there is one)."""

    @abc.abstractmethod
    def running(self) -> list[str]:
        """The ids of the containers it runs: the control plane hears of them after a reconnect."""

    @abc.abstractmethod
    async def build(self, image: api_pb2.Image, known: dict[str, str], force: bool, log: Log,
                    report: typing.Callable[[api_pb2.Layer], None], workspace: str = "",
                    on_step: StepReport | None = None):
        """Make the image ready to run; `known` maps layer ids to their blobs, `report` hears of
        each layer ready, `workspace` is whose build it is, `on_step` of each step's start and
        end (what `log` hears meanwhile is that step's output). A failure the user can fix is an
        images.BuildError."""

    @abc.abstractmethod
    async def run(self, start: api_pb2.StartContainer) -> Exit:
        """Start the container and wait for it to end. One that cannot start raises images.BuildError."""

    @abc.abstractmethod
    def cpu_seconds(self, container_id: str) -> float | None:
        """The CPU time (user and system) the running container has used so far; None if it runs no more."""

    @abc.abstractmethod
    def memory_bytes(self, container_id: str) -> int | None:
        """The memory the running container uses now; None if it runs no more."""

    @abc.abstractmethod
    async def exec_start(self, container_id: str, argv: list[str], env: dict[str, str], workdir: str, tty: bool,
                         stdio: tuple[int, int, int], port: int = 0):
        """Start argv in the running container as its own processes run (its environment and
        working directory, with `env` and `workdir` over them; stdio as its stdin, stdout and
        stderr, a terminal's side when tty), in a session of its own. Returns what has
        `async wait() -> exit code` (127 if there is no such command, saying so on stderr) and
        `kill()` (its session). Raises execs.ExecError if the container does not run here.
        With a port (a sandbox's tunnel), no command: a relay of stdin and stdout to that TCP
        port on the container's loopback (sandbox.relay_port), as the container reaches it."""

    @abc.abstractmethod
    def stop(self, container_id: str, kill: bool = False):
        """Ask the container to finish (its runtime then stops it), or with `kill` end it now."""

    async def snapshot(self, container_id: str, parent: str, workspace: str) -> api_pb2.Layer:
        """The running container's changes to its image's files, made a layer (archived into the blob
        store, and in the cache here) named on `parent` for `workspace`. Raises BuildError why not."""
        raise BuildError(f"a snapshot of a sandbox's filesystem needs the container backend, and this worker runs "
                         f"the {self.name} backend, whose containers have no filesystem of their own: run the "
                         "worker as root on Linux")

    @abc.abstractmethod
    async def drain(self):
        """Finish what must not be lost when the worker stops, while it is still connected."""

    @abc.abstractmethod
    def resume_uploads(self, report):
        """Connected: archive what an earlier run of the worker left pending."""

    @abc.abstractmethod
    async def stop_all(self):
        """Stop every container, as the worker exits."""

    def isolation(self) -> str:
        """What holds its containers and build steps, in one line: the worker says it when it starts."""
        return "none: containers and build steps are plain processes of the worker's user"


# Every container's runtime: gRPC's fork handlers off. Its channel has threads of its own, and
# with the handlers on, a fork by the function (a multiprocessing pool) while one of them runs
# aborts the child in gRPC ("Check failed: next_worker->state == KICKED"); off, the child gets
# an inert copy of the channel, which it does not use.
RUNTIME_ENV = {"GRPC_ENABLE_FORK_SUPPORT": "false"}


def identity_env(sc: api_pb2.StartContainer) -> dict[str, str]:
    """Who the container is: its id, and the credential the control plane made for it (which
    its runtime connects with, and its code calls with)."""
    return {"EMBER_CONTAINER_ID": sc.container_id, "EMBER_TOKEN_ID": sc.container_id,
            "EMBER_TOKEN_SECRET": sc.credential}


class Unavailable(Exception):
    """The backend asked for cannot run on this machine."""


def choose(name: str, backends: typing.Sequence[type[RuntimeBackend]]) -> tuple[type[RuntimeBackend], str]:
    """The backend to run: the one named, or for "auto" the first of `backends` (in order of
    preference) that is available. Also returns why the worker runs without isolation ("" if it
    has it): the reason an isolating backend ahead of the chosen one was passed over."""
    reasons = []  # why each backend passed over is not available, for the error if none is
    passed_over = []  # why each isolating backend ahead of the chosen one is not it
    for b in backends:
        why = b.available()
        if name in ("auto", b.name):
            if why is None:
                return b, ("" if b.capabilities.isolation or not passed_over else passed_over[0])
            if name == b.name:
                raise Unavailable(f"the {b.name} backend is not available here: {why}")
        reasons.append(f"the {b.name} backend: {why}")
        if b.capabilities.isolation:
            passed_over.append(why or f"--backend {name} was asked for")
    if name == "auto":
        raise Unavailable("no runtime backend can run here: " + "; ".join(reasons))
    raise Unavailable(f"there is no {name!r} backend (there are: {', '.join(b.name for b in backends)})")


def needs_root_filesystem(step: api_pb2.ImageStep) -> bool:
    """Whether the step changes files outside a Python environment: apt packages, shell
    commands, a registry's root filesystem, local files at a path of their own (but not Python
    source added with add_local_python_source, which is importable from anywhere)."""
    return (step.kind in (Step.APT_INSTALL, Step.RUN_COMMANDS, Step.FROM_REGISTRY, Step.SNAPSHOT)
            or (step.kind == Step.ADD_LOCAL and "compile" not in step.args)
            or (step.kind == Step.ENTRYPOINT and bool(step.args)))  # a program of the image


def refusal(backend: RuntimeBackend | type[RuntimeBackend], why: str, image: api_pb2.Image,
            start: api_pb2.StartContainer | None = None) -> str | None:
    """Why `backend` cannot build `image` (or start the container `start`), from its declared
    capabilities, as the error the user reads; None if it can. `why`: why the worker runs this
    backend. The container backend has every capability, so the error points to it."""
    caps = backend.capabilities
    need = None
    if start is not None:
        if start.volumes and not caps.volumes:
            need = "volumes need"
        elif start.gpu_indices and not caps.gpus:
            need = "GPUs need"
        elif start.block_network and "none" not in caps.network_modes:
            need = "block_network=True needs"
        elif start.cidr_allowlist and not caps.own_network:
            need = "cidr_allowlist= (a network of its own, with only those networks) needs"
        elif start.resources.ephemeral_disk_mb and not caps.disk_limit:
            need = "ephemeral_disk= (a limit on the container's disk) needs"
    if need is None and not caps.root_filesystem_steps:
        need = next((f"{describe_step(s)} needs" for s in image.steps if needs_root_filesystem(s)), None)
    if need is None:
        return None
    return (f"{need} the container backend, and this worker runs the {backend.name} backend ({why}): "
            "run the worker as root on Linux")
