"""Memory snapshots (enable_memory_snapshot=True, process backend): containers of a deployed class
restored from a CRIU checkpoint taken after its imports and @ember.enter(snap=True) hooks."""

import re
import subprocess
import sys
import textwrap

import pytest

import ember
from conftest import ROOT, module_cluster, wait_for

APP = '''
import os, threading, time, uuid
import ember

EVENTS = {events!r}
def note(what):
    # By container: "snapshot" while a snapshot is taken (no container is known yet).
    with open(EVENTS, "a") as f:
        f.write(what + ":" + os.environ.get("EMBER_CONTAINER_ID", "snapshot") + "\\n")

note("import")  # the module's import: once per snapshot, not once per container
app = ember.App("snappy")

@app.cls(enable_memory_snapshot=True, scaledown_window=2)
class Model:
    @ember.enter(snap=True)
    def load(self):
        note("snap")
        self.state = "{version}-" + uuid.uuid4().hex
        self.weights = bytearray(8 << 20)

    @ember.enter(snap=False)
    def connect(self):
        note("rest")
        self.container = os.environ["EMBER_CONTAINER_ID"]

    @ember.exit()
    def bye(self):
        note("exit")

    @ember.method()
    def info(self):
        return {{"state": self.state, "weights": len(self.weights), "container": self.container}}

    @ember.method()
    def leave(self):
        # The container ends once it answered: the next call needs a new one.
        threading.Timer(0.2, os._exit, (0,)).start()
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("snap")) as c:
        yield c


def deploy(cluster, version):
    path = cluster.tmp / f"snappy_{version}.py"
    path.write_text(textwrap.dedent(APP.format(events=str(cluster.tmp / "events"), version=version)))
    out = subprocess.run([sys.executable, "-m", "ember.cli.main", "deploy", str(path), "--name", "snappy"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    (cluster.tmp / "events").unlink()  # what the deploy's own import of the module wrote


def events(cluster) -> list[str]:
    return (cluster.tmp / "events").read_text().split()


def fresh_container_info(cluster):
    """The info of a container started for this call (the last one left)."""
    model = ember.Cls.from_name("snappy", "Model")()
    info = model.info.remote()
    model.leave.remote()
    wait_for(lambda: f"container {info['container']} exited" in cluster.log("worker-w1"), what="the container to end")
    return info


def snapshots(cluster) -> list:
    return list((cluster.tmp / "w1" / "memory-snapshots").iterdir())


def test_restored_containers_keep_snap_state_and_rerun_the_rest(cluster):
    deploy(cluster, "v1")
    first, second = fresh_container_info(cluster), fresh_container_info(cluster)
    # Two containers, both restored from one snapshot: its state, taken once; the others re-ran.
    assert first["container"] != second["container"]
    assert first["state"] == second["state"] and first["state"].startswith("v1-")
    assert first["weights"] == second["weights"] == 8 << 20
    seen = events(cluster)
    assert seen.count("import:snapshot") == seen.count("snap:snapshot") == 1
    for c in (first["container"], second["container"]):
        assert f"rest:{c}" in seen and f"import:{c}" not in seen and f"snap:{c}" not in seen
    assert len(snapshots(cluster)) == 1
    # Its CPU time and memory are read from the copy's own process (not its restorer's).
    restored = re.findall(r"container (\S+) started \(pid (\d+), restored from its memory snapshot as pid (\d+)\)",
                          cluster.log("worker-w1"))
    assert {c for c, _, _ in restored} >= {first["container"], second["container"]}
    assert all(restorer != copy for _, restorer, copy in restored)

    # A corrupt snapshot: the container starts afresh all the same, and the worker says why.
    (snap,) = snapshots(cluster)
    for image in (snap / "images").glob("pstree*.img"):
        image.write_bytes(b"\0garbage" * 8)
    third = fresh_container_info(cluster)
    assert third["state"] != first["state"] and third["state"].startswith("v1-")
    wait_for(lambda: "memory snapshot of Model not used" in cluster.log("worker-w1"), what="the fallback's log line")
    assert "restore failed" in cluster.log("worker-w1")
    assert {f"import:{third['container']}", f"snap:{third['container']}"} <= set(events(cluster))  # all of it

    # A redeploy with changed code takes a new snapshot, and its containers run the new code.
    deploy(cluster, "v2")
    fourth, fifth = fresh_container_info(cluster), fresh_container_info(cluster)
    assert fourth["state"].startswith("v2-") and fourth["state"] == fifth["state"]
    seen = events(cluster)
    assert seen.count("import:snapshot") == 1 and f"rest:{fifth['container']}" in seen

    # Scaled down when idle, a restored container is asked to stop (SIGTERM, through its
    # restorer) and runs its exit hooks.
    last = ember.Cls.from_name("snappy", "Model")().info.remote()
    wait_for(lambda: f"exit:{last['container']}" in events(cluster), what="the exit hook of an idle restored container")
