"""The blob collector: space comes back once nothing refers to a blob, and nothing referred to goes.

A control plane with short retentions (outputs 3.6 s, unreferenced blobs 2 s, layers 2 s after
their last build, one volume version, a collection every 0.3 s) and a process-backend worker (a
container one for layers); and the collector itself over a real store and blob store, with the
blob's age set on its file, for the race that a collection must not win. What must survive is
checked once something that became unreferenced at the same time or earlier is gone: proof that
collections ran, with no sleep.
"""

import asyncio
import hashlib
import os
import re
import subprocess
import time
import uuid

import pytest
from conftest import PY, Cluster, container_backend_missing, run_async, run_py, wait_for

import core_app
import ember
from ember._client.client import Client
from ember.app import build_image
from ember.server.blob_gc import BlobCollector
from ember.server.blobs import open_blob_store
from ember.server.scheduler import Scheduler
from ember.server.store import open_store

SHORT = ["--output-retention", "0.001", "--blob-retention", "2s", "--gc-interval", "0.3s",
         "--layer-grace", "2s", "--volume-versions", "1"]
MB = 1 << 20


@pytest.fixture
def short_cluster(tmp_path, monkeypatch):
    c = Cluster(tmp_path)
    c.start_server(SHORT)
    c.start_worker()
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    yield c
    c.stop()


def blob_files(c: Cluster) -> dict[str, int]:
    root = c.tmp / "server" / "blobs"
    return {p.name: p.stat().st_size for p in root.glob("??/*")}


def test_payload_blobs_go_once_their_outputs_expire(short_cluster):
    c = short_cluster
    arg = os.urandom(3 * MB)
    with core_app.app.run():
        call = core_app.add.spawn(arg, b"!")
        assert call.get(timeout=60) == arg + b"!"
        # Read from another process, by id, while its outputs are kept.
        proc = run_py(f"import ember; print(len(ember.FunctionCall.from_id({call.object_id!r}).get(timeout=30)))")
        assert proc.stdout.split() == [str(len(arg) + 1)], proc.stderr
        stored = blob_files(c)
        big = [b for b, size in stored.items() if size > 3 * MB]
        assert len(big) == 2, stored  # the argument and the result (a pickle of it)
        started = time.monotonic()
        # Both go once the call's outputs expire (3.6 s), the call leaves the control plane's
        # memory with them (looked for every 5 s) and the blob retention after that (2 s).
        wait_for(lambda: not set(big) & set(blob_files(c)), timeout=120, what="the payload blobs to go")
        print(f"payload blobs ({sum(stored[b] for b in big) / MB:.1f} MiB) gone "
              f"{time.monotonic() - started:.1f}s after the call")
        # The call itself is forgotten too: its outputs expired.
        with pytest.raises(ember.exception.Error):
            ember.FunctionCall.from_id(call.object_id).get(timeout=5)
        # The running app's code blob stays, and the app still takes calls.
        assert core_app.square.remote(4) == 16
    assert "blob collection: deleted" in c.log()


@run_async
async def test_a_refreshed_blob_survives_the_collection_that_would_have_taken_it(tmp_path):
    store = open_store(tmp_path / "ember.db")
    blobs = open_blob_store(tmp_path / "blobs")
    sched = Scheduler(store, lease_timeout=5, worker_timeout=5, app_timeout=5, output_retention=3600)
    gc = BlobCollector(store, blobs, sched, blob_retention=1, layer_grace=60, volume_versions=1)

    async def old_blob(data: bytes) -> str:
        async def chunks():
            yield data
        blob_id = await blobs.put(chunks())
        path = tmp_path / "blobs" / blob_id[:2] / blob_id
        os.utime(path, (time.time() - 120, time.time() - 120))  # put two minutes ago
        return blob_id

    kept, lost = await old_blob(b"kept"), await old_blob(b"lost")
    await gc.collect()  # both unreferenced from now on
    await asyncio.sleep(1.1)  # ... for longer than the retention
    assert await blobs.refresh(kept)  # a client about to refer to it asks BlobExists
    done = await gc.collect()
    assert await blobs.exists(kept) and not await blobs.exists(lost) and done.blobs == 1
    store.add_call_blobs([("fc-1", kept)])  # the reference, after the collection
    await store.durable()
    await asyncio.sleep(1.1)
    await gc.collect()
    assert await blobs.exists(kept)  # referenced: kept however old
    store.close()


def test_server_flags_are_checked_and_shown(tmp_path):
    out = subprocess.run([PY, "-m", "ember.cli.main", "server", "--help"], capture_output=True, text=True).stdout
    for flag in ("--blob-retention", "--layer-grace", "--volume-versions", "--gc-interval"):
        assert flag in out
    bad = subprocess.run([PY, "-m", "ember.cli.main", "server", "--data-dir", str(tmp_path), "--blob-retention",
                          "soon"], capture_output=True, text=True)
    assert bad.returncode != 0 and "'soon' is not a duration" in bad.stderr


def test_a_volumes_current_version_survives_collections_its_old_versions_do_not(short_cluster, tmp_path):
    vol = ember.Volume.from_name("kept", create_if_missing=True)
    versions = [os.urandom(2 * MB) for _ in range(3)]
    for data in versions:
        (tmp_path / "data.bin").write_bytes(data)
        with vol.batch_upload(force=True) as batch:
            batch.put_file(tmp_path / "data.bin", "/data.bin")
    old, current = [hashlib.sha256(d).hexdigest() for d in versions[:2]], hashlib.sha256(versions[2]).hexdigest()
    assert {*old, current} <= set(blob_files(short_cluster))
    # --volume-versions 1: the contents only older versions had go; waiting for that is waiting
    # for collections that came after the retention, which the current version's content survived.
    started = time.monotonic()
    wait_for(lambda: not set(old) & set(blob_files(short_cluster)), timeout=60, what="the old versions' blobs to go")
    print(f"old versions' blobs gone {time.monotonic() - started:.1f}s after the last write")
    assert current in blob_files(short_cluster)
    assert b"".join(vol.read_file("data.bin")) == versions[2]


def test_a_deployed_apps_layers_survive_collections_an_unused_images_do_not(tmp_path, monkeypatch, capsys):
    if container_backend_missing():
        pytest.skip(container_backend_missing())
    c = Cluster(tmp_path)
    c.start_server(SHORT)
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    try:
        first = c.start_worker(name="w1", backend="container")  # the shared test cache
        token = uuid.uuid4().hex[:8]
        (tmp_path / "kept_app.py").write_text(f'''
import ember
image = ember.Image.debian_slim().run_commands("echo {token} > /token")
app = ember.App("kept")

@app.function(image=image)
def read_token():
    return open("/token").read().strip()
''')
        out = subprocess.run([PY, "-m", "ember.cli.main", "deploy", str(tmp_path / "kept_app.py")],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        deployed = ember.Image.debian_slim().run_commands(f"echo {token} > /token")
        unused = ember.Image.debian_slim().run_commands(f"echo {token} > /unused")
        client = Client.from_env()
        client.run(build_image(client, unused._resolve(client.upload_sync)))
        layers = [s.layer_id for s in deployed._resolve(lambda data: "").steps]
        unused_layer = unused._resolve(lambda data: "").steps[-1].layer_id
        wait_for(lambda: all(archive(c, layer) for layer in [*layers, unused_layer]), timeout=240,
                 what="the layers' archives")
        kept = {layer: archive(c, layer) for layer in layers}
        gone = archive(c, unused_layer)
        # Its layer forgotten after --layer-grace (2 s), its archive deleted --blob-retention (2 s)
        # later: collections that the deployed app's layers went through too.
        started = time.monotonic()
        wait_for(lambda: gone not in blob_files(c), timeout=60, what="the unused layer's archive to go")
        print(f"unused layer's archive gone {time.monotonic() - started:.1f}s after its archiving")
        assert "forgot 1 unused layers" in c.log()
        assert all(blob in blob_files(c) for blob in kept.values()), kept
        # A worker with an empty cache runs the deployed function from those archives.
        first.terminate()
        first.wait()
        c.start_worker(name="w2", backend="container", **{"cache-dir": str(tmp_path / "cache2")})
        assert ember.Function.from_name("kept", "read_token").remote() == token
        log = c.log("worker-w2")
        assert "fetching layer 1/2" in log and "fetching layer 2/2" in log and "=> step" not in log
    finally:
        c.stop()


def archive(c: Cluster, layer_id: str) -> str | None:
    """The blob id of the layer's archive, once its worker logged the upload."""
    m = re.search(rf"layer {layer_id[:12]} archived into the blob store as (\w+)", c.log("worker-w1"))
    return next((p.name for p in (c.tmp / "server" / "blobs").glob(f"??/{m.group(1)}*")), None) if m else None
