"""Nothing lost, nothing run twice, whatever fails: control-plane restarts (during a redeploy,
with calls in flight), failover from a killed worker without waiting for leases, and fencing of
a frozen worker whose inputs moved on. Real processes; each input's runs are counted from the
side effect it leaves (restarts_app.py), never inferred."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import ember
from conftest import ROOT, Cluster, dead, on_both_stores, wait_for

import restarts_app
from restarts_app import runs

DEPLOYED = '''
import os, time
import ember

app = ember.App("drainer")
VERSION = "{version}"

@app.function(max_containers=2)
def record(i, log):
    with open(log, "a") as f:
        f.write(f"{{i}} {{os.getpid()}}\\n")
    time.sleep(0.1)
    return f"{{VERSION}}: {{i}}"
'''


def deploy(tmp_path, version):
    path = tmp_path / f"drainer_{version}.py"
    path.write_text(textwrap.dedent(DEPLOYED.format(version=version)))
    out = subprocess.run([sys.executable, "-m", "ember.cli.main", "deploy", str(path), "--name", "drainer"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def started_pids(started) -> dict[int, int]:
    """input -> pid of the container that started it, from gated()'s files."""
    return {int(i): int(pid) for i, pid in (name.split("-") for name in os.listdir(started))}


def outputs_per_call(cluster: Cluster) -> dict[str, int]:
    """How many outputs the control plane accepted for each call, as its store holds them."""
    return dict(cluster.query("SELECT call_id, count(*) FROM outputs GROUP BY call_id"))


def test_calls_of_a_draining_version_survive_a_restart(cluster, tmp_path):
    deploy(tmp_path, "v1")
    record = ember.Function.from_name("drainer", "record")
    log = tmp_path / "ran"
    n = 200
    calls = [record.spawn(i, str(log)) for i in range(n)]
    deploy(tmp_path, "v2")  # v1 drains: its calls finish on it
    wait_for(lambda: sum(map(len, runs(log).values())) >= 20, what="some inputs to run")
    cluster.kill_server()
    ran_before = sum(map(len, runs(log).values()))
    cluster.start_server()
    assert [c.get(timeout=120) for c in calls] == [f"v1: {i}" for i in range(n)]
    print(f"{ran_before} of {n} inputs had run when the control plane was killed")
    assert sorted(runs(log)) == list(range(n))
    twice = {i: pids for i, pids in runs(log).items() if len(pids) > 1}
    assert not twice, f"inputs that ran more than once: {twice}"
    # v1 stops once its calls are done; new calls go to v2.
    assert record.remote(0, str(tmp_path / "later")) == "v2: 0"


@on_both_stores()
def test_each_input_runs_once_across_a_restart(cluster, tmp_path):
    log = str(tmp_path / "ran")
    n = 150
    with restarts_app.app.run():
        calls = [restarts_app.record.spawn(i, log) for i in range(n)]
        wait_for(lambda: sum(map(len, runs(log).values())) >= 20, what="some inputs to run")
        cluster.kill_server()
        ran_before = sum(map(len, runs(log).values()))
        cluster.start_server()
        assert [c.get(timeout=120) for c in calls] == [i * i for i in range(n)]
    print(f"{ran_before} of {n} inputs had run when the control plane was killed")
    seen = runs(log)
    assert sorted(seen) == list(range(n))
    twice = {i: pids for i, pids in seen.items() if len(pids) > 1}
    assert not twice, f"inputs that ran more than once: {twice}"
    assert set(outputs_per_call(cluster).values()) == {1}


def start_gated(cluster: Cluster, tmp_path, n: int):
    """n calls of gated() running on the cluster's first worker, then a second worker: the calls,
    the gate, the log of runs, and input -> the pid of its first container."""
    started, gate, log = tmp_path / "started", tmp_path / "gate", tmp_path / "ran"
    started.mkdir()
    calls = [restarts_app.gated.spawn(i, str(started), str(gate), str(log)) for i in range(n)]
    wait_for(lambda: len(os.listdir(started)) == n, timeout=60, what=f"{n} inputs to start on w1")
    first = started_pids(started)
    for name in os.listdir(started):
        os.unlink(started / name)
    cluster.start_worker("w2")
    wait_for(lambda: "worker w2 connected" in cluster.log(), what="w2 to connect")
    return calls, gate, log, first


def test_failover_from_a_killed_worker_does_not_wait_for_leases(tmp_path, monkeypatch):
    # Leases and worker timeouts of a minute: what moves the inputs must be the closed connections.
    cluster = Cluster(tmp_path)
    cluster.start_server(["--lease-timeout", "60", "--worker-timeout", "60"])
    cluster.start_worker("w1")
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    try:
        with restarts_app.app.run():
            calls, gate, log, first = start_gated(cluster, tmp_path, 3)
            killed_at = time.monotonic()
            cluster.workers[0].send_signal(signal.SIGKILL)
            cluster.workers[0].wait()
            wait_for(lambda: all(dead(pid) for pid in first.values()), what="w1's containers to die with it")
            gate.touch()
            assert [c.get(timeout=30) for c in calls] == [0, 1, 2]
            failover = time.monotonic() - killed_at
        print(f"failover: {failover:.2f}s from SIGKILL of the worker to the last of 3 results "
              f"(lease timeout 60s)")
        seen = runs(log)
        assert sorted(seen) == [0, 1, 2] and all(len(pids) == 1 for pids in seen.values())
        assert not set(first.values()) & {pid for pids in seen.values() for pid in pids}
        assert "no contact for" not in cluster.log() and "is gone" not in cluster.log()
    finally:
        cluster.stop()


def test_a_frozen_worker_is_fenced(cluster, tmp_path):
    """SIGSTOP of the worker: its containers still talk, but their worker cannot watch them; once
    it is given up they are fenced (their streams end, they exit), their inputs run on w2, and the
    worker, woken, registers again and is told to kill what it still runs."""
    with restarts_app.app.run():
        calls, gate, log, first = start_gated(cluster, tmp_path, 2)
        w1 = cluster.workers[0]
        w1.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: all(dead(pid) for pid in first.values()), what="w1's containers to be fenced")
            gate.touch()  # a container that was not fenced would now go on with its input
            assert [c.get(timeout=60) for c in calls] == [0, 1]
        finally:
            w1.send_signal(signal.SIGCONT)
        wait_for(lambda: cluster.log().count("worker w1 connected") == 2, what="w1 to register again")
        assert "worker w1 sent nothing for" in cluster.log()
        seen = runs(log)
        assert sorted(seen) == [0, 1] and all(len(pids) == 1 for pids in seen.values())
        assert not set(first.values()) & {pid for pids in seen.values() for pid in pids}
        assert set(outputs_per_call(cluster).values()) == {1}
        # The woken worker still works.
        cluster.workers[1].terminate()
        cluster.workers[1].wait()
        assert restarts_app.record.remote(3, str(tmp_path / "after")) == 9


def test_a_frozen_machine_wakes_fenced(cluster, tmp_path):
    """SIGSTOP of the worker and its containers (a frozen machine): the inputs move once their
    leases run out; the worker, woken first, kills its containers before they wake and go on."""
    with restarts_app.app.run():
        calls, gate, log, first = start_gated(cluster, tmp_path, 2)
        w1 = cluster.workers[0]
        frozen = [w1.pid, *first.values()]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            gate.touch()  # for the moved inputs, and for any frozen container that would wake unfenced
            assert [c.get(timeout=60) for c in calls] == [0, 1]
            os.kill(w1.pid, signal.SIGCONT)
            wait_for(lambda: all(dead(pid) for pid in first.values()), what="the woken worker to kill its containers")
        finally:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        seen = runs(log)
        assert sorted(seen) == [0, 1] and all(len(pids) == 1 for pids in seen.values())
        assert not set(first.values()) & {pid for pids in seen.values() for pid in pids}
        assert set(outputs_per_call(cluster).values()) == {1}
