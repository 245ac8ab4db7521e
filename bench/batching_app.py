"""The functions bench/batching.py calls: the same work, one input per call or a batch per call."""

import time

import ember

app = ember.App("bench-batching")
PER_CALL = 0.002  # seconds each call costs whatever its size (a model's forward pass, a request)


@app.function(max_containers=1)
def double(x):
    time.sleep(PER_CALL)
    return 2 * x


@app.function(max_containers=1)
@ember.batched(max_batch_size=64, wait_ms=10)
def double_batched(xs: list[int]) -> list[int]:
    time.sleep(PER_CALL)
    return [2 * x for x in xs]


@app.function(max_containers=1)
def trivial(x):
    return x


@app.function(max_containers=1)
@ember.batched(max_batch_size=64, wait_ms=10)
def trivial_batched(xs: list[int]) -> list[int]:
    return xs


@app.function()
def noop(x):
    return None
