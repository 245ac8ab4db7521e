"""Image layers on a worker: build them, cache them, share them through the blob store.

A layer is a directory under the layer cache, named by its layer id. A base layer is a whole
root filesystem (from debootstrap or a registry); every other layer is the writable upper
directory of an overlay mount in which its step ran on top of the layers before it, so it holds
exactly what the step changed (deletions as overlayfs whiteouts). Containers stack the layers
as the lower directories of their own overlay.

A layer is built in a temporary directory and renamed into place only when its step
succeeded: the cache never holds half a layer. Built layers are archived (tar) into the blob
store, and a worker that lacks a layer fetches it from there instead of building it again.
"""

import asyncio
import collections
import contextlib
import io
import json
import logging
import os
import pathlib
import shlex
import shutil
import sys
import tarfile
import time
import typing

import grpc
import uv

from .._client import blobs
from .._layers import snapshot_layer_id
from ..proto import api_pb2
from . import cgroups as cg
from . import registry

log = logging.getLogger("ember.worker")

# The sandbox launcher's command, to which its spec is added. It is imported, not run as a script:
# a script is compiled at every start (5 ms of each cold start), an imported module's bytecode
# is kept in __pycache__ (-E: whatever PYTHONDONTWRITEBYTECODE says).
SANDBOX_DIR = str(pathlib.Path(__file__).parent)
SANDBOX = [sys.executable, "-S", "-E", "-c",
           f"import sys; sys.path.append({SANDBOX_DIR!r}); import sandbox; sandbox.main()"]


def sandbox_argv(spec: dict, directory: pathlib.Path, entry: str = "main") -> list[str]:
    """The sandbox's command for a spec, which goes in a file only root can read (the sandbox
    reads and removes it): its environment holds a container's credential or a build's
    secrets, and a command line is anyone's to read in /proc. `entry`: sandbox.main, which
    starts a container, or sandbox.enter, which runs a command in a running one."""
    path = directory / f".sandbox-spec-{os.urandom(6).hex()}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    return [*SANDBOX[:-1], SANDBOX[-1].replace("sandbox.main()", f"sandbox.{entry}()"), str(path)]


Step = api_pb2.ImageStep
# Steps that make a layer of files; the others (env, workdir) only change the image's config.
CONTENT_STEPS = {Step.DEBIAN_SLIM, Step.FROM_REGISTRY, Step.PIP_INSTALL, Step.APT_INSTALL, Step.RUN_COMMANDS,
                 Step.RUN_FUNCTION, Step.ADD_LOCAL, Step.SNAPSHOT}
BASE_STEPS = {Step.DEBIAN_SLIM, Step.FROM_REGISTRY}
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8"}
IMAGE_CONFIG = ".ember-image.json"   # a registry image's own env and workdir, kept in its base layer
TAIL_LINES = 25
BLOB_CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of a zstd frame
# How layers are archived and unpacked: overlayfs's whiteouts and opaque directories (device nodes,
# xattrs) and owners by number, as they are.
TAR_OPTIONS = ["--xattrs", "--xattrs-include=*", "--numeric-owner"]
# Where Ember mounts its own files in containers and builds: what is left there is not a layer's.
MOUNT_POINTS = ("ember", ".ember-files", "tmp/.ember-code")

Log = typing.Callable[[str], None]
# Hears of each step's start and end in a build (BuildStep.State, 0-based index of the step): the
# client shows a line per step, the output that follows a start folded under it.
StepReport = typing.Callable[[int, int], None]


PROXY_VARS = {"http_proxy", "https_proxy", "no_proxy", "all_proxy"}


def host_ca_bundle() -> str | None:
    for path in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if path and os.path.isfile(path):
            return os.path.realpath(path)
    return None


class BuildError(Exception):
    pass


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (or EMBER_DEBIAN_MIRROR)."""
    if os.environ.get("EMBER_DEBIAN_MIRROR"):
        return os.environ["EMBER_DEBIAN_MIRROR"]
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        try:
            for line in open(path):
                words = line.split()
                if words[:1] == ["URIs:"] and "security" not in words[1]:
                    return words[1]
                if words[:1] == ["deb"] and "security" not in words[1]:
                    return words[1]
        except OSError:
            continue
    return "http://deb.debian.org/debian"


def describe_step(step: api_pb2.ImageStep) -> str:
    """The step as the user wrote it, for messages."""
    args = ", ".join(repr(a) for a in step.args)
    if step.kind == Step.DEBIAN_SLIM:
        return f"Image.debian_slim(python_version={step.args[1]!r})"
    if step.kind == Step.ENV:
        return f"env({dict(step.env)!r})"
    if step.kind == Step.WORKDIR:
        return f"workdir({step.path!r})"
    if step.kind == Step.ENTRYPOINT:
        return f"entrypoint({list(step.args)!r})"
    if step.kind == Step.ADD_LOCAL:
        return f"add_local(... -> {step.path})"
    if step.kind == Step.SNAPSHOT:
        return "snapshot_filesystem()"
    return f"{Step.Kind.Name(step.kind).lower()}({args})"


class ImageConfig(typing.NamedTuple):
    env: dict
    workdir: str
    entrypoint: list  # what runs a container's command (Ember's runtime), as Docker runs CMD


def image_config(image: api_pb2.Image, layers_dir: pathlib.Path) -> ImageConfig:
    """The environment, working directory and entrypoint the image's steps declare."""
    env, workdir, entrypoint = dict(BASE_ENV), "/root", []
    for s in image.steps:
        if s.kind == Step.FROM_REGISTRY:
            try:
                cfg = json.loads((layers_dir / s.layer_id / IMAGE_CONFIG).read_text())
                env.update(cfg.get("env", {}))
                workdir = cfg.get("workdir") or workdir
                entrypoint = list(cfg.get("entrypoint") or [])
            except (OSError, ValueError):
                pass
        if s.kind == Step.ENV:  # the env of other steps is for their build only
            env.update(s.env)
        if s.kind == Step.WORKDIR:
            workdir = s.path
        if s.kind == Step.ENTRYPOINT:
            entrypoint = list(s.args)
    return ImageConfig(env, workdir, entrypoint)


class Tail:
    """The last lines of a build's output, for its error message."""

    def __init__(self):
        self.lines: collections.deque = collections.deque(maxlen=TAIL_LINES)

    def add(self, text: str):
        self.lines.extend(text.splitlines())

    def __str__(self):
        return "\n".join(self.lines)


class LayerCache:
    """Layers on this worker's disk, built or fetched on demand, each at most once at a time."""

    def __init__(self, root: pathlib.Path, runtime_dir: pathlib.Path, blob_stub: typing.Callable, worker_id: str):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # Work space of this process; workers on one machine may share the cache. What workers
        # that are gone left there (half-built layers, replaced ones) is deleted.
        for d in (root / ".tmp").glob("*"):
            if d.name.isdigit() and not pathlib.Path(f"/proc/{d.name}").exists():
                shutil.rmtree(d, ignore_errors=True)
        self.tmp = root / ".tmp" / str(os.getpid())
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.runtime_dir = runtime_dir
        # uv's package cache, one per workspace: a pip step runs code of the packages it builds
        # (setup.py), which could put anything in the cache it writes to, for later builds to
        # install; so a workspace's builds share a cache with its own builds only.
        self.uv_caches = root.parent / "uv-cache"
        self.uv_caches.mkdir(parents=True, exist_ok=True)
        self.stub = blob_stub  # () -> a connected gRPC stub, for the blob store
        self.locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.uploads: set[asyncio.Task] = set()
        self.prunes: set[asyncio.Task] = set()  # of uv's caches, after pip steps
        # Layers this worker built whose archive is not yet in the blob store. Each worker has its
        # own: its control plane expects the archives from it (other workers that share the cache
        # may serve another control plane, or be archiving theirs right now).
        self.pending = root / ".pending" / worker_id
        self.network = None  # network.Network, which build steps' sandboxes join: set by the container backend
        self.userns = None  # userns.UserNamespace, which they run in: likewise

    def has(self, layer_id: str) -> bool:
        return (self.root / layer_id).is_dir()

    def lowers(self, image: api_pb2.Image) -> list[str]:
        """Layer directories of the image, top first, as names relative to the cache."""
        return [s.layer_id for s in reversed(image.steps) if s.kind in CONTENT_STEPS]

    async def ensure(self, image: api_pb2.Image, known: dict[str, str], log: Log, *, force: bool = False,
                     report: typing.Callable[[api_pb2.Layer], None] | None = None, workspace: str = "",
                     on_step: StepReport | None = None):
        """Make every layer of the image present here: keep, fetch or build, in order.

        `known` maps layer ids to their blob ids in the blob store. A forced step (and every
        step after it) is built again. `report` hears of each layer this call built. `workspace`:
        whose build it is (its pip steps share uv's package cache with that workspace's only).
        `on_step` hears of each step's start and end; without it (a container's start), `log` does."""
        State = api_pb2.BuildStep.State

        def announce(i: int, state: int, text: str = ""):
            if on_step is not None:
                on_step(i, state)
            elif text:
                log(text)

        if not image.steps or image.steps[0].kind not in BASE_STEPS:
            raise BuildError("the image has no base: start it from Image.debian_slim() or Image.from_registry()")
        rebuild = force
        for i, step in enumerate(image.steps):
            rebuild = rebuild or step.force_build
            if step.kind not in CONTENT_STEPS:
                if report:
                    report(api_pb2.Layer(layer_id=step.layer_id))
                continue
            async with self.locks[step.layer_id]:
                if self.has(step.layer_id) and not rebuild:
                    announce(i, State.CACHED)
                elif known.get(step.layer_id) and not rebuild:
                    announce(i, State.FETCHING,
                             f"=> fetching layer {i + 1}/{len(image.steps)} ({describe_step(step)})\n")
                    await self._fetch(step.layer_id, known[step.layer_id])
                    announce(i, State.FETCHED)
                else:
                    announce(i, State.BUILDING, f"=> step {i + 1}/{len(image.steps)}: {describe_step(step)}\n")
                    try:
                        await self._build(image, i, log, workspace)
                    except BuildError as e:
                        raise BuildError(f"step {i + 1}/{len(image.steps)}, {describe_step(step)}: {e}") from None
                    known.pop(step.layer_id, None)
                    announce(i, State.BUILT)
            if report:
                if known.get(step.layer_id):
                    report(api_pb2.Layer(layer_id=step.layer_id, blob_id=known[step.layer_id]))
                else:
                    # Usable here now; other workers can fetch it once its upload is done.
                    size = await asyncio.to_thread(tree_size, self.root / step.layer_id)
                    report(api_pb2.Layer(layer_id=step.layer_id, size=size))
                    self.upload_later(step.layer_id, report)

    def upload_later(self, layer_id: str, report):
        """Archive the layer into the blob store in the background. Until that is done it is marked
        pending on disk, so that a worker stopped meanwhile archives it when it starts again."""
        self.pending.mkdir(parents=True, exist_ok=True)
        (self.pending / layer_id).touch()
        if not self._uploading(layer_id):  # resumed at the start, say: its report is on its way
            self.uploads.add(asyncio.get_running_loop().create_task(self._upload(layer_id, report), name=layer_id))

    def _uploading(self, layer_id: str) -> bool:
        return any(t.get_name() == layer_id for t in self.uploads)

    def resume_uploads(self, report):
        """Archive the layers this worker left pending when it last stopped."""
        for mark in sorted(self.pending.glob("*")) if self.pending.is_dir() else ():
            if self.has(mark.name) and not self._uploading(mark.name):
                log.info("archiving layer %s, which was left pending when a worker stopped", mark.name[:12])
                self.uploads.add(asyncio.get_running_loop().create_task(self._upload(mark.name, report),
                                                                        name=mark.name))
            elif not self.has(mark.name):
                mark.unlink(missing_ok=True)

    async def drain(self):
        """The worker stops: archives under way are cut short, never waited for (a run's exit
        would wait on them); their layers stay pending in the cache, archived at the next start.
        Prunes of uv's cache are cut short too (the next prune finishes the work)."""
        tasks = list(self.uploads) + list(self.prunes)
        for task in tasks:
            task.cancel()
        if tasks:  # briefly: the worker's containers and disks are cleaned up after this
            await asyncio.wait(tasks, timeout=1)

    @staticmethod
    async def _prune(uv_cache: pathlib.Path):
        try:
            await run_logged([uv.find_uv_bin(), "cache", "prune", "--cache-dir", str(uv_cache)], None,
                             lambda _text: None, "uv cache prune")
        except BuildError as e:
            log.warning("pruning uv's cache %s failed: %s", uv_cache, e)

    # ------------------------------------------------------------------ building

    async def _build(self, image: api_pb2.Image, index: int, log: Log, workspace: str):
        step = image.steps[index]
        work = self.tmp / f"{step.layer_id}-{id(step)}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            if step.kind == Step.SNAPSHOT:
                raise BuildError("the layer of this sandbox snapshot is not in the blob store any more (it is kept "
                                 "while an app uses it, and a while after its last use): take a new snapshot")
            if step.kind == Step.DEBIAN_SLIM:
                layer = await self._debootstrap(step, work, log)
            elif step.kind == Step.FROM_REGISTRY:
                layer = work / "rootfs"
                try:
                    cfg = await asyncio.to_thread(registry.pull, step.args[0], layer, log)
                except registry.RegistryError as e:
                    raise BuildError(str(e)) from None
                (layer / IMAGE_CONFIG).write_text(json.dumps(cfg))
            else:
                layer = await self._build_in_sandbox(image, index, work, log, workspace)
            target = self.root / step.layer_id
            if target.exists():
                # A forced rebuild replaces the old layer. Running containers may have it mounted,
                # so it is only moved aside; the next start of the worker deletes it.
                target.rename(self.tmp / f"replaced-{step.layer_id}-{time.time_ns()}")
            layer.rename(target)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _debootstrap(self, step: api_pb2.ImageStep, work: pathlib.Path, log: Log) -> pathlib.Path:
        suite = step.args[0]
        if shutil.which("debootstrap") is None:
            raise BuildError("Image.debian_slim() needs Debian's debootstrap on the worker: "
                             "`apt-get install debootstrap`")
        rootfs = work / "rootfs"
        mirror = debian_mirror()
        cmd = ["debootstrap", "--variant=minbase", "--include=python3,ca-certificates", suite, str(rootfs), mirror]
        # Debian's Python packages compile their bytecode as they install, unless told not to.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        await run_logged(cmd, env, log, " ".join(cmd))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        return rootfs

    async def _build_in_sandbox(self, image: api_pb2.Image, index: int, work: pathlib.Path, log: Log,
                                workspace: str) -> pathlib.Path:
        step = image.steps[index]
        parents = api_pb2.Image(steps=image.steps[:index])
        for d in ("upper", "work", "root", "files"):
            (work / d).mkdir()
        binds = [[str(self.runtime_dir), "/ember/lib", True]]
        if self.network.resolv_conf:
            binds.append([self.network.resolv_conf, "/etc/resolv.conf", True])
        if step.blob_id:
            data = await blobs.download(self.stub(), step.blob_id)
            name = "function.pkl" if step.kind == Step.RUN_FUNCTION else "files.tar"
            (work / "files" / name).write_bytes(data)
            if step.kind == Step.PIP_INSTALL:  # a requirements file
                await asyncio.to_thread(untar_bytes, data, work / "files")
            binds.append([str(work / "files"), "/.ember-files", True])
        env, workdir, _ = image_config(parents, self.root)  # a build step runs no entrypoint, as Docker's RUN
        env = dict(env, **step.env, PYTHONPATH="/ember/lib")  # the step's own build env (env=) too
        # Builds reach package indexes the way this machine does: through its proxy, if any.
        env.update({k: v for k, v in os.environ.items() if k.lower() in PROXY_VARS})
        commands: list[tuple[list[str], str]] = []  # (argv, as shown to the user)
        uv_cache = self.uv_caches / (workspace or "main")
        if step.kind == Step.PIP_INSTALL:
            uv_cache.mkdir(exist_ok=True)
            binds += [[uv.find_uv_bin(), "/ember/bin/uv", True], [str(uv_cache), "/ember/uv-cache", False]]
            env["UV_CACHE_DIR"] = "/ember/uv-cache"
            ca = host_ca_bundle()
            if ca:  # trust what this machine trusts (a company or proxy CA, say) for the download
                binds.append([ca, "/ember/host-ca.crt", True])
                env["SSL_CERT_FILE"] = "/ember/host-ca.crt"
            argv = ["/ember/bin/uv", "pip", "install", "--system", "--break-system-packages", "--python", "python3",
                    "--compile-bytecode", "--link-mode=copy", *step.args]
            commands.append((argv, "uv pip install " + " ".join(shlex.quote(a) for a in step.args)))
        elif step.kind == Step.APT_INSTALL:
            pkgs = " ".join(shlex.quote(p) for p in step.args)
            script = (f"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                      f"--no-install-recommends {pkgs} && apt-get clean && rm -rf /var/lib/apt/lists/*")
            commands.append((["sh", "-c", script], f"apt-get install {pkgs}"))
        elif step.kind == Step.RUN_COMMANDS:
            commands += [(["sh", "-c", c], c) for c in step.args]
        elif step.kind == Step.RUN_FUNCTION:
            loader = ("import cloudpickle\nf, a, k = cloudpickle.load(open('/.ember-files/function.pkl', 'rb'))\n"
                      "f(*a, **k)\n")
            commands.append((["python3", "-c", loader], f"{step.args[0]}()"))
        elif step.kind == Step.ADD_LOCAL:
            script = ("import compileall, sys, tarfile\n"
                      "tarfile.open('/.ember-files/files.tar').extractall(sys.argv[1])\n"
                      "if sys.argv[2:]: compileall.compile_dir(sys.argv[1], quiet=1)\n")
            argv = ["python3", "-c", script, step.path] + (["compile"] if "compile" in step.args else [])
            commands.append((argv, f"copy local files to {step.path}"))
        else:
            raise BuildError(f"unknown image step {step.kind}: is the worker older than the client?")
        lowers = self.lowers(parents)
        # The step's commands share one network of their own, as a container's (out through NAT),
        # and cgroups: the limits of a container that asks for none (pids).
        net = await self.network.attach()
        cgroups = cg.Cgroups(f"build-{work.name[:12]}-{os.urandom(4).hex()}")
        try:
            cgroups.create(api_pb2.Resources())
            for argv, shown in commands:
                spec = {"layers_dir": str(self.root), "lowers": lowers, "upper": str(work / "upper"),
                        "work": str(work / "work"), "root": str(work / "root"), "binds": binds, "hostname": "build",
                        "new_net": False, "netns": net.path, "cgroups": [str(p) for p in cgroups.paths],
                        "cwd": workdir, "env": env, "argv": argv, "parent_pid": os.getpid(),
                        **self.userns.spec([self.root, work])}
                await run_logged(sandbox_argv(spec, work), None, log, shown)
        finally:
            await self.network.release(net)
            await cgroups.remove()
        if step.kind == Step.PIP_INSTALL:
            # Pruning what no longer serves in the workspace's uv cache (unpacked sources, stale
            # entries) keeps it from growing with each image: in the background, off the build.
            self.prunes.add(task := asyncio.get_running_loop().create_task(self._prune(uv_cache)))
            task.add_done_callback(self.prunes.discard)
        # What the mounts left behind is not part of the layer.
        for p in MOUNT_POINTS:
            shutil.rmtree(work / "upper" / p, ignore_errors=True)
        return work / "upper"

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self, upper: pathlib.Path, parent: str, workspace: str,
                       leave_out: typing.Iterable[str] = ()) -> api_pb2.Layer:
        """A running container's writable layer (its overlay's upper directory) made a layer: archived
        into the blob store, then unpacked into the cache under its name, which comes from the archive
        (snapshot_layer_id), so a worker that lacks it fetches it as any other. `leave_out`: paths
        in the container (volumes) that are not part of it, as Ember's own mount points are not."""
        started = time.monotonic()
        excluded = [*MOUNT_POINTS, *(p.strip("/") for p in leave_out)]
        archive = self.tmp / f"snapshot-{os.urandom(6).hex()}"
        try:
            await self._tar(upper, archive, excluded, live=True)
            blob_id = await self._upload_file(archive, f"snapshot of {upper}")
            layer_id = snapshot_layer_id(parent, workspace, blob_id)
            async with self.locks[layer_id]:
                if not self.has(layer_id):  # the same changes as an earlier snapshot's: that layer
                    dest = self.tmp / f"unpack-{layer_id}"
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir()
                    try:
                        await run_logged(["tar", "-C", str(dest), *TAR_OPTIONS, *self._compression(archive), "-xpf",
                                          str(archive)], None, lambda _text: None, "unpack the snapshot")
                        dest.rename(self.root / layer_id)
                    finally:
                        shutil.rmtree(dest, ignore_errors=True)
            size = await asyncio.to_thread(tree_size, self.root / layer_id)
            layer = api_pb2.Layer(layer_id=layer_id, blob_id=blob_id, size=size, archive_size=archive.stat().st_size)
        finally:
            archive.unlink(missing_ok=True)
        log.info("snapshot layer %s (%s): %.1f MB into %.1f MB in %.2fs", layer_id[:12], blob_id[:12], layer.size / 1e6,
                 layer.archive_size / 1e6, time.monotonic() - started)
        return layer

    @staticmethod
    def _compression(archive: pathlib.Path) -> list[str]:
        with open(archive, "rb") as f:
            return ["--zstd"] if f.read(4) == ZSTD_MAGIC else []

    # ------------------------------------------------------------------ the blob store

    async def _upload(self, layer_id: str, report):
        """Archive the layer into the blob store (in the background), then report where it is."""
        try:
            started = time.monotonic()
            blob_id, archive_size = await self._archive(layer_id)
            size = await asyncio.to_thread(tree_size, self.root / layer_id)
        except Exception as e:  # the layer stays usable here; other workers will build it
            log.warning("uploading layer %s failed: %r", layer_id[:12], e)
        else:
            log.info("layer %s archived into the blob store as %s: %.1f MB into %.1f MB in %.1fs", layer_id[:12],
                     blob_id[:12], size / 1e6, archive_size / 1e6, time.monotonic() - started)
            report(api_pb2.Layer(layer_id=layer_id, blob_id=blob_id, size=size, archive_size=archive_size))
            (self.pending / layer_id).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the last of them: nothing of this worker's is left
                self.pending.rmdir()
        finally:
            self.uploads.discard(asyncio.current_task())

    async def _archive(self, layer_id: str) -> tuple[str, int]:
        """Upload the layer as a zstd-compressed tar (a plain one where zstd is missing): (blob id, bytes)."""
        archive = self.tmp / f"archive-{layer_id}"
        try:
            await self._tar(self.root / layer_id, archive)
            return await self._upload_file(archive, f"layer {layer_id[:12]}"), archive.stat().st_size
        finally:
            archive.unlink(missing_ok=True)

    async def _tar(self, directory: pathlib.Path, archive: pathlib.Path, exclude: typing.Iterable[str] = (),
                   live: bool = False):
        """Archive a directory into a file: a zstd-compressed tar (a plain one where zstd is missing).
        exclude: paths relative to the directory. `live`: a running container's, which someone waits
        for, and whose files may change or go as they are read (as they are, then). Into a file
        first: a direct upload (to an S3 blob store) names its content's hash up front."""
        compress = ["--zstd"] if shutil.which("zstd") else []
        if not compress:
            log.warning("zstd is not installed: %s is archived uncompressed (`apt-get install zstd`)", directory)
        # A layer in the background, at the lowest CPU priority and on one core: an image is archived
        # right after it is built, which is when its first containers start.
        nice = [] if live else ["nice", "-n", "19"]
        options = ["--anchored", *(f"--exclude=./{p}" for p in exclude)]
        if live:
            options.append("--ignore-failed-read")
        with open(archive, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *nice, "tar", "-C", str(directory), *TAR_OPTIONS, *compress, *options, "-cf", "-", ".",
                stdout=out, stderr=asyncio.subprocess.PIPE,
                env=dict(os.environ, ZSTD_NBTHREADS="1", ZSTD_CLEVEL="3"))
            try:
                _, err = await proc.communicate()
            except BaseException:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                raise
        # 1: files changed as they were read, which a running container's may.
        if proc.returncode != 0 and not (live and proc.returncode == 1):
            raise BuildError(f"archiving {directory} failed: {err.decode().strip()}")

    async def _upload_file(self, archive: pathlib.Path, what: str) -> str:
        for attempt in range(3):  # an upload cut off (the control plane restarting) starts over
            try:
                return await blobs.upload_file(self.stub(), str(archive))
            except grpc.aio.AioRpcError as e:
                if attempt == 2:
                    raise
                log.warning("uploading %s was cut off (%s): trying again", what, e.code().name)
                await asyncio.sleep(2 ** attempt)

    async def _fetch(self, layer_id: str, blob_id: str):
        started = time.monotonic()
        dest = self.tmp / f"fetch-{layer_id}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        chunks = aiter(blobs.chunks_of(self.stub(), blob_id))
        first = await anext(chunks, b"")
        # Archives are zstd-compressed tars, or plain ones (from workers before compression):
        # told apart by their first bytes.
        compressed = first.startswith(ZSTD_MAGIC)
        if compressed and not shutil.which("zstd"):
            raise BuildError(f"layer {layer_id} is a zstd archive, and this worker lacks zstd: `apt-get install zstd`")
        proc = await asyncio.create_subprocess_exec(
            "tar", "-C", str(dest), *TAR_OPTIONS, *(["--zstd"] if compressed else []), "-xpf", "-",
            stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        size = len(first)
        try:
            proc.stdin.write(first)
            async for chunk in chunks:
                size += len(chunk)
                proc.stdin.write(chunk)
                await proc.stdin.drain()
            proc.stdin.close()
            if await proc.wait() != 0:
                raise BuildError(f"unpacking layer {layer_id} failed: {(await proc.stderr.read()).decode()}")
            dest.rename(self.root / layer_id)
            log.info("layer %s fetched from the blob store (%s): %.1f MB in %.1fs", layer_id[:12], blob_id[:12],
                     size / 1e6, time.monotonic() - started)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            shutil.rmtree(dest, ignore_errors=True)
            raise


def tree_size(path: pathlib.Path) -> int:
    """Bytes of the regular files under path (hard links counted once)."""
    seen, total = set(), 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


async def run_logged(argv: list[str], env, log: Log, shown: str):
    """Run a build command, its output to `log`; a failure names the command and its last output."""
    tail = Tail()
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        while chunk := await proc.stdout.read(65536):
            text = chunk.decode(errors="replace")
            tail.add(text)
            log(text)
        code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        raise
    if code != 0:
        raise BuildError(f"`{shown}` failed with exit code {code}. Its last output:\n{tail}")


def untar_bytes(data: bytes, dest: pathlib.Path):
    """Unpack a client's archive of local files: regular files and directories only, all of
    them inside dest (this runs as root on the worker)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        for m in members:
            parts = pathlib.PurePosixPath(m.name).parts
            if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                raise BuildError(f"refusing the archive member {m.name!r}: only relative files are allowed")
        tar.extractall(dest, members=members)
