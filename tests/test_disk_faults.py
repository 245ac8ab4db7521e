"""A full disk under the control plane's data dir: a clear error for what cannot be kept,
nothing accepted lost, and back to work by itself once there is room (no restart).

The data dir is a small tmpfs of its own, mounted here (root only), with a filler file the
test deletes to give room back.
"""

import os
import pathlib
import subprocess

import pytest

import ember
from ember import exception
from conftest import Cluster, run_py

import disk_app

MiB = 1 << 20
INLINE = int(1.5 * MiB)   # under the 2 MiB blob threshold: stored in the database
BLOB = 4 * MiB            # over it: the client uploads a blob first


@pytest.fixture
def small_disk_cluster(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    data = tmp_path / "server"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(data)], check=True)
    c = Cluster(tmp_path)
    try:
        (data / "filler").write_bytes(b"\0" * (16 * MiB))  # room to give back later
        c.start_server()
        c.start_worker()
        for key, value in c.env.items():
            monkeypatch.setenv(key, value)
        yield c
    finally:
        c.stop()
        subprocess.run(["umount", str(data)], check=True)


def fill(call, limit=200):
    """Call until the disk is full; the ResourceExhaustedError that said so, and what was accepted."""
    accepted = []
    for i in range(limit):
        try:
            accepted.append(call(i))
        except exception.ResourceExhaustedError as e:
            return e, accepted
    raise AssertionError(f"{limit} calls and the disk is still not full")


def assert_names_the_disk(e: Exception, data: pathlib.Path):
    msg = str(e)
    assert "disk is full" in msg and str(data) in msg and "free there" in msg, msg
    assert "Errno" not in msg and "UNKNOWN" not in msg, msg


def test_full_disk_fails_what_cannot_be_kept_and_recovers(small_disk_cluster, tmp_path):
    c = small_disk_cluster
    data = tmp_path / "server"
    gate = tmp_path / "gate"
    server_pid = c.server.pid
    with disk_app.app.run(), ember.Dict.ephemeral() as d:
        d["kept"] = b"before"
        before = [disk_app.size.spawn(os.urandom(1000)) for _ in range(3)]
        assert disk_app.size.remote(os.urandom(INLINE)) == INLINE

        # Inline arguments, kept in the database while their calls wait: until it cannot keep more.
        full, waiting = fill(lambda i: disk_app.size_after.spawn(os.urandom(INLINE), str(gate)))
        print(f"{len(waiting)} calls of {INLINE} bytes accepted before: {full}")
        assert_names_the_disk(full, data)
        assert len(waiting) >= 5

        # While it is full: a .remote() with an inline argument still runs, since its argument is
        # never written (its call is, with its small result: ledger.py's hold) ...
        assert disk_app.size.remote(os.urandom(INLINE)) == INLINE
        # ... but a large one (a blob upload) fails, and leaves no part of itself behind.
        with pytest.raises(exception.ResourceExhaustedError, match="disk is full") as info:
            disk_app.size.remote(os.urandom(BLOB))
        assert_names_the_disk(info.value, data)
        assert not list((data / "blobs").glob(".upload-*"))
        # ... and a dict's write.
        with pytest.raises(exception.ResourceExhaustedError, match="disk is full") as info:
            d["big"] = os.urandom(INLINE)
        assert_names_the_disk(info.value, data)

        # Room comes back: no restart, everything accepted before runs, and new calls work.
        (data / "filler").unlink()
        gate.touch()
        assert [call.get(timeout=120) for call in waiting] == [INLINE] * len(waiting)
        assert [call.get(timeout=60) for call in before] == [1000] * 3
        assert disk_app.size.remote(os.urandom(INLINE)) == INLINE
        assert disk_app.size.remote(os.urandom(BLOB)) == BLOB
        d["big"] = b"after"
        assert (d["kept"], d["big"]) == (b"before", b"after")
        ids = [call.object_id for call in before + waiting]
        assert c.server.poll() is None and c.server.pid == server_pid
    # What was accepted is in the database, not only in the control plane's memory.
    proc = run_py(f"import ember; print(sum(ember.FunctionCall.from_id(i).get(timeout=60) for i in {ids!r}))")
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == 3 * 1000 + len(waiting) * INLINE


def test_full_disk_with_blobs_and_results(small_disk_cluster, tmp_path):
    data = tmp_path / "server"
    with disk_app.app.run():
        # Large arguments, each a blob the client uploads, until there is no room.
        full, done = fill(lambda i: disk_app.size.remote(os.urandom(BLOB)))
        print(f"{len(done)} blobs of {BLOB} bytes stored before: {full}")
        assert_names_the_disk(full, data)
        assert done == [BLOB] * len(done) and len(done) >= 5
        assert not list((data / "blobs").glob(".upload-*"))

        # A result too large to travel inline: the container's upload of it fails, and says why.
        with pytest.raises(ember.exception.Error, match="disk is full") as info:
            disk_app.blob_of.remote(BLOB)
        print(f"a large result on a full disk: {type(info.value).__name__}: {info.value}")

        (data / "filler").unlink()
        assert len(disk_app.blob_of.remote(BLOB)) == BLOB
        assert disk_app.size.remote(os.urandom(BLOB)) == BLOB
