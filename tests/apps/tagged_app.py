"""An app whose lines say which input printed them (tests/test_logs.py): concurrent inputs print
lines in pieces, beside each other; and containers that end in ways its log must tell apart."""

import asyncio
import os
import pathlib
import time

import ember

app = ember.App("tagged")

if not ember.is_local():
    print("imported, outside any input", flush=True)


def me() -> str:
    return f"{ember.current_input_id()} of {ember.current_function_call_id()}"


@app.function(max_containers=1)
@ember.concurrent(max_inputs=4)
def threads(n: int):
    """Each line in three pieces, with a pause between them, while other inputs print theirs."""
    for i in range(n):
        print(me(), end="")
        time.sleep(0.002)
        print(f" line {i}", end="")
        time.sleep(0.002)
        print(" end")
    return ember.current_input_id(), ember.current_function_call_id()


@app.function(max_containers=1)
@ember.concurrent(max_inputs=4)
async def tasks(n: int):
    """The same, as async inputs on one event loop."""
    for i in range(n):
        print(me(), end="")
        await asyncio.sleep(0.002)
        print(f" line {i} end")
    return ember.current_input_id(), ember.current_function_call_id()


@app.function(retries=ember.Retries(max_retries=1, initial_delay=0.0))
def flaky(marker: str):
    """Fails its first attempt."""
    if not os.path.exists(marker):
        pathlib.Path(marker).touch()
        raise RuntimeError("the first attempt fails")
    return "ok"


@app.function()
def crash():
    os._exit(3)


@app.function(timeout=1)
def overrun():
    time.sleep(30)


@app.function(scaledown_window=1)
def brief():
    return "done"
