"""Commands run in the worker's running containers (`ember container exec`, `ember shell`).

The control plane relays a client's ContainerExec over the worker's stream (server/execs.py):
ExecStart starts the command through the backend (RuntimeBackend.exec_start: for the container
backend, the container's init forks it, already inside the container (agent.py); for the
process backend, the worker's child in the container's directory and environment), ExecInput feeds its
stdin or resizes its terminal, and its output goes back as ExecOutput, then its exit. With a
terminal (tty), the command gets a pseudo-terminal's side as stdin, stdout and stderr; without,
three pipes. A container that ends while a command runs ends the command with an error that
says so, sent before the worker reports the container's exit.
"""

import asyncio
import fcntl
import logging
import os
import select
import signal
import struct
import termios
import typing

from ..proto import api_pb2

log = logging.getLogger("ember.worker")

CHUNK = 64 << 10  # bytes of output per message at most
# Seconds a command killed by SIGKILL waits for news of its container's end: the kernel kills
# the processes of a container whose init ended a moment before the worker sees that end.
ENDED_GRACE = 1.0
DRAIN = 0.5  # seconds to read a command's output after it exited, while something else holds it open


class ExecError(Exception):
    """The command cannot start: its container does not run here (the message says why)."""


class Exec:
    __slots__ = ("command", "container_id", "early", "exec_id", "master", "stdin", "stdin_closed")

    def __init__(self, exec_id: str, container_id: str):
        self.exec_id = exec_id
        self.container_id = container_id
        self.command = None  # what the backend started: wait() for its exit code, kill() its session
        self.master: int | None = None  # the terminal's side the worker holds, with tty
        self.stdin: asyncio.WriteTransport | None = None  # to the command's stdin, once it started
        self.stdin_closed = False
        self.early: list[api_pb2.ExecInput] = []  # what came before the command started


class Execs:
    def __init__(self, backend, send: typing.Callable[[api_pb2.ExecOutput], None],
                 container_task: typing.Callable[[str], asyncio.Task | None]):
        self.backend = backend
        self.send = send
        self.container_task = container_task  # the task that runs a container, while it runs
        self.running: dict[str, Exec] = {}
        self.ended: dict[str, str] = {}  # container id -> how it ended, for the commands it cut short
        self.started: set[str] = set()  # the containers started here that run (the backend said so)
        self.starting: dict[str, asyncio.Future] = {}  # container id -> done once it started
        self.tasks: set[asyncio.Task] = set()

    def start(self, start: api_pb2.ExecStart):
        ex = Exec(start.exec_id, start.container_id)
        self.running[ex.exec_id] = ex
        task = asyncio.create_task(self._run(ex, start))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def input(self, inp: api_pb2.ExecInput):
        ex = self.running.get(inp.exec_id)
        if ex is None:
            return
        if ex.stdin is None:
            ex.early.append(inp)
            return
        if inp.terminate:
            ex.command.kill()
            return
        if inp.rows and inp.cols and ex.master is not None:
            _set_size(ex.master, inp.rows, inp.cols)
        if inp.data and not ex.stdin_closed:
            ex.stdin.write(inp.data)  # (dropped once the command closed its side, as a pipe's)
        if inp.eof and not ex.stdin_closed:
            ex.stdin_closed = True
            if ex.master is not None:
                ex.stdin.write(b"\x04")  # end of input, as the terminal's own ^D
            else:
                ex.stdin.close()

    def container_started(self, container_id: str):
        self.started.add(container_id)
        waiter = self.starting.pop(container_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def until_started(self, container_id: str):
        """A sandbox's execs (and snapshots) come right behind its StartContainer
        (server/sandboxes.py): they wait here for its container to start (not for Ember's runtime
        in it, which they do not need), or to fail to."""
        task = self.container_task(container_id)
        if task is None or container_id in self.started:
            return
        waiter = self.starting.setdefault(container_id, asyncio.get_running_loop().create_future())
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)

    def container_ended(self, container_id: str, reason: str):
        """Before its exit is reported: its commands end (killed, if they still run) with an error."""
        self.ended[container_id] = reason
        self.started.discard(container_id)
        waiter = self.starting.pop(container_id, None)
        if waiter is not None:
            waiter.cancel()
        for ex in self.running.values():
            if ex.container_id == container_id and ex.command is not None:
                ex.command.kill()
        asyncio.get_running_loop().call_later(60, self.ended.pop, container_id, None)

    def stop_all(self):
        for ex in self.running.values():
            if ex.command is not None:
                ex.command.kill()

    async def _run(self, ex: Exec, start: api_pb2.ExecStart):
        try:
            code = await self._start_and_wait(ex, start)
            error = ""
            if code == -signal.SIGKILL:  # as the kernel kills what runs in a container whose init ended
                task = self.container_task(ex.container_id)
                if task is not None:
                    await asyncio.wait([task], timeout=ENDED_GRACE)
                if ex.container_id in self.ended or (task is not None and task.done()):
                    error = (f"container {ex.container_id} {self.ended.get(ex.container_id, 'ended')} while "
                             f"{start.argv[0]} ran in it")
            self.send(api_pb2.ExecOutput(exec_id=ex.exec_id, exited=True, exit_code=code, error=error))
        except ExecError as e:
            self.send(api_pb2.ExecOutput(exec_id=ex.exec_id, exited=True, error=str(e)))
        except Exception as e:
            log.exception("exec %s in container %s failed", ex.exec_id, ex.container_id)
            self.send(api_pb2.ExecOutput(exec_id=ex.exec_id, exited=True, error=f"the worker failed to run it: {e!r}"))
        finally:
            self.running.pop(ex.exec_id, None)
            if ex.command is not None:
                # What it left running goes with it (on the process backend it would outlive the
                # container on the worker's machine; on the container backend its command has a
                # session of its own, and what it leaves ends with the container).
                ex.command.kill()

    async def _start_and_wait(self, ex: Exec, start: api_pb2.ExecStart) -> int:
        """Start the command and wait for its end, sending what it prints meanwhile.

        Its stdio are descriptors of the worker's own (pipes, or a terminal), not asyncio's
        subprocess pipes: the wait for those ends only when every holder closes them, and a job
        the command leaves in the background may hold them for ever."""
        await self.until_started(start.container_id)
        if start.container_id in self.ended:
            raise ExecError(f"container {start.container_id} {self.ended[start.container_id]}")
        log.info("exec %s in container %s: %s", ex.exec_id, ex.container_id, " ".join(start.argv)[:200])
        ours: list[int] = []  # the worker's ends: what it reads, and what it writes to (stdin)
        theirs: list[int] = []
        try:
            if start.tty:
                master, slave = os.openpty()
                ours += [master]
                theirs += [slave]
                _set_size(master, start.rows or 24, start.cols or 80)
                outputs, stdin_fd, child = [(master, 1)], os.dup(master), (slave, slave, slave)
                ours.append(stdin_fd)
                ex.master = master
            else:
                (r0, w0), (r1, w1), (r2, w2) = os.pipe(), os.pipe(), os.pipe()
                ours += [w0, r1, r2]
                theirs += [r0, w1, w2]
                outputs, stdin_fd, child = [(r1, 1), (r2, 2)], w0, (r0, w1, w2)
            ex.command = await self.backend.exec_start(start.container_id, list(start.argv), dict(start.env),
                                                       start.workdir, start.tty, child, start.port)
            for fd in theirs:
                os.close(fd)
            theirs.clear()
            loop = asyncio.get_running_loop()
            # A transport of its own buffers stdin while the command does not read it.
            ex.stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, open(stdin_fd, "wb", buffering=0))
            ours.remove(stdin_fd)  # the transport's now
            self._started(ex)
            ended = asyncio.ensure_future(ex.command.wait())
            await asyncio.gather(*(self._pump(ex, fd, n, ended) for fd, n in outputs))
            return await ended
        finally:
            ex.master = None
            if ex.stdin is not None:
                ex.stdin.close()
            for fd in ours + theirs:
                os.close(fd)

    def _started(self, ex: Exec):
        early, ex.early = ex.early, []
        for inp in early:
            self.input(inp)

    async def _pump(self, ex: Exec, fd: int, number: int, ended: asyncio.Future):
        """What the command prints on fd (1 or 2: `number`), until its side is closed, or once the
        command ended, until nothing more is there (for DRAIN seconds at most)."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        deadline = None
        try:
            while True:
                waiter = asyncio.ensure_future(readable.wait())
                await asyncio.wait([waiter, ended], return_when=asyncio.FIRST_COMPLETED,
                                   timeout=None if deadline is None else max(0.0, deadline - loop.time()))
                waiter.cancel()
                readable.clear()
                if not self._read(ex, fd, number):
                    return
                if ended.done():
                    deadline = deadline or loop.time() + DRAIN
                    if not _ready(fd) or loop.time() >= deadline:
                        return
        finally:
            loop.remove_reader(fd)

    def _read(self, ex: Exec, fd: int, number: int) -> bool:
        """Send what fd has now; False once it is closed on the command's side."""
        while _ready(fd):
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                return True
            except OSError:  # a terminal's EIO: nothing holds the command's side any more
                return False
            if not data:
                return False
            self.send(api_pb2.ExecOutput(exec_id=ex.exec_id, fd=number, data=data))
        return True


def _ready(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _set_size(fd: int, rows: int, cols: int):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
