"""Functions the network tests call from inside containers: probes, a listener, a web server."""

import socket
import subprocess
import sys
import threading
import urllib.request

import ember

app = ember.App("network-tests")

base = ember.Image.debian_slim()
WEB_PORT = 8000


def _try(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    except OSError as e:
        return f"failed: {e}"


def _gateway():
    """The container's default route's next hop (the host's end of its veth pair)."""
    for line in open("/proc/net/route").read().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return None


def _fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except OSError as e:
        return f"failed: {e}"


@app.function(image=base)
def probe(targets, url=None):
    """Try each (host, port); fetch `url`, if given. Also says where it is."""
    return {"gateway": _gateway(), "interfaces": [n for _, n in socket.if_nameindex()],
            "results": {f"{h}:{p}": _try(h, p) for h, p in targets}, "fetched": url and _fetch(url)}


@app.function(image=base, block_network=True)
def probe_offline(targets, url=None):
    return probe.get_raw_f()(targets, url)


@app.function(image=base)
def listen():
    """Listen on every address of the container; return its own address, the port, and
    whether the container itself reaches it there (so that another's failing means something)."""
    server = socket.create_server(("0.0.0.0", 0))
    threading.Thread(target=lambda: [server.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("198.51.100.2", 9))  # no packet is sent: this picks the address it would send from
        address = s.getsockname()[0]
    port = server.getsockname()[1]
    return address, port, _try(address, port)


SERVE = """
import http.server, socket, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(0.3)  # so that requests overlap and go to both containers
        body = socket.gethostname().encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", %d), H).serve_forever()
"""


@app.function(image=base, min_containers=2)
@ember.web_server(WEB_PORT, startup_timeout=20)
def same_port():
    # Both containers listen on the same port, each in its own network namespace.
    subprocess.Popen([sys.executable, "-c", SERVE % WEB_PORT])
