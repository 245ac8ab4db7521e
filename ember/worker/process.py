"""The process backend: each container is a plain child process running ember.container.

No isolation and no limits beyond a process of its own: the backend for machines where
namespaces and cgroups are not available (not root, not Linux). An image becomes a virtual
environment of its own (made with uv) with the image's Python packages; its capabilities
declare no root filesystem steps (apt_install, run_commands, from_registry, files at absolute
paths), no volumes, no network of its own and no disk limit (ephemeral_disk=: its containers
write to the worker's disk), and the worker refuses those with an error that says so. A
function without packages runs with the worker's own Python environment. GPUs are usable, all
of the machine's: nothing hides the others.
"""

import asyncio
import logging
import os
import pathlib
import shutil
import sys
import threading

import uv

from .._client import blobs
from ..proto import api_pb2
from .backend import RUNTIME_ENV, Capabilities, Context, Exit, RuntimeBackend, identity_env
from .execs import ExecError
from .memory_snapshots import MemorySnapshots, Restored
from .images import BuildError, Step, describe_step, run_logged, untar_bytes
from .parents import Forked, WarmParents, key_of
from .procs import describe_exit, kill_group, kill_session, session_usage, tail_of, terminate, terminate_all
from .frames import Frames
from .sandbox import relay_port

log = logging.getLogger("ember.worker")

CPU_SAMPLE_EVERY = 1.0  # seconds between readings of a container's CPU time
# Steps that put nothing into a virtual environment: the worker's own Python serves them.
NO_PACKAGES = {Step.DEBIAN_SLIM, Step.ENV, Step.WORKDIR, Step.ENTRYPOINT}  # (an empty one: see backend.refusal)


class ProcessBackend(RuntimeBackend):
    name = "process"
    capabilities = Capabilities(isolation=False, volumes=False, gpus=True, network_modes=frozenset({"host"}),
                                root_filesystem_steps=False)

    @staticmethod
    def available() -> str | None:
        return None  # a child process with a session of its own: anywhere the worker runs

    def __init__(self, ctx: Context):
        self.root = ctx.data_dir / "containers"
        self.code_cache = ctx.data_dir / "code"
        self.venvs = ctx.data_dir / "venvs"
        for d in (self.root, self.code_cache, self.venvs):
            d.mkdir(parents=True, exist_ok=True)
        self.server_url = ctx.server_url
        self.ca_file = ctx.ca_file
        self.runtime_dir = ctx.runtime_dir
        self.stub = ctx.stub
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.envs: dict[str, dict[str, str]] = {}  # container id -> its environment (what its commands get)
        self.cpu: dict[str, float] = {}  # container id -> its CPU time at the last reading
        self.memory: dict[str, int] = {}  # container id -> its resident memory at the last reading
        self.locks: dict[str, asyncio.Lock] = {}
        self.snapshots = MemorySnapshots(ctx.data_dir / "memory-snapshots", ctx.cache_dir, ctx.runtime_dir,
                                         self.code_cache, ctx.stub)
        self.parents = WarmParents(ctx.warm_parents, self._launch_parent, self._parent_gone)
        self.frames_env = (ctx.frames or Frames(ctx.server_url)).env  # its containers reach frames directly

    # ------------------------------------------------------------------ images as venvs

    async def build(self, image: api_pb2.Image, known, force: bool, log_fn, report, workspace: str = "",
                    on_step=None):
        await self._venv(image, log_fn, force, on_step)
        for s in image.steps:
            report(api_pb2.Layer(layer_id=s.layer_id))

    async def _venv(self, image: api_pb2.Image, log_fn, force: bool = False, on_step=None) -> tuple[str, dict]:
        """The Python to run the image with, and its environment variables."""
        env = {}
        for s in image.steps:
            if s.kind == Step.ENV:  # the env of other steps is for their build only
                env.update(s.env)
        if all(s.kind in NO_PACKAGES for s in image.steps):
            return sys.executable, env  # nothing to install: the worker's own environment
        venv = self.venvs / image.image_id
        lock = self.locks.setdefault(image.image_id, asyncio.Lock())
        async with lock:
            if force or not venv.exists():
                await self._make_venv(image, venv, log_fn, on_step)
        env["PYTHONPATH"] = str(venv / "src")
        return str(venv / "bin" / "python"), env

    async def _make_venv(self, image: api_pb2.Image, venv: pathlib.Path, log_fn, on_step=None):
        """Build the image's venv; `on_step` hears of each step's start and end (without it, `log_fn`)."""
        State = api_pb2.BuildStep.State
        tmp = self.venvs / f".tmp-{image.image_id}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            uv_bin = uv.find_uv_bin()
            await run_logged([uv_bin, "venv", "-q", "--python", sys.executable, str(tmp)], None, log_fn, "uv venv")
            (tmp / "src").mkdir()
            py = str(tmp / "bin" / "python")
            for i, s in enumerate(image.steps):
                if s.kind in NO_PACKAGES:
                    continue
                if on_step is not None:
                    on_step(i, State.BUILDING)
                else:
                    log_fn(f"=> step {i + 1}/{len(image.steps)}: {describe_step(s)}\n")
                files = await self._step_files(s, tmp) if s.blob_id else None
                if s.kind == Step.PIP_INSTALL:
                    args = [a.replace("/.ember-files", str(files)) for a in s.args]
                    await run_logged([uv_bin, "pip", "install", "--python", py, "--compile-bytecode", *args],
                                     dict(os.environ, **s.env) if s.env else None, log_fn,
                                     "uv pip install " + " ".join(s.args))
                elif s.kind == Step.ADD_LOCAL and "compile" in s.args:
                    shutil.copytree(files, tmp / "src", dirs_exist_ok=True)
                elif s.kind == Step.RUN_FUNCTION:
                    loader = ("import cloudpickle\n"
                              f"f, a, k = cloudpickle.load(open({str(files / 'blob')!r}, 'rb'))\nf(*a, **k)")
                    env = dict(os.environ, PYTHONPATH=f"{self.runtime_dir}:{tmp / 'src'}")
                    await run_logged([py, "-c", loader], env, log_fn, s.args[0] + "()")
                else:  # the worker refused the steps this backend lacks (backend.refusal)
                    raise BuildError(f"unknown image step {s.kind}: is the worker older than the client?")
                if on_step is not None:
                    on_step(i, State.BUILT)
            tmp.rename(venv)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def _step_files(self, step: api_pb2.ImageStep, venv: pathlib.Path) -> pathlib.Path:
        data = await blobs.download(self.stub(), step.blob_id)
        d = venv / ".files" / step.layer_id
        d.mkdir(parents=True)
        (d / "blob").write_bytes(data)
        if step.kind != Step.RUN_FUNCTION:
            await asyncio.to_thread(untar_bytes, data, d)
        return d

    def running(self):
        return [cid for cid, p in self.procs.items() if p.returncode is None]

    async def run(self, sc: api_pb2.StartContainer) -> Exit:
        cid = sc.container_id
        workdir = self.root / cid
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{cid}.log"
        python, image_env = await self._venv(sc.image, lambda text: log.info("image: %s", text.rstrip()))
        env = dict(self._env(python, image_env), **identity_env(sc), **self.frames_env())
        proc = None
        if sc.HasField("snapshot_init"):  # restored from its memory snapshot; else forked from a warm parent
            proc = await self.snapshots.start(sc.snapshot_init, python, env, workdir, log_path)
        if proc is None:
            proc = await self.parents.fork(sc, identity_env(sc) | self.frames_env(), str(workdir), str(log_path))
        if proc is None:
            with open(log_path, "wb") as logf:
                proc = await asyncio.create_subprocess_exec(
                    python, "-m", "ember.container", cwd=workdir, env=env,
                    stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        self.procs[cid] = proc
        self.envs[cid] = env
        how = (", forked from a warm parent" if isinstance(proc, Forked) else
               f", restored from its memory snapshot as pid {proc.session}" if isinstance(proc, Restored) else "")
        log.info("container %s started (pid %d%s)", cid, proc.pid, how)
        self.started(cid)
        try:
            code = await self._wait_reading_cpu(cid, proc)
        finally:
            self.procs.pop(cid, None)
            self.envs.pop(cid, None)
            cpu = self.cpu.pop(cid, 0.0)
            self.memory.pop(cid, None)
            kill_group(proc.pid)  # what it started and left behind (a web_server's server, say)
        tail = tail_of(log_path)
        log_path.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
        reason = describe_exit(code)
        log.info("container %s %s", cid, reason)
        return Exit(code, reason, tail, cpu_seconds=cpu)

    def _env(self, python: str, image_env: dict[str, str]) -> dict[str, str]:
        """A container's environment but its identity (a warm parent's is this)."""
        # The worker's own environment, but never its token (a container has its own credential).
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_WORKER_TOKEN")}
        env.update(RUNTIME_ENV, EMBER_SERVER_URL=self.server_url, EMBER_CODE_CACHE=str(self.code_cache),
                   EMBER_WORKER_PID=str(os.getpid()))
        if self.ca_file is not None:
            env["EMBER_CA_CERT"] = str(self.ca_file)
        env.update(image_env)
        if python != sys.executable:  # a venv: Ember's runtime comes from the runtime directory
            env["PYTHONPATH"] = f"{self.runtime_dir}:{image_env['PYTHONPATH']}"
        return env

    async def _launch_parent(self, sc: api_pb2.StartContainer, sock):
        python, image_env = await self._venv(sc.image, lambda text: log.info("image: %s", text.rstrip()))
        blob_id = sc.definition.code_blob_id
        if blob_id and not (self.code_cache / blob_id).exists():  # a parent has no credential to fetch it with
            blobs.unpack_code(self.code_cache, blob_id, await blobs.download(self.stub(), blob_id))
        env = dict(self._env(python, image_env), EMBER_PARENT_FD=str(sock.fileno()))
        with open(self.root / f"parent-{key_of(sc)}.log", "wb") as logf:
            return await asyncio.create_subprocess_exec(
                python, "-m", "ember.container.parent", cwd=self.root, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=logf, stderr=logf, start_new_session=True, pass_fds=[sock.fileno()])

    def _parent_gone(self, key: str):
        path = self.root / f"parent-{key}.log"
        if tail := tail_of(path):
            log.info("warm parent %s said: %s", key, tail.strip())
        path.unlink(missing_ok=True)

    async def _wait_reading_cpu(self, cid: str, proc: asyncio.subprocess.Process) -> int:
        """Wait for the process to end, reading its tree's CPU time every second meanwhile: a
        plain process leaves no total behind once reaped, so what it used in its last second is
        not counted."""
        ended = asyncio.ensure_future(proc.wait())
        while True:
            done, _ = await asyncio.wait([ended], timeout=CPU_SAMPLE_EVERY)
            if done:
                return ended.result()
            cpu, self.memory[cid] = session_usage(proc.session if isinstance(proc, Restored) else proc.pid)
            self.cpu[cid] = max(self.cpu.get(cid, 0.0), cpu)

    def cpu_seconds(self, container_id: str) -> float | None:
        return self.cpu.get(container_id) if container_id in self.procs else None

    def memory_bytes(self, container_id: str) -> int | None:
        return self.memory.get(container_id) if container_id in self.procs else None

    async def exec_start(self, container_id, argv, env, workdir, tty, stdio, port=0):
        """Started by the worker itself: a process backend's container is a plain process of its
        machine, with nothing to enter. util-linux's setpriv (and setsid, with a terminal), exec'd
        on the way (a millisecond, where a helper's interpreter took tens), kill the command with
        the worker and make its terminal the controlling one."""
        proc = self.procs.get(container_id)
        if proc is None or proc.returncode is not None:
            raise ExecError(f"container {container_id} does not run on this worker (any more)")
        if port:  # a tunnel: the container shares the worker's network, so its loopback is this one
            return _Relay(port, stdio)
        cwd = workdir or str(self.root / container_id)
        env = {**self.envs[container_id], **env}
        why, code = _cannot_start(argv[0], cwd, env.get("PATH", os.defpath))
        if why:  # as a shell says it: on the command's stderr, with its exit code
            os.write(stdio[2], f"ember exec: {why}\n".encode())
            return _Failed(code)
        # setsid(1) only with a terminal, to make it the controlling one: else the child's own setsid().
        ctty = tty and CTTY
        child = await asyncio.create_subprocess_exec(
            *PDEATHSIG, *(CTTY if ctty else []), *argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], cwd=cwd,
            env=env, start_new_session=not ctty)
        return _Command(child)

    def stop(self, container_id: str, kill: bool = False):
        proc = self.procs.get(container_id)
        if proc is None or proc.returncode is not None:
            return
        if kill:
            kill_group(proc.pid)
        else:
            terminate(proc)

    async def drain(self):
        pass  # nothing of a venv is shared through the blob store

    def resume_uploads(self, report):
        pass  # likewise

    async def stop_all(self):
        await terminate_all(list(self.procs.values()))
        await self.parents.stop_all()


# The worker's death kills the command, as a container's processes; a terminal becomes the
# controlling one. Both from util-linux, on every Linux; without (not Linux), neither.
PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
CTTY = ["setsid", "--ctty", "--"] if shutil.which("setsid") else []


def _cannot_start(program: str, cwd: str, path: str) -> tuple[str, int]:
    """Why program cannot start in cwd, and the exit code a shell gives for it ("" if it can)."""
    if not os.path.isdir(cwd):
        return f"cannot start {program} in {cwd}: no such directory", 126
    if "/" in program:
        found = os.path.join(cwd, program)
        if not os.path.exists(found):
            return f"{program}: no such file", 127
        return ("", 0) if os.access(found, os.X_OK) and not os.path.isdir(found) else \
            (f"{program}: permission denied", 126)
    if shutil.which(program, path=path) is None:
        return f"{program}: command not found", 127
    return "", 0

class _Command:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    async def wait(self) -> int:
        return await self.proc.wait()

    def kill(self):
        kill_session(self.proc.pid)


class _Relay:
    """A tunnel's connection, relayed by a thread of the worker's (no process to start: the port
    is on this machine's loopback, which a process backend's container shares)."""

    def __init__(self, port: int, stdio: tuple[int, int, int]):
        self.fds = [os.dup(fd) for fd in stdio]  # (the caller closes its own once this started)
        self.stop_r, self.stop_w = os.pipe()
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()

        def run():
            code = relay_port(port, *self.fds, stop=self.stop_r)
            loop.call_soon_threadsafe(self._finish, code)
        threading.Thread(target=run, name="ember-tunnel", daemon=True).start()

    def _finish(self, code: int):
        for fd in (*self.fds, self.stop_r, self.stop_w):
            os.close(fd)
        self.done.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self.done)

    def kill(self):
        if not self.done.done():
            os.write(self.stop_w, b"x")


class _Failed:
    """A command that could not start: its exit code, at once."""

    def __init__(self, code: int):
        self.code = code

    async def wait(self) -> int:
        return self.code

    def kill(self):
        pass
