"""One asyncio event loop on a daemon thread, for all of a process's gRPC traffic.

User code is mostly synchronous; the gRPC streams are asynchronous. Sync API calls hand a
coroutine (or a callback) to this loop and wait on a concurrent future; `.aio` variants await
the same coroutine from the caller's own loop without blocking it.
"""

import asyncio
import threading

import uvloop


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
        """Run a coroutine on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def run_async(self, coro):
        """Await a coroutine on the loop from another event loop."""
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
            try:
                self.run(cancel_all(), timeout)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(lambda: self.done.done() or self.done.set_result(None))
            self.thread.join(timeout)
