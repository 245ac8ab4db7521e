"""Many hosts: a control plane and three workers, each worker a host of its own.

Each "host" is a network namespace with its own address, joined by a veth pair to a bridge
(emb-hN, 10.250.N.0/24) in the root namespace, where the control plane listens on the
bridge's address with TLS. So everything between a worker (or its containers) and the control
plane crosses a real network path that the tests can cut: inputs and outputs, image layers,
volume files, web requests. Workers are started in their namespace by `nsenter --net`, not `ip
netns exec`: that also remounts /sys, and the cgroup hierarchies under it with it.

The hosts share the machine's other resources, as separate machines would not: each worker
takes its own container network slot (network.py) and its own data dir; h1 has a layer cache of
its own and h2 and h3 share another, each seeded with the Debian base only, so that the test's
own layer, which h1 builds, must come to h2 and h3 from the control plane's blob store.

The blob store is S3 (the run's SeaweedFS, tests/services.py), reached at the bridge's address
through a forwarder there (tests/tcp_proxy.py: SeaweedFS listens on loopback only), so layers,
volume files and large payloads move between the bucket and the hosts across the veth network
path, through the presigned URLs the control plane hands out, never through its process; the
forwarder tells which host each connection came from.
"""

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest
from conftest import Cluster, container_backend_missing, wait_for
from services import seaweedfs
from tcp_proxy import TcpProxy

import ember
from ember.server.gateway import url_host
from ember.server.main import reachable_url

import hosts_app

LOCKS = pathlib.Path("/run/ember/test-hosts")  # one flock per numbered test network, held while it runs
NETNS_DIR = pathlib.Path("/run/netns")
HOSTS = ("h1", "h2", "h3")


def ip(*args: str, check: bool = True):
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def copy(src: pathlib.Path, dest: pathlib.Path):
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], check=True)


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.count(":") >= 2}


class HostNetwork:
    """A bridge with hosts on it, each a network namespace. Names and addresses (emb-hN,
    embhN-*, 10.250.N.0/24) stay clear of what workers make for their containers (ember-*,
    em<slot>s*, 10.231.0.0/16)."""

    def __init__(self):
        LOCKS.mkdir(parents=True, exist_ok=True)
        for n in range(1, 250):
            fd = os.open(LOCKS / f"{n}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                os.close(fd)
        else:
            raise RuntimeError("every test network number is taken")
        self.n, self.lock = n, fd
        self.bridge = f"emb-h{n}"
        self.address = f"10.250.{n}.1"
        self.namespaces: dict[str, str] = {}  # host name -> its namespace
        self.remove()  # what a run that was killed left under this number
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def veth(self, i: int) -> str:
        return f"embh{self.n}v{i}"  # the root namespace's end of host i's link

    def add_host(self, name: str, i: int) -> list[str]:
        """Host i: its namespace, its link to the bridge and its address; returns the command prefix
        that runs a process there."""
        ns = f"embh{self.n}-{i}"
        self.namespaces[name] = ns
        ip("netns", "add", ns)
        ip("link", "add", self.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", self.veth(i), "master", self.bridge, "up")
        ip("-n", ns, "addr", "add", f"10.250.{self.n}.{10 + i}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "route", "add", "default", "via", self.address)
        return ["nsenter", f"--net={NETNS_DIR / ns}"]

    def host_address(self, i: int) -> str:
        return f"10.250.{self.n}.{10 + i}"

    def cut(self, i: int):
        ip("link", "set", self.veth(i), "down")

    def restore(self, i: int):
        ip("link", "set", self.veth(i), "up")

    def remove(self):
        for ns in NETNS_DIR.glob(f"embh{self.n}-*") if NETNS_DIR.is_dir() else ():
            ip("netns", "delete", ns.name, check=False)
        for dev in links():
            if dev == self.bridge or dev.startswith(f"embh{self.n}v"):
                ip("link", "delete", dev, check=False)

    def leftovers(self) -> list[str]:
        left = [ns.name for ns in NETNS_DIR.glob(f"embh{self.n}-*")] if NETNS_DIR.is_dir() else []
        return left + [d for d in links() if d == self.bridge or d.startswith(f"embh{self.n}v")]

    def close(self):
        self.remove()
        left = self.leftovers()
        os.close(self.lock)
        assert not left, f"the test network was not removed: {left}"


class Hosts:
    """The cluster, and where each worker's containers are: a container's gateway (the host end
    of its veth pair) lies in its worker's container subnet, which the worker logs."""

    def __init__(self, cluster: Cluster, net: HostNetwork, s3_front: TcpProxy):
        self.cluster = cluster
        self.net = net
        self.s3_front = s3_front  # the bucket's endpoint, as the control plane and the hosts reach it
        self.subnets: dict[str, ipaddress.IPv4Network] = {}  # its containers' addresses, by host
        self.slots: dict[str, int] = {}  # its network slot (network.py), by host

    def start(self, name: str, i: int, cache_dir: pathlib.Path | None = None):
        c = self.cluster
        opts = {"cache-dir": str(cache_dir)} if cache_dir else {}
        c.start_worker(name, backend="container", env={"EMBER_CA_CERT": str(c.ca_file)},
                       prefix=self.net.add_host(name, i), cpu=1.5, memory=3072, label=f"region={name}", **opts)

    def wait_connected(self, name: str, times: int = 1):
        wait_for(lambda: self.cluster.log().count(f"worker {name} connected") >= times, timeout=60,
                 what=f"worker {name} to connect ({self.cluster.log(f'worker-{name}')})")
        found = re.search(r"containers' network: (\S+), nftables table inet ember-net-(\d+)",
                          self.cluster.log(f"worker-{name}"))
        self.subnets[name], self.slots[name] = ipaddress.ip_network(found[1]), int(found[2])

    def host_of(self, gateway: str) -> str:
        return next(name for name, subnet in self.subnets.items() if ipaddress.ip_address(gateway) in subnet)

    def s3_connections(self) -> int:
        return len(self.s3_front.peers)

    def s3_clients_since(self, count: int) -> set[str]:
        """The hosts (or "root", this machine's own namespace) that connected to the bucket since
        s3_connections() was count."""
        names = {self.net.host_address(i): name for i, name in enumerate(HOSTS, start=1)}
        return {names.get(peer, "root") for peer, _ in self.s3_front.peers[count:]}

    def relayed(self) -> list[str]:
        """Blobs whose bytes passed through the control plane (it logs each, on an S3 store)."""
        return re.findall(r"of blob (\w+) passed through the control plane", self.cluster.log())


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    why = container_backend_missing()
    if why:
        pytest.skip(f"container backend unavailable: {why}")
    if shutil.which("nsenter") is None:
        pytest.skip("nsenter (util-linux) is not installed")
    tmp = tmp_path_factory.mktemp("hosts")
    s3 = seaweedfs()
    net = HostNetwork()
    s3_host, _, s3_port = s3.endpoint.removeprefix("http://").rpartition(":")
    s3_front = TcpProxy(lambda: asyncio.open_connection(s3_host, int(s3_port)), host=net.address)
    c = Cluster(tmp, host=net.address)
    h = Hosts(c, net, s3_front)
    old = {k: os.environ.get(k) for k in ("EMBER_SERVER_URL", "EMBER_TOKEN_ID", "EMBER_TOKEN_SECRET", "EMBER_CA_CERT",
                                          *s3.env)}
    try:
        # The control plane's endpoint is the forwarder's: the URLs it presigns name it, which the
        # hosts reach (and SeaweedFS checks their signatures against the Host they were made for).
        os.environ.update(s3.env, AWS_ENDPOINT_URL=f"http://{s3_front.address}")
        c.start_server(["--tls", "auto", "--blob-url", s3.new_blob_url()])
        for k in s3.env:
            os.environ.pop(k)
        os.environ.update(c.env, EMBER_CA_CERT=str(c.ca_file))
        # Caches of their own, with only the Debian base in them: h1's, where it builds the test's
        # image (and the base too, if the machine's test cache has none yet), and h2's and h3's,
        # which the image's own layer reaches from the control plane. The base is copied, not
        # hard-linked: a new link changes its files' ctime, which fails the archive (tar) that a
        # worker sharing the machine's cache may be making of it now.
        base = hosts_app.image._resolve(lambda data: "").steps[0].layer_id
        shared = pathlib.Path(os.environ["EMBER_CACHE_DIR"]) / "layers" / base
        h1_cache, cache = tmp / "cache-h1", tmp / "cache-h2-h3"
        for d in (h1_cache, cache):
            (d / "layers").mkdir(parents=True)
        if shared.is_dir():
            copy(shared, h1_cache / "layers" / base)
        h.start("h1", 1, h1_cache)
        h.wait_connected("h1")
        with hosts_app.app.run():
            pass
        copy(h1_cache / "layers" / base, cache / "layers" / base)
        for i, name in enumerate(HOSTS[1:], start=2):
            h.start(name, i, cache)
        for name in HOSTS[1:]:
            h.wait_connected(name)
        yield h
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        c.stop()
        s3_front.close()
        leftover_slots = [ns.name for slot in h.slots.values() for ns in NETNS_DIR.glob(f"ember-{slot}-*")]
        net.close()
        assert not leftover_slots, f"workers left their containers' namespaces behind: {leftover_slots}"
        assert all(w.poll() is not None for w in c.workers)


def test_each_host_has_a_container_network_of_its_own(hosts):
    """Workers on one machine, each in a network namespace: each took its own slot (subnet,
    nftables table, interface names), and its rules are in its own namespace only."""
    def tables(prefix):
        out = subprocess.run([*prefix, "nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
        return set(re.findall(r"table inet (ember-net-\d+)", out))

    assert len(set(hosts.slots.values())) == len(HOSTS)
    for name, ns in hosts.net.namespaces.items():
        assert tables(["nsenter", f"--net={NETNS_DIR / ns}"]) == {f"ember-net-{hosts.slots[name]}"}
    subnets = list(hosts.subnets.values())
    assert not any(a.overlaps(b) for a in subnets for b in subnets if a is not b)


def test_a_host_pulls_the_image_layer_from_the_object_store(hosts):
    layer = hosts_app.image._resolve(lambda data: "").steps[-1].layer_id
    before = hosts.s3_connections()
    with hosts_app.app.run():
        text, gateway = hosts_app.layer_file.remote()
    assert text == "built-by-the-first-host"
    assert hosts.host_of(gateway) == "h2"
    # From the bucket to h2 itself, across its link, not through the control plane.
    assert "h2" in hosts.s3_clients_since(before), hosts.s3_front.peers[before:]
    assert hosts.relayed() == []
    # h2 had only the base: the layer came from the control plane, built by h1 alone.
    assert (hosts.cluster.tmp / "cache-h2-h3" / "layers" / layer).is_dir()
    builds = re.findall(r"building image \S+ on worker (\S+)", hosts.cluster.log())
    assert builds and set(builds) == {"h1"}, builds
    logs = hosts.cluster.log("worker-h2") + hosts.cluster.log("worker-h3")
    assert "=> fetching layer 2/2 (run_commands(" in logs and "=> step 2/2" not in logs, logs


def test_map_inputs_and_outputs_spread_over_hosts(hosts):
    with hosts_app.app.run():
        results = list(hosts_app.square.map(range(30)))
    assert [r[0] for r in results] == [i * i for i in range(30)]
    by_host = {}
    for _, gateway in results:
        name = hosts.host_of(gateway)
        by_host[name] = by_host.get(name, 0) + 1
    print("inputs per host:", by_host)
    assert len(by_host) >= 2, by_host


def test_a_large_argument_and_result_cross_to_a_host_through_the_blob_store(hosts):
    data = os.urandom(6 << 20)  # more than config.BLOB_THRESHOLD: a blob each way, not inline
    before = hosts.s3_connections()
    with hosts_app.app.run():
        back, gateway = hosts_app.reverse_on_h3.remote(data)
    assert back == data[::-1] and hosts.host_of(gateway) == "h3"
    assert {"root", "h3"} <= hosts.s3_clients_since(before)  # this process's upload, h3's download
    assert hosts.relayed() == []


def test_a_volume_committed_on_one_host_is_read_on_another(hosts):
    text = f"written on h1 {uuid.uuid4()}"
    with hosts_app.app.run():
        before = hosts.s3_connections()
        assert hosts.host_of(hosts_app.write_on_h1.remote("note.txt", text)) == "h1"
        assert "h1" in hosts.s3_clients_since(before)  # its file went up to the bucket from h1
        before = hosts.s3_connections()
        got, gateway = hosts_app.read_on_h2.remote("note.txt")
    assert got == text and hosts.host_of(gateway) == "h2"
    assert "h2" in hosts.s3_clients_since(before)  # and came down to h2
    assert hosts.relayed() == []


def test_a_web_request_reaches_a_container_on_another_host(hosts):
    c = hosts.cluster
    with hosts_app.app.run():
        url = hosts_app.web.get_web_url()
        assert url.startswith(f"https://{hosts.net.address}:")
        ctx = ssl.create_default_context(cafile=str(c.ca_file))
        with urllib.request.urlopen(f"{url}/hello", context=ctx, timeout=60) as resp:
            body = resp.read().decode()
    found = re.fullmatch(r"served by (\S+) for \S*/hello", body)
    assert found, body
    assert hosts.host_of(found[1]) == "h3"


def test_a_sandbox_port_on_another_host_is_reached_through_its_tunnel(hosts):
    """Its tunnel's connections go over the worker's own stream (as execs do), so a port of a
    sandbox on another host is served by the gateway, over HTTPS."""
    app = ember.App.lookup("hosts-tunnels", create_if_missing=True)
    # (socketserver's, not `python3 -m http.server`: that looks its address's name up, which a
    # host's container waits 10 s for.)
    serve = ("import http.server as h, socketserver as s; "
             "s.TCPServer(('127.0.0.1', 8000), h.SimpleHTTPRequestHandler).serve_forever()")
    sb = ember.Sandbox.create("sh", "-c", f"cd /tmp && echo from-the-sandbox > hi.txt && exec python3 -c \"{serve}\"",
                              app=app, timeout=120, encrypted_ports=[8000])
    t = sb.tunnels()[8000]
    assert t.url.startswith(f"https://{hosts.net.address}:") and sb._info.worker in HOSTS
    ctx = ssl.create_default_context(cafile=str(hosts.cluster.ca_file))
    auth = {"Authorization": f"Bearer {os.environ['EMBER_TOKEN_ID']}:{os.environ['EMBER_TOKEN_SECRET']}"}

    def get():
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{t.url}/hi.txt", headers=auth), context=ctx,
                                        timeout=30) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as e:
            if e.code != 502:  # (502: its server is not listening yet)
                raise
    wait_for(get, timeout=60, what="the sandbox's server to answer through its tunnel")
    assert get() == "from-the-sandbox\n"
    sb.terminate()


def test_a_host_cut_off_has_its_input_completed_elsewhere_and_is_fenced_when_back(hosts):
    c = hosts.cluster
    key = f"hold-{uuid.uuid4().hex[:8]}"
    with hosts_app.app.run():
        call = hosts_app.hold.spawn(key)
        started = ember.Queue.from_name(key, create_if_missing=True)
        first = started.get(timeout=60)
        lost = hosts.host_of(first)
        stale = re.findall(f"starting container (\\S+) for hold on worker {lost}", c.log())[-1]
        i = HOSTS.index(lost) + 1
        # The link, not the process: the worker and its container go on, and the container's output
        # (as soon as it sees the cut) waits for the network.
        hosts.net.cut(i)
        with contextlib.ExitStack() as restore:
            restore.callback(hosts.net.restore, i)
            second = started.get(timeout=60)  # the input again, on a host still connected
            assert hosts.host_of(second) != lost
        # Back: the worker registers again, and the stale container is fenced (its stream was ended:
        # it exits; or its worker, registering, is told to kill it) whatever it sends now.
        wait_for(lambda: c.log().count(f"worker {lost} connected") >= 2, timeout=60,
                 what=f"worker {lost} to come back")
        wait_for(lambda: re.search(f"container {stale} (exited|was killed)", c.log(f"worker-{lost}")), timeout=30,
                 what="the stale container to be fenced")
        ember.Dict.from_name(key)["release"] = True
        assert call.get(timeout=60) == second  # not the stale output, which came first
    assert f"worker {lost} sent nothing for" in c.log()


def test_a_gateway_listening_on_every_address_gives_urls_with_the_machine_name():
    # 0.0.0.0 in a URL reaches only the machine it is used on; the host name is what others can
    # look up, and what `--tls auto`'s certificate holds.
    assert url_host("0.0.0.0") == url_host("::") == url_host("") == socket.gethostname()
    assert url_host("10.250.1.1") == "10.250.1.1"
    assert url_host("::1") == url_host("[::1]") == "[::1]"


def test_provisioned_workers_are_given_an_address_other_machines_reach():
    # Without --worker-server-url, workers a provisioner starts on other nodes connect to where
    # the control plane listens: listening everywhere, that is this machine's name.
    name = socket.gethostname()
    assert reachable_url("https://0.0.0.0:7070") == f"https://{name}:7070"
    assert reachable_url("0.0.0.0:7070") == f"{name}:7070"
    assert reachable_url("https://[::]:7070") == f"https://{name}:7070"
    assert reachable_url("https://10.250.1.1:7070") == "https://10.250.1.1:7070"
    assert reachable_url("unix:/run/ember.sock") == "unix:/run/ember.sock"
