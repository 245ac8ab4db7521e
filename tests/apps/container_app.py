"""Functions the container tests call: each runs in an isolated container of its image."""

import os
import socket
import time

import ember

app = ember.App("container-tests")

base = ember.Image.debian_slim()
with_six = base.pip_install("six==1.17.0")


@app.function(image=base)
def look_around(host_paths):
    """What the container can see of the host and of itself."""
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    readable = {}
    for p in host_paths:
        try:
            with open(p) as f:
                f.read()
            readable[p] = True
        except OSError:
            readable[p] = False
    try:
        open("/ember/lib/intruder", "w").close()
        runtime_writable = True
    except OSError:
        runtime_writable = False
    return {"pid": os.getpid(), "pids": pids, "hostname": socket.gethostname(), "readable": readable,
            "runtime_writable": runtime_writable, "root": sorted(os.listdir("/"))}


@app.function(image=base)
def write_secret(token):
    with open("/root/secret.txt", "w") as f:
        f.write(token)
    with open("/usr/lib/secret.txt", "w") as f:
        f.write(token)
    return open("/root/secret.txt").read()


@app.function(image=base)
def read_secret():
    return os.path.exists("/root/secret.txt") or os.path.exists("/usr/lib/secret.txt")


@app.function(image=base, memory=100, retries=0)
def hog(mb):
    chunks = []
    for _ in range(mb):
        chunks.append(bytearray(1 << 20))
    return len(chunks)


@app.function(image=base, cpu=(0.25, 0.25))
def busy(seconds):
    """Spin for `seconds` of wall time; return the share of one core it got, and its cgroups
    (/proc/self/cgroup: which the host can read)."""
    start_wall, start_cpu = time.monotonic(), time.process_time()
    while time.monotonic() - start_wall < seconds:
        pass
    with open("/proc/self/cgroup") as f:
        return (time.process_time() - start_cpu) / (time.monotonic() - start_wall), f.read()


@app.function(image=base, cpu=0.01)  # reserved only: it may use more when it is free
def busy_unlimited(seconds):
    return busy.get_raw_f()(seconds)


@app.function(image=base, block_network=True)
def offline():
    names = [name for _, name in socket.if_nameindex()]
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2).close()
        reached = True
    except OSError:
        reached = False
    return {"interfaces": names, "reached": reached}


@app.function(image=with_six)
def use_six():
    import six
    return six.__version__, six.__file__


with with_six.imports():
    import six  # noqa: F401  only the image has it


@app.function(image=base, gpu="H100")
def gpu_env():
    return {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}


@app.function(image=base)
def no_gpu_env():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


async def where_am_i(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": socket.gethostname().encode()})


@app.function(image=base)
@ember.asgi_app()
def web_in_container():
    return where_am_i


@app.function(image=base)
@ember.fastapi_endpoint()
def no_fastapi():
    return "never: the image has no FastAPI"
