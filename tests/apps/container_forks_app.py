"""Functions the container backend's fork tests call (tests/test_container_forks.py): each
container is single-use, so every call is a cold start, which forks from the module's warm
parent once the worker keeps one."""

import os
import socket
import time

import ember

app = ember.App("container-fork-tests")
base = ember.Image.debian_slim()
# Made by the process that imported this module: the same in every fork of one parent, and
# another in each container that imported it itself.
IMPORTED = os.urandom(8).hex()
MARKS: list[str] = []  # module state: a fork's changes are its own


@app.function(image=base, single_use_containers=True)
def who_am_i():
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return {"imported": IMPORTED, "pid": os.getpid(), "pids": pids,
            "hostname": socket.gethostname(), "container_id": os.environ.get("EMBER_CONTAINER_ID"),
            "cgroup": open("/proc/self/cgroup").read()}


@app.function(image=base, single_use_containers=True)
def leave_marks(name):
    """Marks in its root, its /tmp and its module; those of a sibling it finds."""
    found = {"root": sorted(n for n in os.listdir("/") if n.startswith("fork-mark-")),
             "tmp": sorted(n for n in os.listdir("/tmp") if n.startswith("fork-mark-")), "module": list(MARKS)}
    for d in ("/", "/tmp/"):
        with open(f"{d}fork-mark-{name}", "w") as f:
            f.write(name)
    MARKS.append(name)
    return {"imported": IMPORTED, **found}


@app.function(image=base, single_use_containers=True, memory=100, retries=0)
def hog(mb):
    chunks = []
    for _ in range(mb):
        chunks.append(bytearray(1 << 20))
    return {"imported": IMPORTED, "mb": len(chunks)}


@app.function(image=base, single_use_containers=True, env={"GREETING": "hello from the function's env"})
def held(release="/tmp/release"):
    """Says that it runs (a line in its log), then waits for the release: a file the test makes
    in its /tmp with `ember container exec`; what it sees of itself."""
    print(f"held in {os.getcwd()}", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"imported": IMPORTED, "hostname": socket.gethostname(), "cgroup": open("/proc/self/cgroup").read(),
            "mnt": os.readlink("/proc/self/ns/mnt"), "pid_ns": os.readlink("/proc/self/ns/pid"),
            "released": os.path.exists(release)}


@app.function(image=base, ephemeral_disk=64)
def on_a_disk_of_its_own():
    return IMPORTED
