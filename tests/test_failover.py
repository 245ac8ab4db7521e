"""Several control planes on one database (one SQLite file, or PostgreSQL): one leads through a lease,
the other stands by and takes over. SIGKILL of the leader mid-map loses nothing; a leader
frozen past its lease wakes up fenced: it neither dispatches nor writes. Real processes."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import ember
from ember.proto import api_pb2, api_pb2_grpc
from conftest import PY, STORES, Cluster, container_backend_missing, free_port, wait_for

import restarts_app

Health = health_pb2.HealthCheckResponse
LEASE = 2.0  # seconds: renewed every third of it


class Pair(Cluster):
    """Two control planes on one data dir (one SQLite file, or one PostgreSQL database), each with a
    leader lease, and workers."""

    def __init__(self, tmp, store="sqlite"):
        super().__init__(tmp, store=store)
        self.ports = [self.port, free_port()]
        self.urls = [f"127.0.0.1:{p}" for p in self.ports]
        self.url = ",".join(self.urls)  # what workers and clients are given
        self.servers: list[subprocess.Popen] = []

    def start_servers(self):
        for i, port in enumerate(self.ports):
            log = open(self.logs / f"server{i}.log", "ab")
            self.servers.append(subprocess.Popen(
                [PY, "-m", "ember.cli.main", "server", "--port", str(port), "--data-dir", str(self.tmp / "server"),
                 "--http", f"127.0.0.1:{free_port()}", "--leader-lease", str(LEASE),
                 "--lease-timeout", "3", "--worker-timeout", "3", "--app-timeout", "20",
                 *(["--database-url", self.database_url] if self.database_url else [])],
                stdout=log, stderr=log, cwd=self.tmp))
            # One at a time: the first leads (and makes the database and tokens), the second stands by.
            wait_for(lambda: "ember server listening" in self.log("server0"), what="the first control plane to lead")
        wait_for(lambda: "standing by" in self.log("server1"), what="the second control plane to stand by")
        self.server = self.servers[0]
        self.worker_token_file = self.tmp / "server" / "worker-token.json"
        token = json.loads((self.tmp / "server" / "admin-token.json").read_text())
        self.env = {"EMBER_SERVER_URL": self.url, "EMBER_TOKEN_ID": token["token_id"],
                    "EMBER_TOKEN_SECRET": token["token_secret"]}

    def leader(self) -> tuple[str, int]:
        """(url, epoch) of the lease's holder, as the database says."""
        return tuple(self.query("SELECT url, epoch FROM leader_lease")[0])

    def stop(self):
        for p in self.servers:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGCONT)
        self.workers += self.servers[1:]
        super().stop()


def refusal(url: str) -> tuple[grpc.StatusCode, str, dict]:
    """How the control plane at url answers a request (with no token: a standby asks for none)."""
    with grpc.insecure_channel(url) as channel:
        try:
            api_pb2_grpc.ClientApiStub(channel).AppList(api_pb2.Empty(), timeout=10)
        except grpc.RpcError as e:
            return e.code(), e.details(), dict(e.trailing_metadata() or ())
    raise AssertionError(f"{url} answered")


def health(url: str):
    """What the gRPC health service at url says of the whole server."""
    with grpc.insecure_channel(url) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def use(pair: Pair, monkeypatch):
    for key, value in pair.env.items():
        monkeypatch.setenv(key, value)
    ember._client.client.Client.close_all()  # no client of another test's cluster


@pytest.mark.parametrize("backend, store", [("process", "sqlite"), ("container", "sqlite"), ("process", "postgres")])
def test_a_killed_leader_loses_nothing_of_a_map_and_spawned_calls(tmp_path, monkeypatch, backend, store):
    if backend == "container" and (why := container_backend_missing()):
        pytest.skip(f"container backend unavailable: {why}")
    pair = Pair(tmp_path, store)
    try:
        pair.start_servers()
        pair.start_worker(backend=backend)
        use(pair, monkeypatch)
        # The container backend reaches the control planes through a relay each (worker/container.py).
        n, m = (10_000, 300) if backend == "process" else (2_000, 50)
        with restarts_app.app.run():
            results, times = [], []

            def consume():
                for r in restarts_app.square.map(range(n)):
                    results.append(r)
                    times.append(time.monotonic())

            mapping = threading.Thread(target=consume)
            mapping.start()
            spawned = [restarts_app.square.spawn(i) for i in range(m // 2)]
            wait_for(lambda: len(results) >= n // 4, timeout=60, what="a quarter of the map's outputs")
            assert pair.leader()[0] == pair.urls[0]
            pair.servers[0].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            pair.servers[0].wait()
            at_kill = len(results)
            spawned += [restarts_app.square.spawn(i) for i in range(m // 2, m)]  # while no one leads, at first
            mapping.join(timeout=120)
            assert not mapping.is_alive(), f"the map stalled at {len(results)} of {n} outputs"
            assert results == [i * i for i in range(n)]
            assert [c.get(timeout=60) for c in spawned] == [i * i for i in range(m)]
        assert pair.leader()[0] == pair.urls[1]
        after = [t for t in times if t > killed]
        gaps = [b - a for a, b in zip([killed] + after, after)]
        resumed = sum(gaps[:gaps.index(max(gaps)) + 1]) if gaps else float("nan")
        print(f"failover ({backend} backend, {store}): {at_kill} of {n} map outputs in at the SIGKILL of the leader; "
              f"outputs flowed again {resumed:.2f}s after it (lease {LEASE:g}s)")
    finally:
        pair.stop()


@pytest.mark.parametrize("store", STORES)
def test_a_leader_frozen_past_its_lease_wakes_fenced(tmp_path, monkeypatch, store):
    """SIGSTOP of the leader past its lease; the standby takes over. The worker is given the old
    leader's address only, so that what the woken one does shows: the output its container sent
    meanwhile is not recorded (the commit is fenced by the lease's epoch), and the input queued
    behind it is not dispatched to the container now free. The client, given both addresses,
    calls the new leader meanwhile. Nothing is lost: a worker that knows both addresses then
    runs every input under the new leader."""
    pair = Pair(tmp_path, store)
    try:
        pair.start_servers()
        pair.start_worker("w1", server=pair.urls[0])
        use(pair, monkeypatch)
        code, details, trailers = refusal(pair.urls[1])
        assert code == grpc.StatusCode.UNAVAILABLE and f"stands by: the leader is at {pair.urls[0]}" in details
        assert trailers["ember-leader"] == pair.urls[0]
        assert [health(url) for url in pair.urls] == [Health.SERVING, Health.NOT_SERVING]
        started, gate, log = tmp_path / "started", tmp_path / "gate", tmp_path / "ran"
        started.mkdir()
        with restarts_app.app.run():
            calls = [restarts_app.gated_alone.spawn(i, str(started), str(gate), str(log)) for i in range(2)]
            wait_for(lambda: os.listdir(started), what="the first input to start")
            old_url, old_epoch = pair.leader()
            assert old_url == pair.urls[0]
            pair.servers[0].send_signal(signal.SIGSTOP)
            try:
                wait_for(lambda: pair.leader() == (pair.urls[1], old_epoch + 1), timeout=20,
                         what="the standby to take the lease")
                # The client gives the frozen leader up (its connection is open, but it answers no
                # pings) and calls the new one.
                late = []
                calling = threading.Thread(target=lambda: late.append(
                    restarts_app.gated_alone.spawn(2, str(started), str(gate), str(log))))
                calling.start()
                calling.join(timeout=30)
                assert late, "the client did not move to the new leader while the old one was frozen"
                gate.touch()  # the first input finishes: its output goes to the frozen leader
                wait_for(lambda: log.exists(), what="the first input to finish")
                time.sleep(0.5)  # for its output to reach the frozen leader's socket
            finally:
                pair.servers[0].send_signal(signal.SIGCONT)
            wait_for(lambda: "stepping down" in pair.log("server0"), what="the woken leader to step down")
            wait_for(lambda: f"the leader is at {pair.urls[1]}" in pair.log("server0"),
                     what="the woken leader to stand by")
            time.sleep(1.0)  # time for a dispatch it should not make to show
            assert [name.split("-")[0] for name in os.listdir(started)] == ["0"], "the woken leader dispatched"
            assert pair.query("SELECT count(*) FROM outputs")[0][0] == 0, "the woken leader wrote"
            print("the woken leader:", *[line for line in pair.log("server0").splitlines()
                                          if "stepping down" in line or "undone" in line], sep="\n  ")
            pair.start_worker("w2")
            assert [c.get(timeout=60) for c in calls + late] == [0, 1, 2]
    finally:
        pair.stop()


def test_a_standby_s_hint_is_followed_only_to_an_address_given():
    """The leader a standby names is followed only if it is one of the addresses the caller was
    given (nothing from the network sends it elsewhere); otherwise the next one is tried."""
    from ember._client.servers import LEADER_TRAILER, Servers

    def refused(leader):
        return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                    grpc.aio.Metadata((LEADER_TRAILER, leader)), details="stands by")

    servers = Servers("a:1, b:2,c:3", stub_for=lambda channel: None)
    assert servers.urls == ["a:1", "b:2", "c:3"] and servers.several and not servers.wait_for_ready
    servers.failed("a:1", refused("c:3"))
    assert servers.url == "c:3"  # the leader it named
    servers.failed("c:3", refused("evil:6"))
    assert servers.url == "a:1"  # not one of ours: the next
    servers.failed("b:2", refused("b:2"))
    assert servers.url == "a:1"  # another caller already moved on from b:2
    servers.failed("a:1", None)
    assert servers.url == "b:2"
    one = Servers("a:1", stub_for=lambda channel: None)
    one.failed("a:1", refused("b:2"))
    assert one.url == "a:1" and one.wait_for_ready  # one address: it waits for it to come back
