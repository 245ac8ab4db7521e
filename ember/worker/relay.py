"""The relay: a unix socket file bound into containers that forwards bytes to the control
plane's TCP address (or, for a container's frame transport, wherever that is: frames.py). It is
a container's only way to the control plane, whatever its network (its own calls carry its own
credential; TLS, if used, runs end to end through it).

Each connection is pumped by two threads in blocking recv/sendall, not by the worker's event
loop: a byte that arrives wakes its thread at once, so the relay adds only the cost of the two
extra socket hops to a container's round trip (the hot path of every call).
"""

import asyncio
import contextlib
import pathlib
import socket
import threading
import typing

from ..config import host_and_port

CHUNK = 256 * 1024


class Relay:
    def __init__(self, path: pathlib.Path, target: typing.Callable[[], str | None]):
        """Relay path's connections to target(): a control plane's URL or "HOST:PORT", or
        "unix:PATH", asked at each connection (None: nowhere now, the connection is closed)."""
        self.path = path
        self.target = target
        self.listener: socket.socket | None = None

    async def start(self):
        self.path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(128)
        threading.Thread(target=self._accept, name="ember-relay", daemon=True).start()
        await asyncio.sleep(0)

    def _accept(self):
        while True:
            try:
                inner, _ = self.listener.accept()
            except OSError:  # closed: the worker stops
                return
            threading.Thread(target=self._connect, args=(inner,), name="ember-relay-conn", daemon=True).start()

    def _connect(self, inner: socket.socket):
        try:
            outer = _open(self.target())
        except (OSError, ValueError):
            inner.close()
            return
        down = threading.Thread(target=_pump, args=(outer, inner), name="ember-relay-down", daemon=True)
        down.start()
        _pump(inner, outer)
        down.join()
        inner.close()
        outer.close()

    def close(self):
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()


def _open(target: str | None) -> socket.socket:
    if target is None:
        raise OSError("no address to relay to")
    if target.startswith("unix:"):
        outer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            outer.connect(target.removeprefix("unix:").removeprefix("//"))
        except OSError:
            outer.close()
            raise
        return outer
    outer = socket.create_connection(host_and_port(target))
    outer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return outer


def _pump(src: socket.socket, dst: socket.socket):
    """Copy src to dst until src ends; then end dst's sending side."""
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            src.shutdown(socket.SHUT_RD)
