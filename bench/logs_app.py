"""The functions bench/logs.py calls: a map's work, and a chatterbox printing beside it."""

import time

import ember

app = ember.App("bench-logs")


@app.function(max_containers=2)
def work(x):
    time.sleep(0.001)  # an input's cost: a little, so that the map is not all overhead
    return x


@app.function(max_containers=1)
def chatter(seconds: float, per_second: int) -> int:
    """Print per_second lines a second, in bursts every 10 ms, for `seconds`."""
    burst = per_second // 100
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        for _ in range(burst):
            n += 1
            print(f"line {n} of the chatterbox, with some text to make it as long as a real log line", flush=False)
        print(end="", flush=True)
        time.sleep(max(0.0, start + n / per_second - time.monotonic()))
    return n
