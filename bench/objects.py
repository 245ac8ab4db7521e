"""Dict and Queue round trips: Ember against Redis on loopback, in one run.

    python bench/objects.py      # needs redis-server (apt-get install redis-server);
                                 # installs redis-py into bench/.venv-redis the first time

Measures, from a client on the same machine, the median of 2,000 after 200 warm-up:
  - Dict.put then Dict.get of a small value (Redis: SET then GET);
  - Queue.put then Queue.get (Redis: RPUSH then BLPOP).
"""

import os
import pathlib
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REDIS_VENV = HERE / ".venv-redis"
REDIS_PY = "redis==8.1.0"
N, WARMUP = 2000, 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(op) -> float:
    """Median milliseconds of op()."""
    for _ in range(WARMUP):
        op()
    times = []
    for _ in range(N):
        t = time.perf_counter()
        op()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def bench_ember(tmp: pathlib.Path) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ember.cli.main", "server", "--port", str(port),
                               "--data-dir", str(tmp / "server")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["EMBER_SERVER_URL"] = f"127.0.0.1:{port}"
    try:
        import ember
        d = ember.Dict.from_name("bench", create_if_missing=True)
        q = ember.Queue.from_name("bench", create_if_missing=True)
        value = {"user": 42, "name": "ada"}

        def dict_rt():
            d.put("key", value)
            d.get("key")

        def queue_rt():
            q.put(value)
            q.get()

        return {"dict_ms": timed(dict_rt), "queue_ms": timed(queue_rt)}
    finally:
        server.terminate()
        server.wait()


REDIS_SIDE = r'''
import json, pickle, statistics, sys, time
import redis
N, WARMUP = int(sys.argv[2]), int(sys.argv[3])
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
value = pickle.dumps({"user": 42, "name": "ada"})
def timed(op):
    for _ in range(WARMUP):
        op()
    times = []
    for _ in range(N):
        t = time.perf_counter(); op(); times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000
def dict_rt():
    r.set("key", value); pickle.loads(r.get("key"))
def queue_rt():
    r.rpush("q", value); pickle.loads(r.blpop("q")[1])
print(json.dumps({"dict_ms": timed(dict_rt), "queue_ms": timed(queue_rt)}))
'''


def bench_redis(tmp: pathlib.Path) -> dict:
    import json
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    py = REDIS_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(REDIS_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", REDIS_PY], check=True)
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        out = subprocess.run([str(py), "-c", REDIS_SIDE, str(port), str(N), str(WARMUP)], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)
    finally:
        server.terminate()
        server.wait()


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-objects-"))
    try:
        e = bench_ember(tmp)
        r = bench_redis(tmp)
        floor = subprocess.run([sys.executable, str(HERE / "grpc_floor.py")], capture_output=True, text=True,
                               check=True).stdout.strip()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# objects benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores")
    print(f"{'':34}{'Ember':>10}{'Redis':>10}{'ratio':>8}")
    for key, label in (("dict_ms", "Dict put + get, median (ms)"), ("queue_ms", "Queue put + get, median (ms)")):
        print(f"{label:34}{e[key]:10.3f}{r[key]:10.3f}{e[key] / r[key]:7.1f}x")
    print(f"transport floor, in the same run: {floor} (a put + get pair is two of them)")


if __name__ == "__main__":
    main()
