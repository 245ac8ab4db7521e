"""An app that prints (tests/test_logs.py): lines to find again, on stdout and stderr."""

import sys

import ember

app = ember.App("logger")


@app.function()
def speak(n: int, word: str = "hello"):
    for i in range(n):
        print(f"{word} {i}", flush=True)
    print(f"warn {word}", file=sys.stderr, flush=True)
    return n


@app.function()
def quiet():
    print("quiet line", flush=True)
