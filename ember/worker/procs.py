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


def session_usage(sid: int) -> tuple[float, int]:
    """The CPU time (user and system) used by the live processes of a session, and by the
    children they waited for, and the resident memory of the live ones in bytes: a container's
    process tree, as /proc tells it."""
    ticks = pages = 0
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command name in parentheses (which may hold anything): state, ppid, pgrp,
            # session, ... utime (12th), stime, cutime, cstime, in clock ticks; rss (22nd), in pages.
            fields = stat.read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue  # it ended meanwhile
        if len(fields) > 21 and int(fields[3]) == sid:
            ticks += sum(int(f) for f in fields[11:15])
            pages += int(fields[21])
    return ticks / os.sysconf("SC_CLK_TCK"), pages * os.sysconf("SC_PAGE_SIZE")


def kill_group(pgid: int):
    """SIGKILL a process group: a container's process and everything it started."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_session(sid: int):
    """SIGKILL every process of a session: a command run in a container, and what it started,
    the jobs a shell put in process groups of their own too."""
    kill_group(sid)
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rpartition(b")")[2].split()
            if len(fields) > 3 and int(fields[3]) == sid:
                os.kill(int(stat.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue  # it ended meanwhile


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
