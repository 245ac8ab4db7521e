"""Functions the quota and fair-share tests call: each input appends a line to a file the test
reads (the process backend's containers share the machine's filesystem)."""

import os
import time

import ember

app = ember.App("quota-tests")


def note(path, text):
    # One short write in append mode: lines of concurrent containers never interleave.
    with open(path, "a") as f:
        f.write(text + "\n")


@app.function(cpu=0.5, memory=128)
def small(path, i):
    """For the container quota: when it starts and ends, in which container."""
    cid = os.environ["EMBER_CONTAINER_ID"]
    note(path, f"start {cid} {i}")
    time.sleep(0.2)
    note(path, f"end {cid} {i}")
    return i * i


@app.function(cpu=1, memory=256)
def cpu_heavy(path, tag):
    """Dominant share is CPU: a worker of 2 CPU and 2 GiB has room for two."""
    time.sleep(0.3)
    note(path, tag)
    return tag


@app.function(cpu=0.5, memory=1024)
def memory_heavy(path, tag):
    """Dominant share is memory: a worker of 2 CPU and 2 GiB has room for two."""
    time.sleep(0.3)
    note(path, tag)
    return tag


@app.function(cpu=1)
def burn(seconds):
    """Use `seconds` of CPU time."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return round(time.process_time() - start, 1)
