"""The connection to a control plane, shared by everything in one process."""

import asyncio
import atexit
import contextlib
import functools
import itertools
import logging
import os
import threading
import typing

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
        self.objects = StreamMux(self, "ObjectStream", "a dict or queue operation", resend=False,
                                 frames_of=api_pb2.ObjectOpResult)

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

    async def frames(self, url: str):
        """A frame connection (ember/_transport.py) to the control plane at url; None where there
        is none to have (it serves none, or it cannot be reached so: the caller uses gRPC). What
        says that control plane is unavailable is raised, as gRPC's stream would raise it."""
        if self.transport != "frames":
            return None
        if config.in_container():
            return await _transport.dial_from_container(url, self.servers.several, self.servers.stub_at(url))
        try:
            endpoint = await self.servers.stub_at(url).TransportEndpoint(
                api_pb2.Empty(), wait_for_ready=self.servers.wait_for_ready)
        except grpc.aio.AioRpcError as e:
            if unavailable(e):
                raise
            return None  # an older control plane (UNIMPLEMENTED), or refused: gRPC's stream says why
        if url.startswith("unix:"):
            return await _transport.dial(f"unix:{endpoint.unix_path}", url) if endpoint.unix_path else None
        if not endpoint.port:
            return None
        try:
            host = config.host_and_port(url)[0]
        except ValueError:
            return None
        return await _transport.dial(f"[{host}]:{endpoint.port}" if ":" in host else f"{host}:{endpoint.port}", url)

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
