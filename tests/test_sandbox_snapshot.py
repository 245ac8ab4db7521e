"""sb.snapshot_filesystem() on the container backend: what a sandbox changed (not its volumes)
becomes an image that later sandboxes and functions run with, on this worker and on another
that fetches the snapshot's layer from the blob store; the sandbox's own image is unchanged."""

import asyncio
import json
import os
import pathlib
import subprocess
import threading
import time

import grpc
import pytest

import ember
from ember import exception
from ember._client.auth import metadata
from ember._client.client import Client
from ember._layers import snapshot_layer_id
from ember.proto import api_pb2, api_pb2_grpc
from ember.server.blob_gc import BlobCollector
from ember.server.blobs import open_blob_store
from ember.server.scheduler import Scheduler
from ember.server.store import open_store
from conftest import PY, ROOT, run_async, wait_for

CHANGES = ("mkdir -p /opt/app && echo 42 > /opt/app/answer && rm /etc/debian_version"
           " && echo in-the-volume > /data/kept-in-the-volume")


@pytest.fixture(scope="module")
def app(container_cluster):
    return ember.App.lookup("snapshots", create_if_missing=True)


def read(sb: ember.Sandbox, script: str) -> str:
    p = sb.exec("sh", "-c", script)
    out = p.stdout.read()
    assert p.wait() == 0, p.stderr.read()
    return out


SEEN = ("cat /work/notes.txt /opt/app/answer; ls /etc/debian_version /data/kept-in-the-volume 2>&1 | grep -c 'No such'"
        " || true")


def test_a_snapshot_of_an_ended_sandbox_or_a_made_up_one_is_refused(container_cluster, app):
    sb = ember.Sandbox.create("true", app=app, timeout=60)
    sb.wait()
    with pytest.raises(exception.SandboxTerminatedError, match=f"sandbox {sb.object_id} has ended"):
        sb.snapshot_filesystem()
    live = ember.Sandbox.create(app=app, timeout=60)
    with pytest.raises(exception.InvalidError, match="timeout"):
        live.snapshot_filesystem(timeout=0)
    snap = live.snapshot_filesystem()
    live.terminate()
    # An image that names an archive no snapshot of this workspace made is refused, saying so: one
    # it put itself (a tar of anything) does not make a layer.
    forged = snap._resolve(lambda data: "")
    forged.steps[-1].blob_id = Client.from_env().upload_sync(b"not a snapshot")
    with pytest.raises(exception.Error, match="snapshot whose layer is not kept"):
        ember.Sandbox.create(app=app, image=ember.Image._of_snapshot(forged), timeout=60)
    forged.steps[-1].blob_id = "0" * 64
    with pytest.raises(exception.NotFoundError, match="which this workspace has not put"):
        ember.Sandbox.create(app=app, image=ember.Image._of_snapshot(forged), timeout=60)
    # Another workspace's token can neither use the snapshot nor snapshot the sandbox.
    def cli(*args) -> str:
        return subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout
    cli("workspace", "create", "snap-other")
    token = json.loads(cli("token", "new", "--workspace", "snap-other", "--json"))
    with grpc.insecure_channel(container_cluster.url) as channel:
        stub, md = api_pb2_grpc.ClientApiStub(channel), metadata((token["token_id"], token["token_secret"]))
        with pytest.raises(grpc.RpcError) as e:
            list(stub.ImageBuild(api_pb2.ImageBuildRequest(image=snap._resolve(lambda data: "")), metadata=md,
                                 timeout=30))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "has not put" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.SandboxSnapshotFilesystem(api_pb2.SandboxSnapshotRequest(sandbox_id=live.object_id, timeout=5),
                                           metadata=md, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    wait_for(lambda: live.poll() is not None, what="the sandbox to end")


def test_a_snapshot_cut_short_by_the_sandboxs_end_says_so(container_cluster, app):
    sb = ember.Sandbox.create(app=app, timeout=60)
    read(sb, "head -c 100000000 /dev/urandom > /big")  # incompressible: its archive takes a while
    outcome = []

    def snapshot():
        try:
            outcome.append(sb.snapshot_filesystem())
        except Exception as e:  # noqa: BLE001 - what the test looks at
            outcome.append(e)

    t = threading.Thread(target=snapshot, daemon=True)
    t.start()
    # Its archive is being written on the worker: the sandbox ends now.
    work = pathlib.Path(os.environ["EMBER_CACHE_DIR"]) / "layers" / ".tmp" / str(container_cluster.workers[0].pid)
    wait_for(lambda: any(work.glob("snapshot-*")) or outcome, what="the snapshot's archive to start")
    sb.terminate()
    t.join(60)
    assert isinstance(outcome[0], exception.SandboxTerminatedError), outcome
    assert f"snapshot of sandbox {sb.object_id} failed" in str(outcome[0]) and "was terminated" in str(outcome[0])


def test_a_snapshot_carries_the_sandboxes_files_to_sandboxes_and_functions_elsewhere(container_cluster, app,
                                                                                     tmp_path_factory):
    volume = ember.Volume.from_name("snapshot-volume", create_if_missing=True)
    sb = ember.Sandbox.create(app=app, timeout=120, volumes={"/data": volume})
    sb.mkdir("/work")
    with sb.open("/work/notes.txt", "w") as f:
        f.write("written in the sandbox\n")
    read(sb, CHANGES)
    started = time.perf_counter()
    snap = sb.snapshot_filesystem()
    print(f"snapshot_filesystem() of a small change: {(time.perf_counter() - started) * 1000:.0f} ms")
    assert isinstance(snap, ember.Image)
    assert read(sb, "echo still running") == "still running\n"  # the sandbox goes on

    # A sandbox from the snapshot has its files, and what it deleted is gone; a volume's files are not in it.
    copy = ember.Sandbox.create(app=app, image=snap, timeout=60)
    assert read(copy, SEEN) == "written in the sandbox\n42\n2\n"
    # A snapshot of a sandbox started from a snapshot stacks on it.
    read(copy, "echo second > /opt/app/second")
    second = copy.snapshot_filesystem()
    copy.terminate()
    third = ember.Sandbox.create(app=app, image=second, timeout=60)
    assert read(third, "cat /opt/app/answer /opt/app/second") == "42\nsecond\n"
    third.terminate()
    # Steps added to a snapshot build on it.
    built = ember.Sandbox.create(app=app, image=snap.run_commands("cp /opt/app/answer /opt/app/copied"), timeout=60)
    assert read(built, "cat /opt/app/copied /work/notes.txt") == "42\nwritten in the sandbox\n"
    built.terminate()

    # The sandbox's own image is unchanged.
    plain = ember.Sandbox.create(app=app, timeout=60)
    assert read(plain, "ls /work/notes.txt /opt/app 2>&1 | grep -c 'No such'; cat /etc/debian_version | wc -l") \
        == "2\n1\n"
    plain.terminate()
    sb.terminate()

    # A worker whose cache lacks the snapshot's layer (it has the base layer only, as any worker that
    # ran the base image would) fetches the layer from the blob store to run a function from it.
    shared = pathlib.Path(os.environ["EMBER_CACHE_DIR"]) / "layers"
    cache = tmp_path_factory.mktemp("second-worker-cache")
    base = ember.Image.debian_slim()._resolve(lambda data: "").steps[0].layer_id
    (cache / "layers").mkdir()
    if subprocess.run(["cp", "-al", str(shared / base), str(cache / "layers" / base)]).returncode != 0:
        subprocess.run(["rm", "-rf", str(cache / "layers" / base)], check=True)  # another filesystem: copied
        subprocess.run(["cp", "-a", str(shared / base), str(cache / "layers" / base)], check=True)
    w2 = container_cluster.start_worker(name="w2", backend="container", label="region=second",
                                        **{"cache-dir": str(cache)})
    try:
        fn_app = ember.App("from-a-snapshot")

        @fn_app.function(image=snap, region="second", serialized=True)
        def look() -> str:
            import subprocess
            return subprocess.run(["sh", "-c", SEEN], capture_output=True, text=True).stdout

        with fn_app.run():
            assert look.remote() == "written in the sandbox\n42\n2\n"
        snap_layer = snap._resolve(lambda data: "").image_id
        assert f"layer {snap_layer[:12]} fetched from the blob store" in container_cluster.log("worker-w2")
    finally:  # last of the module's tests on its cluster: none of them is placed on a worker stopping
        w2.terminate()
        w2.wait()


@run_async
async def test_the_blob_collector_keeps_a_snapshots_layer_while_it_is_used_or_recent(tmp_path):
    """The control plane's parts in this process (as test_blob_gc.py's): a snapshot recorded as the
    control plane records one, with a short --layer-grace."""
    store = open_store(tmp_path / "ember.db")
    blobs = open_blob_store(tmp_path / "blobs")
    sched = Scheduler(store, lease_timeout=5, worker_timeout=5, app_timeout=5, output_retention=3600)
    gc = BlobCollector(store, blobs, sched, blob_retention=0, layer_grace=0.3, volume_versions=1)
    workspace = "ws-snapshots"

    async def chunks():
        yield b"the snapshot's archive"
    blob_id = await blobs.put(chunks())
    base = ember.Image.debian_slim()._resolve(lambda data: "")
    layer_id = snapshot_layer_id(base.image_id, workspace, blob_id)
    snap = await sched.snapshots.record(base, api_pb2.Layer(layer_id=layer_id, blob_id=blob_id, size=1), workspace)
    assert snap.image_id == layer_id and sched.snapshots.check(snap) == ""
    await gc.collect()
    assert await blobs.exists(blob_id)  # recent: kept though nothing uses it yet
    # A live app's function runs from it: kept past the grace.
    app_id = sched.apps.create_app(workspace, "uses-a-snapshot")
    d = api_pb2.FunctionDefinition(name="f")
    d.image.CopyFrom(snap)
    fn = sched.apps.function(sched.apps.create_function(app_id, d, workspace))
    await asyncio.sleep(0.4)
    await gc.collect()
    assert await blobs.exists(blob_id) and sched.snapshots.check(snap) == ""
    # Unused past the grace: forgotten, its archive deleted, and an image of it says to take a new one.
    sched.apps.forget_function(fn)
    await gc.collect()
    assert not await blobs.exists(blob_id)
    assert "take a new one" in sched.snapshots.check(snap)
    store.close()
