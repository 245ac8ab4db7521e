"""Memory snapshots on the container backend (enable_memory_snapshot=True): containers of a
deployed class restored from a CRIU checkpoint taken in a container of its image, each in a
container of its own, held as any other (the escape suite's attacks run in one)."""

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import ember
import escape_app
from conftest import ROOT, wait_for
from test_escape import check_refused, host_paths

# Appended to escape_app's source: its attacks, from a restored container.
SNAPPED = '''

import threading, uuid

@app.cls(image=base, enable_memory_snapshot=True, scaledown_window=2, memory=(256, 384))
class Snapped:
    @ember.enter(snap=True)
    def load(self):
        self.state = "{version}-" + uuid.uuid4().hex
        self.weights = bytearray(8 << 20)
        self.taken_as = os.environ.get("EMBER_CONTAINER_ID", "nobody")  # a snapshot is no container's
        self.taken_pid = os.getpid()

    @ember.enter(snap=False)
    def connect(self):
        self.container = os.environ["EMBER_CONTAINER_ID"]

    @ember.method()
    def info(self):
        with open("/proc/self/cgroup") as f:
            cgroups = f.read()
        note = "/usr/local/share/note-" + self.container
        with open(note, "w") as f:  # its own writable layer: no other container sees it
            f.write("mine")
        return {{"state": self.state, "weights": len(self.weights), "container": self.container,
                 "taken_as": self.taken_as, "same_pid": os.getpid() == self.taken_pid, "cgroups": cgroups,
                 "notes": sorted(n for n in os.listdir("/usr/local/share") if n.startswith("note-"))}}

    @ember.method()
    def attack(self, host_paths):
        return attempts(host_paths)

    @ember.method()
    def leave(self):
        # The container ends once it answered: the next call needs a new one.
        threading.Timer(0.2, os._exit, (0,)).start()


@app.cls(image=base, enable_memory_snapshot=True)
class Connected:
    @ember.enter(snap=True)
    def connect(self):  # a TCP connection open in a snapshot: what criu does not checkpoint
        self.server = socket.create_server(("127.0.0.1", 0))
        self.conn = socket.create_connection(self.server.getsockname())

    @ember.method()
    def ping(self):
        return "pong"
'''


@pytest.fixture(scope="module")
def cluster(container_cluster):
    return container_cluster


def deploy(cluster, version):
    path = cluster.tmp / "snapescape.py"
    path.write_text(pathlib.Path(escape_app.__file__).read_text() + textwrap.dedent(SNAPPED.format(version=version)))
    out = subprocess.run([sys.executable, "-m", "ember.cli.main", "deploy", str(path), "--name", "snapescape"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def fresh(cluster, method="info", *args):
    """What `method` answers in a container started for this call (which ends after it)."""
    model = ember.Cls.from_name("snapescape", "Snapped")()
    info = model.info.remote()
    out = info if method == "info" else getattr(model, method).remote(*args)
    model.leave.remote()
    wait_for(lambda: f"container {info['container']} exited" in cluster.log("worker-w1"), what="the container to end",
             timeout=60)
    return info, out


def restored_ids(cluster) -> set[str]:
    """The containers restored from a snapshot (as they started, or ahead of need)."""
    return set(re.findall(r"container (\S+) started \(pid \d+, restored from its memory snapshot\)",
                          cluster.log("worker-w1")))


def test_restored_containers_keep_snap_state_and_are_held_as_any(cluster):
    deploy(cluster, "v1")
    (first, _), (second, _) = fresh(cluster), fresh(cluster)
    # Two containers, both restored from one snapshot: its state, taken once, in no container's name.
    assert first["container"] != second["container"]
    assert {first["container"], second["container"]} <= restored_ids(cluster)
    assert first["state"] == second["state"] and first["state"].startswith("v1-")
    assert first["weights"] == second["weights"] == 8 << 20
    assert first["taken_as"] == second["taken_as"] == "nobody" and first["same_pid"]
    # Each in its own cgroups (with its limits, not the snapshot's container's), on its own disk.
    assert first["cgroups"] != second["cgroups"] and "-snap" not in first["cgroups"] + second["cgroups"]
    assert "/ember/ct-" in first["cgroups"]
    # Its memory limit (the function's), as the kernel holds it while it runs.
    model = ember.Cls.from_name("snapescape", "Snapped")()
    live = model.info.remote()
    lines = dict(line.split(":", 2)[1:] for line in live["cgroups"].splitlines())
    if "memory" in lines:  # cgroup v1
        limit = pathlib.Path("/sys/fs/cgroup/memory" + lines["memory"], "memory.limit_in_bytes")
    else:
        limit = pathlib.Path("/sys/fs/cgroup" + lines[""], "memory.max")
    assert int(limit.read_text()) == 384 << 20
    assert live["container"] in restored_ids(cluster)
    model.leave.remote()
    wait_for(lambda: f"container {live['container']} exited" in cluster.log("worker-w1"), what="the container to end")
    for info in (first, second):
        assert info["notes"] == [f"note-{info['container']}"]

    # The escape suite's attacks fail in a restored container, as in any (it runs without the
    # user namespace: container root is host root, held by the rest).
    paths = host_paths(cluster)
    info, out = fresh(cluster, "attack", paths)
    assert info["container"] in restored_ids(cluster)
    check_refused(out, paths, user_namespace=False)

    # A corrupt snapshot is found so as the next copy is restored (ahead of need): it is
    # removed, the worker says why, and the next container has a snapshot taken anew.
    (snap,) = [d for d in (cluster.tmp / "w1" / "memory-snapshots").iterdir() if (d / "meta.json").exists()]
    for image in (snap / "images").glob("pstree*.img"):
        image.write_bytes(b"\0garbage" * 8)
    third, _ = fresh(cluster)  # restored before the damage, or from a snapshot taken anew
    wait_for(lambda: "memory snapshot of Snapped removed, it cannot be restored" in cluster.log("worker-w1"),
             what="the corrupt snapshot's log line")
    assert "restore failed" in cluster.log("worker-w1")
    fourth, _ = fresh(cluster)
    assert {third["container"], fourth["container"]} <= restored_ids(cluster)
    assert third["state"].startswith("v1-") and fourth["state"].startswith("v1-")
    assert fourth["state"] != first["state"]  # from the snapshot taken anew

    # A redeploy with changed code takes a new snapshot, and its containers run the new code.
    deploy(cluster, "v2")
    (fifth, _), (sixth, _) = fresh(cluster), fresh(cluster)
    assert fifth["state"].startswith("v2-") and fifth["state"] == sixth["state"]
    assert {fifth["container"], sixth["container"]} <= restored_ids(cluster)


def test_a_corrupt_snapshot_found_as_a_container_starts_falls_back_to_a_fresh_start(cluster):
    """With no copy restored ahead (the worker restarted), the container that finds its snapshot
    corrupt starts afresh, and says why; the next one has a snapshot taken anew."""
    deploy(cluster, "v3")
    fresh(cluster)  # the snapshot of v3, taken
    (worker,) = cluster.workers
    worker.terminate()
    worker.wait(60)
    cluster.workers.remove(worker)
    snaps = [d for d in (cluster.tmp / "w1" / "memory-snapshots").iterdir() if (d / "meta.json").exists()]
    assert snaps
    for snap in snaps:
        for image in (snap / "images").glob("pstree*.img"):
            image.write_bytes(b"\0garbage" * 8)
    cluster.start_worker(backend="container", env={"EMBER_GPUS": "H100"})
    first, _ = fresh(cluster)
    assert first["state"].startswith("v3-") and first["container"] not in restored_ids(cluster)
    log = cluster.log("worker-w1")
    assert "memory snapshot of Snapped not used, the container starts afresh" in log and "restore failed" in log
    second, _ = fresh(cluster)
    assert second["container"] in restored_ids(cluster) and second["state"] != first["state"]


def test_what_cannot_be_snapshotted_starts_afresh(cluster):
    """An open TCP connection in a snap=True hook: the snapshot cannot be taken, the worker says
    why, and the container starts afresh (and works)."""
    deploy(cluster, "v4")
    assert ember.Cls.from_name("snapescape", "Connected")().ping.remote() == "pong"
    log = cluster.log("worker-w1")
    assert re.search(r"memory snapshot of Connected not used, the container starts afresh: criu dump failed: .*\S", log)
