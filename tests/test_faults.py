"""Faults: a process of the cluster dies mid-work; nothing accepted is lost."""

import os
import signal
import subprocess
import sys

import pytest

from ember import exception
from conftest import dead, on_both_stores, run_py, wait_for

import broken_app
import core_app


@on_both_stores()
def test_worker_killed_mid_input(cluster, tmp_path):
    with core_app.app.run():
        call = core_app.slow.spawn(str(tmp_path / "m1"), str(tmp_path / "go"), "survived")
        # Written by the container (exists, then has its pid): wait for the pid.
        wait_for(lambda: (tmp_path / "m1").exists() and (tmp_path / "m1").read_text(), what="the input to start")
        container_pid = int((tmp_path / "m1").read_text())
        cluster.workers[0].send_signal(signal.SIGKILL)
        cluster.workers[0].wait()
        # Its container dies with it (no orphans) ...
        wait_for(lambda: dead(container_pid), what="the container to die")
        (tmp_path / "go").touch()
        # ... and the input runs again on the restarted worker.
        cluster.start_worker()
        assert call.get(timeout=90) == "survived"
        assert int((tmp_path / "m1").read_text()) != container_pid


def test_second_worker_takes_over(cluster, tmp_path):
    with core_app.app.run():
        call = core_app.slow.spawn(str(tmp_path / "m"), str(tmp_path / "go"), 7)
        wait_for(lambda: (tmp_path / "m").exists(), what="the input to start")
        (tmp_path / "m").unlink()
        cluster.start_worker("w2")
        cluster.workers[0].send_signal(signal.SIGKILL)
        (tmp_path / "go").touch()
        assert call.get(timeout=90) == 7


@on_both_stores()
def test_control_plane_killed_with_calls_queued_and_running(cluster, tmp_path):
    release = tmp_path / "go"
    with core_app.app.run():
        running = core_app.slow.spawn(str(tmp_path / "m"), str(release), "was running")
        wait_for(lambda: (tmp_path / "m").exists(), what="the input to start")
        queued = [core_app.square.spawn(i) for i in range(5)]
        cluster.kill_server()
        release.touch()
        cluster.start_server()
        assert running.get(timeout=90) == "was running"
        assert [c.get(timeout=90) for c in queued] == [i * i for i in range(5)]
        # And from another process, by id.
        ids = [running.object_id] + [c.object_id for c in queued]
        proc = run_py(f"import ember; print([ember.FunctionCall.from_id(i).get(timeout=60) for i in {ids!r}])")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == repr(["was running"] + [i * i for i in range(5)])
        # The cluster still works for new calls.
        assert core_app.square.remote(9) == 81


def test_import_failure_in_container_fails_the_call(cluster):
    with broken_app.app.run():
        with pytest.raises(exception.InitError, match="refuses to load") as info:
            broken_app.f.remote()
        assert "Remote traceback" in "\n".join(info.value.__notes__)


def test_missing_function_in_container(cluster, tmp_path):
    # The client's copy has a function the shipped file lacks: the container says so.
    src = tmp_path / "gone_app.py"
    src.write_text("import ember\napp = ember.App('gone')\n\n@app.function()\ndef present():\n    return 1\n")
    code = f"""
import sys; sys.path.insert(0, {str(tmp_path)!r})
import gone_app, ember
@gone_app.app.function(name="absent")
def absent():
    return 2
absent.__module__ = "gone_app"; absent._raw_f.__module__ = "gone_app"
with gone_app.app.run():
    try:
        absent.remote()
    except ember.exception.InitError as e:
        print("InitError:", e)
"""
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr
    assert "InitError" in proc.stdout and "has no function 'absent'" in proc.stdout


def test_functions_from_main_are_pickled(cluster):
    code = """
import ember
app = ember.App("script")
@app.function()
def triple(x):
    return 3 * x
if __name__ == "__main__":
    with app.run():
        print(triple.remote(5), list(triple.map([1, 2])))
"""
    proc = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "15 [3, 6]"


def test_ephemeral_app_stops_with_its_client(cluster, tmp_path):
    code = """
import core_app
with core_app.app.run():
    print(core_app.square.remote(4), flush=True)
"""
    proc = run_py(code)
    assert proc.stdout.strip() == "16"
    assert "stopped: its client stopped it" in cluster.log()


def test_app_of_a_killed_client_is_stopped(tmp_path):
    from conftest import Cluster

    cluster = Cluster(tmp_path, app_timeout=2)
    cluster.start_server()
    cluster.start_worker()
    try:
        code = f"""
import core_app, os, time
with core_app.app.run():
    core_app.slow.spawn({str(tmp_path / "m")!r}, {str(tmp_path / "never")!r}, 1)
    while not os.path.exists({str(tmp_path / "m")!r}):
        time.sleep(0.01)
    print("running", flush=True)
    os.kill(os.getpid(), 9)
"""
        proc = run_py(code, env_extra=cluster.env)
        assert proc.stdout.strip() == "running", proc.stderr
        container_pid = int((tmp_path / "m").read_text())
        # No heartbeat from the dead client: the app stops and so does its container.
        wait_for(lambda: "stopped: its client sent no heartbeat" in cluster.log(), what="the app to stop")
        wait_for(lambda: not os.path.exists(f"/proc/{container_pid}"), what="its container to stop")
    finally:
        cluster.stop()
