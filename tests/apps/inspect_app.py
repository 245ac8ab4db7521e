"""Functions whose containers the container-command tests list, enter and stop (test_container_commands.py)."""

import os
import pathlib
import socket
import time

import ember

app = ember.App("inspect-tests")
shell_image = ember.Image.debian_slim().env({"SHELL_TEST": "from the image"})  # `ember shell --image`


@app.function(env={"GREETING": "hello from the function's env"})
def hold(marker, release):
    """Says that it runs (a line in its log, and the marker: its pid), then waits for the release."""
    print(f"holding in {os.getcwd()}", flush=True)
    pathlib.Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("released", flush=True)
    return os.getpid()


@app.function(image=ember.Image.debian_slim(), env={"GREETING": "hello from the function's env"})
def isolated(release="/tmp/release"):
    """In a container of the container backend: what it sees of itself, once released (a file the
    test makes with `ember container exec`, inside the container)."""
    seen = {"hostname": socket.gethostname(), "cwd": os.getcwd(), "cgroup": open("/proc/self/cgroup").read(),
            "mnt": os.readlink("/proc/self/ns/mnt"), "pid_ns": os.readlink("/proc/self/ns/pid"),
            "confined": [line for line in open("/proc/self/status").read().splitlines()
                         if line.split(":")[0] in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp")]}
    print("isolated:", seen, flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return seen
