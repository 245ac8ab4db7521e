"""Dict and Queue round trips: Ember on its frame transport and on gRPC, against Redis on
loopback, in one run.

    python bench/objects.py      # needs redis-server (apt-get install redis-server);
                                 # installs redis-py into bench/.venv-redis the first time
    python bench/objects.py --tls  # Ember over TLS (`ember server --tls auto`), frames and gRPC alike
    python bench/objects.py --against REV --rounds 5  # frames only: this checkout against REV,
                                                      # alternating (bench/revisions.py), beside Redis

Measures, from a client on the same machine, the median of 2,000 after 200 warm-up:
  - Dict.put then Dict.get of a small value (Redis: SET then GET);
  - Queue.put then Queue.get (Redis: RPUSH then BLPOP);
and where a Dict pair's time goes: the CPU the control plane and the client spend on one, the
hop from the caller's thread to the client's event loop and back (once an operation; blocking
operations no longer make it: they use their thread's own connection), the bare transport's
ping-pong (bench/grpc_floor.py, once an operation), the store's commits (the control plane's
own ember_store_commit_seconds: how many a pair makes, and how long one takes), and for a put
and a get on frames, the time in the client before its frame is written, from then to the
answer's arrival, and from there to the caller.
"""

import json
import os
import pathlib
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from core import free_port, start_cluster, stop_cluster  # noqa: E402
from revisions import alternate  # noqa: E402

REDIS_VENV = HERE / ".venv-redis"
REDIS_PY = "redis==8.1.0"
N, WARMUP = 2000, 200
TRANSPORTS = ("frames", "grpc")  # EMBER_TRANSPORT


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


def commits() -> tuple[float, float]:
    """(count, seconds) of the control plane's store commits so far, from its /metrics."""
    ca = os.environ.get("EMBER_CA_CERT")  # over TLS: the control plane's own CA
    context = ssl.create_default_context(cafile=ca) if ca else None
    text = urllib.request.urlopen(os.environ["EMBER_BENCH_WEB_URL"] + "/metrics", timeout=10,
                                  context=context).read().decode()
    figures = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("ember_store_commit_seconds_"))
    return float(figures["ember_store_commit_seconds_count"]), float(figures["ember_store_commit_seconds_sum"])


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def marked() -> dict:
    """Have the frame transport note when it last wrote a frame and when data last arrived (set
    before the client connects: the event loop keeps the methods it found then)."""
    from ember import _transport
    marks = {}
    send, received = _transport.Connection.send, _transport.Connection.data_received

    def marked_send(conn, kind, msg):
        marks["written"] = time.perf_counter()
        send(conn, kind, msg)

    def marked_received(conn, data):
        marks["arrived"] = time.perf_counter()
        received(conn, data)

    _transport.Connection.send, _transport.Connection.data_received = marked_send, marked_received
    if hasattr(_transport, "BlockingStream"):  # a blocking operation's own connection (not in older revisions)
        receive = _transport.BlockingStream._receive

        def marked_receive(stream):  # called right after the request's write; returns as its answer arrives
            marks["written"] = time.perf_counter()
            frame = receive(stream)
            marks["arrived"] = time.perf_counter()
            return frame

        _transport.BlockingStream._receive = marked_receive
    return marks


def split(op, name: str, marks: dict) -> dict:
    """Where one operation's time goes on the frame transport, medians in ms: in the client
    before its frame is written, from that write to the answer's arrival (loopback both ways and
    the control plane's handling, commit included), and from there back to the caller."""
    rows = []
    for _ in range(N + WARMUP):
        t = time.perf_counter()
        op()
        arrived = marks["arrived"]
        rows.append((marks["written"] - t, arrived - marks["written"], time.perf_counter() - arrived))
    parts = ("client_ms", "server_ms", "back_ms")
    return {f"{name}_{part}": statistics.median(r[k] for r in rows[WARMUP:]) * 1000 for k, part in enumerate(parts)}


def bench_ember(tmp: pathlib.Path, transport: str, tls: bool) -> dict:
    os.environ["EMBER_TRANSPORT"] = transport  # read by the client of this server's URL, made below
    marks = marked()
    server, worker = start_cluster(tmp, backend="process", tls=tls)
    try:
        import ember
        from ember._client.client import Client
        d = ember.Dict.from_name("bench", create_if_missing=True)
        q = ember.Queue.from_name("bench", create_if_missing=True)
        value = {"user": 42, "name": "ada"}

        def dict_rt():
            d.put("key", value)
            d.get("key")

        def queue_rt():
            q.put(value)
            q.get()

        count, seconds = commits()
        server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
        figures = {"dict_ms": timed(dict_rt)}
        figures["server_cpu_us"] = (cpu_seconds(server.pid) - server_cpu) / (N + WARMUP) * 1e6
        figures["client_cpu_us"] = (time.process_time() - client_cpu) / (N + WARMUP) * 1e6
        count2, seconds2 = commits()
        figures["commits_per_pair"] = (count2 - count) / (N + WARMUP)
        figures["commit_ms"] = (seconds2 - seconds) / max(1, count2 - count) * 1000
        figures["queue_ms"] = timed(queue_rt)
        client = Client.from_env()

        async def nothing():
            pass
        figures["hop_ms"] = timed(lambda: client.run(nothing()))
        if transport == "frames":
            figures.update(split(lambda: d.put("key", value), "put", marks),
                           **split(lambda: d.get("key"), "get", marks))
        return figures
    finally:
        stop_cluster(server, worker)


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


SPLIT = ("put_client_ms", "put_server_ms", "put_back_ms", "get_client_ms", "get_server_ms", "get_back_ms")


def against(rev: str, rounds: int):
    """Frames, this checkout against REV, alternating; Redis once in the same run."""
    runs = alternate(__file__, [], rev, rounds)
    with tempfile.TemporaryDirectory(prefix="ember-bench-objects-") as tmp:
        r = bench_redis(pathlib.Path(tmp))
    print(f"# objects benchmark, frames, this checkout against {rev}, medians of {rounds} rounds, "
          f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores")
    print(f"{'':34}{rev[:10]:>10}{'this':>10}{'Redis':>10}{'this/Redis':>12}")
    for key in ("dict_ms", "queue_ms", "hop_ms", "commit_ms", "server_cpu_us", "client_cpu_us") + SPLIT:
        old, new = (statistics.median(f[key] for f, _ in runs[label]) for label in (rev, "this"))
        ratio = f"{new / r[key]:11.1f}x" if key in r else ""
        print(f"{key:34}{old:10.3f}{new:10.3f}{r.get(key, float('nan')):10.3f}{ratio}")


def main():
    if sys.argv[1:2] == ["--one"]:  # one transport's figures, in a process of its own (its own client)
        tmp = pathlib.Path(sys.argv[3])
        print(json.dumps(bench_ember(tmp, sys.argv[2], tls="--tls" in sys.argv)))
        return
    if sys.argv[1:2] == ["--json"]:  # a round of against(): frames, in a fresh process
        with tempfile.TemporaryDirectory(prefix="ember-bench-objects-") as tmp:
            print(json.dumps(bench_ember(pathlib.Path(tmp), "frames", tls=False)))
        return
    if sys.argv[1:2] == ["--against"]:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
        against(sys.argv[2], rounds)
        return
    tls = "--tls" in sys.argv[1:]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-objects-"))
    try:
        e = {}
        for transport in TRANSPORTS:
            (tmp / transport).mkdir()
            out = subprocess.run([sys.executable, __file__, "--one", transport, str(tmp / transport)]
                                 + (["--tls"] if tls else []), capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"the benchmark on {transport} failed:\n{out.stderr[-3000:]}")
            e[transport] = json.loads(out.stdout.splitlines()[-1])
        r = bench_redis(tmp)
        floor = subprocess.run([sys.executable, str(HERE / "grpc_floor.py")], capture_output=True, text=True,
                               check=True).stdout.strip()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# objects benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores"
          + (", Ember over TLS" if tls else ""))
    print(f"{'':34}{'frames':>10}{'gRPC':>10}{'Redis':>10}{'frames/Redis':>14}")
    for key, label in (("dict_ms", "Dict put + get, median (ms)"), ("queue_ms", "Queue put + get, median (ms)")):
        frames, grpc = e["frames"][key], e["grpc"][key]
        print(f"{label:34}{frames:10.3f}{grpc:10.3f}{r[key]:10.3f}{frames / r[key]:13.1f}x")
    print("where a Dict pair's time goes (ms):")
    for key, label in (("hop_ms", "thread -> client loop -> thread, one"), ("commit_ms", "one store commit (server)"),
                       ("commits_per_pair", "commits per pair"),
                       ("server_cpu_us", "control plane CPU per Dict pair (us)"),
                       ("client_cpu_us", "client CPU per Dict pair (us)")):
        print(f"  {label:40}{e['frames'][key]:10.3f}{e['grpc'][key]:10.3f}")
    f = e["frames"]
    for name in ("put", "get"):
        print(f"  frames, Dict.{name}: in the client before its write {f[name + '_client_ms']:.3f}, write -> answer "
              f"arrives {f[name + '_server_ms']:.3f}, arrival -> caller {f[name + '_back_ms']:.3f}")
    print(f"transport floor, in the same run: {floor} (a put + get pair is two of them)")


if __name__ == "__main__":
    main()
