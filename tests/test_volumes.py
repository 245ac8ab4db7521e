"""Volumes: files shared by containers through commits, kept across restarts and workers."""

import subprocess
import sys

import pytest

import ember
from ember import exception
from conftest import ROOT, STORES, Cluster, container_backend_missing, wait_for

import volume_app


@pytest.fixture(scope="module")
def running(container_cluster):
    with volume_app.app.run():
        yield container_cluster


def test_writes_are_seen_by_other_containers_after_commit_and_reload(running):
    assert "a.txt" in volume_app.write.remote("a.txt", "alpha")
    assert volume_app.read.remote("a.txt", reload=True) == "alpha"
    assert b"".join(volume_app.vol.read_file("a.txt")) == b"alpha"
    # Uncommitted writes stay in their container.
    volume_app.write.remote("draft.txt", "not yet", commit=False)
    assert volume_app.read.remote("draft.txt", reload=True) is None


def test_two_containers_committing_different_files_both_keep_them(running):
    calls = [volume_app.write.spawn(f"multi/{i}.txt", f"text {i}") for i in range(4)]
    for c in calls:
        c.get(timeout=120)
    names = {e.path for e in volume_app.vol.listdir("multi")}
    assert names == {f"multi/{i}.txt" for i in range(4)}


def test_a_container_killed_before_commit_changes_nothing(running):
    before = {e.path for e in volume_app.vol.listdir("/", recursive=True)}
    with pytest.raises(exception.ContainerExitedError):
        volume_app.crash_after_writing.remote("crash.txt")
    assert {e.path for e in volume_app.vol.listdir("/", recursive=True)} == before
    assert volume_app.read.remote("a.txt", reload=True) == "alpha"


def test_writes_are_committed_when_the_container_stops(container_cluster):
    app = ember.App("commit-on-exit")
    vol = volume_app.vol

    @app.function(volumes={"/data": vol}, serialized=True)
    def write_without_commit():
        with open("/data/on-exit.txt", "w") as f:
            f.write("committed on exit")
        return "written"

    with app.run():
        assert write_without_commit.remote() == "written"
    # The app stopped; its container committed as it stopped.
    wait_for(lambda: any(e.path == "on-exit.txt" for e in vol.listdir("/")), timeout=60, what="the commit on exit")
    assert b"".join(vol.read_file("on-exit.txt")) == b"committed on exit"


def test_files_from_outside_a_container(container_cluster, tmp_path):
    vol = ember.Volume.from_name("outside", create_if_missing=True)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.txt").write_text("x")
    (tmp_path / "one.bin").write_bytes(b"\0" * 1000)
    with vol.batch_upload() as batch:
        batch.put_directory(tmp_path / "dir", "/docs")
        batch.put_file(tmp_path / "one.bin", "/one.bin")
    entries = {e.path: e for e in vol.listdir("/")}
    assert entries["docs"].type == ember.volume.FileEntryType.DIRECTORY and entries["one.bin"].size == 1000
    with pytest.raises(FileExistsError):
        with vol.batch_upload() as batch:
            batch.put_file(tmp_path / "one.bin", "/one.bin")
    with pytest.raises(IsADirectoryError):
        vol.remove_file("docs")
    vol.remove_file("docs", recursive=True)
    assert [e.path for e in vol.listdir("/")] == ["one.bin"]
    with pytest.raises(FileNotFoundError):
        b"".join(vol.read_file("nope"))
    with pytest.raises(exception.NotFoundError, match="no volume named 'missing'"):
        ember.Volume.from_name("missing").listdir()


def test_cli(container_cluster, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ember.cli.main", "volume", *args], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)

    assert cli("create", "cli-vol").returncode == 0
    (tmp_path / "f.txt").write_text("from the cli")
    assert cli("put", "cli-vol", str(tmp_path / "f.txt"), "/in/f.txt").returncode == 0
    assert "in/f.txt" in cli("ls", "cli-vol", "in").stdout
    assert cli("get", "cli-vol", "in/f.txt", "-").stdout == "from the cli"
    assert "cli-vol\t1 files" in cli("list").stdout
    assert cli("rm", "cli-vol", "in/f.txt").returncode == 0
    assert cli("delete", "cli-vol").returncode == 0
    assert cli("ls", "cli-vol").returncode == 1


@pytest.mark.parametrize("store", STORES)
def test_volumes_survive_a_restart_and_reach_another_worker(tmp_path, monkeypatch, store):
    if container_backend_missing():
        pytest.skip(container_backend_missing())
    c = Cluster(tmp_path, store=store)
    c.start_server()
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    try:
        # Two workers with data of their own (volumes are kept per worker); image layers are shared.
        first = c.start_worker(name="w1", backend="container")
        app = ember.App("vol-restart")
        vol = ember.Volume.from_name("kept", create_if_missing=True)

        @app.function(volumes={"/kept": vol}, serialized=True)
        def write():
            open("/kept/file.txt", "w").write("kept across restarts")
            vol.commit()

        @app.function(volumes={"/kept": vol}, serialized=True)
        def read():
            return open("/kept/file.txt").read()

        with app.run():
            write.remote()
        c.kill_server()
        c.start_server()
        first.terminate()
        first.wait()
        c.start_worker(name="w2", backend="container")
        with app.run():
            assert read.remote() == "kept across restarts"
    finally:
        c.stop()
