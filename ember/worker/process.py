"""The process backend: each container is a plain child process running ember.container.

No isolation and no limits beyond a process of its own: the backend for machines where
namespaces and cgroups are not available (not root, not Linux). An image becomes a virtual
environment of its own (made with uv) with the image's Python packages; steps that need a root
filesystem of their own (apt_install, run_commands, from_registry, files at absolute paths)
are refused with an error that says so. A function without packages runs with the worker's
own Python environment.
"""

import asyncio
import logging
import os
import pathlib
import shutil
import signal
import sys

import uv

from .._client import blobs
from ..proto import api_pb2
from .images import BuildError, Step, describe_step, run_logged, untar_bytes

log = logging.getLogger("ember.worker")

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
# Steps that put nothing into a virtual environment: the worker's own Python serves them.
NO_PACKAGES = {Step.DEBIAN_SLIM, Step.ENV, Step.WORKDIR}


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


class ProcessBackend:
    name = "process"

    def __init__(self, data_dir: pathlib.Path, server_url: str, runtime_dir: pathlib.Path, blob_stub, why: str):
        self.root = data_dir / "containers"
        self.code_cache = data_dir / "code"
        self.venvs = data_dir / "venvs"
        for d in (self.root, self.code_cache, self.venvs):
            d.mkdir(parents=True, exist_ok=True)
        self.server_url = server_url
        self.runtime_dir = runtime_dir
        self.stub = blob_stub  # () -> a connected gRPC stub, for the blob store
        self.why = why  # why this machine has no container backend, for error messages
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ images as venvs

    async def build(self, image: api_pb2.Image, known, force: bool, log_fn, report):
        await self._venv(image, log_fn, force)
        for s in image.steps:
            report(api_pb2.Layer(layer_id=s.layer_id))

    async def _venv(self, image: api_pb2.Image, log_fn, force: bool = False) -> tuple[str, dict]:
        """The Python to run the image with, and its environment variables."""
        env = {}
        for s in image.steps:
            env.update(s.env)
        if all(s.kind in NO_PACKAGES for s in image.steps):
            return sys.executable, env  # nothing to install: the worker's own environment
        venv = self.venvs / image.image_id
        lock = self.locks.setdefault(image.image_id, asyncio.Lock())
        async with lock:
            if force or not venv.exists():
                await self._make_venv(image, venv, log_fn)
        env["PYTHONPATH"] = str(venv / "src")
        return str(venv / "bin" / "python"), env

    async def _make_venv(self, image: api_pb2.Image, venv: pathlib.Path, log_fn):
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
                log_fn(f"=> step {i + 1}/{len(image.steps)}: {describe_step(s)}\n")
                files = await self._step_files(s, tmp) if s.blob_id else None
                if s.kind == Step.PIP_INSTALL:
                    args = [a.replace("/.ember-files", str(files)) for a in s.args]
                    await run_logged([uv_bin, "pip", "install", "--python", py, "--compile-bytecode", *args], None,
                                     log_fn, "uv pip install " + " ".join(s.args))
                elif s.kind == Step.ADD_LOCAL and "compile" in s.args:
                    shutil.copytree(files, tmp / "src", dirs_exist_ok=True)
                elif s.kind == Step.RUN_FUNCTION:
                    loader = ("import cloudpickle\n"
                              f"f, a, k = cloudpickle.load(open({str(files / 'blob')!r}, 'rb'))\nf(*a, **k)")
                    env = dict(os.environ, PYTHONPATH=f"{self.runtime_dir}:{tmp / 'src'}")
                    await run_logged([py, "-c", loader], env, log_fn, s.args[0] + "()")
                else:
                    raise BuildError(f"{describe_step(s)} needs the container backend, and this worker runs the "
                                     f"process backend ({self.why}): run the worker as root on Linux")
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

    async def run(self, sc: api_pb2.StartContainer) -> tuple[int, str, str, bool]:
        """Start the container, wait for it to end; returns (exit code, cause, log tail, out of memory)."""
        if sc.volumes:
            raise BuildError(f"volumes need the container backend, and this worker runs the process backend "
                                    f"({self.why}): run the worker as root on Linux")
        cid = sc.container_id
        workdir = self.root / cid
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{cid}.log"
        python, image_env = await self._venv(sc.image, lambda text: log.info("image: %s", text.rstrip()))
        env = dict(os.environ, EMBER_SERVER_URL=self.server_url, EMBER_CONTAINER_ID=cid,
                   EMBER_CODE_CACHE=str(self.code_cache), EMBER_WORKER_PID=str(os.getpid()))
        env.update(image_env)
        if python != sys.executable:  # a venv: Ember's runtime comes from the runtime directory
            env["PYTHONPATH"] = f"{self.runtime_dir}:{image_env['PYTHONPATH']}"
        with open(log_path, "wb") as logf:
            proc = await asyncio.create_subprocess_exec(
                python, "-m", "ember.container", cwd=workdir, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        self.procs[cid] = proc
        log.info("container %s started (pid %d)", cid, proc.pid)
        try:
            code = await proc.wait()
        finally:
            self.procs.pop(cid, None)
            _kill_group(proc.pid)  # what it started and left behind (a web_server's server, say)
        tail = tail_of(log_path)
        log_path.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
        reason = describe_exit(code)
        log.info("container %s %s", cid, reason)
        return code, reason, tail, False

    def stop(self, container_id: str, kill: bool = False):
        proc = self.procs.get(container_id)
        if proc is None or proc.returncode is not None:
            return
        if kill:
            _kill_group(proc.pid)
            return
        proc.terminate()
        asyncio.get_running_loop().call_later(STOP_GRACE, self._kill_if_running, proc)

    @staticmethod
    def _kill_if_running(proc):
        if proc.returncode is None:
            proc.kill()

    async def drain(self):
        pass  # nothing of a venv is shared through the blob store

    async def stop_all(self):
        await terminate_all(list(self.procs.values()))


def _kill_group(pgid: int):
    """SIGKILL a container's process group (it leads its own session): it and its children."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def terminate_all(procs, grace: float = 3.0):
    """SIGTERM every process, then SIGKILL what is still running after `grace` seconds."""
    for p in procs:
        if p.returncode is None:
            p.terminate()
    try:
        async with asyncio.timeout(grace):
            await asyncio.gather(*(p.wait() for p in procs))
    except TimeoutError:
        for p in procs:
            if p.returncode is None:
                p.kill()


def tail_of(path: pathlib.Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()
