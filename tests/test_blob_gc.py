"""The blob collector: space comes back once nothing refers to a blob, and nothing referred to goes.

A control plane with short retentions (outputs 3.6 s, unreferenced blobs 2 s, a collection every
0.3 s) and a process-backend worker; and the collector itself over a real store and blob store,
with the blob's age set on its file, for the race that a collection must not win.
"""

import asyncio
import os
import subprocess
import time

import pytest
from conftest import PY, Cluster, run_async, run_py, wait_for

import core_app
import ember
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
        # memory (a minute after its caller read it) and the blob retention after that (2 s).
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
