"""A function that drives a sandbox of its own app from inside its container (test_sandbox.py)."""

import ember

app = ember.App("sandbox-maker")


@app.function()
def make_and_use() -> list:
    sb = ember.Sandbox.create("sh", "-c", "echo from the main command", timeout=60)
    first = sb.stdout.read()
    sb.wait()
    other = ember.Sandbox.create(timeout=60)
    out = other.exec("echo", "from an exec").stdout.read()
    other.terminate()
    return [first, sb.returncode, out]
