"""The processes a runtime backend starts: how they are stopped, and how their end is told.

Shared by every backend, so that a container stops, and its exit reads, the same on all of
them. Each container's process leads a session (and so a process group) of its own.
"""

import asyncio
import os
import pathlib
import signal

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when a container is asked to stop


def describe_exit(code: int) -> str:
    """An exit status in words, as the user reads it ("was killed by SIGKILL")."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def tail_of(path: pathlib.Path, limit: int = 2000) -> str:
    """The end of a container's log: what it wrote before its runtime took over its output."""
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()


def kill_group(pgid: int):
    """SIGKILL a process group: a container's process and everything it started."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(proc: asyncio.subprocess.Process, grace: float = STOP_GRACE):
    """Ask the process to finish (SIGTERM), and SIGKILL it if it still runs `grace` seconds later."""
    proc.terminate()
    asyncio.get_running_loop().call_later(grace, lambda: proc.returncode is None and proc.kill())


async def terminate_all(procs: list[asyncio.subprocess.Process], grace: float = 3.0):
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
