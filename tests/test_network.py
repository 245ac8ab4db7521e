"""A container's network: out to the world through NAT, not to the host or other containers.

Every attack runs from inside a real container against real listeners on the host; a test
"internet" host (a network namespace of the test's own, on another subnet) stands for the world.
"""

import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

import ember
from ember._client.client import Client
from ember.proto import api_pb2
from conftest import Cluster, container_backend_missing, run_py, wait_for

import network_app

pytestmark = pytest.mark.skipif(bool(container_backend_missing()), reason=f"{container_backend_missing()}")

INTERNET = "198.51.100"  # TEST-NET-2: the test's "internet" host is .2, the host's end .1


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check).stdout


@pytest.fixture(scope="module")
def internet(tmp_path_factory):
    """A host outside: a network namespace with a veth to this machine and an HTTP server."""
    ns, link = f"ember-test-inet-{os.getpid()}", f"eti{os.getpid() % 100000}"
    root = tmp_path_factory.mktemp("internet")
    (root / "hello.txt").write_text("hello from the internet\n")
    ip("netns", "add", ns)
    server = None
    try:
        ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("addr", "add", f"{INTERNET}.1/24", "dev", link)
        ip("link", "set", link, "up")
        # Two addresses, both serving: a sandbox's cidr_allowlist= lets it reach one and not the other.
        for cmd in ([f"addr add {INTERNET}.2/24 dev eth0"], [f"addr add {INTERNET}.3/24 dev eth0"],
                    ["link set eth0 up"], ["link set lo up"],
                    [f"route add default via {INTERNET}.1"]):
            ip("-n", ns, *cmd[0].split())
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", "8080",
                                   "--bind", "0.0.0.0", "--directory", str(root)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: "connected" in subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             f"import socket; socket.create_connection(('{INTERNET}.2', 8080)); print('connected')"],
            capture_output=True, text=True).stdout, what="the test internet host's server")
        yield f"http://{INTERNET}.2:8080/hello.txt"
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        ip("link", "delete", link, check=False)
        ip("netns", "delete", ns, check=False)


@pytest.fixture(scope="module")
def host_listener():
    """A TCP listener on every address of the host: what a container must not reach."""
    server = socket.create_server(("0.0.0.0", 0))
    threading.Thread(target=lambda: [server.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture(scope="module")
def running(container_cluster, internet):
    with network_app.app.run():
        yield container_cluster


def host_addresses() -> list[str]:
    """Every IPv4 address of the host, as `ip` says: eth0's, the test link's, containers' gateways."""
    return sorted({a["local"] for i in json.loads(ip("-j", "-4", "addr")) for a in i["addr_info"]})


def test_a_container_reaches_the_world_but_not_the_host(running, internet, host_listener):
    # The host's own services answer on all its addresses (so each failure below means something).
    for a in host_addresses():
        socket.create_connection((a, host_listener), timeout=5).close()
    cp_port = int(running.url.rpartition(":")[2])
    first = network_app.probe.remote([])
    gateway = first["gateway"]
    assert gateway and first["interfaces"] == ["lo", "eth0"]
    targets = [(a, p) for a in host_addresses() + [gateway] for p in (host_listener, cp_port)]
    out = network_app.probe.remote(targets, internet)
    assert out["fetched"] == "hello from the internet\n"  # outbound, through NAT
    reached = {t: r for t, r in out["results"].items() if not r.startswith("failed")}
    # The one way in: the control plane's port on a container's own network (its gateway, which
    # the worker translates to the control plane), where it needs its credential like anyone.
    through_gateway = {t for t in reached if t.endswith(f":{cp_port}") and t.startswith("10.231.")}
    assert set(reached) == through_gateway, f"the container reached the host at {reached}"
    assert f"{gateway}:{cp_port}" in through_gateway  # (how its runtime took the input and sent the output)


def test_a_container_does_not_reach_another_container(running):
    address, port, itself = network_app.listen.remote()
    assert itself == "connected"  # it listens, on its own address
    assert not address.startswith("127.")
    out = network_app.probe.remote([(address, port)])
    assert out["results"][f"{address}:{port}"].startswith("failed"), out


def test_block_network_reaches_nothing(running, internet, host_listener):
    gateway = network_app.probe.remote([])["gateway"]
    out = network_app.probe_offline.remote([(gateway, host_listener), (f"{INTERNET}.2", 8080)], internet)
    assert out["interfaces"] == ["lo"] and out["gateway"] is None
    assert out["fetched"].startswith("failed")
    assert all(r.startswith("failed") for r in out["results"].values()), out


SANDBOX_PROBE = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        print(target, "connected")
    except OSError as e:
        print(target, "failed:", e)
"""


def test_a_sandbox_reaches_only_its_cidr_allowlist(running, internet, host_listener):
    app = ember.App.lookup("network-sandboxes", create_if_missing=True)
    allowed, other, host_end = f"{INTERNET}.2", f"{INTERNET}.3", f"{INTERNET}.1"
    # Allowing the host's own address (the test link's end) does not open the host: only networks out.
    sb = ember.Sandbox.create(app=app, image=network_app.base, timeout=60,
                              cidr_allowlist=[f"{allowed}/32", f"{host_end}/32"])
    try:
        p = sb.exec("python3", "-c", SANDBOX_PROBE, f"{allowed}:8080", f"{other}:8080", f"{host_end}:{host_listener}")
        out = dict(line.split(" ", 1) for line in p.stdout.read().splitlines())
        assert p.wait() == 0, p.stderr.read()
        assert out[f"{allowed}:8080"] == "connected", out
        # Refused at once (administratively prohibited: EHOSTUNREACH), not left to time out.
        assert "No route to host" in out[f"{other}:8080"], out
        assert out[f"{host_end}:{host_listener}"].startswith("failed"), out
        # Its commands and files do not use its network: they still work.
        assert sb.exec("echo", "hi").stdout.read() == "hi\n"
    finally:
        sb.terminate()
    # A container started cold (one with a volume is never a spare) gets its allowlist as well.
    vol = ember.Volume.from_name("network-sandboxes", create_if_missing=True)
    sb = ember.Sandbox.create(app=app, image=network_app.base, timeout=60, cidr_allowlist=[f"{other}/32"],
                              volumes={"/data": vol})
    try:
        p = sb.exec("python3", "-c", SANDBOX_PROBE, f"{allowed}:8080", f"{other}:8080")
        out = dict(line.split(" ", 1) for line in p.stdout.read().splitlines())
        assert out == {f"{allowed}:8080": out[f"{allowed}:8080"], f"{other}:8080": "connected"}, out
        assert "No route to host" in out[f"{allowed}:8080"], out
    finally:
        sb.terminate()
    # Another sandbox, without one, of the same worker (perhaps of the same network slot) reaches both.
    sb = ember.Sandbox.create(app=app, image=network_app.base, timeout=60)
    try:
        p = sb.exec("python3", "-c", SANDBOX_PROBE, f"{allowed}:8080", f"{other}:8080")
        assert p.stdout.read().count("connected") == 2
    finally:
        sb.terminate()
    # Their rules went with their containers.
    table = worker_table(running, "w1")
    wait_for(lambda: "allow-" not in subprocess.run(["nft", "list", "table", "inet", table], capture_output=True,
                                                    text=True, check=True).stdout, what="the allowlists' removal")


def test_a_bad_cidr_allowlist_is_refused_at_create(running):
    app = ember.App.lookup("network-sandboxes", create_if_missing=True)
    for bad, why in ((["10.0.0.1/8"], "pass '10.0.0.0/8'"), (["nonsense"], "not an IPv4 network"),
                     (["2001:db8::/32"], "IPv4 only"), ("10.0.0.0/8", "pass a list"),
                     ([], "block_network=True")):
        with pytest.raises(ember.exception.InvalidError, match=re.escape(why)):
            ember.Sandbox.create(app=app, timeout=60, cidr_allowlist=bad)
    with pytest.raises(ember.exception.InvalidError, match="cannot be given with block_network=True"):
        ember.Sandbox.create(app=app, timeout=60, cidr_allowlist=["10.0.0.0/8"], block_network=True)
    # The control plane checks them too, whatever a client sends (nft would read a forged one).
    client = Client.from_env()
    for forged in (["10.0.0.0/8 } accept; {"], ["10.0.0.0/8"] * 300):
        d = api_pb2.FunctionDefinition(name="sandbox", cidr_allowlist=forged,
                                       resources=api_pb2.Resources(cpu=0.125, memory_mb=128))
        with pytest.raises(ember.exception.InvalidError, match="cidr_allowlist"):
            client.run(client.rpc("SandboxCreate", api_pb2.SandboxCreateRequest(app_id=app.app_id, definition=d,
                                                                                timeout=60)))


def test_two_containers_of_a_web_server_share_its_port_on_one_worker(running):
    url = network_app.same_port.get_web_url()
    seen = set()

    def get(_):
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read().decode()

    def both_serve():
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            seen.update(pool.map(get, range(4)))
        return len(seen) >= 2  # min_containers=2, and a burst of requests may start more

    wait_for(both_serve, timeout=120, what="two containers of the web server to answer")
    assert all(h.startswith("ct-") for h in seen)


def worker_table(c: Cluster, name: str) -> str:
    """The nftables table the worker says it installed."""
    def said():
        return re.findall(r"nftables table inet (ember-net-\d+)", c.log(f"worker-{name}"))
    wait_for(said, what=f"worker {name} to set up its network")
    return said()[-1]


def leftovers(table: str) -> dict:
    index = table.rpartition("-")[2]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return {"table": table in tables.split(),
            "netns": [n for n in ip("netns", "list").split() if n.startswith(f"ember-{index}-")],
            "links": [n for n in os.listdir("/sys/class/net") if n.startswith(f"em{index}s")]}


def test_workers_on_one_machine_get_their_own_rules_and_clean_up(tmp_path, monkeypatch):
    c = Cluster(tmp_path)
    c.start_server()
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    try:
        a = c.start_worker("na", backend="container")
        c.start_worker("nb", backend="container")
        table_a, table_b = worker_table(c, "na"), worker_table(c, "nb")
        assert table_a != table_b
        code = ("import network_app\nwith network_app.app.run():\n"
                "    print(network_app.probe.remote([])['gateway'])")
        assert run_py(code).returncode == 0
        assert leftovers(table_a)["netns"] or leftovers(table_b)["netns"]  # a spare waits, in its own
        a.kill()  # a killed worker leaves its rules and namespaces behind...
        a.wait()
        assert leftovers(table_a)["table"]
        c.start_worker("nc", backend="container")
        # ...and the next to take its slot (the lowest free one) removes them first.
        assert worker_table(c, "nc") == table_a
        wait_for(lambda: "registered with" in c.log("worker-nc"), what="worker nc to register")
        assert leftovers(table_a) == {"table": True, "netns": [], "links": []}
        # The killed worker's container disks: a worker started on its data dir removes them (disk.py).
        c.start_worker("na", backend="container")
        wait_for(lambda: c.log("worker-na").count("registered with") >= 2, what="worker na to start again")
        c.stop()  # a worker that stops removes its own
        for table in (table_a, table_b):
            assert leftovers(table) == {"table": False, "netns": [], "links": []}
    finally:
        c.stop()
