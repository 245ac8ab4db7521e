"""Commands run in the worker's running containers (`ember container exec`, `ember shell`).

The control plane relays a client's ContainerExec over the worker's stream (server/execs.py):
ExecStart starts the command through the backend (RuntimeBackend.exec_argv: for the container
backend, sandbox.enter joins the container's namespaces, root, cgroups and user namespace; for
the process backend, a child in the container's directory and environment), ExecInput feeds its
stdin or resizes its terminal, and its output goes back as ExecOutput, then its exit. With a
terminal (tty), the command gets a pseudo-terminal's side as stdin, stdout and stderr; without,
three pipes. A container that ends while a command runs ends the command with an error that
says so, sent before the worker reports the container's exit.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import select
import struct
import termios
import typing

from ..proto import api_pb2
from .procs import kill_group

log = logging.getLogger("ember.worker")

CHUNK = 64 << 10  # bytes of output per message at most
# Seconds a command killed by a signal waits for news of its container's end: the kernel kills
# the processes of a container whose init ended a moment before the worker sees that end.
ENDED_GRACE = 1.0


class ExecError(Exception):
    """The command cannot start: its container does not run here (the message says why)."""


class Exec:
    __slots__ = ("container_id", "early", "exec_id", "master", "proc", "stdin_closed")

    def __init__(self, exec_id: str, container_id: str):
        self.exec_id = exec_id
        self.container_id = container_id
        self.proc: asyncio.subprocess.Process | None = None
        self.master: int | None = None  # the terminal's side the worker holds, with tty
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
        if ex.proc is None:
            ex.early.append(inp)
            return
        if inp.terminate:
            kill_group(ex.proc.pid)
            return
        if inp.rows and inp.cols and ex.master is not None:
            _set_size(ex.master, inp.rows, inp.cols)
        if inp.data and not ex.stdin_closed:
            try:
                if ex.master is not None:
                    os.write(ex.master, inp.data)  # a terminal's input is small: typed, or pasted
                else:
                    ex.proc.stdin.write(inp.data)
            except OSError:
                ex.stdin_closed = True  # it stopped reading (or ended): the rest is dropped, as a pipe's
        if inp.eof and not ex.stdin_closed:
            ex.stdin_closed = True
            if ex.master is not None:
                with contextlib.suppress(OSError):
                    os.write(ex.master, b"\x04")  # end of input, as the terminal's own ^D
            else:
                ex.proc.stdin.close()

    def container_ended(self, container_id: str, reason: str):
        """Before its exit is reported: its commands end (killed, if they still run) with an error."""
        self.ended[container_id] = reason
        for ex in self.running.values():
            if ex.container_id == container_id and ex.proc is not None:
                kill_group(ex.proc.pid)
        asyncio.get_running_loop().call_later(60, self.ended.pop, container_id, None)

    def stop_all(self):
        for ex in self.running.values():
            if ex.proc is not None:
                kill_group(ex.proc.pid)

    async def _run(self, ex: Exec, start: api_pb2.ExecStart):
        try:
            code = await self._start_and_wait(ex, start)
            error = ""
            if code < 0:
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
            if ex.proc is not None and ex.proc.returncode is None:
                kill_group(ex.proc.pid)

    async def _start_and_wait(self, ex: Exec, start: api_pb2.ExecStart) -> int:
        if start.container_id in self.ended:
            raise ExecError(f"container {start.container_id} {self.ended[start.container_id]}")
        argv = self.backend.exec_argv(start.container_id, list(start.argv), dict(start.env), start.workdir,
                                      start.tty)
        log.info("exec %s in container %s: %s", ex.exec_id, ex.container_id, " ".join(start.argv)[:200])
        if not start.tty:
            P = asyncio.subprocess.PIPE
            ex.proc = await asyncio.create_subprocess_exec(*argv, stdin=P, stdout=P, stderr=P, start_new_session=True)
            self._started(ex)
            await asyncio.gather(self._pump(ex, ex.proc.stdout, 1), self._pump(ex, ex.proc.stderr, 2))
            return await ex.proc.wait()
        master, slave = os.openpty()
        try:
            _set_size(master, start.rows or 24, start.cols or 80)
            ex.master = master
            ex.proc = await asyncio.create_subprocess_exec(*argv, stdin=slave, stdout=slave, stderr=slave,
                                                           start_new_session=True)
            os.close(slave)
            slave = -1
            self._started(ex)
            await self._pump_terminal(ex, master)
            return await ex.proc.wait()
        finally:
            if slave >= 0:
                os.close(slave)
            ex.master = None
            os.close(master)

    def _started(self, ex: Exec):
        early, ex.early = ex.early, []
        for inp in early:
            self.input(inp)

    async def _pump(self, ex: Exec, reader: asyncio.StreamReader, fd: int):
        while data := await reader.read(CHUNK):
            self.send(api_pb2.ExecOutput(exec_id=ex.exec_id, fd=fd, data=data))

    async def _pump_terminal(self, ex: Exec, master: int):
        """The terminal's output until the command ends (and what it wrote before is read): not
        until every holder of the terminal closes it, as a background job may keep it forever."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(master, readable.set)
        ended = asyncio.ensure_future(ex.proc.wait())
        try:
            while True:
                waiter = asyncio.ensure_future(readable.wait())
                await asyncio.wait([waiter, ended], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                readable.clear()
                if not self._read_terminal(ex, master) or (ended.done() and not _ready(master)):
                    return
        finally:
            loop.remove_reader(master)

    def _read_terminal(self, ex: Exec, master: int) -> bool:
        """Send what the terminal has now; False once it is closed on the command's side."""
        while _ready(master):
            try:
                data = os.read(master, CHUNK)
            except OSError:  # EIO: nothing holds the command's side any more
                return False
            if not data:
                return False
            self.send(api_pb2.ExecOutput(exec_id=ex.exec_id, fd=1, data=data))
        return True


def _ready(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _set_size(fd: int, rows: int, cols: int):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
