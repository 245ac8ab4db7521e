"""The connection to a control plane, shared by everything in one process."""

import asyncio
import atexit
import contextlib
import functools
import itertools
import logging
import os
import threading
import time
import typing
import weakref

import grpc

from .. import _transport, config, exception
from ..proto import api_pb2, api_pb2_grpc
from . import blobs
from .auth import Authed
from .bridge import LoopThread
from .servers import Servers
from .stream import Backoff, ReconnectingStream, unavailable

CONNECT_TIMEOUT = 5.0      # seconds to reach a control plane at all
RECONNECT_WINDOW = 120.0   # seconds to keep retrying an established one (it may be restarting)
# Unary calls in flight on one channel at most: past about a thousand, gRPC's asyncio client
# starts failing calls as CANCELLED. Callers beyond the limit wait their turn.
MAX_INFLIGHT = 512
OBJECT_STREAM, OBJECT_OPERATION = "ObjectStream", "a dict or queue operation"
# Seconds of blocking object operations through the loop after a connection of their own could
# not be made (DirectObjects): a port that cannot be reached must not cost each one a timeout.
RETRY_DIRECT_AFTER = 5.0
log = logging.getLogger("ember.client")


def translate(e: grpc.aio.AioRpcError, what: str) -> Exception:
    code = e.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return exception.NotFoundError(e.details())
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return exception.InvalidError(e.details())
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return exception.AlreadyExistsError(e.details())
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return exception.AuthError(f"{what}: the control plane refused this request: {e.details()}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return exception.PermissionDeniedError(f"{what}: the control plane refused this request: {e.details()}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return exception.ResourceExhaustedError(f"{what}: {e.details()}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return exception.ConnectionError(f"{what}: the control plane is unavailable ({e.details()})")
    # The nearest of Modal's names for the rest, all ExecutionErrors as before.
    error = {grpc.StatusCode.UNIMPLEMENTED: exception.UnimplementedError,
             grpc.StatusCode.INTERNAL: exception.InternalError,
             grpc.StatusCode.DATA_LOSS: exception.DataLossError}.get(code, exception.ExecutionError)
    return error(f"{what}: {code.name}: {e.details()}")


class Client:
    _instances: typing.ClassVar[dict[tuple, "Client"]] = {}
    _lock = threading.Lock()

    @classmethod
    def from_env(cls) -> "Client":
        url = config.server_url()
        if url is None:
            raise exception.ExecutionError(
                "No Ember server is configured. Run the app with `ember run FILE` or inside "
                "`with app.run():` (both start a local cluster), or set EMBER_SERVER_URL.")
        return cls.for_url(url, config.token())

    @classmethod
    def for_url(cls, url: str, token: tuple[str, str] | None) -> "Client":
        """The client of a control plane, with a token (id, secret) sent on every call."""
        with cls._lock:
            client = cls._instances.get((url, token))
            if client is None or client.pid != os.getpid():
                client = cls(url, token)
                cls._instances[url, token] = client
            return client

    def __init__(self, url: str, token: tuple[str, str] | None):
        self.url = url  # one address, or several of control planes of which one leads (servers.py)
        self.token = token
        self.pid = os.getpid()
        self.transport = config.transport()
        self.servers = Servers(url, lambda channel: Authed(api_pb2_grpc.ClientApiStub(channel), token))
        self.bridge = LoopThread("ember-client")
        self.bridge.run(self._connect())
        self.mux = StreamMux(self, "CallStream", "calling a function", resend=True,
                             frames_of=api_pb2.CallResponse)
        self.objects = StreamMux(self, OBJECT_STREAM, OBJECT_OPERATION, resend=False,
                                 frames_of=api_pb2.ObjectOpResult)
        self.maps = StreamMux(self, "MapStream", "calling a function", resend=True, frames_of=api_pb2.MapResponse)
        self.direct = DirectObjects(self)  # the blocking object operations' own connections

    @classmethod
    def close_all(cls):
        for url, _ in list(cls._instances):
            cls.close_url(url)

    @classmethod
    def close_url(cls, url: str):
        """Forget the clients of a control plane that is gone (the local cluster stopped)."""
        with cls._lock:
            gone = [cls._instances.pop(key) for key in list(cls._instances) if key[0] == url]
        for client in gone:
            if client.pid == os.getpid():
                with contextlib.suppress(Exception):  # best effort: it is going anyway
                    client.bridge.run(client.servers.close(), timeout=2)
                client.direct.close()
                client.bridge.stop()

    @property
    def stub(self):
        """The stub of the control plane in use now (it changes when the leader does)."""
        return self.servers.stub()

    async def _connect(self):
        """Wait for a control plane at one of the addresses to answer, and use the first that does."""
        waits = {asyncio.ensure_future(self.servers.channel(url).channel_ready()): url for url in self.servers.urls}
        done, pending = await asyncio.wait(waits, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        for wait in pending:
            wait.cancel()
        if not done:
            await self.servers.close()
            for url in self.servers.urls:
                if problem := await asyncio.to_thread(config.tls_problem, url):  # the server is there, but...
                    raise exception.ConnectionError(f"Cannot connect to the Ember control plane: {problem}.")
            raise exception.ConnectionError(
                f"No Ember control plane answered at {self.url} within {CONNECT_TIMEOUT:.0f}s. "
                "Start one there with `ember server` (and `ember worker --server URL` on each "
                "machine), or unset EMBER_SERVER_URL to run on an embedded local cluster.")
        self.servers.use(waits[done.pop()])
        self.inflight = asyncio.Semaphore(MAX_INFLIGHT)

    async def rpc(self, name: str, request, *, retry: bool = True, what: str = ""):
        """A unary call; retried while the control plane is unavailable (it may be restarting).
        Without retry, it fails at once when the control plane cannot be reached."""
        backoff = Backoff(RECONNECT_WINDOW, self.servers.max_delay)
        while True:
            url = self.servers.url
            try:
                async with self.inflight:
                    return await getattr(self.stub, name)(request, wait_for_ready=retry and self.servers.wait_for_ready)
            except grpc.aio.AioRpcError as e:
                if unavailable(e):
                    self.servers.failed(url, e)  # another control plane may lead now
                if retry and unavailable(e) and await backoff.wait():
                    continue
                raise translate(e, what or name) from None

    async def call_op(self, what: str, **op) -> api_pb2.MapResponse:
        """One op of a call's inputs or outputs on MapStream (create=, put= or get=, the requests
        of FunctionCallCreate, FunctionCallPutInputs and FunctionCallGetOutputs): its answer, or
        the error its RPC would have raised."""
        resp = await self.maps.call(api_pb2.MapRequest(**op))
        if resp.code:
            raise translate(_transport.status_error(_transport.CODES.get(resp.code, grpc.StatusCode.UNKNOWN),
                                                    resp.details), what)
        return resp

    async def outputs(self, request: api_pb2.GetOutputsRequest, *, what: str = "") -> api_pb2.GetOutputsResponse:
        """FunctionCallGetOutputs, on MapStream: a call's outputs after request.after_seq."""
        return (await self.call_op(what or "reading a call's outputs", get=request)).outputs

    def run(self, coro, timeout=None):
        return self.bridge.run(coro, timeout)

    async def on_leader(self, attempt):
        """attempt(stub), again on another control plane while the one used is unavailable and
        there are several (one of them leads soon); what it raises otherwise passes."""
        backoff = Backoff(RECONNECT_WINDOW, self.servers.max_delay)
        while True:
            url = self.servers.url
            try:
                return await attempt(self.stub)
            except grpc.aio.AioRpcError as e:
                if not (unavailable(e) and self.servers.several and await backoff.wait()):
                    raise
                self.servers.failed(url, e)

    async def frame_endpoint(self, url: str) -> _transport.Endpoint | None:
        """Where the control plane at url serves frames (ember/_transport.py) to this client; None
        where there is none to have (it serves none, or this is a container's client, which has
        its worker's word for it: see frames): the caller uses gRPC. What says that control plane
        is unavailable is raised, as gRPC's stream would raise it."""
        if self.transport != "frames" or config.in_container():
            return None
        try:
            endpoint = await self.servers.stub_at(url).TransportEndpoint(
                api_pb2.Empty(), wait_for_ready=self.servers.wait_for_ready)
        except grpc.aio.AioRpcError as e:
            if unavailable(e):
                raise
            return None  # an older control plane (UNIMPLEMENTED), or refused: gRPC's stream says why
        try:
            address = _transport.address_of(url, endpoint)
            return _transport.endpoint(address, url) if address else None
        except (OSError, ValueError, exception.Error) as e:  # (a CA that ssl cannot load: an SSLError)
            log.warning("the frame transport of %s cannot be used (%s): using gRPC", url, e)
            return None

    async def frames(self, url: str) -> _transport.Connection | None:
        """A frame connection to the control plane at url, driven by this loop; None where there
        is none to have, or it cannot be reached so (the caller uses gRPC). A container's is
        where its worker said (_transport.dial_from_container)."""
        if self.transport == "frames" and config.in_container():
            return await _transport.dial_from_container(url, self.servers.several, self.servers.stub_at(url))
        endpoint = await self.frame_endpoint(url)
        return None if endpoint is None else await _transport.open_connection(endpoint, url)

    # ---- payloads

    def upload_sync(self, data: bytes) -> str:
        """Store data as a blob, from a thread other than the loop's (image and code packaging)."""
        return self.bridge.run(self.upload(data))

    async def upload(self, data: bytes) -> str:
        try:
            return await self.on_leader(lambda stub: blobs.upload(stub, data))
        except grpc.aio.AioRpcError as e:
            raise translate(e, "storing a blob") from None

    async def payload(self, data: bytes) -> api_pb2.Payload:
        """Data to send: inline when small, else stored as a blob first."""
        if len(data) > config.BLOB_THRESHOLD:
            return api_pb2.Payload(blob_id=await self.upload(data))
        return api_pb2.Payload(data=data)

    async def payload_bytes(self, payload: api_pb2.Payload) -> bytes:
        if payload.blob_id:
            return await self.on_leader(lambda stub: blobs.download(stub, payload.blob_id))
        return payload.data


atexit.register(Client.close_all)


class StreamMux:
    """Multiplexes requests over one long-lived bidi stream, matching responses by tag.

    Lives on the client's event loop; the stream stays open between requests (it is the hot
    path). When the stream breaks, `resend` says what happens to requests in flight: sent
    again on the next stream (safe for calls: they carry client-chosen ids) or failed.
    """

    def __init__(self, client: Client, method: str, what: str, resend: bool, frames_of=None):
        self.what = what
        self.frames_of = frames_of  # the stream's response type, if it may go over the frame transport
        self.resend = resend
        self.tags = itertools.count(1)
        self.pending: dict[int, tuple[object, asyncio.Future]] = {}
        self.client = client
        self.method = method
        self.url = None  # of the control plane the current attempt went to
        self.stream = ReconnectingStream(self._open, self._answer, on_connect=self._send_pending,
                                         on_disconnect=self._broken, window=RECONNECT_WINDOW,
                                         max_delay=client.servers.max_delay)
        self.task: asyncio.Task | None = None

    async def call(self, request):
        """Send the request; its response (an error if the stream cannot be kept open)."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        request.tag = next(self.tags)
        answer = loop.create_future()
        self.pending[request.tag] = (request, answer)
        self.stream.send(request)  # or, not connected yet, sent by _send_pending
        try:
            return await answer
        finally:
            self.pending.pop(request.tag, None)

    async def _run(self):
        try:
            await self.stream.run()
            error = exception.ConnectionError(f"{self.what}: the control plane ended the connection")
        except grpc.aio.AioRpcError as e:
            error = translate(e, self.what)
        for _, answer in self.pending.values():
            if not answer.done():
                answer.set_exception(error)

    def _open(self, messages):
        servers = self.client.servers
        self.url = url = servers.url
        grpc_stream = functools.partial(getattr(self.client.stub, self.method), wait_for_ready=servers.wait_for_ready)
        if self.frames_of is None:
            return grpc_stream(messages)
        return _transport.FrameStream(lambda: self.client.frames(url), self.method, self.client.token, messages,
                                      self.frames_of, grpc_stream)

    def _answer(self, resp):
        entry = self.pending.get(resp.tag)
        if entry is not None and not entry[1].done():
            entry[1].set_result(resp)

    def _send_pending(self, outbox):
        for request, answer in self.pending.values():
            if not answer.done():
                outbox.put(request)

    def _broken(self, error):
        if error is None or unavailable(error):
            self.client.servers.failed(self.url, error)
        for request, answer in self.pending.values():
            if self.resend:
                request.resend = True  # if it is sent again, it is a resend
            elif not answer.done():
                answer.set_exception(exception.ConnectionError(
                    f"{self.what}: the connection to the control plane broke; the operation may or may not have "
                    "happened"))


class DirectObjects:
    """Blocking Dict and Queue operations, written and read from the caller's own thread.

    A blocking `d[k] = v` went from the caller's thread to the client's event loop, over the object
    stream, and back: about 20 us each way here, the largest part of a pair's time left on the
    client. redis-py has no such hop: it writes and reads its socket from the calling thread. So
    does this: each thread that makes blocking object operations has a frame connection of its own
    (_transport.BlockingStream: the object stream's frames, hello and token, over TLS where the
    control plane has it), on which it sends its request and waits for the answer itself. The
    control plane serves it as any object stream, with the same checks. (`.aio` operations stay on
    the client's loop and its object stream.)

    Where there is no such connection to have (EMBER_TRANSPORT=grpc, inside a container, a control
    plane without frames, or one that cannot be reached now), an operation goes the way it did,
    through the client's loop and its reconnecting stream (which waits for a restarting control
    plane to come back); a direct connection is tried again a few seconds later. A connection that
    breaks with an operation in flight fails it as that stream does: ConnectionError, it may or may
    not have happened. A thread's connection closes when the thread ends (or the client does).
    """

    def __init__(self, client):
        self.client = client
        self.local = threading.local()  # .stream: this thread's BlockingStream, if it has one
        self.streams: weakref.WeakSet = weakref.WeakSet()  # every thread's, to close with the client
        self.indirect_until = 0.0  # monotonic time until which operations go through the loop

    def call(self, op: api_pb2.ObjectOp) -> api_pb2.ObjectOpResult:
        """One operation from the caller's thread: its result, or the error the object stream
        would raise."""
        stream = self._stream()
        if stream is None:
            return self.client.run(self.client.objects.call(op))
        url = self.client.servers.url
        try:
            return stream.call(op)
        except (_transport.Closed, _transport.FrameError, grpc.aio.AioRpcError) as e:
            self._drop(stream)
            ended = e if isinstance(e, grpc.aio.AioRpcError) else None  # by the control plane, with this error
            if ended is not None and not unavailable(ended):
                raise translate(ended, OBJECT_OPERATION) from None
            self.client.bridge.call_soon(self.client.servers.failed, url, ended)  # another may lead now
            raise exception.ConnectionError(
                f"{OBJECT_OPERATION}: the connection to the control plane broke "
                f"({ended.details() if ended else e}); the operation may or may not have happened") from None
        except BaseException:  # interrupted (Ctrl-C) while waiting: its answer may still come
            self._drop(stream)
            raise

    def close(self):
        for stream in list(self.streams):
            stream.close()

    def _stream(self) -> _transport.BlockingStream | None:
        """This thread's stream, opened if needed; None where operations go through the loop."""
        stream = getattr(self.local, "stream", None)
        if stream is not None:
            if stream.intact():
                return stream
            self._drop(stream)  # the control plane closed it while idle (it restarted): nothing was in flight
        if threading.get_ident() == self.client.bridge.thread.ident or time.monotonic() < self.indirect_until:
            return None  # (on the loop's own thread, run() says why a blocking call cannot be made there)
        endpoint = self._endpoint()
        try:
            if endpoint is not None:
                sock = endpoint.connect_blocking(_transport.CONNECT_TIMEOUT)
                stream = _transport.BlockingStream(sock, OBJECT_STREAM, self.client.token, api_pb2.ObjectOpResult)
        except OSError as e:  # (ssl.SSLError is an OSError)
            log.warning("the frame transport cannot be reached from this thread (%s): operations go through the "
                        "client's loop", e)
            endpoint = None
        if endpoint is None:
            self.indirect_until = time.monotonic() + RETRY_DIRECT_AFTER
            return None
        self.local.stream = stream
        self.streams.add(stream)
        return stream

    def _endpoint(self) -> _transport.Endpoint | None:
        """The leading control plane's frame endpoint, waited for as the loop's stream waits for
        it to reconnect (RECONNECT_WINDOW, then its error)."""
        servers = self.client.servers
        backoff = Backoff(RECONNECT_WINDOW, servers.max_delay)
        while True:
            url = servers.url
            try:
                return self.client.run(self.client.frame_endpoint(url))
            except grpc.aio.AioRpcError as e:  # unavailable: restarting, or another one leads now
                self.client.bridge.call_soon(servers.failed, url, e)
                delay = backoff.next_delay()
                if delay is None:
                    raise translate(e, OBJECT_OPERATION) from None
                time.sleep(delay)

    def _drop(self, stream: _transport.BlockingStream):
        stream.close()
        self.streams.discard(stream)
        if getattr(self.local, "stream", None) is stream:
            self.local.stream = None
