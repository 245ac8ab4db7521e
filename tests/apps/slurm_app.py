"""Functions the provisioner's tests call: no worker runs until the Slurm provisioner asks for one."""

import os
import time

import ember

app = ember.App("slurm-tests")


@app.function(cpu=1, memory=256, scaledown_window=2)
def where(seconds):
    """The Slurm job whose worker ran it (the process backend's containers have their worker's
    environment, less its token)."""
    time.sleep(seconds)
    return os.environ.get("SLURM_JOB_ID", "not in a Slurm job")


@app.function(cpu=1, memory=100_000, scaledown_window=2)
def huge():
    """More memory than the test's Slurm node has: its worker's job is refused."""
    return "never"
