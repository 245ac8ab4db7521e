"""Functions for tests/test_hosts.py, whose workers are hosts of their own (network namespaces):
each says where it ran by its container's gateway, the worker's end of its veth pair, whose
subnet tells the worker (each worker logs its containers' subnet as it starts)."""

import os
import socket
import struct
import time

import ember

app = ember.App("hosts-tests")
# A layer of its own on the shared Debian base: built by the first host, pulled by the others.
image = ember.Image.debian_slim().run_commands("echo built-by-the-first-host > /etc/ember-hosts-layer")
vol = ember.Volume.from_name("hosts-files", create_if_missing=True)


def gateway() -> str:
    """The container's default gateway (the host's end of its veth pair), from the routing table."""
    with open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":  # the default route
                return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    raise RuntimeError("no default route")


@app.function(image=image, cpu=0.25, region="h2")
def layer_file():
    return open("/etc/ember-hosts-layer").read().strip(), gateway()


# One CPU each: a host (1.5 CPU) runs one of these at a time, so a backlog spreads over hosts.
@app.function(image=image, cpu=1)
def square(x):
    time.sleep(0.3)
    return x * x, gateway()


@app.function(image=image, cpu=0.25, region="h3")
def reverse_on_h3(data: bytes):
    return data[::-1], gateway()


@app.function(image=image, cpu=0.25, volumes={"/data": vol}, region="h1")
def write_on_h1(name, text):
    with open(f"/data/{name}", "w") as f:
        f.write(text)
    vol.commit()
    return gateway()


@app.function(image=image, cpu=0.25, volumes={"/data": vol}, region="h2")
def read_on_h2(name):
    vol.reload()
    with open(f"/data/{name}") as f:
        return f.read(), gateway()


@app.function(image=image, cpu=0.25, region="h3")
@ember.asgi_app()
def web():
    async def serve(scope, receive, send):
        body = f"served by {gateway()} for {scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return serve


@app.function(image=image, cpu=0.25, retries=0)
def hold(key):
    """Says where it started (a queue). The first attempt then runs until its host is cut off (the
    control plane's port stops answering) and finishes there, so that its output waits for the
    network; any other attempt runs until the test releases it."""
    where = gateway()
    state = ember.Dict.from_name(key, create_if_missing=True)
    first = state.put("first", where, skip_if_exists=True)  # before saying so: the test cuts at once
    ember.Queue.from_name(key, create_if_missing=True).put(where)
    if first:
        host, _, port = os.environ["EMBER_SERVER_URL"].removeprefix("https://").rpartition(":")
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=0.5).close()
            except OSError:
                return where
            time.sleep(0.1)
    while not state.get("release"):
        time.sleep(0.2)
    return where
