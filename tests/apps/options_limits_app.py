"""cpu= and memory= as (request, limit), in real containers (tests/test_function_options.py)."""

import os

import ember

app = ember.App("option-limit-tests", image=ember.Image.debian_slim())


@app.function(cpu=(0.25, 0.5), memory=(64, 200), env={"IN_CONTAINER": "yes"})
def cgroup_names():
    """The names of its cgroups, for the test to read their files on the host."""
    with open("/proc/self/cgroup") as f:
        names = {line.rstrip().rpartition("/")[2] for line in f if "/ember/" in line}
    return names, os.environ.get("IN_CONTAINER")
