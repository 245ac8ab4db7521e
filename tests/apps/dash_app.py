"""Apps the dashboard shows (tests/test_dashboard.py): one that talks slowly, one that fails, and
one whose name and log lines are HTML that must show as text."""

import time

import ember

app = ember.App("dash")
evil = ember.App("<script>window.pwned = 'app'</script>")


@app.function()
def talk(n: int, pause: float = 0.3):
    for i in range(n):
        print(f"line {i} of {n}", flush=True)
        time.sleep(pause)
    print("<script>window.pwned = 'log'</script> <b>not bold</b>", flush=True)
    return n


@app.function()
def fail(why: str):
    raise ValueError(f"boom: {why}")


@evil.function()
def hello():
    print("<img src=x onerror=\"window.pwned='img'\">", flush=True)
    return "hi"
