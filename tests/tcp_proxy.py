"""A small TCP forwarder for tests, on an event loop in a thread of its own: what stands between
two parts that a test cuts apart (a control plane and its database), or the one address in front
of several (a load balancer that follows the leader), or a bridge from a network the tests made
to a service on loopback.

Each connection it accepts is joined to one that `upstream()` opens: an async callable returning
(reader, writer), or None to refuse the connection (it is closed at once).
"""

import asyncio
import contextlib
import threading


class TcpProxy:
    def __init__(self, upstream, host: str = "127.0.0.1"):
        self.upstream = upstream
        self.host = host
        self.port = 0  # its own, once listening; kept across cut() and mend()
        self.peers: list[tuple[str, object]] = []  # (the client's address, what upstream() gave) per connection
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._run(self._listen())

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _listen(self):
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._writers.add(writer)
        try:
            opened = await self.upstream()
        except OSError:
            opened = None
        if opened is None:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        up_reader, up_writer = opened
        self.peers.append((writer.get_extra_info("peername")[0], up_writer.get_extra_info("peername")))
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dest: asyncio.StreamWriter):
            try:
                while data := await src.read(1 << 16):
                    dest.write(data)
                    await dest.drain()
            except OSError:
                pass
            finally:
                # Either end gone: so is the other (what a client sees of a server that died).
                dest.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self):
        """Reset every connection through it and refuse new ones, until mend()."""
        async def cut():
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()
            await self._server.wait_closed()

        self._run(cut())

    def mend(self):
        """Accept connections again, on the same port."""
        self._run(self._listen())

    def close(self):
        with contextlib.suppress(Exception):
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
