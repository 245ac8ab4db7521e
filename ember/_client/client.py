"""The connection to a control plane, shared by everything in one process."""

import asyncio
import atexit
import itertools
import os
import threading
import time
from concurrent.futures import Future

import grpc

from .. import config, exception
from ..proto import api_pb2, api_pb2_grpc
from . import blobs
from .bridge import LoopThread

CONNECT_TIMEOUT = 5.0      # seconds to reach a control plane at all
RECONNECT_WINDOW = 120.0   # seconds to keep retrying an established one (it may be restarting)
# Unary calls in flight on one channel at most: past about a thousand, gRPC's asyncio client
# starts failing calls as CANCELLED. Callers beyond the limit wait their turn.
MAX_INFLIGHT = 512


def translate(e: grpc.aio.AioRpcError, what: str) -> Exception:
    code = e.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return exception.NotFoundError(e.details())
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return exception.InvalidError(e.details())
    if code == grpc.StatusCode.UNAVAILABLE:
        return exception.ConnectionError(f"{what}: the control plane is unavailable ({e.details()})")
    return exception.ExecutionError(f"{what}: {code.name}: {e.details()}")


class Client:
    _instances: dict[str, "Client"] = {}
    _lock = threading.Lock()

    @classmethod
    def from_env(cls) -> "Client":
        url = config.server_url()
        if url is None:
            raise exception.ExecutionError(
                "No Ember server is configured. Run the app with `ember run FILE` or inside "
                "`with app.run():` (both start a local cluster), or set EMBER_SERVER_URL.")
        return cls.for_url(url)

    @classmethod
    def for_url(cls, url: str) -> "Client":
        with cls._lock:
            client = cls._instances.get(url)
            if client is None or client.pid != os.getpid():
                client = cls(url)
                cls._instances[url] = client
            return client

    def __init__(self, url: str):
        self.url = url
        self.pid = os.getpid()
        self.bridge = LoopThread("ember-client")
        self.channel, self.stub = self.bridge.run(self._connect())
        self.mux = StreamMux(self, "CallStream", "calling a function", resend=True)
        self.objects = StreamMux(self, "ObjectStream", "a dict or queue operation", resend=False)

    @classmethod
    def close_all(cls):
        for url in list(cls._instances):
            cls.close_url(url)

    @classmethod
    def close_url(cls, url: str):
        """Forget the client of a control plane that is gone (the local cluster stopped)."""
        with cls._lock:
            client = cls._instances.pop(url, None)
        if client is not None and client.pid == os.getpid():
            try:
                client.bridge.run(client.channel.close(), timeout=2)
            except Exception:
                pass
            client.bridge.stop()

    async def _connect(self):
        channel = grpc.aio.insecure_channel(config.grpc_target(self.url), options=config.GRPC_OPTIONS)
        try:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            await channel.close()
            raise exception.ConnectionError(
                f"No Ember control plane answered at {self.url} within {CONNECT_TIMEOUT:.0f}s. "
                "Start one there with `ember server` (and `ember worker --server URL` on each "
                "machine), or unset EMBER_SERVER_URL to run on an embedded local cluster.") from None
        self.inflight = asyncio.Semaphore(MAX_INFLIGHT)
        return channel, api_pb2_grpc.ClientApiStub(channel)

    async def rpc(self, name: str, request, *, retry: bool = True, what: str = ""):
        """A unary call; retried while the control plane is unavailable (it may be restarting)."""
        method = getattr(self.stub, name)
        deadline = time.monotonic() + RECONNECT_WINDOW
        delay = 0.05
        while True:
            try:
                async with self.inflight:
                    return await method(request, wait_for_ready=retry)
            except grpc.aio.AioRpcError as e:
                if retry and e.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise translate(e, what or name) from None

    def run(self, coro, timeout=None):
        return self.bridge.run(coro, timeout)

    # ---- payloads

    def upload_sync(self, data: bytes) -> str:
        return self.bridge.run(blobs.upload(self.stub, data))

    def payload(self, data: bytes) -> api_pb2.Payload:
        return blobs.to_payload(data, self.upload_sync)

    async def payload_bytes_async(self, payload: api_pb2.Payload) -> bytes:
        if payload.blob_id:
            return await blobs.download(self.stub, payload.blob_id)
        return payload.data


atexit.register(Client.close_all)


class StreamMux:
    """Multiplexes requests over one long-lived bidi stream, matching responses by tag.

    Lives on the client's event loop thread; the stream stays open between requests (it is the
    hot path). When the stream breaks, `resend` says what happens to requests in flight: sent
    again on the next stream (safe for calls: they carry client-chosen ids) or failed.
    """

    def __init__(self, client: Client, method: str, what: str, resend: bool):
        self.client = client
        self.method = method
        self.what = what
        self.resend = resend
        self.tags = itertools.count(1)
        self.pending: dict[int, tuple[object, object]] = {}
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    def submit(self, request, done):
        """From any thread: send the request; `done(response or exception)` runs on the loop."""
        self.client.bridge.call_soon(self._submit, request, done)

    def call_sync(self, request):
        fut: Future = Future()
        self.submit(request, fut.set_result)
        result = fut.result()
        if isinstance(result, BaseException):
            raise result
        return result

    async def call_async(self, request):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.submit(request, lambda r: loop.call_soon_threadsafe(fut.set_result, r))
        result = await fut
        if isinstance(result, BaseException):
            raise result
        return result

    def _submit(self, request, done):
        request.tag = next(self.tags)
        self.pending[request.tag] = (request, done)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        else:
            self.queue.put_nowait(request)

    def _fail_pending(self, err: Exception):
        pending, self.pending = self.pending, {}
        for _, done in pending.values():
            done(err)

    async def _run(self):
        deadline = time.monotonic() + RECONNECT_WINDOW
        delay = 0.05
        first = True
        while self.pending:
            if not first and not self.resend:
                self._fail_pending(exception.ConnectionError(
                    f"{self.what}: the connection to the control plane broke; the operation may or may not have "
                    "happened"))
                return
            first = False
            queue = self.queue = asyncio.Queue()
            for request, _ in self.pending.values():
                queue.put_nowait(request)
                if self.resend:
                    request.resend = True  # from now on: if it is sent again, it is a resend

            async def requests(queue=queue):  # this stream's queue, not a later one's
                while (request := await queue.get()) is not None:
                    yield request

            stream = getattr(self.client.stub, self.method)(requests(), wait_for_ready=True)
            try:
                async for resp in stream:
                    entry = self.pending.pop(resp.tag, None)
                    if entry is not None:
                        entry[1](resp)
                    deadline = time.monotonic() + RECONNECT_WINDOW
                    delay = 0.05
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                self._fail_pending(translate(e, self.what))
                return
            except asyncio.CancelledError:
                stream.cancel()
                raise
            finally:
                queue.put_nowait(None)  # the stream is over: let its request generator end

