"""The control plane's side of the frame transport (ember/_transport.py): the hot streams of the
client API (CallStream, ObjectStream) and the container API (ContainerConnect), served from the
same handlers as on gRPC, with the same authentication.

A connection's first frame says which stream it is and carries the caller's token; the token
is checked once, by the same code as gRPC's (api.py's authenticated: the service's prove), and
the stream then runs the very handler gRPC runs, with the principal that check proved. What a
handler's end means (a revoked token, a full disk, a lost lease) reaches the client as the
same status code gRPC would give. Only the leader listens (main.py starts this once it leads,
and stops it with gRPC): a standby has no frame endpoint, so clients ask it over gRPC first and
are sent to the leader there. A control plane on a unix socket (the embedded local cluster's)
serves frames on a unix socket beside it (start_unix): the token is checked there all the same,
since being able to open a socket on this machine proves nobody's identity.
"""

import asyncio
import contextlib
import logging
import os
import pathlib
import ssl
import stat

import grpc
from google.protobuf.message import DecodeError, Message

from .. import exception
from .._transport import HELLO, MESSAGE, STATUS, Closed, Connection, FrameError
from ..config import MAX_MESSAGE_BYTES
from ..proto import api_pb2
from .api import STREAM_ENDINGS, ClientService, ContainerService, ending
from .auth import Forbidden, Unauthenticated
from .tls import ServerTLS
from .validate import Invalid

HELLO_TIMEOUT = 10.0  # seconds for a new connection to say who it is
HELLO_LIMIT = 64 * 1024  # bytes of a frame before the connection has proved who it is
UNIX_PATH_MAX = 107  # bytes of a unix socket's path at most (sun_path, less its terminating NUL)
# The streams served here, by their RPC's name: the service that serves it (the FrameServer's
# argument of that name) and the type of their requests. (RPC names are unique across services.)
STREAMS = {"CallStream": ("clients", api_pb2.CallRequest), "ObjectStream": ("clients", api_pb2.ObjectOp),
           "MapStream": ("clients", api_pb2.MapRequest), "ContainerConnect": ("containers", api_pb2.ContainerMessage)}
log = logging.getLogger("ember.server")


def server_context(server_tls: ServerTLS) -> ssl.SSLContext:
    """TLS with gRPC's certificate and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_tls.cert_file, server_tls.key_file)
    return ctx


class FrameServer:
    def __init__(self, clients: ClientService, containers: ContainerService):
        self.services = {"clients": clients, "containers": containers}
        self.server: asyncio.Server | None = None
        self.unix_path: str | None = None  # the unix socket it listens on, if it does (removed at stop)
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, server_tls: ServerTLS | None) -> int:
        """Listen on host and port (0: any free one); the port."""
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(self._connection, host.strip("[]") or None, port,
                                                   ssl=server_context(server_tls) if server_tls else None)
        except OSError as e:
            raise exception.InvalidError(f"the frame transport cannot listen on {host}:{port} ({e.strerror}): "
                                         "pass another --frames-port, or 0 for any free one") from None
        return self.server.sockets[0].getsockname()[1]

    async def start_unix(self, grpc_path: str) -> str:
        """Listen on a unix socket beside gRPC's at grpc_path, with its permissions; its path
        ("" where that path would be too long for a unix socket: then clients use gRPC)."""
        path = grpc_path + ".frames"
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            log.warning("no frame transport beside %s: the path %s is too long for a unix socket (a shorter "
                        "--address path gives it one); clients use gRPC", grpc_path, path)
            return ""
        pathlib.Path(path).unlink(missing_ok=True)  # a stale one, left by a control plane that was killed
        try:
            self.server = await asyncio.get_running_loop().create_unix_server(self._connection, path)
            os.chmod(path, stat.S_IMODE(os.stat(grpc_path).st_mode))  # whoever may reach gRPC's, and no one else
        except OSError as e:
            raise exception.InvalidError(f"the frame transport cannot listen on {path} ({e.strerror}): pass "
                                         "another --address") from None
        self.unix_path = path
        return path

    async def stop(self):
        """Close the listener and every connection: their clients reconnect (to the leader)."""
        if self.server is not None:
            self.server.close()
        if self.unix_path is not None:
            pathlib.Path(self.unix_path).unlink(missing_ok=True)
        for conn in list(self.connections):
            conn.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _connection(self) -> Connection:
        conn = Connection(limit=HELLO_LIMIT, first_only=True)  # no large frames from whoever has not proved who it is
        self.connections.add(conn)
        task = asyncio.get_running_loop().create_task(self._serve(conn))
        self.tasks.add(task)
        task.add_done_callback(lambda _: (self.tasks.discard(task), self.connections.discard(conn)))
        return conn

    async def _serve(self, conn: Connection):
        try:
            code, details = await self._stream(conn)
        except (Closed, TimeoutError):
            conn.close()  # the client went away (or never spoke): nobody to tell
            return
        except FrameError as e:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, f"not a frame of Ember's transport: {e}"
        except Invalid as e:  # as gRPC's Refusals answers it
            code, details = grpc.StatusCode.INVALID_ARGUMENT, str(e)
        except Exception:
            log.exception("a frame stream failed")
            code, details = grpc.StatusCode.INTERNAL, "the control plane failed on this stream (see its log)"
        conn.send(STATUS, api_pb2.TransportStatus(code=code.value[0], details=details))
        conn.close()

    async def _stream(self, conn: Connection) -> tuple[grpc.StatusCode, str]:
        """Serve one stream; how it ended."""
        kind, body = await asyncio.wait_for(conn.receive(), HELLO_TIMEOUT)
        if kind != HELLO:
            raise FrameError("its first frame is not a TransportHello")
        hello = _parse(api_pb2.TransportHello, body)
        if hello.method not in STREAMS:
            return grpc.StatusCode.UNIMPLEMENTED, f"there is no stream {hello.method!r} on the frame transport"
        serves, request_type = STREAMS[hello.method]
        service = self.services[serves]
        metadata = (("ember-token-id", hello.token_id), ("ember-token-secret", hello.token_secret))
        try:
            who = service.prove(hello.method, metadata, None)
        except Unauthenticated as e:
            return grpc.StatusCode.UNAUTHENTICATED, str(e)
        except Forbidden as e:
            return grpc.StatusCode.PERMISSION_DENIED, str(e)
        conn.proved(MAX_MESSAGE_BYTES)
        # The handler as gRPC's wrapper calls it, after the same check (api.py: authenticated).
        handler = getattr(type(service), hello.method).__wrapped__
        try:
            requests = FrameRequests(conn, request_type)
            async with contextlib.aclosing(handler(service, requests, None, who)) as replies:
                async for reply in replies:
                    conn.send(MESSAGE, reply)
                    if not conn.writable.is_set():
                        await conn.drained()
        except STREAM_ENDINGS as e:
            return ending(hello.method, e)
        return grpc.StatusCode.OK, ""


class FrameRequests:
    """A stream's requests, until the client says it sends no more; and the way out its handler's
    Duplex writes replies by in their own turn (Outbox.direct), a hop less than through this
    module's loop over the handler's replies."""

    def __init__(self, conn: Connection, request_type):
        self.conn = conn
        self.request_type = request_type
        self.ended = False  # the client said it sends no more

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.ended:
            raise StopAsyncIteration
        kind, body = await self.conn.receive()
        if kind == STATUS:
            self.ended = True
            raise StopAsyncIteration
        if kind != MESSAGE:
            raise FrameError(f"a frame of kind {kind} in the middle of a stream")
        return _parse(self.request_type, body)

    async def push(self, handle):
        """Hand each request to handle(request) in the turn that reads its frame (Duplex.run's
        way for a stream that offers it: a wake of its reader's task and a turn of the loop less
        for each); return when the client says it sends no more. What handle raises, or a
        frame that is not a request, ends it with that error; a lost connection with Closed."""
        ended = asyncio.get_running_loop().create_future()

        def deliver(kind: int, body: bytes):
            if ended.done():
                return
            try:
                if kind == STATUS:
                    ended.set_result(None)
                elif kind != MESSAGE:
                    raise FrameError(f"a frame of kind {kind} in the middle of a stream")
                else:
                    handle(_parse(self.request_type, body))
            except Exception as e:  # noqa: BLE001 - it ends the stream, as the reader's task would
                ended.set_exception(e)

        self.conn.push(deliver)
        lost = asyncio.ensure_future(self.conn.receive())  # raises once the connection is gone
        try:
            await asyncio.wait([ended, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            self.conn.deliver = None  # (nothing comes after the end of a stream)
        if ended.done():
            if lost.done() and not lost.cancelled():
                lost.exception()  # the stream ended first: how the connection went is no news
            return ended.result()
        return lost.result()  # raises Closed (or FrameError)

    def broken(self) -> bool:
        """Whether the connection is gone (or going): what is written now reaches nobody."""
        return self.conn.lost is not None or self.conn.transport.is_closing()

    def reply_now(self, msg) -> bool:
        """Write a reply now; False for what is not one (the stream's end, an Ended) or while the
        socket's buffer is full: those go through the handler's replies, in order."""
        if not isinstance(msg, Message) or not self.conn.writable.is_set():
            return False
        self.conn.send(MESSAGE, msg)
        return True


def _parse(message_type, body: bytes):
    try:
        return message_type.FromString(body)
    except DecodeError:
        raise FrameError(f"a frame that is not a {message_type.DESCRIPTOR.name}") from None
