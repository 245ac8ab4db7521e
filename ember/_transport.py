"""The frame transport: the hot streams' api.proto messages as length-prefixed frames on a
plain socket (TCP, with TLS where the control plane has TLS; or a unix socket, where the control
plane listens on one), driven by the event loop.

Python gRPC costs about a quarter of a millisecond per message each way here; a frame costs a
header and one write. Each frame is a 5-byte header (the body's length, big-endian, and its
kind) and the body: one serialized message. The first frame sent in a turn of the event loop
goes out at once; the others sent in that turn, together in one write at its end (whatever is
ready is batched), and the reader pauses the socket while too many frames wait to be taken
(back pressure, as gRPC's flow control).

A connection carries one stream, as a gRPC call does: the client's first frame is a
TransportHello (the stream's name and the caller's token), then the requests, then a
TransportStatus saying it sends no more; the server answers with responses and ends with a
TransportStatus (gRPC's status codes). The server's side is server/transport.py; the client's
side is FrameStream below, shaped like a gRPC stream call, so that the code that drives a
stream (stream.py's ReconnectingStream) runs unchanged on either.

Keepalive, as gRPC's: a peer that vanishes without closing its socket (a frozen control plane,
a machine cut off) sends nothing more, and nothing else would tell. So a client that has heard
nothing on a connection for PING_INTERVAL seconds sends a PING frame, which the other side
answers at once with a PONG (both with an empty body, an Empty); if nothing at all comes
within PING_TIMEOUT seconds more, the connection is closed as broken, and its stream goes
elsewhere (the leader) as one that broke. A connection busy with answers sends no pings.
"""

import asyncio
import collections
import dataclasses
import functools
import logging
import os
import select
import socket
import ssl
import struct

import grpc
from google.protobuf.message import DecodeError

from . import config, exception
from ._client.stream import Outbox
from .config import MAX_MESSAGE_BYTES
from .proto import api_pb2

HEADER = struct.Struct(">IB")
MESSAGE, HELLO, STATUS, PING, PONG = 0, 1, 2, 3, 4  # the kinds of frame
PING_INTERVAL = 2.0  # seconds of silence from the peer before a ping
# Seconds more for anything to come before the connection counts as broken (generous: a loaded
# machine's event loop may lag for seconds, and a false alarm breaks the streams on it).
PING_TIMEOUT = 5.0
READ_AHEAD = 256  # frames received but not taken yet before the socket stops being read
RECEIVE_BYTES = 256 * 1024  # a blocking socket's read at most
CODES = {code.value[0]: code for code in grpc.StatusCode}
# Seconds to open a frame connection before using gRPC instead: milliseconds where it can be
# reached; a firewall or load balancer that drops the port must not stall a stream.
CONNECT_TIMEOUT = 1.0
log = logging.getLogger("ember.client")


EMPTY = api_pb2.Empty()  # a PING's and a PONG's body


def encode(kind: int, msg) -> bytes:
    """A message as one frame of this kind: its header and its serialized body."""
    body = msg.SerializeToString()
    return HEADER.pack(len(body), kind) + body


def next_frame(buf: bytearray, start: int, limit: int) -> tuple[int, bytes, int] | None:
    """The frame at buf[start:] as (kind, body, where the next one starts); None if it has not
    all arrived yet; FrameError if its body is over limit bytes."""
    if len(buf) - start < HEADER.size:
        return None
    size, kind = HEADER.unpack_from(buf, start)
    if size > limit:
        raise FrameError(f"a frame of {size} bytes is over the limit of {limit}")
    end = start + HEADER.size + size
    if len(buf) < end:
        return None
    return kind, bytes(buf[start + HEADER.size:end]), end


class Closed(Exception):
    """The connection is gone (the peer closed it, or the network broke)."""


class FrameError(Exception):
    """The peer sent what is not a frame of this protocol: the connection cannot go on."""


class Connection(asyncio.Protocol):
    """One socket's frames: send(kind, message) and `await receive()`."""

    def __init__(self, limit: int = MAX_MESSAGE_BYTES, first_only: bool = False):
        self.limit = limit  # bytes of a frame's body at most
        # A server's connection before its first frame (the hello) proved who it is: what comes
        # after that frame waits unread (its limit is not known yet) until proved().
        self.unproved = first_only
        self.held = False  # the first frame was read while unproved: read no more until proved()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self.deliver = None  # see push()
        self.waiter: asyncio.Future | None = None
        self.lost: Exception | None = None
        self.reading_paused = False
        self.batching = False  # a frame was written in this turn of the loop: the next ones wait for its end
        self.out: list[bytes] = []  # frames sent in this turn of the loop after the first, written at its end
        self.writable = asyncio.Event()
        self.writable.set()
        self.heard = False  # something arrived since the keepalive last looked (see keep_alive)
        self.pinged = False  # a ping went out that nothing has answered yet

    # ---- asyncio.Protocol

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.heard = True
        if not self.out:
            # What arrives starts a turn of this connection's writes: nothing written before is
            # waiting, so the first answer to it goes at once. (A frame written by a timer's
            # callback, such as a commit's, would otherwise hold back the answers to requests read
            # in the same loop iteration until its batch's end: a Dict get's after its put's.)
            self.batching = False
        buf = self.buffer
        buf += data
        start = 0
        while not self.held:
            try:
                frame = next_frame(buf, start, self.limit)
            except FrameError as e:
                self._fail(e)
                return
            if frame is None:
                break
            kind, body, start = frame
            if kind in (PING, PONG) and not self.unproved:  # the keepalive's own, not the stream's
                if kind == PING:
                    self.send(PONG, EMPTY)
                continue
            if self.deliver is not None:
                self.deliver(kind, body)
                if self.lost is not None:
                    return  # what it handled closed the connection
            else:
                self.frames.append((kind, body))
            if self.unproved:
                self.held = True
        if start:
            del buf[:start]
        if self.held and len(buf) > self.limit and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        if len(self.frames) > READ_AHEAD and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        if self.frames:
            self._wake()

    def connection_lost(self, exc):
        if self.lost is None:
            self.lost = Closed(f"the connection closed ({exc})" if exc else "the connection closed")
        self.writable.set()
        self._wake()

    def proved(self, limit: int):
        """The first frame proved who the peer is: read what follows it, frames of up to limit bytes."""
        self.limit, self.unproved, self.held = limit, False, False
        if self.reading_paused and len(self.frames) <= READ_AHEAD:
            self.reading_paused = False
            self.transport.resume_reading()
        self.data_received(b"")

    def push(self, deliver):
        """From now on hand each frame to deliver(kind, body) in the turn that reads it, rather
        than keep it for receive(): no wake of a reader's task for each. receive() then only
        raises how the connection ended."""
        self.deliver = deliver
        while self.frames and self.lost is None:
            deliver(*self.frames.popleft())
        if self.reading_paused and self.lost is None:
            self.reading_paused = False
            self.transport.resume_reading()

    def keep_alive(self, interval: float | None = None, timeout: float | None = None):
        """Ping the peer after interval seconds (PING_INTERVAL) in which nothing came from it, and
        fail the connection (Closed) when nothing answers within timeout (PING_TIMEOUT) more."""
        interval = PING_INTERVAL if interval is None else interval
        timeout = PING_TIMEOUT if timeout is None else timeout
        loop = asyncio.get_running_loop()

        def look():
            if self.lost is not None:
                return
            if self.heard:  # alive: look again after another interval
                self.heard = self.pinged = False
                loop.call_later(interval, look)
            elif not self.pinged:
                self.pinged = True
                self.send(PING, EMPTY)
                loop.call_later(timeout, look)
            else:  # abort, not close: a frozen peer would never take what waits to be written
                self.lost = Closed(f"the peer answered no keepalive ping for {interval + timeout:g} s")
                self.transport.abort()
                self._wake()

        self.heard = False
        loop.call_later(interval, look)

    def pause_writing(self):
        self.writable.clear()

    def resume_writing(self):
        self.writable.set()

    # ---- frames

    async def receive(self) -> tuple[int, bytes]:
        """The next frame (kind, body); Closed or FrameError once there are no more."""
        while not self.frames:
            if self.lost is not None:
                raise self.lost
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        if self.reading_paused and len(self.frames) <= READ_AHEAD // 2 and self.lost is None:
            self.reading_paused = False
            self.transport.resume_reading()
        return self.frames.popleft()

    def send(self, kind: int, msg):
        if self.lost is not None or self.transport.is_closing():
            return  # its reader learns that from receive()
        frame = encode(kind, msg)
        if self.batching:
            self.out.append(frame)
            return
        # The first frame of a turn goes at once (no wait for a lone request or answer); those
        # sent after it in the same turn, together at its end.
        self.transport.write(frame)
        self.batching = True
        asyncio.get_running_loop().call_soon(self._flush)

    async def drained(self):
        """Wait while the socket's buffer is full (the peer reads slower than this side sends)."""
        await self.writable.wait()

    def close(self):
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _flush(self):
        self.batching = False
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def _fail(self, error: Exception):
        self.lost = error
        self.transport.close()
        self._wake()

    def _wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def status_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error gRPC would raise: what handles gRPC's (translate, unavailable) handles it too."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a control plane serves frames: a TCP host and port, or a unix socket's path; with
    TLS (checked by tls for server_name, or else host) unless tls is None. A unix socket is
    plaintext, as a unix socket's gRPC is (it proves nobody's identity: the stream's hello carries
    the token all the same), except one that relays to a TLS port (a container's: worker/frames.py)."""
    host: str = ""
    port: int = 0
    tls: ssl.SSLContext | None = None
    unix_path: str = ""
    server_name: str = ""

    def __str__(self):
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"

    @property
    def checked_name(self) -> str | None:
        return (self.server_name or self.host) if self.tls is not None else None

    async def connect(self) -> Connection:
        """A connection driven by the running event loop."""
        loop = asyncio.get_running_loop()
        if self.unix_path:
            _, conn = await loop.create_unix_connection(Connection, self.unix_path, ssl=self.tls,
                                                        server_hostname=self.checked_name)
        else:
            _, conn = await loop.create_connection(Connection, self.host, self.port, ssl=self.tls,
                                                   server_hostname=self.checked_name)
        return conn

    def connect_blocking(self, timeout: float) -> socket.socket:
        """A blocking socket (for BlockingStream), connected within timeout seconds; OSError if not."""
        if self.unix_path:
            sock = socket.socket(socket.AF_UNIX)
            address = self.unix_path
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's: a request goes at once
            address = (self.host, self.port)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.checked_name)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock


class FrameStream:
    """A bidi stream over a frame connection, used as gRPC's stream call is: iterate over it for
    the responses; it raises grpc.aio.AioRpcError as gRPC would (UNAVAILABLE when the connection
    breaks). `connect()` gives the connection, or None where there is none to have: then the
    stream is `fallback(requests)`, the same stream on gRPC."""

    def __init__(self, connect, method: str, token: tuple[str, str] | None, requests, response_type, fallback):
        self.connect = connect
        self.hello = hello(method, token)
        self.requests = requests
        self.response_type = response_type
        self.fallback = fallback
        self.conn: Connection | None = None
        self.grpc_call = None

    def cancel(self):
        if self.grpc_call is not None:
            self.grpc_call.cancel()
        if self.conn is not None:
            self.conn.close()

    def __aiter__(self):
        return self._responses()

    async def _responses(self):
        self.conn = conn = await self.connect()
        if conn is None:
            self.grpc_call = self.fallback(self.requests)
            async for msg in self.grpc_call:
                yield msg
            return
        conn.send(HELLO, self.hello)
        conn.keep_alive()
        pump = asyncio.get_running_loop().create_task(self._send_requests(conn))
        try:
            while True:
                try:
                    kind, body = await conn.receive()
                except (Closed, FrameError) as e:
                    raise status_error(grpc.StatusCode.UNAVAILABLE, f"the frame stream broke: {e}") from None
                if kind == MESSAGE:
                    yield _parse(self.response_type, body)
                elif kind == STATUS:
                    _raise_error_of(body)
                    return
        finally:
            pump.cancel()
            conn.close()

    async def _send_requests(self, conn: Connection):
        if isinstance(self.requests, Outbox):  # what is put there from now on goes out at once
            self.requests.direct(functools.partial(_send_now, conn))
        async for msg in self.requests:
            conn.send(MESSAGE, msg)
            await conn.drained()
        conn.send(STATUS, api_pb2.TransportStatus())


class BlockingStream:
    """A stream on a blocking socket, driven from one thread at a time: call() writes a request
    and reads until its answer, in the caller's thread (no event loop between it and the socket,
    as redis-py has none), for a stream whose answers come one for each request, in order (the
    object stream's). Its frames are FrameStream's: hello, token and all, the server cannot tell
    the two apart. After an error other than an answer, the stream is broken: close it."""

    def __init__(self, sock: socket.socket, method: str, token: tuple[str, str] | None, response_type):
        self.sock = sock
        self.hello = encode(HELLO, hello(method, token))  # sent with the first request
        self.response_type = response_type
        # Answers are read into this buffer, allocated once: a fresh 256 KiB bytes object for
        # each recv() cost more than the rest of the client's side of an operation (glibc maps
        # and unmaps a block that large: page faults, and a TLB flush on every core the process
        # has threads on). buffer[start:end] has arrived and is not taken yet.
        self.buffer = bytearray(RECEIVE_BYTES)
        self.start = self.end = 0
        self.pongs_due = 0  # pings sent while waiting that no PONG has answered yet
        self._wait_at_most(PING_INTERVAL)
        self.poller = select.poll()  # (for intact: a poll() costs a sixth of a select() here)
        self.poller.register(sock, select.POLLIN)

    def call(self, request):
        """Send request; its answer. Closed (or FrameError) if the connection breaks first, or
        the AioRpcError gRPC would raise if the server ends the stream with an error."""
        data = encode(MESSAGE, request)
        if self.hello is not None:
            data, self.hello = self.hello + data, None
        self._send(data)
        kind, body = self._receive()
        if self.pongs_due:
            self._settle()
        if kind == MESSAGE:
            return _parse(self.response_type, body)
        if kind == STATUS:
            _raise_error_of(body)
            raise Closed("the control plane ended the stream")
        raise FrameError(f"a frame of kind {kind} in the middle of a stream")

    def intact(self) -> bool:
        """Whether the connection still looks open between calls: nothing may arrive then, so
        whatever has (the peer's close, or its end of the stream) means it is not."""
        if self.pongs_due or self.end > self.start or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return False
        try:
            return not self.poller.poll(0)
        except (OSError, ValueError):  # closed already
            return False

    def close(self):
        self.sock.close()

    __del__ = close  # a thread's stream closes as the thread ends (its threading.local goes)

    def _receive(self) -> tuple[int, bytes]:
        """The next frame of the stream (PONGs are taken in passing)."""
        while True:
            kind, body = self._frame()
            if kind != PONG:
                return kind, body
            self.pongs_due -= 1

    def _frame(self) -> tuple[int, bytes]:
        """The next frame. While none comes, the keepalive: a PING after PING_INTERVAL seconds
        of silence, and Closed if nothing at all comes within PING_TIMEOUT more (a frozen
        control plane never answers)."""
        pinged = False
        while True:
            size = HEADER.size
            if self.end - self.start >= HEADER.size:
                body_size, kind = HEADER.unpack_from(self.buffer, self.start)
                if body_size > MAX_MESSAGE_BYTES:
                    raise FrameError(f"a frame of {body_size} bytes is over the limit of {MAX_MESSAGE_BYTES}")
                size += body_size
                if self.end - self.start >= size:
                    body = bytes(memoryview(self.buffer)[self.start + HEADER.size:self.start + size])
                    self.start += size
                    if self.start == self.end:
                        self.start = self.end = 0
                        if len(self.buffer) > RECEIVE_BYTES:  # a large answer's room is given back
                            self.buffer = bytearray(RECEIVE_BYTES)
                    return kind, body
            self._make_room(size)
            try:
                got = self.sock.recv_into(memoryview(self.buffer)[self.end:])
            except (TimeoutError, BlockingIOError):  # (TLS's timeout, and the kernel's: _wait_at_most)
                if pinged:
                    self._wait_at_most(PING_INTERVAL)
                    raise Closed(f"the control plane answered no keepalive ping for "
                                 f"{PING_INTERVAL + PING_TIMEOUT:g} s") from None
                self._send(encode(PING, EMPTY))
                self.pongs_due += 1
                self._wait_at_most(PING_TIMEOUT)
                pinged = True
                continue
            except OSError as e:
                raise Closed(f"the connection broke ({e})") from None
            if not got:
                raise Closed("the connection closed")
            self.end += got
            if pinged:  # it is alive: wait as long as it takes again
                self._wait_at_most(PING_INTERVAL)
                pinged = False

    def _wait_at_most(self, seconds: float):
        """How long a read waits for data before the keepalive takes a turn. On a plain socket,
        the kernel's timeout (SO_RCVTIMEO): Python's own would poll() before every read and
        write; TLS retries the read through the kernel's, so there it is Python's."""
        if isinstance(self.sock, ssl.SSLSocket):
            self.sock.settimeout(seconds)
        else:
            whole = int(seconds)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 struct.pack("ll", whole, int((seconds - whole) * 1_000_000)))

    def _settle(self):
        """Take the PONGs still due after an answer (a ping crossed it on the way), so that the
        stream is quiet between calls (intact); one that does not come marks the stream broken."""
        try:
            while self.pongs_due > 0:
                kind, _ = self._frame()
                if kind != PONG:
                    raise FrameError(f"a frame of kind {kind} between calls")
                self.pongs_due -= 1
        except (Closed, FrameError):
            self.pongs_due = -1  # not intact: the next call opens another connection

    def _send(self, data: bytes):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Closed(f"the connection broke ({e})") from None

    def _make_room(self, size: int):
        """Room after buffer[start:end] for a frame of size bytes (header included) to arrive whole."""
        if self.start + size <= len(self.buffer):
            return
        pending = self.buffer[self.start:self.end]
        if size > len(self.buffer):
            self.buffer = bytearray(size)
        self.buffer[:len(pending)] = pending
        self.start, self.end = 0, len(pending)


async def dial(address: str, url: str, quiet: bool = False) -> Connection | None:
    """A frame connection to address ("HOST:PORT", or "unix:PATH") of the control plane whose
    gRPC address is url (see endpoint); None, logged unless quiet, where it cannot be reached so
    (its caller then uses gRPC)."""
    try:
        where = endpoint(address, url)
    except (OSError, ValueError, exception.Error) as e:  # (a CA that ssl cannot load: an SSLError)
        log.warning("the frame transport of %s cannot be used at %s (%s): using gRPC", url, address, e)
        return None
    return await open_connection(where, url, quiet)


def address_of(url: str, answer: api_pb2.TransportEndpointResponse) -> str | None:
    """Where the control plane whose gRPC address is url serves frames, by its TransportEndpoint
    answer: "HOST:PORT" (on the host url names) or "unix:PATH"; None: nowhere (gRPC only).
    ValueError for a url without a host."""
    if url.startswith("unix:"):
        return f"unix:{answer.unix_path}" if answer.unix_path else None
    if not answer.port:
        return None
    host = config.host_and_port(url)[0]
    return f"[{host}]:{answer.port}" if ":" in host else f"{host}:{answer.port}"


def endpoint(address: str, url: str) -> Endpoint:
    """Where address ("HOST:PORT", or "unix:PATH") is, with TLS where url's gRPC has it (the
    certificate checked for the name gRPC checks): a TLS URL, or a unix socket relayed to a TLS
    port (EMBER_TLS_SERVER_NAME names the certificate's host, as config.open_channel has it)."""
    server_name = os.environ.get("EMBER_TLS_SERVER_NAME") or ""
    unix = url.startswith("unix:")
    tls = tls_context(config.ca_pem()) if config.is_tls(url) or (unix and server_name) else None
    name = server_name or ("" if unix else config.host_and_port(url)[0])
    if address.startswith("unix:"):
        return Endpoint(unix_path=address.removeprefix("unix:"), tls=tls, server_name=name)
    host, port = config.host_and_port(address)
    return Endpoint(host=host, port=port, tls=tls, server_name=name)


async def open_connection(where: Endpoint, url: str, quiet: bool = False) -> Connection | None:
    """A connection to where, of the control plane at url; None, logged unless quiet, if it cannot
    be reached within CONNECT_TIMEOUT (its caller then uses gRPC)."""
    try:
        return await asyncio.wait_for(where.connect(), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as e:  # (ssl.SSLError is an OSError)
        if not quiet:
            log.warning("the frame transport of %s cannot be reached at %s (%s): using gRPC", url, where, e)
        return None


async def dial_from_container(url: str, several: bool, stub) -> Connection | None:
    """A container's frame connection to the control plane at url: where its worker said
    (config.container_frames), with one control plane; None (gRPC) otherwise. A TCP port that
    refuses is asked again of the control plane (stub's TransportEndpoint, which waits for it to
    be back): one that restarted listens on another. (A unix path stays: it is a relay, or the
    same path beside gRPC's socket.)"""
    given = config.container_frames()
    if config.transport() != "frames" or not given or several:
        return None
    # A TCP port that refuses is asked again below: no word of it in the container's log yet
    # (its stderr is its function's log) unless the port it is told fails as well.
    conn = await dial(given, url, quiet=not given.startswith("unix:"))
    if conn is not None or given.startswith("unix:"):
        return conn
    try:
        endpoint = await stub.TransportEndpoint(api_pb2.Empty(), wait_for_ready=True)
    except grpc.aio.AioRpcError as e:
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            raise  # (stream.py's unavailable) its stream tries again
        return None
    host = given.rpartition(":")[0]
    if not endpoint.port:
        return None
    # Answered once the control plane is back: on another port, or on this one (up again now).
    os.environ["EMBER_FRAMES"] = given = f"{host}:{endpoint.port}"  # for its code's client too
    return await dial(given, url)


@functools.lru_cache(maxsize=8)
def tls_context(ca_pem: bytes | None) -> ssl.SSLContext:
    """TLS for frame connections that trust ca_pem (None: the system's CAs), made once: loading
    the certificates costs a millisecond or more, on every reconnect otherwise."""
    return ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace") if ca_pem is not None else None)


def hello(method: str, token: tuple[str, str] | None) -> api_pb2.TransportHello:
    """A stream's first frame: which stream, and the caller's token."""
    return api_pb2.TransportHello(method=method, token_id=token[0] if token else "",
                                  token_secret=token[1] if token else "")


def _raise_error_of(status_body: bytes):
    """The AioRpcError gRPC would raise for a stream that ended with this TransportStatus; none
    for one that ended well."""
    status = _parse(api_pb2.TransportStatus, status_body)
    if status.code:
        raise status_error(CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.details)


def _send_now(conn: Connection, msg) -> bool:
    """A request (None: the end of them) written in the caller's turn; False while the socket's
    buffer is full (then it waits in the Outbox, and the pump sends it as the socket drains)."""
    if not conn.writable.is_set():
        return False
    if msg is None:
        conn.send(STATUS, api_pb2.TransportStatus())
    else:
        conn.send(MESSAGE, msg)
    return True


def _parse(message_type, body: bytes):
    """A message from the control plane; what does not parse ends the stream as gRPC would."""
    try:
        return message_type.FromString(body)
    except DecodeError:
        raise status_error(grpc.StatusCode.INTERNAL, f"the control plane sent a frame that is not a "
                           f"{message_type.DESCRIPTOR.name}") from None
