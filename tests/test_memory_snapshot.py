"""Memory snapshots (enable_memory_snapshot=True, process backend): containers of a deployed class
restored from a CRIU checkpoint taken after its imports and @ember.enter(snap=True) hooks."""

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
    with open(EVENTS, "a") as f:
        f.write(what + "\\n")

note("import")  # the module's import: once per snapshot, not once per container
app = ember.App("snappy")

@app.cls(enable_memory_snapshot=True)
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
    assert events(cluster) == ["import", "snap", "rest", "rest"]
    assert len(snapshots(cluster)) == 1

    # A corrupt snapshot: the container starts afresh all the same, and the worker says why.
    (snap,) = snapshots(cluster)
    for image in (snap / "images").glob("pstree*.img"):
        image.write_bytes(b"\0garbage" * 8)
    third = fresh_container_info(cluster)
    assert third["state"] != first["state"] and third["state"].startswith("v1-")
    wait_for(lambda: "memory snapshot of Model not used" in cluster.log("worker-w1"), what="the fallback's log line")
    assert "restore failed" in cluster.log("worker-w1")
    assert events(cluster)[4:] == ["import", "snap", "rest"]  # a normal start: all of it
    assert not snapshots(cluster)  # removed: the next container takes a new one

    # A redeploy with changed code takes a new snapshot, and its containers run the new code.
    deploy(cluster, "v2")
    fourth, fifth = fresh_container_info(cluster), fresh_container_info(cluster)
    assert fourth["state"].startswith("v2-") and fourth["state"] == fifth["state"]
    assert events(cluster) == ["import", "snap", "rest", "rest"]
