"""Functions the calls API tests use (tests/test_calls_api.py): options, batching, concurrency."""

import asyncio
import os
import threading
import time

import ember

app = ember.App("calls-tests")


@app.function(cpu=0.25, memory=128, timeout=30)
def limits():
    """What the container was given (the process backend passes the limits as variables)."""
    return {k: v for k, v in os.environ.items() if k.startswith("EMBER_")} | {"pid": os.getpid()}


@app.function(retries=0, timeout=30)
def flaky(marker_dir: str):
    """Fails on its first attempt, succeeds on its second (its retries allow one more)."""
    marker = os.path.join(marker_dir, "tried")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "second attempt"


@app.function(timeout=30)
def nap(seconds: float):
    time.sleep(seconds)
    return seconds


@app.function()
def square(x):
    return x * x


@app.function()
def record(d_name: str, x: int):
    ember.Dict.from_name(d_name, create_if_missing=True)[x] = x * x


@app.function()
def count_to(n: int):
    for i in range(n):
        yield i


@app.function()
def block_until(path: str):
    with open(path + ".started", "w") as f:
        f.write(str(os.getpid()))
    while not os.path.exists(path):
        time.sleep(0.01)
    return os.getpid()


@app.function()
@ember.batched(max_batch_size=4, wait_ms=200)
def batch_sizes(xs: list[int]) -> list[tuple[int, int]]:
    return [(x * 10, len(xs)) for x in xs]


@app.function()
@ember.batched(max_batch_size=8, wait_ms=100)
async def async_batch(xs: list[int], ys: list[int]) -> list[int]:
    await asyncio.sleep(0)
    return [x + y for x, y in zip(xs, ys)]


@app.function()
@ember.batched(max_batch_size=8, wait_ms=200)
def batch_fails(xs: list[int]) -> list[int]:
    if 13 in xs:
        raise ValueError(f"13 is in the batch {sorted(xs)}")
    return xs


@app.function()
@ember.batched(max_batch_size=8, wait_ms=50)
def batch_wrong_length(xs: list[int]) -> list[int]:
    return xs[:-1]


@app.cls()
class Scaler:
    factor: int = ember.parameter(default=2)

    @ember.batched(max_batch_size=5, wait_ms=200)
    def scale(self, xs: list[int]) -> list[tuple[int, int]]:
        return [(x * self.factor, len(xs)) for x in xs]


@app.function()
@ember.concurrent(max_inputs=10)
async def on_one_loop(start_dir: str, n: int):
    """Waits until all n inputs have started: they can only if they overlap."""
    open(os.path.join(start_dir, f"{id(object())}-{time.monotonic_ns()}"), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(start_dir)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError("the inputs did not overlap")
        await asyncio.sleep(0.01)
    return id(asyncio.get_running_loop()), threading.get_ident(), os.getpid()


@app.function()
def wait_for_all(start_dir: str, n: int):
    """A sync function of one input at a time, unless a handle says otherwise: waits until all n
    inputs have started."""
    open(os.path.join(start_dir, str(threading.get_ident())), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(start_dir)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError("the inputs did not overlap")
        time.sleep(0.01)
    return os.getpid()
