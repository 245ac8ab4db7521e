"""Several control planes on one database (one SQLite file, or PostgreSQL): one leads through a lease,
the other stands by and takes over. SIGKILL of the leader mid-map loses nothing; a leader
frozen past its lease wakes up fenced: it neither dispatches nor writes; a leader cut off from
PostgreSQL stops before the standby takes over; clients and workers given one address in front
(a proxy that follows the leader, as a load balancer would) move with it. Real processes."""

import asyncio
import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import ember
from ember.proto import api_pb2, api_pb2_grpc
from conftest import PY, STORES, Cluster, container_backend_missing, free_port, wait_for
from tcp_proxy import TcpProxy

import services

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

    def start_servers(self, database_urls: list[str] | None = None):
        """database_urls: each one's own way to the database (the same database), if not database_url."""
        for i, port in enumerate(self.ports):
            database_url = database_urls[i] if database_urls else self.database_url
            log = open(self.logs / f"server{i}.log", "ab")
            self.servers.append(subprocess.Popen(
                [PY, "-m", "ember.cli.main", "server", "--port", str(port), "--data-dir", str(self.tmp / "server"),
                 "--http", f"127.0.0.1:{free_port()}", "--leader-lease", str(LEASE),
                 "--lease-timeout", "3", "--worker-timeout", "3", "--app-timeout", "20",
                 *(["--database-url", database_url] if database_url else [])],
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


def serving(url: str) -> bool:
    """Whether the control plane at url answers SERVING (False: NOT_SERVING, or nothing answers)."""
    try:
        return health(url) == Health.SERVING
    except grpc.RpcError:
        return False


def logged_at(log: str, pattern: str) -> datetime.datetime:
    """When a control plane logged its first line matching pattern (its log's own timestamps)."""
    found = re.search(rf"^(\S+ \S+) server \w+ {pattern}", log, re.M)
    assert found, f"no line {pattern!r} in the log"
    return datetime.datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f")


def map_and_spawns(n: int, m: int, during):
    """A .map of n inputs and m spawned calls of restarts_app.square_slowly, with during() run once a
    tenth of the map's outputs are in and half of the calls spawned (the other half after it);
    checks that every output came and every call's result is fetchable; the seconds from the end
    of during() to outputs flowing again (the end of the longest pause after it)."""
    results, times = [], []

    def consume():
        for r in restarts_app.square_slowly.map(range(n)):
            results.append(r)
            times.append(time.monotonic())

    mapping = threading.Thread(target=consume)
    mapping.start()
    spawned = [restarts_app.square_slowly.spawn(i) for i in range(m // 2)]
    wait_for(lambda: len(results) >= n // 10, timeout=60, what="a tenth of the map's outputs")
    during()
    at = time.monotonic()
    assert len(results) < n, "the map ended before what was to happen during it"
    spawned += [restarts_app.square_slowly.spawn(i) for i in range(m // 2, m)]
    mapping.join(timeout=120)
    assert not mapping.is_alive(), f"the map stalled at {len(results)} of {n} outputs"
    assert results == [i * i for i in range(n)]
    assert [c.get(timeout=60) for c in spawned] == [i * i for i in range(m)]
    after = [t for t in times if t > at]
    gaps = [b - a for a, b in zip([at] + after, after)]
    return sum(gaps[:gaps.index(max(gaps)) + 1]) if gaps else float("nan")


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


def test_a_leader_cut_off_from_postgresql_stops_before_the_standby_takes_over(tmp_path, monkeypatch):
    """The leader reaches PostgreSQL through a proxy that the test cuts mid-map: it is alive, and
    its clients and worker still reach it, but it can renew its lease no more. It stops acting
    (steps down) before the lease expires and the standby takes it: never two leaders at once.
    Nothing is lost; once the database is back, the old leader stands by, naming the new one."""
    pair = Pair(tmp_path, "postgres")
    pg = services.postgres()
    to_db = TcpProxy(lambda: asyncio.open_unix_connection(f"{pg.dir}/.s.PGSQL.5432"))
    database = urllib.parse.urlsplit(pair.database_url).path.lstrip("/")
    try:
        pair.start_servers([f"postgresql://{pg.USER}@{to_db.address}/{database}", pair.database_url])
        pair.start_worker()
        use(pair, monkeypatch)
        with restarts_app.app.run():
            old_epoch = pair.leader()[1]
            resumed = map_and_spawns(300, 40, to_db.cut)
        assert pair.leader() == (pair.urls[1], old_epoch + 1)
        stepped_down = logged_at(pair.log("server0"), "stepping down")
        took_over = logged_at(pair.log("server1"), f"leading \\(lease epoch {old_epoch + 1}")
        print(f"cut off: stepped down {stepped_down:%H:%M:%S.%f}, the standby led {took_over:%H:%M:%S.%f}; "
              f"outputs flowed again {resumed:.2f}s after the cut")
        assert stepped_down < took_over, "two control planes led at once"
        assert pair.servers[0].poll() is None, "the leader cut off exited"
        assert not serving(pair.urls[0])  # it waits for the database, listening on nothing
        to_db.mend()
        wait_for(lambda: f"the leader is at {pair.urls[1]}" in pair.log("server0"), timeout=30,
                 what="the old leader to stand by once the database is back")
        assert health(pair.urls[0]) == Health.NOT_SERVING
    finally:
        pair.stop()
        to_db.close()


def leader_of(urls: list[str]):
    """A proxy's upstream() that connects to whichever control plane answers SERVING to gRPC's
    health check (a standby answers NOT_SERVING): what a load balancer in front of them checks."""
    async def connect():
        for url in urls:
            if await asyncio.to_thread(serving, url):
                host, _, port = url.rpartition(":")
                return await asyncio.open_connection(host, int(port))
        return None  # no one leads right now: the caller tries again

    return connect


def test_clients_and_workers_given_one_address_in_front_move_with_the_leader(tmp_path, monkeypatch):
    """One address for all (a proxy in front of both control planes that forwards each connection
    to the one that is SERVING): SIGKILL of the leader mid-map; the worker and the client,
    reconnecting to the same address, reach the new leader, and nothing is lost."""
    pair = Pair(tmp_path, "postgres")
    front = TcpProxy(leader_of(pair.urls))
    pair.url = front.address  # what workers and clients are given
    try:
        pair.start_servers()
        pair.start_worker()
        use(pair, monkeypatch)
        assert pair.env["EMBER_SERVER_URL"] == front.address

        def kill():
            pair.servers[0].send_signal(signal.SIGKILL)
            pair.servers[0].wait()

        with restarts_app.app.run():
            resumed = map_and_spawns(300, 40, kill)
        assert pair.leader()[0] == pair.urls[1]
        went_to = {f"127.0.0.1:{peer[1]}" for _, peer in front.peers}
        assert went_to == set(pair.urls), went_to  # each, in turn, through the one address
        print(f"one address in front: outputs flowed again {resumed:.2f}s after the SIGKILL of the leader "
              f"(lease {LEASE:g}s)")
    finally:
        pair.stop()
        front.close()
