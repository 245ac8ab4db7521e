"""Long-lived gRPC streams to a peer that may restart: the backoff between attempts, and a bidi
stream that reconnects by itself.

Every long-lived stream in Ember has the same shape: open it, send a hello (and whatever the
peer may have lost), handle what comes back, and when the peer goes away (it restarts, the
network breaks) wait a little and do it all again. The client's call and object streams
(client.py) and the container's stream to the control plane (container/runtime.py) are a
ReconnectingStream; the worker's stream has the same shape and fits it too.
"""

import asyncio
import time

import grpc

FIRST_DELAY = 0.05  # seconds before the first retry after a contact
MAX_DELAY = 1.0     # the delay doubles up to this


class Backoff:
    """The waits between attempts to reach a peer that is unavailable (it may be restarting):
    50 ms, doubling up to 1 s; given up `window` seconds after the first failure since the
    last contact (never, with no window)."""

    def __init__(self, window: float | None = None, max_delay: float = MAX_DELAY):
        self.window = window
        self.max_delay = max_delay
        self.reset()

    def reset(self):
        """The peer answered: the next wait is short again, and the window starts anew."""
        self.delay = FIRST_DELAY
        self.deadline: float | None = None

    async def wait(self) -> bool:
        """Sleep before the next attempt; False, at once, if the window has passed."""
        delay = self.next_delay()
        if delay is None:
            return False
        await asyncio.sleep(delay)
        return True

    def next_delay(self) -> float | None:
        """The seconds to wait before the next attempt (for a caller that waits in a thread);
        None if the window has passed."""
        now = time.monotonic()
        if self.deadline is None and self.window is not None:
            self.deadline = now + self.window
        elif self.deadline is not None and now >= self.deadline:
            return None
        delay = self.delay
        self.delay = min(self.delay * 2, self.max_delay)
        return delay


class Outbox:
    """What one attempt of a bidi stream sends: messages put() here, in order, until close().
    Iterating over it gives them (the request iterator gRPC reads from)."""

    def __init__(self):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._sink = None  # see direct()

    def put(self, msg):
        # Straight to the sink while nothing waits before it (the order stays) and it takes it.
        if self._sink is None or not self._queue.empty() or not self._sink(msg):
            self._queue.put_nowait(msg)

    def close(self):
        """End our side of the stream once what was put before is sent."""
        self.put(None)

    def direct(self, sink):
        """From now on, hand each message (None for the end) to sink(msg) at once, rather than to
        the reader's next turn: a hop less on a hot stream. sink returns False for a message it
        cannot take now (the socket is full); that one and those after it wait for the reader."""
        self._sink = sink

    def __aiter__(self):
        return self.messages()

    async def messages(self):
        while (msg := await self._queue.get()) is not None:
            yield msg


def unavailable(e: grpc.aio.AioRpcError) -> bool:
    """Whether the control plane could not take the call now: UNAVAILABLE, or CANCELLED by its
    side. gRPC's server ends the calls that reach it while it stops as CANCELLED (a standby that
    takes over stops its own server, a leader that steps down or hands over stops its); Ember's
    control plane cancels none itself, and a call cancelled in this process raises
    asyncio.CancelledError, not this."""
    return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class ReconnectingStream:
    """A bidi stream kept open across the peer's restarts and network breaks.

    Each attempt opens the stream with `open(messages)` (say `stub.X(messages, wait_for_ready=True)`),
    first hands its Outbox to `on_connect` (to put a hello, or what the peer may have lost),
    then passes each message received to `handle`, and at its end calls `on_disconnect(error)`
    (the AioRpcError that ended it, or None). A stream that breaks with an error `retry`
    accepts (by default: UNAVAILABLE), or that the peer ends, is opened again after a backoff;
    run() raises an error that is not retried, or the last one once `window` seconds have
    passed without contact, and returns when the stream ends after close().
    """

    def __init__(self, open, handle, *, on_connect=None, on_disconnect=None, retry=unavailable,
                 window: float | None = None, max_delay: float = MAX_DELAY):
        self.open = open
        self.max_delay = max_delay
        self.handle = handle
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.retry = retry
        self.window = window
        self.outbox: Outbox | None = None  # the current attempt's, while connected
        self.closing = False

    def send(self, msg) -> bool:
        """Send on the current attempt; False (dropped) between attempts: what must survive a
        reconnect is for on_connect to send again."""
        if self.outbox is None:
            return False
        self.outbox.put(msg)
        return True

    def close(self):
        """End our side; run() returns once the peer has ended its side."""
        self.closing = True
        if self.outbox is not None:
            self.outbox.close()

    async def run(self):
        backoff = Backoff(self.window, self.max_delay)
        while not self.closing:
            outbox = Outbox()
            if self.on_connect is not None:
                self.on_connect(outbox)
            call = self.open(outbox)
            self.outbox = outbox
            error = None
            try:
                async for msg in call:
                    backoff.reset()
                    self.handle(msg)
            except grpc.aio.AioRpcError as e:
                error = e
            except asyncio.CancelledError:
                call.cancel()
                raise
            finally:
                self.outbox = None
                outbox.close()  # the stream is over: let its request iterator end
                if self.on_disconnect is not None:
                    self.on_disconnect(error)
            if self.closing:
                return
            if error is not None and not self.retry(error):
                raise error
            if not await backoff.wait():
                if error is not None:
                    raise error
                return
