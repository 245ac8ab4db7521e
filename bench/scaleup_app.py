"""The functions bench/scaleup.py calls: each says which container ran it, and when it began."""

import os
import time

import ember

app = ember.App("bench-scaleup")


def _ran(seconds: float) -> tuple[str, float]:
    began = time.time()
    time.sleep(seconds)
    return os.environ["EMBER_CONTAINER_ID"], began


@app.function(max_containers=2)
def capped(seconds: float):
    return _ran(seconds)


@app.function()
def uncapped(seconds: float):
    return _ran(seconds)


@app.function()
def square(x: int) -> int:
    """examples/hello.py's function."""
    return x * x
