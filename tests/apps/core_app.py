"""Functions the core tests call. Shipped to containers as source, imported there by name."""

import os
import pathlib
import signal
import sys
import threading
import time

import ember

app = ember.App("core-tests")


def wait_for_file(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


@app.function()
def square(x):
    return x * x


@app.function()
def add(a, b=0):
    return a + b


@app.function()
def echo(value):
    return value


@app.function()
def where():
    return os.getpid()


class CustomError(Exception):
    pass


class UnpicklableError(Exception):
    def __init__(self, a, b):  # pickling rebuilds it with one argument: fails on the client
        super().__init__(f"{a}/{b}")


@app.function()
def fail(kind="custom"):
    if kind == "custom":
        raise CustomError("it broke on purpose")
    if kind == "unpicklable":
        raise UnpicklableError(1, 2)
    raise ValueError(kind)


@app.function()
def bad_result():
    return threading.Lock()


@app.function()
def print_then_wait(marker):
    print("hello from the container", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    wait_for_file(marker)
    return "done"


@app.function()
def count_up(n, gate=None):
    for i in range(n):
        yield i
        if gate and i == 0:
            wait_for_file(gate)


@app.function(retries=ember.Retries(max_retries=2, initial_delay=0.1, backoff_coefficient=2.0))
def flaky(counter, fail_times, how="raise"):
    path = pathlib.Path(counter)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < fail_times:
        if how == "exit":
            os._exit(1)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"attempt {n + 1} fails")
    return n + 1


@app.function()
def crash(code=1):
    os._exit(code)


@app.function(timeout=1)
def too_slow(pid_file):
    pathlib.Path(pid_file).write_text(str(os.getpid()))
    time.sleep(30)
    return "should never get here"


@app.function()
def slow(marker, release, value):
    """Signals that it runs (marker), then waits until the test releases it."""
    pathlib.Path(marker).write_text(str(os.getpid()))
    wait_for_file(release)
    return value


@app.function(max_containers=2)
def rendezvous(directory, i):
    """Each input waits until two inputs run at the same time: proves parallel containers."""
    d = pathlib.Path(directory)
    (d / f"{i}.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while len({p.suffix for p in d.iterdir()}) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


@app.function()
def sleeper(seconds):
    time.sleep(seconds)
    return seconds


@app.local_entrypoint()
def main(x: int = 3):
    print("result", square.remote(x))


@app.function(scaledown_window=1)
def short_lived():
    return os.getpid()


@app.function()
def sum_of_squares(n):
    """Calls another function of the app from inside its container."""
    return sum(square.map(range(n))) + square.remote(n)


@app.function(min_containers=2)
def kept_warm():
    return os.getpid()


@app.function()
async def async_square(x):
    import asyncio
    await asyncio.sleep(0.01)
    return x * x


@app.function()
async def async_count(n):
    import asyncio
    for i in range(n):
        await asyncio.sleep(0)
        yield i


in_flight = {"now": 0, "max": 0}
in_flight_lock = threading.Lock()


@app.function(max_containers=1)
@ember.concurrent(max_inputs=4)
def overlapping(seconds):
    with in_flight_lock:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
    time.sleep(seconds)
    with in_flight_lock:
        in_flight["now"] -= 1
    return in_flight["max"], os.getpid()


@app.function(max_containers=1)
@ember.concurrent(max_inputs=3)
def sleeps_forever(marker):
    pathlib.Path(marker).write_text("started")
    time.sleep(3600)


@app.function()
def waits_to_be_cancelled(marker, outcome):
    """Signals that it runs (marker), then waits; writes what ended the wait (outcome)."""
    pathlib.Path(marker).write_text(str(os.getpid()))
    try:
        time.sleep(120)
    except BaseException as e:  # the runtime's InputCancelled, raised in this thread
        pathlib.Path(outcome).write_text(type(e).__name__)
        raise


@app.function()
def describe_passed(f, n):
    """What a Function passed in (pickled into this container) knows of itself, and its items."""
    return f.object_id, repr(f), list(f.remote_gen(n))
