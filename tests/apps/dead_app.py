"""Functions of the dead-letter and circuit-breaker tests (tests/test_dead_letters.py)."""

import os
import signal

import ember

app = ember.App("dead-letters")


@app.function(retries=ember.Retries(max_retries=1, initial_delay=0.0))
def flaky(marker):
    """Fails until the marker file exists."""
    if not os.path.exists(marker):
        raise ValueError(f"no marker at {marker}")
    return "ok at last"


@app.function(retries=ember.Retries(max_retries=10, initial_delay=0.1, backoff_coefficient=1.0))
def double(x):
    """Kills its own container on the worker started with EMBER_TEST_BAD_WORKER (a crash that
    only that worker's containers see: they inherit the process backend's environment)."""
    if os.environ.get("EMBER_TEST_BAD_WORKER"):
        os.kill(os.getpid(), signal.SIGKILL)
    return 2 * x


@app.function(retries=ember.Retries(max_retries=2, initial_delay=0.0))
def crash():
    """Kills its own container, wherever it runs."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.function()
def which_worker():
    return "bad" if os.environ.get("EMBER_TEST_BAD_WORKER") else "good"
