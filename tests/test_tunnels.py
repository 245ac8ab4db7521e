"""Sandbox tunnels on a real cluster: a port a sandbox's server listens on, reached through the
control plane's gateway at sb.tunnels()[PORT].url with a token of its workspace; every other
way in is refused (no token, a wrong one, another workspace's, a forged id, a port not
declared, an ended sandbox), and the token never reaches the sandbox. Then on the container
backend, where the port is inside the sandbox's own network namespace."""

import hashlib
import http.client
import json
import os
import subprocess
import time
import urllib.parse

import grpc
import pytest

import ember
from ember import exception
from ember._client.auth import metadata
from ember.proto import api_pb2, api_pb2_grpc
from conftest import PY, ROOT, free_port, module_cluster, wait_for

# A server of the sandbox's: files (http.server's), and POST answering what it got.
SERVER = """
import hashlib, http.server, json, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        answer = json.dumps({"path": self.path, "authorization": self.headers.get("authorization"),
                             "cookie": self.headers.get("cookie"),
                             "prefix": self.headers.get("x-forwarded-prefix"), "length": len(body),
                             "sha256": hashlib.sha256(body).hexdigest()}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
    def do_GET(self):
        if self.path != "/hang":
            return super().do_GET()
        self.send_response(200)  # a first line, then nothing until its reader goes away, which it notes
        self.end_headers()
        self.wfile.write(b"tick\\n")
        self.wfile.flush()
        while self.connection.recv(1) != b"":
            pass
        open("/tmp/hang-ended", "w").close()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""
# A WebSocket server of the sandbox's (standard library only): text comes back in upper case, bytes as sent.
WS_SERVER = """
import base64, hashlib, socket, struct, sys, threading
def serve(conn):
    f = conn.makefile("rb")
    f.readline()
    headers = {}
    while (line := f.readline().strip()):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    key = headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
    conn.sendall(("HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                  f"Sec-WebSocket-Accept: {accept}\\r\\n\\r\\n").encode())
    while True:
        b0, b1 = f.read(2)
        n = b1 & 127
        if n == 126:
            n = struct.unpack(">H", f.read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", f.read(8))[0]
        mask = f.read(4)
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(f.read(n)))
        op = b0 & 15
        if op == 8:
            conn.sendall(bytes([0x88, 2]) + data[:2])
            return
        if op == 1:
            data = data.upper()
        size = (bytes([len(data)]) if len(data) < 126 else bytes([126]) + struct.pack(">H", len(data))
                if len(data) < 65536 else bytes([127]) + struct.pack(">Q", len(data)))
        conn.sendall(bytes([0x80 | op]) + size + data)
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""
BIG = 24 << 20  # bytes of the file served through the tunnel: many messages on every hop


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("tunnels")) as c:
        yield c


def cli(*args) -> str:
    out = subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    return out.stdout


def bearer(token_id: str, secret: str) -> dict:
    return {"Authorization": f"Bearer {token_id}:{secret}"}


def request(url: str, method="GET", headers=None, body=None, path=""):
    """(status, headers, body) of one request."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request(method, u.path + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def own_token() -> dict:
    return bearer(os.environ["EMBER_TOKEN_ID"], os.environ["EMBER_TOKEN_SECRET"])


def start_server(sb, port: int, big: bool = True) -> ember.ContainerProcess:
    """The server, in the background (with a big file beside it to serve)."""
    if big:
        sb.exec("python3", "-c", f"import os; open('big.bin', 'wb').write(os.urandom({BIG}))", workdir="/tmp").wait()
    return sb.exec("python3", "-c", SERVER, str(port), workdir="/tmp")


def test_a_port_is_served_at_its_tunnel_url_to_its_own_workspace_only(cluster):
    app = ember.App.lookup("tunnels", create_if_missing=True)
    port, hidden = free_port(), free_port()  # (the process backend shares the machine's loopback)
    sb = ember.Sandbox.create(app=app, timeout=120, encrypted_ports=[port])
    tunnels = sb.tunnels()
    assert list(tunnels) == [port]
    t = tunnels[port]
    assert t.url == f"{cluster.web_url}/tunnels/{sb.object_id}/{port}" and not t.public
    assert (t.host, t.port) == t.tls_socket == (cluster.host, cluster.http_port)
    with pytest.raises(exception.InvalidError, match="not raw TCP"):
        print(t.tcp_socket)
    server = start_server(sb, port)
    start_server(sb, hidden, big=False)  # listening too, but not declared
    token = own_token()
    wait_for(lambda: request(t.url + "/", headers=token)[0] == 200, what="the sandbox's server to answer")

    # A large file streams through, whole.
    t0 = time.perf_counter()
    status, headers, body = request(t.url, headers=token, path="/big.bin")
    seconds = time.perf_counter() - t0
    assert status == 200 and len(body) == BIG and int(headers["Content-Length"]) == BIG
    expected = sb.exec("sha256sum", "/tmp/big.bin").stdout.read().split()[0]
    assert hashlib.sha256(body).hexdigest() == expected
    print(f"{BIG >> 20} MiB through the tunnel in {seconds * 1000:.0f} ms ({BIG / seconds / 2**20:.0f} MiB/s)")

    # A body goes up; the path below the tunnel is the server's; the Ember token stays out of the sandbox.
    payload = os.urandom(3 << 20)
    status, _, body = request(t.url, "POST", headers={**token, "Cookie": "ember_session=its-dashboard; app=1"},
                              body=payload, path="/echo?x=1")
    got = json.loads(body)
    assert status == 200 and got["length"] == len(payload) and got["sha256"] == hashlib.sha256(payload).hexdigest()
    assert got["path"] == "/echo?x=1" and got["authorization"] is None and got["cookie"] == "app=1"
    assert got["prefix"] == f"/tunnels/{sb.object_id}/{port}"
    # A client that goes away ends the connection to the port, even while the port says nothing.
    u = urllib.parse.urlsplit(t.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", u.path + "/hang", headers=token)
    stream = conn.getresponse()
    assert stream.status == 200 and stream.readline() == b"tick\n"
    conn.sock.shutdown(2)
    conn.close()
    wait_for(lambda: sb.exec("test", "-e", "/tmp/hang-ended").wait() == 0,
             what="the server's connection to end once its client went away")
    # The tunnel's root without its slash leads below it (its pages' relative links resolve there).
    status, headers, _ = request(t.url, headers=token)
    assert status == 308 and headers["location"] == f"/tunnels/{sb.object_id}/{port}/"

    # Attacks, each refused without reaching the sandbox.
    cli("workspace", "create", "intruders")
    other = json.loads(cli("token", "new", "--workspace", "intruders", "--json"))
    intruder = bearer(other["token_id"], other["token_secret"])
    base = f"{cluster.web_url}/tunnels"
    for what, url, headers, status in [
            ("no token", t.url + "/", {}, 401),
            ("not a bearer token", t.url + "/", {"Authorization": "Basic eDp5"}, 401),
            ("a wrong secret", t.url + "/", bearer(os.environ["EMBER_TOKEN_ID"], "wrong"), 401),
            ("another workspace's token", t.url + "/", intruder, 404),
            ("a forged sandbox id", f"{base}/sb-forged0000000000/{port}/", token, 404),
            ("a forged sandbox id without a token", f"{base}/sb-forged0000000000/{port}/", {}, 401),
            ("a port not declared", f"{base}/{sb.object_id}/{hidden}/", token, 404),
            ("a port not declared, another workspace", f"{base}/{sb.object_id}/{hidden}/", intruder, 404),
            ("not a port", f"{base}/{sb.object_id}/http/", token, 404)]:
        got_status, _, body = request(url, headers=headers)
        assert got_status == status, (what, got_status, body)
        assert b"sha256" not in body and b"Directory listing" not in body, what
    # Nor does a client's ContainerExec reach a port by itself (only the gateway's tunnels do).
    channel = grpc.insecure_channel(cluster.url)
    stub = api_pb2_grpc.ClientApiStub(channel)
    start = api_pb2.ExecStart(container_id=sb._info.container_id, argv=["x"], port=hidden)
    md = metadata((os.environ["EMBER_TOKEN_ID"], os.environ["EMBER_TOKEN_SECRET"]))
    with pytest.raises(grpc.RpcError) as e:
        next(iter(stub.ContainerExec(iter([api_pb2.ContainerExecRequest(start=start)]), timeout=30, metadata=md)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ExecStart.port" in e.value.details()
    channel.close()

    # A server that stopped: the gateway says so (502), naming the port.
    server_down = ember.Sandbox.create(app=app, timeout=60, encrypted_ports=[free_port()])
    url = next(iter(server_down.tunnels().values())).url
    status, _, body = request(url + "/", headers=token)
    assert status == 502 and b"nothing answers on port" in body
    server_down.terminate()

    # Once it ends, its tunnel is gone.
    sb.terminate()
    assert request(t.url + "/", headers=token)[0] == 404
    with pytest.raises(exception.SandboxTerminatedError):
        sb.tunnels()
    assert server.wait() == 137


def test_public_ports_need_no_token_and_bad_ports_are_refused(cluster):
    app = ember.App.lookup("tunnels", create_if_missing=True)
    for ports, match in [([0], "encrypted_ports"), (["8000"], "encrypted_ports"), ("8000", "encrypted_ports"),
                         ([True], "encrypted_ports")]:
        with pytest.raises(exception.InvalidError, match=match):
            ember.Sandbox.create(app=app, encrypted_ports=ports)
    with pytest.raises(exception.InvalidError, match="both"):
        ember.Sandbox.create(app=app, encrypted_ports=[8000], unencrypted_ports=[8000])
    with pytest.raises(exception.InvalidError, match="h2_ports= is not supported"):
        ember.Sandbox.create(app=app, h2_ports=[8000])
    port = free_port()
    sb = ember.Sandbox.create(app=app, timeout=60, unencrypted_ports=[port], public_ports=True)
    t = sb.tunnels()[port]
    assert t.public and t.unencrypted_port == cluster.http_port
    start_server(sb, port, big=False)
    wait_for(lambda: request(t.url + "/", headers={})[0] == 200, what="the public port to answer without a token")
    status, _, body = request(t.url, "POST", headers=own_token(), body=b"hi", path="/x")
    assert status == 200 and json.loads(body)["authorization"] is None  # an Ember token is never passed on
    status, _, body = request(t.url, "POST", headers={"Authorization": "Bearer its-own"}, body=b"hi", path="/x")
    assert json.loads(body)["authorization"] == "Bearer its-own"  # the app's own scheme is its own
    sb.terminate()


def test_a_websocket_goes_through_its_tunnel(cluster):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    app = ember.App.lookup("tunnels", create_if_missing=True)
    port = free_port()
    sb = ember.Sandbox.create("python3", "-c", WS_SERVER, str(port), app=app, timeout=60, encrypted_ports=[port])
    url = sb.tunnels()[port].url.replace("http", "ws", 1) + "/chat"

    def up():
        try:
            with connect(url, additional_headers=own_token(), open_timeout=10):
                return True
        except (InvalidStatus, OSError):
            return False
    wait_for(up, what="the sandbox's WebSocket server to answer")
    with connect(url, additional_headers=own_token(), max_size=None) as ws:
        ws.send("hello")
        assert ws.recv() == "HELLO"
        blob = os.urandom(300_000)
        ws.send(blob)
        assert ws.recv() == blob
    with pytest.raises(InvalidStatus) as e:
        with connect(url, open_timeout=10):
            pass
    assert e.value.response.status_code == 403  # refused before its handshake (as a 401 is, for HTTP)
    sb.terminate()


# ---------------------------------------------------------------- on the container backend


def test_a_container_sandboxs_port_is_reached_inside_its_own_network(container_cluster):
    app = ember.App.lookup("isolated-tunnels", create_if_missing=True)
    # Its network is its own (no way out at all): the tunnel still reaches its loopback.
    sb = ember.Sandbox.create(app=app, timeout=120, encrypted_ports=[8000], block_network=True)
    t = sb.tunnels()[8000]
    start_server(sb, 8000)
    token = own_token()
    wait_for(lambda: request(t.url + "/", headers=token)[0] == 200, timeout=60, what="the sandbox's server to answer")
    status, _, body = request(t.url, headers=token, path="/big.bin")
    expected = sb.exec("sha256sum", "/tmp/big.bin").stdout.read().split()[0]
    assert status == 200 and hashlib.sha256(body).hexdigest() == expected
    assert request(t.url, headers={}, path="/")[0] == 401
    sb.terminate()
    assert request(t.url + "/", headers=token)[0] == 404
