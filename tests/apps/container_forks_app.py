"""Functions the container backend's fork tests call (tests/test_container_forks.py): each
container is single-use, so every call is a cold start, which forks from the module's warm
parent once the worker keeps one."""

import os
import socket

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
