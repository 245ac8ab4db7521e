"""The worker's side of a container's exec agent (sandbox.serve_execs: the container's init).

Each container starts with one end of a SOCK_SEQPACKET pair; the worker keeps the other here
and asks the init to fork commands, passing their stdio along. That skips a helper process on
the host per command (an interpreter's start, joining namespaces and cgroups): the command is
forked from a process already inside. What the agent answers is read as untrusted: it runs in
the container, so only exits of commands this worker asked for, by their ids, count.
"""

import array
import asyncio
import errno
import json
import logging
import os
import signal
import socket

from .sandbox import MAX_REQUEST

log = logging.getLogger("ember.worker")
SO_SNDBUFFORCE = 32  # Linux's; not in Python's socket module


class AgentGone(Exception):
    """The container's init no longer serves commands: the container ended (or is ending)."""


class Refused(Exception):
    """This command cannot go to the container's init (the message says why); others can."""


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(the worker's end, the container's end: inheritable, for its sandbox to pass on)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.set_inheritable(True)
    # A message may be as large as the sender's buffer: room for the largest request (as root,
    # SO_SNDBUFFORCE passes the system's maximum; else the request's size says what fits).
    for option in (SO_SNDBUFFORCE, socket.SO_SNDBUF):
        try:
            ours.setsockopt(socket.SOL_SOCKET, option, MAX_REQUEST + (64 << 10))
            break
        except OSError:
            continue
    return ours, theirs


class Agent:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.setblocking(False)
        self._next = 0
        self._exits: dict[int, asyncio.Future] = {}  # request id -> its command's wait status
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    @property
    def alive(self) -> bool:
        return self.sock.fileno() >= 0

    def start(self, argv: list[str], env: dict[str, str], cwd: str, tty: bool,
              stdio: tuple[int, int, int], port: int = 0) -> "Command":
        """Fork argv in the container with these descriptors as its stdin, stdout and stderr
        (with a port, no command: the forked init relays them to that port, sandbox.relay_port)."""
        if not self.alive:
            raise AgentGone()
        self._next += 1
        n = self._next
        data = json.dumps({"id": n, "argv": argv, "env": env, "cwd": cwd, "tty": tty, "port": port}).encode()
        if len(data) > MAX_REQUEST:
            raise Refused(f"the command and its environment take {len(data)} bytes, more than the "
                          f"{MAX_REQUEST} an exec may have: pass less")
        try:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", stdio))])
        except BlockingIOError:
            # A full socket: the init has not read the requests before (it is stuck, or frozen).
            raise Refused("the container's init takes no more commands now (those before are still unread): "
                          "try again") from None
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                raise Refused(f"the command and its environment take {len(data)} bytes, more than this worker's "
                              f"exec socket carries ({e.strerror}): pass less") from None
            self.close()
            raise AgentGone() from None
        self._exits[n] = self._loop.create_future()
        return Command(self, n)

    def kill(self, n: int):
        if self.alive:
            try:
                self.sock.send(json.dumps({"kill": n}).encode())
            except BlockingIOError:  # the init has requests before it unread: again in a moment
                self._loop.call_later(0.1, self.kill, n)
            except OSError:
                pass  # gone: so is the container, and what ran in it

    def _readable(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            try:
                msg = json.loads(data)
                n, status = msg["exited"], msg["status"]
                if not (isinstance(n, int) and isinstance(status, int)):
                    raise TypeError("not numbers")
            except (ValueError, KeyError, TypeError) as e:
                log.warning("a container's exec agent sent what it may not: %r (%s)", data[:200], e)
                continue
            fut = self._exits.pop(n, None)
            if fut is not None and not fut.done():
                fut.set_result(status)

    def close(self):
        """The container ended: its commands with it, as killed (the kernel's SIGKILL)."""
        if self.alive:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
        for fut in self._exits.values():
            if not fut.done():
                fut.set_exception(AgentGone())
        self._exits.clear()


class Command:
    """A command the agent forked: wait() for its exit code (negative: killed by that signal)."""

    def __init__(self, agent: Agent, n: int):
        self.agent = agent
        self.n = n
        self._exit = agent._exits[n]

    async def wait(self) -> int:
        try:
            status = await asyncio.shield(self._exit)
        except AgentGone:
            return -signal.SIGKILL  # its container's init ended, and the kernel killed what ran in it
        try:
            return os.waitstatus_to_exitcode(status)
        except ValueError:  # not a wait status: the agent is not to be believed
            return -signal.SIGKILL

    def kill(self):
        """Its session, with what it left running (SIGKILL)."""
        self.agent.kill(self.n)

