"""The process backend: each container is a plain child process running ember.container.

No isolation and no limits beyond a process of its own: the backend for machines where
namespaces and cgroups are not available, and the only one until images arrive.
"""

import asyncio
import logging
import os
import pathlib
import shutil
import signal
import sys

from ..proto import api_pb2

log = logging.getLogger("ember.worker")

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


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

    def __init__(self, data_dir: pathlib.Path, server_url: str):
        self.root = data_dir / "containers"
        self.code_cache = data_dir / "code"
        self.root.mkdir(parents=True, exist_ok=True)
        self.code_cache.mkdir(parents=True, exist_ok=True)
        self.server_url = server_url
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    def running(self):
        return [cid for cid, p in self.procs.items() if p.returncode is None]

    async def run(self, sc: api_pb2.StartContainer) -> tuple[int, str, str]:
        """Start the container, wait for it to end; returns (exit code, cause, log tail)."""
        cid = sc.container_id
        workdir = self.root / cid
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{cid}.log"
        env = dict(os.environ, EMBER_SERVER_URL=self.server_url, EMBER_CONTAINER_ID=cid,
                   EMBER_CODE_CACHE=str(self.code_cache), EMBER_WORKER_PID=str(os.getpid()))
        with open(log_path, "wb") as logf:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ember.container", cwd=workdir, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        self.procs[cid] = proc
        log.info("container %s started (pid %d)", cid, proc.pid)
        try:
            code = await proc.wait()
        finally:
            self.procs.pop(cid, None)
        tail = _tail(log_path)
        log_path.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
        reason = describe_exit(code)
        log.info("container %s %s", cid, reason)
        return code, reason, tail

    def stop(self, container_id: str, kill: bool = False):
        proc = self.procs.get(container_id)
        if proc is None or proc.returncode is not None:
            return
        if kill:
            proc.kill()
            return
        proc.terminate()
        asyncio.get_running_loop().call_later(STOP_GRACE, self._kill_if_running, proc)

    @staticmethod
    def _kill_if_running(proc):
        if proc.returncode is None:
            proc.kill()

    async def stop_all(self):
        procs = list(self.procs.values())
        for p in procs:
            if p.returncode is None:
                p.terminate()
        try:
            async with asyncio.timeout(3):
                await asyncio.gather(*(p.wait() for p in procs))
        except TimeoutError:
            for p in procs:
                if p.returncode is None:
                    p.kill()


def _tail(path: pathlib.Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()
