"""One asyncio event loop on a daemon thread for all of a client's gRPC traffic, and `twin`: each
operation written once, as a coroutine on that loop, and offered both blocking and async.

User code is mostly synchronous; the gRPC streams are asynchronous. A method decorated with
@twin is an `async def` (or an async generator) that runs on the loop of the client its object
uses (the object's `_loop()` says which). `obj.op(...)` runs it there and blocks until it is
done; `await obj.op.aio(...)` awaits it from the caller's own loop without blocking that loop.
An async generator likewise: `for x in obj.op(...)` and `async for x in obj.op.aio(...)`; one
decorated with @twin.of_batches yields lists of items (a map's outputs as they arrive, a batch a
time) and its callers get the items one by one: one hand-off per batch, not per item.
Stopping the caller stops the operation: cancelling the task that awaits `.aio`, leaving a
loop over its items early, or Ctrl-C in a blocking call cancels the coroutine on the loop,
which then cancels whatever it started (a call, a map) on the control plane.

The exceptions an operation raises for a reason the caller should read (Ember's own errors, and
a user's exception rebuilt from a container) reach the caller without this machinery's frames:
the traceback starts at the caller's line (a remote one is attached to the exception as a note).
"""

import asyncio
import collections
import contextlib
import functools
import inspect
import threading

import uvloop

from .. import exception
from .serialization import is_remote

AHEAD = 1024  # items an async generator may produce before its consumer takes them


class LoopThread:
    def __init__(self, name: str):
        self.loop = uvloop.new_event_loop()
        self.done = self.loop.create_future()
        self.root_task = None
        # The loop runs a root task until stopped, rather than run_forever(): libraries that
        # look for the loop's root task (anyio, under FastAPI in a container) find it at once
        # instead of scanning every task for each request.
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._root(),), name=name,
                                       daemon=True)
        self.thread.start()

    async def _root(self):
        self.root_task = asyncio.current_task()
        await self.done

    def run(self, coro, timeout: float | None = None):
        """Run a coroutine on the loop and wait for its result (from any other thread). If the
        wait ends early (Ctrl-C, the timeout), the coroutine is cancelled."""
        if threading.get_ident() == self.thread.ident:
            coro.close()
            raise exception.ExecutionError(
                "a blocking Ember call was made on Ember's own event loop thread, where it would wait "
                "forever; use its async form (`await ....aio(...)`) there")
        # A task and a lock rather than run_coroutine_threadsafe(): this is the hot path of a
        # blocking call, and its concurrent future costs about 10 µs more. The lock is released
        # as the coroutine ends, not by a done callback, which would wait a loop iteration more.
        task = None
        outcome = []  # (result, None) or (None, exception)
        done = threading.Lock()
        done.acquire()

        async def body():
            try:
                outcome.append((await coro, None))
            except BaseException as e:  # for the caller to raise, not the loop to log
                outcome.append((None, e))
            finally:
                done.release()

        def start():
            nonlocal task
            task = self.loop.create_task(body())

        self.loop.call_soon_threadsafe(start)
        try:
            if not done.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError(f"no result within {timeout}s")
        except BaseException:
            self.loop.call_soon_threadsafe(lambda: task.cancel())  # after start(): calls run in order
            raise
        result, error = outcome.pop()
        if error is not None:
            try:
                raise error
            finally:
                # The error's traceback holds this frame: with the error among its locals, the two
                # would be a cycle that keeps the caller's frames (and what they hold, as a
                # thread's own connection) until the garbage collector runs.
                error = None
        return result

    async def run_async(self, coro):
        """Await a coroutine on the loop from another event loop (or from this one). Cancelling
        the caller cancels the coroutine."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call_soon(self, fn, *args):
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 2.0):
        """Cancel what still runs on the loop (open streams), then end the thread."""
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t not in (asyncio.current_task(), self.root_task)]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.thread.is_alive():
            with contextlib.suppress(Exception):  # best effort: the thread ends anyway
                self.run(cancel_all(), timeout)
            self.loop.call_soon_threadsafe(lambda: self.done.done() or self.done.set_result(None))
            self.thread.join(timeout)


def trim(e: BaseException):
    """Drop the frames below the caller's from an error meant for it (see the module's doc).
    Done in the caller-facing frame itself, followed by a bare `raise`: a re-raise adds no frame."""
    if isinstance(e, exception.Error) or is_remote(e):
        e.__traceback__ = None


class twin:
    """An operation written once as `async def` or as an async generator: see the module's doc."""

    def __init__(self, op, batches: bool = False):
        self.op = op
        self.generator = inspect.isasyncgenfunction(op)
        self.batches = batches  # the generator yields lists of the items its callers get
        functools.update_wrapper(self, op)

    @classmethod
    def of_batches(cls, op):
        """An async generator that yields lists of items, offered as the items one by one."""
        return cls(op, batches=True)

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return _Bound(self, obj)


class _Bound:
    """`obj.op`: call it to block, or use `obj.op.aio`."""

    __slots__ = ("obj", "twin")

    def __init__(self, twin_: twin, obj):
        self.twin = twin_
        self.obj = obj

    def __repr__(self):
        return f"<{self.twin.op.__qualname__} of {self.obj!r}>"

    def __call__(self, *args, **kwargs):
        if self.twin.generator:
            return self._iterate(args, kwargs)
        try:
            return self.obj._loop().run(self.twin.op(self.obj, *args, **kwargs))
        except BaseException as e:
            trim(e)
            raise

    def aio(self, *args, **kwargs):
        if self.twin.generator:
            return self._iterate_async(args, kwargs)
        return self._await(args, kwargs)

    async def _await(self, args, kwargs):
        try:
            return await self.obj._loop().run_async(self.twin.op(self.obj, *args, **kwargs))
        except BaseException as e:
            trim(e)
            raise

    def _iterate(self, args, kwargs):
        relay = None
        try:
            relay = _Relay(self.obj._loop(), self.twin.op(self.obj, *args, **kwargs), self.twin.batches)
            take = relay.take
            while True:
                yield take()
        except StopIteration:
            return
        except BaseException as e:
            trim(e)
            raise
        finally:
            if relay is not None:
                relay.close(wait=True)

    async def _iterate_async(self, args, kwargs):
        relay = None
        try:
            loop = self.obj._loop()
            if asyncio.get_running_loop() is loop.loop:  # on the client's loop already: no relay
                async for item in self.twin.op(self.obj, *args, **kwargs):
                    if not self.twin.batches:
                        yield item
                        continue
                    for each in item:
                        yield each
                return
            relay = _Relay(loop, self.twin.op(self.obj, *args, **kwargs), self.twin.batches)
            while True:
                yield await relay.take_async()
        except StopAsyncIteration:
            return
        except BaseException as e:
            trim(e)
            raise
        finally:
            if relay is not None:
                relay.close(wait=False)


class _Relay:
    """The items of an async generator running on a LoopThread, for a consumer on another thread
    or another loop. The generator runs ahead of its consumer by up to AHEAD items, and the
    consumer takes all that are there at once: it meets the lock, and waits, once for a burst of
    items, not once for each."""

    def __init__(self, loop: LoopThread, agen, batches: bool = False):
        self.thread = loop
        self.lock = threading.Lock()
        self.items: collections.deque = collections.deque()  # produced, not yet taken (under lock)
        self.taken: collections.deque = collections.deque()  # taken, not yet consumed (consumer's own)
        self.end: BaseException | None = None    # once the generator is over: StopIteration, or its error
        self.wake = None                          # wakes the consumer while it waits for an item
        self.room: asyncio.Future | None = None   # the generator waits on it while the consumer is behind
        self.over = threading.Event()
        self.task: asyncio.Task | None = None
        loop.call_soon(self._start, agen, batches)

    def _start(self, agen, batches: bool):
        self.task = asyncio.get_running_loop().create_task(self._pump(agen, batches))
        self.task.add_done_callback(self._finished)

    async def _pump(self, agen, batches: bool):
        try:
            async for item in agen:
                with self.lock:
                    if batches:
                        self.items.extend(item)
                    else:
                        self.items.append(item)
                    wake, self.wake = self.wake, None
                    if len(self.items) >= AHEAD:
                        self.room = asyncio.get_running_loop().create_future()
                    room = self.room
                if wake is not None:
                    wake()
                if room is not None:
                    await room
        finally:
            await agen.aclose()  # stopped while the generator waited at a yield: its cleanup runs now

    def _finished(self, task: asyncio.Task):
        end = asyncio.CancelledError() if task.cancelled() else task.exception() or StopIteration()
        with self.lock:
            self.end = end
            wake, self.wake = self.wake, None
        if wake is not None:
            wake()
        self.over.set()

    def _next(self, wake) -> bool:
        """Whether items were taken (into self.taken, which was empty); if not, `wake()` is arranged
        for once there are some. Raises the generator's end once it is over and all are taken."""
        with self.lock:
            if self.items:
                self.taken, self.items = self.items, self.taken
                if self.room is not None:
                    room, self.room = self.room, None
                    self.thread.call_soon(_resolve, room)
                return True
            if self.end is not None:
                raise self.end
            self.wake = wake
            return False

    def take(self):
        if self.taken:
            return self.taken.popleft()
        while True:
            # A bare lock as the waiter (released once, by wake): a threading.Event is a Condition
            # and a lock, made for every wait.
            waiter = threading.Lock()
            waiter.acquire()
            if self._next(waiter.release):
                return self.taken.popleft()
            waiter.acquire()

    async def take_async(self):
        if self.taken:
            return self.taken.popleft()
        loop = asyncio.get_running_loop()
        while True:
            waiter = loop.create_future()
            try:
                if self._next(functools.partial(loop.call_soon_threadsafe, _resolve, waiter)):
                    return self.taken.popleft()
            except StopIteration:
                raise StopAsyncIteration from None
            await waiter

    def close(self, wait: bool):
        """The consumer is done: stop the generator; with `wait`, until its cleanup has run (a
        blocking consumer; never on the loop's own thread)."""
        self.thread.call_soon(self._cancel)
        if wait and threading.get_ident() != self.thread.thread.ident and self.thread.thread.is_alive():
            self.over.wait()

    def _cancel(self):
        if self.task is not None:
            self.task.cancel()


def _resolve(future: asyncio.Future, result=None, error: BaseException | None = None):
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def in_thread(fn, *args):
    """fn(*args), on a daemon thread of its own (it may block as long as it likes: a user's
    iterator), awaited."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def run():
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001 - whatever it raises is the awaiting caller's
            loop.call_soon_threadsafe(_resolve, future, None, e)
        else:
            loop.call_soon_threadsafe(_resolve, future, result)

    threading.Thread(target=run, name="ember-iterate", daemon=True).start()
    return await future
