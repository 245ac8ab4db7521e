"""Functions the restart and failover tests call: each run leaves a line in a log file (its side
effect), so that a test counts how many times each input ran, and in which container."""

import os
import pathlib
import time

import ember

app = ember.App("restarts-tests")


def wait_for_file(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def ran(log, i):
    with open(log, "a") as f:  # one short O_APPEND write per run: lines never interleave
        f.write(f"{i} {os.getpid()}\n")


@app.function(max_containers=2)
def record(i, log, seconds=0.05):
    """Runs a little while, once its side effect is done."""
    ran(log, i)
    time.sleep(seconds)
    return i * i


@app.function()
def gated(i, started, gate, log):
    """Says it started (its pid in a file of the started dir), waits for the gate, then its side effect."""
    pathlib.Path(started, f"{i}-{os.getpid()}").touch()
    wait_for_file(gate, timeout=120)
    ran(log, i)
    return i


def runs(log) -> dict[int, list[int]]:
    """input -> the pids of the containers that ran it, from a log file."""
    seen: dict[int, list[int]] = {}
    if os.path.exists(log):
        for line in pathlib.Path(log).read_text().splitlines():
            i, pid = line.split()
            seen.setdefault(int(i), []).append(int(pid))
    return seen


@app.function(max_containers=2)
def square(x):
    """Nothing but its result: a map of thousands through a failover."""
    return x * x


@app.function(max_containers=2)
def square_slowly(x):
    """A few milliseconds each: a map of hundreds that is still running when its leader goes."""
    time.sleep(0.005)
    return x * x


@app.function(max_containers=1)
def gated_alone(i, started, gate, log):
    """gated() in one container at most: a second input waits in the queue while the first runs."""
    return gated.local(i, started, gate, log)
