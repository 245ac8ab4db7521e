"""Functions the full-disk tests call: payloads that fill the control plane's disk."""

import os
import time

import ember

app = ember.App("disk-tests")


@app.function()
def size(data: bytes) -> int:
    return len(data)


@app.function(max_containers=1)
def size_after(data: bytes, gate: str) -> int:
    """len(data), once the file gate exists: its inputs stay queued (in the store) until then."""
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(data)


@app.function()
def blob_of(n: int) -> bytes:
    """A result too large to travel inline: the container uploads it as a blob."""
    return os.urandom(n)
