"""The container backend: each container in its own namespaces, overlay root and cgroups.

Needs Linux and root. A container's root filesystem is an overlay of its image's layers and a
fresh writable layer that is deleted when it ends; it sees its own processes, hostname, IPC and
network (network.py: out to the world through NAT, not to the host or other containers), and of
the host only what is bound in: Ember's runtime (read-only), DNS settings, the control plane's
socket (a relay), and its GPUs. A cpu= limit (cpu=(request, limit)) and memory= become cgroup
limits (CPU quota, memory limit; v1 or v2, whichever the host has: cgroups.py); every container
gets a pids limit. A container killed by the kernel for memory is reported as such.
"""

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import shutil
import signal
import sys
import time

from google.protobuf import json_format

from .._client import blobs
from .._client.servers import split
from .._ids import new_id
from ..config import host_and_port, is_tls
from ..proto import api_pb2
from . import cgroups as cg
from . import disk as disks
from . import gpus as gpu_devices
from . import forkns, sandbox
from .container_snapshots import ContainerSnapshots, SnapshotRun
from .agent import Agent, AgentGone, Refused, socket_pair
from .backend import NETWORK_MODES, Capabilities, Context, Exit, RUNTIME_ENV, RuntimeBackend, Unavailable, identity_env
from .execs import ExecError
from .images import SANDBOX_DIR, BuildError, LayerCache, image_config, sandbox_argv
from .parents import Forked, Parent, WarmParents, key_of
from .network import Attachment, Network, NetworkError, missing as network_missing
from .procs import describe_exit, tail_of, terminate, terminate_all
from . import frames
from .frames import Frames
from .relay import Relay
from .userns import UserNamespace
from .volumes import VolumeCache

log = logging.getLogger("ember.worker")

# Seconds after a container starts from a spare before its replacement is made: making one
# (a sandbox, its network and disk, an interpreter) takes both cores for a moment, which the
# container just adopted needs more, as it loads its function.
SPARE_AFTER = 0.25
MAX_SPARES = 4        # started containers kept waiting, one per recently used image
FORKNS = os.path.join(SANDBOX_DIR, "forkns.py")
CODE_DIR = "/ember/code"  # where a warm parent and its forks find the function's code


class Box:
    """A running sandbox and what to clean up after it."""

    def __init__(self, proc, cgroups: cg.Cgroups, disk: disks.Disk, ct: pathlib.Path, log_path: pathlib.Path,
                 spare_id: str, net: Attachment | None = None, env: dict | None = None, cwd: str = "/",
                 agent: Agent | None = None):
        self.proc = proc
        self.agent = agent  # its init, which forks the commands run in it (agent.py)
        self.env = dict(env or {})  # what its processes get, and its working directory: for its commands
        self.cwd = cwd
        self.net = net
        self.cgroups = cgroups
        self.disk = disk
        self.ct = ct
        self.log_path = log_path
        self.spare_id = spare_id
        self.volume_paths: list[str] = []  # where its volumes are mounted: not part of its snapshots
        # A fork's namespaces made ahead (forkns.py): the process that made them, their init (by
        # host PID), their descriptors until they are handed over, and the parent they are for.
        self.maker: asyncio.subprocess.Process | None = None
        self.init_pid = 0
        self.ns_fds: dict[str, int] = {}
        self.parent: Parent | None = None
        # A warm parent's sandbox: its image and its code's bind (its forks get the same).
        self.image: api_pb2.Image | None = None
        self.code_binds: list[list] = []


class ForkedProc:
    """A forked container's process as the worker waits for and signals it: the parent's child
    that joined the fork's namespaces (Forked, which ends as the fork's process does)."""

    def __init__(self, child: Forked, init_pid: int):
        self.child = child
        self.init_pid = init_pid
        self.pid = child.pid

    @property
    def returncode(self) -> int | None:
        return self.child.returncode

    async def wait(self) -> int:
        return await self.child.wait()

    def terminate(self):
        # To the fork's process (the child's only child), which the runtime stops gracefully on.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill((_children(self.pid) or [self.pid])[0], signal.SIGTERM)

    def kill(self):
        # Its init: the kernel ends the fork's PID namespace, and the child ends as its process did.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _ns_pid(pid: int) -> int | None:
    """The PID of a process in the innermost PID namespace it is in."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith("NSpid:")).split()[-1])
    except (OSError, ValueError, StopIteration):
        return None


class ContainerBackend(RuntimeBackend):
    name = "container"
    capabilities = Capabilities(isolation=True, volumes=True, gpus=True, network_modes=frozenset(NETWORK_MODES),
                                root_filesystem_steps=True, disk_limit=True, own_network=True)

    @staticmethod
    def available() -> str | None:
        if sys.platform != "linux":
            return "not Linux"
        if os.geteuid() != 0:
            return "not running as root"
        why = cg.host_layout().missing()  # cgroup v1, v2 or a mix: each controller where it is
        if why:
            return why
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                return "the kernel has no overlayfs"
        if why := disks.available():
            return why
        if shutil.which("debootstrap") is None:
            return "Debian's debootstrap, which builds images, is not installed (apt-get install debootstrap)"
        return network_missing()

    def __init__(self, ctx: Context):
        self.root = ctx.data_dir / "containers"
        disks.clean_stale(self.root)  # disks of containers that are gone: their mounts and loop devices
        shutil.rmtree(self.root, ignore_errors=True)  # and their writable layers
        try:
            cg.prepare(cg.host_layout())
        except cg.CgroupError as e:
            raise Unavailable(f"the container backend cannot limit containers: {e}") from None
        # The cgroups of containers that are gone (busy ones stay; new ones may be another worker's).
        for d in cg.stale(cg.host_layout(), older_than=cg.STALE_AFTER):
            try:
                d.rmdir()
            except OSError:
                pass
        self.root.mkdir(parents=True)
        self.default_disk_mb = disks.default_mb(self.root)
        log.info("a container's disk holds %d MiB unless its function says otherwise (ephemeral_disk=)",
                 self.default_disk_mb)
        self.server_url = ctx.server_url
        self.ca_file = ctx.ca_file
        self.layers = LayerCache(ctx.cache_dir / "layers", ctx.runtime_dir, ctx.stub, ctx.worker_id)
        # Several control planes (one leads: _client/servers.py) are reached through a relay each.
        self.several = "," in ctx.server_url
        control_plane = None if ctx.server_url.startswith("unix:") or self.several else host_and_port(ctx.server_url)
        self.network = Network(ctx.data_dir, control_plane)
        self.layers.network = self.network  # build steps get a network like a container's
        self.volumes = VolumeCache(ctx.data_dir / "volumes", ctx.stub)
        # Whether containers' files can be idmapped is a question for each filesystem they come from.
        self.userns = UserNamespace.make([self.layers.root, self.root, self.volumes.root, ctx.data_dir])
        self.layers.userns = self.userns
        self.gpus = ctx.gpus
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.boxes: dict[str, Box] = {}  # of running containers, by container id
        self.spares: dict[str, Box] = {}  # by image id, oldest first
        self.spares_starting: dict[str, asyncio.Task] = {}
        self.spares_wanted: dict[str, asyncio.Event] = {}  # by image id: a container waits for its spare now
        self.stopping = False
        self.snapshots = ContainerSnapshots(ctx.data_dir / "memory-snapshots", ctx.cache_dir, ctx.runtime_dir,
                                            ctx.stub)
        self.relays: dict[str, Relay] = {}  # control plane URL -> its relay, made at the first start
        self.relay_path = ctx.data_dir / "control.sock"
        self.frames = ctx.frames or Frames(ctx.server_url)
        self.frames_relay: Relay | None = None  # made at the first start that has frames to reach
        self.stub = ctx.stub
        self.code_cache = ctx.data_dir / "code"  # functions' code, unpacked for warm parents (which have no credential)
        self.parents = WarmParents(ctx.warm_parents, self._launch_parent, self._parent_gone, self._fork_pid,
                                   on_ready=lambda parent: self._fork_soon(parent))
        self.parent_boxes: dict[str, Box] = {}  # a warm parent's sandbox, by its key
        self.forks: dict[str, Box] = {}  # a fork's namespaces made ahead, by its parent's key
        self.forks_starting: dict[str, asyncio.Task] = {}

    def isolation(self) -> str:
        # The network and cgroup parts say what this backend does today; they follow its code.
        return (f"{sandbox.describe(self.userns.describe())}; network namespace of its own (NAT out, not to the "
                f"host or other containers; empty for block_network=True; only its cidr_allowlist= if given); "
                f"{cg.host_layout().describe()}; "
                "build steps alike")

    def running(self):
        return [cid for cid, p in self.procs.items() if p.returncode is None]

    async def build(self, image, known, force, log_fn, report, workspace="", on_step=None):
        await self.layers.ensure(image, known, log_fn, force=force, report=report, workspace=workspace,
                                 on_step=on_step)
        if force or any(s.force_build for s in image.steps):
            # Spares started before may run layers this build replaced.
            for box in list(self.spares.values()):
                await self._discard(box)
            self.spares.clear()
            await self.snapshots.forget(self)  # memory snapshots map the files of the layers replaced
        self._spare_soon(image)  # an image is built to be run: its first container starts from a spare

    def _spare_soon(self, image: api_pb2.Image, after: float = 0):
        # Not while stopping: a container that ends then asks for its replacement, whose disk
        # would be mounted after stop_all cleaned up, and stay mounted when the worker exits.
        if self.stopping:
            return
        if image.image_id not in self.spares_starting and image.image_id not in self.spares:
            self.spares_wanted[image.image_id] = asyncio.Event()
            self.spares_starting[image.image_id] = asyncio.get_running_loop().create_task(
                self._make_spare(image, after))

    async def run(self, sc: api_pb2.StartContainer) -> Exit:
        image = sc.image
        await self.layers.ensure(image, {layer.layer_id: layer.blob_id for layer in sc.layers},
                                 lambda text: log.info("image %s: %s", image.image_id[:12], text.rstrip()))
        disk_mb = self._disk_mb(sc)
        # Spares have the default disk: a container with another cannot be one.
        spareable = not sc.gpu_indices and not sc.block_network and not sc.volumes and disk_mb == self.default_disk_mb
        restored = await self.snapshots.start(self, sc) if sc.HasField("snapshot_init") else None
        if restored is not None:
            spareable = False
        # A memory snapshot's container is restored from it, or starts afresh (as on the process backend).
        forked = None if sc.HasField("snapshot_init") else await self._fork(sc)
        if forked is not None:
            box = forked
        elif spareable and image.image_id in self.spares_starting:
            # A spare is on its way: it is further along than a container started now would be
            # (and one still waiting out its SPARE_AFTER starts now).
            self.spares_wanted[image.image_id].set()
            await asyncio.wait([self.spares_starting[image.image_id]])
        if forked is None:
            box = self.spares.pop(image.image_id, None) if spareable else restored
            if box is not None and box is not restored and not await self._adopt(box, sc):
                box = None
        if box is None:
            box = await self._launch(sc.container_id, image, sc)
        self.procs[sc.container_id] = box.proc
        box.volume_paths = [m.path for m in sc.volumes]
        self.boxes[sc.container_id] = box
        log.info("container %s started (pid %d%s)", sc.container_id, box.proc.pid,
                 ", forked from a warm parent" if forked else ", from a spare" if box.spare_id else
                 ", restored from its memory snapshot" if restored else "")
        self.started(sc.container_id)
        if spareable and not forked:  # the next one starts from a spare, made once this one has started
            self._spare_soon(image, after=SPARE_AFTER if box.spare_id else 0)
        try:
            code = await box.proc.wait()
        finally:
            self.procs.pop(sc.container_id, None)
            self.boxes.pop(sc.container_id, None)
        oom = box.cgroups.oom_killed()
        cpu = box.cgroups.cpu_seconds()  # before its cgroup goes
        disk_full = code != 0 and box.disk.full()  # before its disk goes
        tail = await self._clean(box)
        if oom:
            reason = f"exceeded its memory limit of {sc.resources.memory_limit_mb} MiB and was killed"
        else:
            reason = describe_exit(code)
        if disk_full and not oom:
            reason += (f", with its disk full (ephemeral_disk={disk_mb} MiB): pass a larger ephemeral_disk= "
                       "to @app.function to raise it")
        log.info("container %s %s", sc.container_id, reason)
        return Exit(code, reason, tail, oom, cpu)

    def _disk_mb(self, sc: api_pb2.StartContainer) -> int:
        """The size of the container's disk; refuses one the worker has not the free disk for."""
        asked = sc.resources.ephemeral_disk_mb
        if not asked:
            return self.default_disk_mb
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize >> 20
        if asked > free:
            raise BuildError(f"ephemeral_disk={asked} MiB is more than the {free} MiB of disk free on this worker: "
                             "ask for less, or run it on a worker with more disk")
        return asked

    def cpu_seconds(self, container_id: str) -> float | None:
        box = self.boxes.get(container_id)
        return box.cgroups.cpu_seconds() if box is not None else None

    def memory_bytes(self, container_id: str) -> int | None:
        box = self.boxes.get(container_id)
        return box.cgroups.memory_bytes() if box is not None else None

    async def launch(self, name: str, image: api_pb2.Image, sc: api_pb2.StartContainer, snapshot: SnapshotRun) -> "Box":
        """A sandbox of a memory snapshot (container_snapshots.py): the one it is taken in, or a
        container restored from it."""
        return await self._launch(name, image, sc, snapshot)

    async def discard(self, box: "Box"):
        await self._discard(box)

    async def _launch(self, name: str, image: api_pb2.Image, sc: api_pb2.StartContainer | None,
                      snapshot: SnapshotRun | None = None) -> "Box":
        """Start a sandbox running Ember's runtime: for the container `sc`, or a spare (sc None)."""
        # The writable layer (and the volumes' scratch layers) on a disk of the container's own size.
        disk = disks.Disk(self.root / name, self._disk_mb(sc) if sc is not None else self.default_disk_mb)
        net = None
        try:
            await disk.create()
            # Paid ahead by spares, which always get one (block_network containers start cold).
            net = None if sc is not None and sc.block_network else await self.network.attach()
            if net is not None and sc is not None and sc.cidr_allowlist:
                await self.network.allow_only(net, list(sc.cidr_allowlist))
            return await self._start(name, image, sc, disk, net, snapshot)
        except NetworkError as e:
            await disk.remove()
            if net is not None:  # attached, but its allowlist could not be set
                await self.network.release(net)
            raise BuildError(str(e)) from None
        except BaseException:
            await disk.remove()
            if net is not None:
                await self.network.release(net)
            raise

    async def _start(self, name: str, image: api_pb2.Image, sc: api_pb2.StartContainer | None,
                     disk: disks.Disk, net: Attachment | None, snapshot: SnapshotRun | None = None) -> "Box":
        spec, env, workdir, cgroups = await self._config(name, image, sc, disk, net, snapshot)
        ct = self.root / name
        log_path = self.root / f"{name}.log"
        ours, theirs = socket_pair()
        spec["agent_fd"] = theirs.fileno()
        try:
            with open(log_path, "wb") as logf:
                stdin = asyncio.subprocess.PIPE if sc is None else asyncio.subprocess.DEVNULL
                out = logf if snapshot is None or snapshot.stdout is None else snapshot.stdout
                proc = await asyncio.create_subprocess_exec(
                    *sandbox_argv(spec, ct), stdin=snapshot.stdin if snapshot else stdin, stdout=out, stderr=out,
                    start_new_session=True, pass_fds=[theirs.fileno(), *(snapshot.pass_fds if snapshot else ())])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return Box(proc, cgroups, disk, ct, log_path, spare_id=name if sc is None else "", net=net, env=env,
                   cwd=workdir or "/", agent=Agent(ours))

    async def _config(self, name: str, image: api_pb2.Image, sc: api_pb2.StartContainer | None,
                      disk: disks.Disk, net: Attachment | None, snapshot: SnapshotRun | None = None,
                      role: str = "") -> tuple[dict, dict, str, cg.Cgroups]:
        """A sandbox's spec (sandbox.py), its processes' environment and working directory, and
        its cgroups (made): of the container `sc`, or a spare (sc None); `role` "fork", a fork's
        namespaces made ahead (with a network, attached once they are made: its control plane's
        address is the caller's to set), or "parent", a warm parent (no network, no control plane)."""
        env, workdir, entrypoint = image_config(image, self.layers.root)
        ct = self.root / name
        (ct / "root").mkdir(parents=True)
        writable = disk.mount_point
        for d in ("upper", "work"):
            (writable / d).mkdir()
        binds = [[str(self.layers.runtime_dir), "/ember/lib", True]]
        block_network = net is None and role != "fork"
        direct = not block_network and self.network.control_plane is not None
        url = self.server_url
        if self.ca_file is not None:
            binds.append([str(self.ca_file), "/ember/ca.pem", True])
            env["EMBER_CA_CERT"] = "/ember/ca.pem"
        if is_tls(url) and not self.several:
            # The container checks the server's certificate against the name the worker reaches
            # it by, whatever address it reaches it at: TLS runs end to end.
            env["EMBER_TLS_SERVER_NAME"] = host_and_port(url)[0]
        if role == "parent":
            url = ""  # it never talks to the control plane: its forks do, each with its own credential
        elif url.startswith("unix:"):
            sock = url.removeprefix("unix:").removeprefix("//")
            binds.append([sock, "/ember/run/control.sock", False])
            url = "unix:/ember/run/control.sock"
        elif direct:
            # Its gateway's port, which the worker's table translates to the control plane (network.py).
            url = self._direct_url(net) if net is not None else ""
        else:
            # No network (block_network), or a control plane the table cannot translate to: a
            # socket file the worker relays.
            inside = []
            for i, each in enumerate(split(url)):
                path = self.relay_path.with_name(f"control-{i}.sock") if self.several else self.relay_path
                if each not in self.relays:
                    self.relays[each] = Relay(path, lambda each=each: each)
                    await self.relays[each].start()
                binds.append([str(path), f"/ember/run/{path.name}", False])
                inside.append(f"unix:/ember/run/{path.name}")
            url = ",".join(inside)
        if self.frames.address() is not None and role != "parent":
            # Its stream's frames, through a relay of their own whatever its network (frames.py);
            # a fork's too, bound into its own mount namespace as a container's is.
            if self.frames_relay is None:
                self.frames_relay = Relay(self.relay_path.with_name("frames.sock"), self.frames.address)
                await self.frames_relay.start()
            binds.append([str(self.frames_relay.path), frames.INSIDE, False])
            env["EMBER_FRAMES"] = f"unix:{frames.INSIDE}"
        if not block_network and role != "parent" and self.network.resolv_conf:
            binds.append([self.network.resolv_conf, "/etc/resolv.conf", True])
        indices = list(sc.gpu_indices) if sc is not None else []
        env.update(gpu_devices.container_env([g for g in self.gpus if g.index in set(indices)]))
        # EMBER_EPHEMERAL_DISK_MB is named in the error of a write that finds the disk full.
        env.update(RUNTIME_ENV, PYTHONPATH="/ember/lib:/root", EMBER_SERVER_URL=url,
                   EMBER_CODE_CACHE="/tmp/.ember-code", EMBER_EPHEMERAL_DISK_MB=str(disk.size_mb))
        if role:
            pass  # a fork is told its identity as it is forked; a parent has none
        elif sc is None:
            env["EMBER_SPARE"] = "1"
        elif snapshot is None:  # a snapshot's containers are told theirs later (container_snapshots.py)
            env.update(identity_env(sc))
        if snapshot is not None:
            binds += snapshot.binds
            env.update(snapshot.env)
        volumes = []
        for i, m in enumerate(sc.volumes if sc is not None else ()):
            lower = await self.volumes.version_dir(m.manifest)
            for d in ("upper", "work"):
                (writable / f"vol{i}" / d).mkdir(parents=True)
            volumes.append({"lower": str(lower), "upper": str(writable / f"vol{i}" / "upper"),
                            "work": str(writable / f"vol{i}" / "work"), "target": m.path, "read_only": m.read_only})
        if volumes:
            # What each volume held as the container started: what its commits are measured against.
            (ct / "volumes.json").write_text(json.dumps([json_format.MessageToDict(m) for m in sc.volumes]))
            binds.append([str(ct / "volumes.json"), "/ember/volumes.json", True])
        cgroups = cg.Cgroups(name)
        cgroups.create(sc.resources if sc is not None else api_pb2.Resources())
        spec = {"layers_dir": str(self.layers.root), "lowers": self.layers.lowers(image),
                "upper": str(writable / "upper"), "work": str(writable / "work"), "root": str(ct / "root"),
                "binds": binds, "volumes": volumes,
                # Declared GPUs (EMBER_GPUS) may have no device nodes on this machine.
                "devices": [d for d in gpu_devices.device_paths(indices) if os.path.exists(d)],
                "hostname": name[:63], "new_net": block_network, "netns": net and net.path,
                "cgroups": [str(p) for p in cgroups.paths], "cwd": workdir, "env": env,
                # The image's entrypoint (a script that ends `exec "$@"`) runs Ember's runtime, as Modal's.
                "argv": [*entrypoint, "python3", "-m", "ember.container"], "parent_pid": os.getpid(),
                # A snapshot's containers have none: criu cannot cross it (container_snapshots.py).
                **({} if snapshot else self.userns.spec([self.layers.root, writable, *(v["lower"] for v in volumes)])),
                **(snapshot.spec if snapshot else {})}
        return spec, env, workdir, cgroups

    def _direct_url(self, net: Attachment) -> str:
        # Its gateway's port, which the worker's table translates to the control plane (network.py).
        return ("https://" if is_tls(self.server_url) else "") + self.network.control_plane_address(net)

    # ---- warm parents (parents.py): a parent in a sandbox of its own, and its containers forked
    # into namespaces made for each of them ahead (forkns.py), as spares are made ahead.

    async def _launch_parent(self, sc: api_pb2.StartContainer, sock) -> asyncio.subprocess.Process:
        """A warm parent of `sc`'s code: the image's Python in a sandbox as any container's (its own
        root, writable layer, cgroups, PID and mount namespaces, no network), container root
        with a container's capabilities and filter but setns (forkns.confine_parent)."""
        key = key_of(sc)
        name = f"parent-{key}"
        if key in self.parent_boxes:  # a parent of this code before, retired: its sandbox goes first
            await self._discard(self.parent_boxes.pop(key))
        binds = []
        if blob_id := sc.definition.code_blob_id:
            # Unpacked by the worker (a parent has no credential to fetch it), bound read-only in
            # the parent and its forks: this code's directory only, not the worker's cache.
            if not (self.code_cache / blob_id).exists():
                self.code_cache.mkdir(exist_ok=True)
                blobs.unpack_code(self.code_cache, blob_id, await blobs.download(self.stub(), blob_id))
            binds.append([str(self.code_cache / blob_id), f"{CODE_DIR}/{blob_id}", True])
        disk = disks.Disk(self.root / name, self.default_disk_mb)
        await disk.create()
        try:
            spec, env, workdir, cgroups = await self._config(name, sc.image, None, disk, None, role="parent")
            cgroups.limit(sc.resources)  # its code's import is held as its containers' is
            spec["binds"] += binds
            spec["argv"][-1] = "ember.container.parent"
            spec["warm_parent"] = True
            env.update(EMBER_CODE_CACHE=CODE_DIR, EMBER_PARENT_FD=str(sock.fileno()))
            ct = self.root / name
            log_path = self.root / f"{name}.log"
            with open(log_path, "wb") as logf:
                proc = await asyncio.create_subprocess_exec(
                    *sandbox_argv(spec, ct), stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
                    start_new_session=True, pass_fds=[sock.fileno()])
        except BaseException:
            await disk.remove()
            await cg.Cgroups(name).remove()
            raise
        box = self.parent_boxes[key] = Box(proc, cgroups, disk, ct, log_path, spare_id="", cwd=workdir or "/")
        box.image, box.code_binds = sc.image, binds
        return proc

    async def _parent_gone(self, key: str):
        box = self.parent_boxes.pop(key, None)
        if key in self.forks:
            await self._discard(self.forks.pop(key))
        if box is not None:
            if box.proc.returncode is None:
                box.proc.kill()
                await box.proc.wait()
            if tail := await self._clean(box):
                log.info("warm parent %s said: %s", key, tail.strip())

    @staticmethod
    def _parent_process(parent: Parent) -> int | None:
        """The host PID of a parent's own process: its sandbox's init's child (sandbox.py)."""
        inits = _children(parent.proc.pid)
        commands = _children(inits[0]) if inits else []
        return commands[0] if commands else None

    def _fork_pid(self, parent: Parent, pid: int) -> int | None:
        """The host PID of the parent's child that it calls `pid` (in its own PID namespace)."""
        own = self._parent_process(parent)
        return next((c for c in _children(own) if _ns_pid(c) == pid), None) if own else None

    def _fork_soon(self, parent: Parent, after: float = 0):
        """Make the next fork's namespaces for `parent` ahead (as spares are made ahead)."""
        if self.stopping or parent.key in self.forks_starting or parent.key in self.forks:
            return
        self.forks_starting[parent.key] = asyncio.get_running_loop().create_task(self._make_fork(parent, after))

    async def _make_fork(self, parent: Parent, after: float):
        try:
            await asyncio.sleep(after)
            if parent.key in self.forks or self.stopping or not parent.alive:
                return
            box = await self._fork_namespaces(parent)
            if parent.key in self.forks or self.stopping or not parent.alive:
                await self._discard(box)
                return
            self.forks[parent.key] = box
        except (OSError, NetworkError, BuildError) as e:
            log.info("a fork's namespaces for warm parent %d could not be made ahead: %s", parent.proc.pid, e)
        finally:
            self.forks_starting.pop(parent.key, None)

    async def _fork_namespaces(self, parent: Parent) -> "Box":
        """A fork's namespaces (forkns.py), made for `parent` as a container's sandbox is made:
        its root (the image's layers and a writable layer on a disk of its own), cgroups, a
        network attached to its network namespace and an init serving the worker's commands."""
        name = new_id("ct")
        image = self.parent_boxes[parent.key].image
        disk = disks.Disk(self.root / name, self.default_disk_mb)
        await disk.create()
        box = None
        try:
            spec, env, workdir, cgroups = await self._config(name, image, None, disk, None, role="fork")
            spec["binds"] += self.parent_boxes[parent.key].code_binds  # its code, where the parent imported it from
            env["EMBER_CODE_CACHE"] = CODE_DIR
            inits = _children(parent.proc.pid)
            if not inits:
                raise OSError("the warm parent's sandbox has ended")
            # What the maker reads holds no credential: the fork is told its identity as it is forked.
            maker_spec = {k: v for k, v in spec.items() if k not in ("env", "argv", "cwd")}
            maker_spec["parent_pid"] = inits[0]
            ct = self.root / name
            log_path = self.root / f"{name}.log"
            ours, theirs = socket_pair()
            maker_spec["agent_fd"] = theirs.fileno()
            (ct / "forkns.json").write_text(json.dumps(maker_spec))
            try:
                with open(log_path, "wb") as logf:
                    maker = await asyncio.create_subprocess_exec(
                        sys.executable, "-S", "-E", FORKNS, str(ct / "forkns.json"), stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE, stderr=logf, start_new_session=True,
                        pass_fds=[theirs.fileno()])
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            box = Box(None, cgroups, disk, ct, log_path, spare_id=name, env=env, cwd=workdir or "/",
                      agent=Agent(ours))
            box.maker, box.parent = maker, parent
            line = await maker.stdout.readline()
            if not line.strip().isdigit():
                await maker.wait()
                raise OSError(f"its maker {describe_exit(maker.returncode)}: {tail_of(log_path).strip()}")
            box.init_pid = int(line)
            box.net = await self.network.attach(of_pid=box.init_pid)
            if self.network.control_plane is not None and not self.server_url.startswith("unix:"):
                box.env["EMBER_SERVER_URL"] = self._direct_url(box.net)  # (the Box holds a copy of env)
            box.ns_fds = forkns.open_namespaces(box.init_pid)
            return box
        except BaseException:
            if box is not None:
                await self._clean(box)
            else:
                await disk.remove()
                await cg.Cgroups(name).remove()
                await asyncio.to_thread(shutil.rmtree, self.root / name, True)
            raise

    def _why_not_forked(self, sc: api_pb2.StartContainer) -> str | None:
        """This backend's reasons for a container of `sc` not to be a fork (parents.why_not has
        the others), or None: a fork's namespaces are made ahead, as a spare is, so they have
        what a spare has and no more."""
        if self.userns.fd is None:
            return f"this worker gives containers no user namespace, which owns a fork's ({self.userns.why_not})"
        if sc.block_network:
            return "it has block_network=True, and a fork's namespaces are made ahead with a network"
        if sc.volumes:
            return "it mounts volumes, which a fork's namespaces are made ahead without"
        if self._disk_mb(sc) != self.default_disk_mb:
            return (f"its ephemeral_disk= is not the worker's default ({self.default_disk_mb} MiB), which a fork's "
                    "namespaces are made ahead with")
        return None

    async def _fork(self, sc: api_pb2.StartContainer) -> "Box | None":
        """The container `sc` forked from its code's warm parent, in namespaces made for it; None
        where it cannot be (it starts from a spare, or cold)."""
        parent = self.parents.ready(sc, self._why_not_forked(sc))
        if parent is None:
            return None
        box = self.forks.pop(parent.key, None)
        if box is not None and (box.parent is not parent or box.maker.returncode is not None):
            await self._discard(box)
            box = None
        try:
            if box is None:
                if parent.key in self.forks_starting:  # on its way: further along than one started now
                    await asyncio.wait([self.forks_starting[parent.key]])
                    box = self.forks.pop(parent.key, None)
                if box is None:
                    box = await self._fork_namespaces(parent)
            box.cgroups.limit(sc.resources)  # fails if it already uses more memory than allowed
            if sc.cidr_allowlist:  # before it is told who it is, and so before any of its commands runs
                await self.network.allow_only(box.net, list(sc.cidr_allowlist))
        except (OSError, NetworkError, BuildError) as e:
            if box is not None:
                await self._discard(box)
            await self.parents.give_up(sc, parent, f"a fork's namespaces could not be made ({e})")
            return None
        box.env.update(identity_env(sc))
        go_r, go_w = os.pipe()
        log_fd = os.open(box.log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        fds, box.ns_fds = box.ns_fds, {}
        try:
            child = await self.parents.forked(sc, parent, {"env": box.env, "cwd": box.cwd},
                                              [*fds.values(), go_r, log_fd])
        finally:
            for fd in (*fds.values(), go_r, log_fd):
                os.close(fd)
        try:
            if child is None:
                await self._discard(box)
                return None
            box.proc = ForkedProc(child, box.init_pid)
            try:
                for path in box.cgroups.paths:  # before it forks the fork's process: held from its start
                    (path / "cgroup.procs").write_text(str(child.pid))
                os.write(go_w, b"1")
            except OSError as e:
                log.info("fork %d of warm parent %d not used for %s: %s", child.pid, parent.proc.pid,
                         sc.container_id, e)
                await self._discard(box)  # its child reads no `go`, and ends
                return None
        finally:
            os.close(go_w)
        self._fork_soon(parent, after=SPARE_AFTER)
        return box

    # ---- spares: a container started ahead of need, its runtime imported, waiting to be told
    # which container it is. A cold start from a spare skips the sandbox, the interpreter's
    # start and the runtime's imports.

    async def _make_spare(self, image: api_pb2.Image, after: float = 0):
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.spares_wanted[image.image_id].wait(), after)
            if image.image_id in self.spares or self.stopping:
                return
            box = await self._launch(new_id("ct"), image, None)
            if image.image_id in self.spares or self.stopping:
                await self._discard(box)
                return
            self.spares[image.image_id] = box
            while len(self.spares) > MAX_SPARES:  # the least recently made goes
                await self._discard(self.spares.pop(next(iter(self.spares))))
        finally:
            self.spares_starting.pop(image.image_id, None)
            self.spares_wanted.pop(image.image_id, None)

    async def _adopt(self, box: "Box", sc: api_pb2.StartContainer) -> bool:
        """Make the spare the container `sc`: its limits, then its identity."""
        try:
            if box.proc.returncode is not None:
                raise OSError(f"the spare {describe_exit(box.proc.returncode)}")
            box.cgroups.limit(sc.resources)  # fails if it already uses more memory than allowed
            if sc.cidr_allowlist:  # before it is told who it is, and so before any of its commands runs
                await self.network.allow_only(box.net, list(sc.cidr_allowlist))
            box.env.update(identity_env(sc))
            box.env.pop("EMBER_SPARE", None)
            box.proc.stdin.write(json.dumps(identity_env(sc)).encode() + b"\n")
            await box.proc.stdin.drain()
            box.proc.stdin.close()
            return True
        except (OSError, NetworkError) as e:
            log.info("spare %s not used for %s: %s", box.spare_id, sc.container_id, e)
            await self._discard(box)
            return False

    async def _discard(self, box: "Box"):
        if box.proc is not None and box.proc.returncode is None:
            box.proc.kill()
            await box.proc.wait()
        await self._clean(box)

    async def _clean(self, box: "Box") -> str:
        """Remove what the container leaves behind; returns the tail of its log."""
        if box.agent is not None:
            box.agent.close()
        if box.maker is not None:  # a fork's namespaces end with their init, and their maker with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(box.init_pid, signal.SIGKILL)
            if box.maker.returncode is None:
                box.maker.kill()
            await box.maker.wait()
            for fd in box.ns_fds.values():
                os.close(fd)
            box.ns_fds = {}
        await box.cgroups.remove()
        await box.disk.remove()
        if box.net is not None:
            await self.network.release(box.net)
        await asyncio.to_thread(shutil.rmtree, box.ct, True)
        tail = tail_of(box.log_path)
        box.log_path.unlink(missing_ok=True)
        return tail

    async def exec_start(self, container_id, argv, env, workdir, tty, stdio, port=0):
        box = self.boxes.get(container_id)
        try:
            if box is None or box.proc.returncode is not None or box.agent is None:
                raise AgentGone()
            return box.agent.start(argv, {**box.env, **env}, workdir or box.cwd, tty, stdio, port)
        except AgentGone:
            raise ExecError(f"container {container_id} does not run on this worker (any more)") from None
        except Refused as e:
            raise ExecError(str(e)) from None

    async def snapshot(self, container_id, parent, workspace):
        box = self.boxes.get(container_id)
        if box is None or box.proc.returncode is not None:
            raise BuildError(f"container {container_id} does not run on this worker (any more)")
        return await self.layers.snapshot(box.disk.mount_point / "upper", parent, workspace, box.volume_paths)

    def stop(self, container_id: str, kill: bool = False):
        proc = self.procs.get(container_id)
        if proc is None or proc.returncode is not None:
            return
        if kill:
            proc.kill()  # the sandbox dies, and its container with it (it is PID 1 of its namespace)
        else:
            terminate(proc)  # the sandbox forwards SIGTERM to the container

    async def stop_all(self):
        self.stopping = True
        started = time.monotonic()
        try:
            starting = list(self.spares_starting.values()) + list(self.forks_starting.values())
            for t in starting:
                t.cancel()
            if starting:
                # A cancelled start finishes its disk's mount, then undoes it: before we exit.
                await asyncio.wait(starting, timeout=30)
            for box in [*self.spares.values(), *self.forks.values()]:
                await self._discard(box)
            self.spares.clear()
            self.forks.clear()
            await terminate_all(list(self.procs.values()))  # forks before their parents
            await self.parents.stop_all()
            await self.snapshots.close(self)
            await terminate_all(list(self.procs.values()))
            disks.clean_stale(self.root)  # what containers that had no time to clean up leave
        finally:  # the host's rules and namespaces go even if a container's cleanup failed
            for relay in [*self.relays.values(), self.frames_relay]:
                if relay is not None:
                    relay.close()
            self.network.close()
            self.userns.close()
            log.info("containers stopped and cleaned up in %.1fs", time.monotonic() - started)

    async def drain(self):
        """The worker stops: layer uploads are cut short and left pending, not waited for."""
        await self.layers.drain()

    def resume_uploads(self, report):
        self.layers.resume_uploads(report)

