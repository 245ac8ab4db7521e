"""Functions the autoscaler tests call (tests/test_autoscaler.py). Each input waits at a gate (a
file the test makes), so that what runs at once is the test's to say, not the machine's speed."""

import os
import time

import ember

app = ember.App("autoscale-tests")


def _through(gate: str, seconds: float) -> tuple[str, float]:
    """Its container, and when the input began (before the gate)."""
    began = time.time()
    while not os.path.exists(gate):
        time.sleep(0.02)
    time.sleep(seconds)
    return os.environ["EMBER_CONTAINER_ID"], began


@app.function(max_containers=2)
def capped(gate: str, seconds: float = 0.0):
    return _through(gate, seconds)


@app.function(buffer_containers=2, scaledown_window=1)
def buffered(gate: str):
    return _through(gate, 0.0)


@app.function()
def adjusted(gate: str):
    return _through(gate, 0.0)


@app.function()
@ember.concurrent(max_inputs=4, target_inputs=2)
def wide(gate: str):
    return _through(gate, 0.0)
