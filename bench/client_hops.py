"""What each hop inside the client costs on its own, on the client's own event loop (uvloop on a
thread, ember/_client/bridge.py): the hops that a .remote() on the frame transport takes besides
the network (issue 19's "fewer hops"), each measured alone so that its cost is not lost in the
noise of a whole round trip (bench/core.py gives that, and its split).

    python bench/client_hops.py

Medians in microseconds of 20,000 after 2,000 warm-up, each hop end to end:
  - thread -> client loop -> thread: LoopThread.run() of a coroutine that does nothing (a
    blocking call's way onto the loop and back);
  - Outbox hand-off: a request put() in the stream's Outbox until the task that writes it to the
    socket has it (stream.py: one more turn of the loop), against handing it over directly;
  - answer hand-off: a response's future set until the caller's coroutine runs again (the
    multiplexer's answer, client.py's StreamMux), against a plain call.
"""

import asyncio
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from ember._client.bridge import LoopThread  # noqa: E402
from ember._client.stream import Outbox  # noqa: E402

N, WARMUP = 20_000, 2_000


def median_us(times: list[float]) -> float:
    return statistics.median(times[WARMUP:]) * 1e6


def thread_hop(bridge: LoopThread) -> float:
    async def nothing():
        pass
    times = []
    for _ in range(N + WARMUP):
        t = time.perf_counter()
        bridge.run(nothing())
        times.append(time.perf_counter() - t)
    return median_us(times)


async def outbox_hop() -> float:
    outbox, times = Outbox(), []

    async def consume():
        async for sent in outbox.messages():
            times.append(time.perf_counter() - sent)

    consumer = asyncio.get_running_loop().create_task(consume())
    for _ in range(N + WARMUP):
        outbox.put(time.perf_counter())
        await asyncio.sleep(0)  # let it be taken, as between two calls
        await asyncio.sleep(0)
    outbox.close()
    await consumer
    return median_us(times)


async def direct_hop() -> float:
    times = []

    def consume(sent):
        times.append(time.perf_counter() - sent)

    for _ in range(N + WARMUP):
        consume(time.perf_counter())
        await asyncio.sleep(0)
    return median_us(times)


async def answer_hop() -> float:
    loop, times = asyncio.get_running_loop(), []
    for _ in range(N + WARMUP):
        answer = loop.create_future()
        loop.call_soon(lambda a=answer: a.set_result(time.perf_counter()))
        set_at = await answer
        times.append(time.perf_counter() - set_at)
    return median_us(times)


def main():
    bridge = LoopThread("bench-hops")
    try:
        figures = {"thread_hop_us": thread_hop(bridge),
                   "outbox_hop_us": bridge.run(outbox_hop()),
                   "direct_hop_us": bridge.run(direct_hop()),
                   "answer_hop_us": bridge.run(answer_hop())}
    finally:
        bridge.stop()
    for key, label in (("thread_hop_us", "thread -> client loop -> thread"),
                       ("outbox_hop_us", "Outbox put -> the writer has it"),
                       ("direct_hop_us", "the same handed over directly"),
                       ("answer_hop_us", "answer's future set -> the caller runs")):
        print(f"{label:40}{figures[key]:8.1f} us")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
