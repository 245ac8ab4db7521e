"""Functions the fork tests call: each container is single-use, so every call is a cold start,
which forks from the module's warm parent once the worker keeps one."""

import os

import ember

app = ember.App("fork-tests")
IMPORTED_BY = os.getpid()  # the process that imported this module: in a fork, its parent


@app.function(single_use_containers=True)
def who_am_i():
    """This container's PID, its parent's, the PID that imported the module, and its credential's id."""
    return {"pid": os.getpid(), "ppid": os.getppid(), "imported_by": IMPORTED_BY,
            "container_id": os.environ.get("EMBER_CONTAINER_ID")}


@app.function(single_use_containers=True)
def leave_a_file(name):
    """Write a file in its own writable layer; whether a sibling's file is there; what processes it sees."""
    others = sorted(n for n in os.listdir("/tmp") if n.startswith("fork-mark-"))
    with open(f"/tmp/fork-mark-{name}", "w") as f:
        f.write(name)
    return {"others": others, "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}


@app.function(single_use_containers=True)
def signal_pid(pid):
    """Try to signal another process (signal 0: only the check); the errno's name, or "ok"."""
    try:
        os.kill(pid, 0)
        return "ok"
    except OSError as e:
        return type(e).__name__


@app.cls(single_use_containers=True)
class Loaded:
    """A class: the parent imports its module, each fork runs its @enter hooks itself."""

    @ember.enter()
    def load(self):
        self.entered_in = os.getpid()

    @ember.method()
    def where(self):
        return {"pid": os.getpid(), "ppid": os.getppid(), "imported_by": IMPORTED_BY, "entered_in": self.entered_in}


@app.function()
def held(gate):
    """Wait for the gate file (so that each input of a backlog holds a container of its own)."""
    import time
    while not os.path.exists(gate):
        time.sleep(0.02)
    return os.environ.get("EMBER_CONTAINER_ID")
