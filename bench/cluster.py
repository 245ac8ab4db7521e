"""The control plane at scale, by simulation: one real `ember server` against many simulated workers.

    python bench/cluster.py                                # 10, 50, 100, 200 workers on SQLite
    python bench/cluster.py --workers 10,200 --map 50000
    python bench/cluster.py --database-url postgresql://USER:PASS@HOST/postgres   # on PostgreSQL
    python bench/cluster.py --profile                      # py-spy of the server at the largest size

For each number of workers W, a fresh control plane (its own data dir, or a new database on the
PostgreSQL server of --database-url) and W simulated workers (bench/simworkers.py: the real worker and
container protocols over real gRPC, a trivial runtime), spread over a few processes. Each offers
--cpu CPUs; the function takes one CPU, so W workers hold --containers-per-worker * W containers.
A real SDK client (its own process) then measures:

  - idle: the server's CPU per second with W workers heartbeating and no containers;
  - placement: `ident.update_autoscaler(min_containers=C)` once, and the time until each of the C
    containers has its ContainerInit (its stream is open and its function sent): from the client's
    request, and from the moment its worker got the StartContainer (the placement decision as
    the worker sees it); the server's CPU for all of it;
  - steady: the server's CPU per second with C containers connected and heartbeating, no inputs;
  - dispatch: a `.map` of --map inputs over the C containers (inputs/s, server CPU per input),
    and the median `.remote()` round trip of --remote calls;
  - the server's peak RSS, and the CPU the simulation and the client used (on 2 cores they
    compete with the server: read them beside its figures).
"""

import argparse
import contextlib
import json
import os
import pathlib
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from core import cpu_seconds, free_port, rss_mb  # noqa: E402

WORKERS_PER_PROCESS = 50  # simulated workers per process at most (and at least 2 processes from 20 workers)
PLACE_TIMEOUT = 300.0     # seconds for every container to connect


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None, log: pathlib.Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the control plane exited while waiting for {what}:\n"
                             + (log.read_text(errors="replace")[-3000:] if log else ""))
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


@contextlib.contextmanager
def fresh_database(url: str | None, workers: int):
    """A new empty database for one size, on the PostgreSQL server of `url` (made from the
    database the URL names, and dropped after); None for SQLite."""
    if not url:
        yield None
        return
    try:
        import psycopg
    except ImportError:
        raise SystemExit("--database-url needs psycopg, which the PostgreSQL store uses: run the benchmark with "
                         "the Python that runs `ember server --database-url`") from None
    parts = urllib.parse.urlsplit(url)
    name = f"ember_cluster_{workers}_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield urllib.parse.urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server(tmp: pathlib.Path, database_url: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = tmp / "server.log"
    args = [sys.executable, "-m", "ember.cli.main", "server", "--port", str(port), "--data-dir", str(tmp / "server"),
            "--http", f"127.0.0.1:{free_port()}"]
    if database_url:
        args += ["--database-url", database_url]
    server = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=tmp)

    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0 and (tmp / "server" / "worker-token.json").exists()

    _wait(up, 60, "the control plane to listen", server, log)
    return server, f"127.0.0.1:{port}"


def start_sims(url: str, tmp: pathlib.Path, workers: int, cpu: float) -> list[tuple[subprocess.Popen, pathlib.Path]]:
    procs = max(2 if workers >= 20 else 1, -(-workers // WORKERS_PER_PROCESS))
    sims = []
    for i in range(procs):
        n = workers // procs + (i < workers % procs)
        stats = tmp / f"sim-{i}.json"
        log = open(tmp / f"sim-{i}.log", "ab")
        p = subprocess.Popen([sys.executable, str(HERE / "simworkers.py"), "--server", url, "--token-file",
                              str(tmp / "server" / "worker-token.json"), "--workers", str(n), "--prefix", f"p{i}",
                              "--cpu", str(cpu), "--stats", str(stats)], stdout=log, stderr=subprocess.STDOUT)
        sims.append((p, stats))
    return sims


def read_stats(paths: list[pathlib.Path]) -> dict:
    total = {"registered": 0, "connected": 0, "outputs": 0, "reconnects": 0, "placed": [], "errors": [], "cpu": 0.0}
    for path in paths:
        try:
            s = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
        for key in total:
            total[key] += s[key]
    return total


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# ---------------------------------------------------------------- the client (its own process)

def check(results: list, n: int, calls: list[str]):
    """A map of ident over range(n) gives back range(n), in order; if not, what the control plane
    holds of the call (calls: the ids of the calls made so far, the map's last)."""
    if results == list(range(n)):
        return
    wrong = [(i, r) for i, r in enumerate(results) if r != i][:10]
    from ember._client.client import Client
    from ember.proto import api_pb2
    client = Client.from_env()
    outputs, after = [], 0
    while True:
        resp = client.bridge.run(client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
            call_id=calls[-1], after_seq=after, max_outputs=10_000, timeout=0)))
        if not resp.outputs:
            break
        outputs += resp.outputs
        after = resp.outputs[-1].seq
    idx = [co.output.idx for co in outputs]
    raise SystemExit(f"the map of {n} gave {len(results)} results, not its inputs: (index, result) {wrong}; the "
                     f"control plane holds {len(outputs)} outputs of {len(set(idx))} inputs (seq "
                     f"{outputs[0].seq if outputs else '-'} to {after}), num_done {resp.num_done} of "
                     f"{resp.num_inputs}; missing: {sorted(set(range(n)) - set(idx))[:20]}")


def client(args) -> dict:
    """What the SDK client measures, with the server's CPU read from /proc at each step."""
    import cluster_app
    from cluster_app import app, ident

    spid = args.server_pid
    # The ids of the calls made, for check() to look into.
    from ember._client.client import Client
    calls, rpc = [], Client.rpc

    async def noting_rpc(self, name, request, **kwargs):
        if name == "FunctionCallCreate":
            calls.append(request.call_id)
        return await rpc(self, name, request, **kwargs)

    Client.rpc = noting_rpc
    paths = [pathlib.Path(p) for p in args.stats]
    out = {}
    profiles = out["profiles"] = {}
    spy = Spy(spid, args.profile)
    c0, t = cpu_seconds(spid), time.monotonic()
    time.sleep(args.settle)
    out["idle_cpu_per_s"] = (cpu_seconds(spid) - c0) / (time.monotonic() - t)
    with app.run():
        spy.start("placement")
        c0 = cpu_seconds(spid)
        t0 = time.monotonic()
        ident.update_autoscaler(min_containers=args.containers, scaledown_window=3600)
        _wait(lambda: read_stats(paths)["connected"] >= args.containers, PLACE_TIMEOUT,
              f"{args.containers} containers to connect")
        stats = read_stats(paths)
        out["place_cpu"] = cpu_seconds(spid) - c0
        spy.stop(profiles)
        placed = stats["placed"]
        out["place_all_s"] = max(init for _, init in placed) - t0
        from_request = [init - t0 for _, init in placed]
        from_decision = [init - came for came, init in placed]
        out["place_request_p50"], out["place_request_p99"] = pct(from_request, 0.5), pct(from_request, 0.99)
        out["place_decision_p50"], out["place_decision_p99"] = pct(from_decision, 0.5), pct(from_decision, 0.99)
        spy.start("steady")
        c0, t = cpu_seconds(spid), time.monotonic()
        time.sleep(args.settle)
        out["steady_cpu_per_s"] = (cpu_seconds(spid) - c0) / (time.monotonic() - t)
        spy.stop(profiles)
        check(list(ident.map(range(1000))), 1000, calls)  # warm: every container has had an input
        spy.start("map")
        c0, t = cpu_seconds(spid), time.perf_counter()
        results = list(ident.map(range(args.map)))
        elapsed = time.perf_counter() - t
        spy.stop(profiles)
        check(results, args.map, calls)
        out["map_rate"] = args.map / elapsed
        out["map_cpu_us"] = (cpu_seconds(spid) - c0) / args.map * 1e6
        times = []
        for i in range(args.remote):
            t = time.perf_counter()
            assert ident.remote(i) == i
            times.append(time.perf_counter() - t)
        out["remote_ms"] = statistics.median(times) * 1000
        out["sim_errors"] = read_stats(paths)["errors"]
        out["reconnects"] = read_stats(paths)["reconnects"]
    del cluster_app
    spy.close()
    usage = os.times()
    out["client_cpu"] = usage.user + usage.system
    return out


# ---------------------------------------------------------------- one size, and the whole run

def run_size(workers: int, args, profile: bool) -> dict:
    containers = workers * args.containers_per_worker
    with tempfile.TemporaryDirectory(prefix="ember-cluster-") as tmp_name, \
            fresh_database(args.database_url, workers) as database_url:
        tmp = pathlib.Path(tmp_name)
        server, url = start_server(tmp, database_url)
        sims = []
        try:
            sims = start_sims(url, tmp, workers, float(args.containers_per_worker))
            paths = [stats for _, stats in sims]
            t = time.monotonic()
            _wait(lambda: read_stats(paths)["registered"] >= workers, 120, f"{workers} workers to register",
                  server, tmp / "server.log")
            register_s = time.monotonic() - t
            admin = json.loads((tmp / "server" / "admin-token.json").read_text())
            env = dict(os.environ, EMBER_SERVER_URL=url, EMBER_TOKEN_ID=admin["token_id"],
                       EMBER_TOKEN_SECRET=admin["token_secret"], EMBER_CONFIG_PATH=os.devnull,
                       PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
            done = subprocess.run([sys.executable, str(HERE / "cluster.py"), "--client", "--server-pid",
                                   str(server.pid), "--containers", str(containers), "--map", str(args.map),
                                   "--remote", str(args.remote), "--settle", str(args.settle),
                                   *(["--profile"] if profile else []),
                                   "--stats", *map(str, paths)], env=env, capture_output=True, text=True, cwd=tmp)
            if done.returncode != 0:
                raise SystemExit(f"the client failed at {workers} workers:\n{done.stderr[-4000:]}\n"
                                 f"server log:\n{(tmp / 'server.log').read_text(errors='replace')[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result.update(workers=workers, containers=containers, register_s=register_s,
                          server_cpu=cpu_seconds(server.pid), server_rss_mb=rss_mb(server.pid),
                          server_hwm_mb=rss_mb(server.pid, "VmHWM"), sim_cpu=read_stats(paths)["cpu"],
                          sim_processes=len(sims))
            return result
        finally:
            if args.logs:  # what the server and the simulation wrote, for a look afterwards
                keep = pathlib.Path(args.logs) / f"{workers}-workers-{time.strftime('%H%M%S')}"
                keep.mkdir(parents=True, exist_ok=True)
                for log in tmp.glob("*.log"):
                    shutil.copy(log, keep)
            for p, _ in sims:
                p.terminate()
            for p, _ in sims:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()


class Spy:
    """py-spy recording the server through one phase at a time (when asked): samples only while it
    holds the GIL, so what it shows is Python's work (and the C it calls), not the loop's waits."""

    def __init__(self, pid: int, enabled: bool):
        self.pid, self.enabled = pid, enabled
        self.proc, self.phase = None, None
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="ember-spy-")) if enabled else None

    def start(self, phase: str):
        if not self.enabled:
            return
        self.phase = phase
        self.proc = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "py-spy"), "record", "--gil",
                                      "--nonblocking", "--format", "raw", "--rate", "200", "-o",
                                      str(self.dir / f"{phase}.txt"), "--pid", str(self.pid)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "py-spy.log", "ab"))
        time.sleep(0.5)  # it attaches

    def stop(self, profiles: dict):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        profiles[self.phase] = summarize_profile(self.dir / f"{self.phase}.txt")
        self.proc = None

    def close(self):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def summarize_profile(path: pathlib.Path, top: int = 12) -> dict:
    """py-spy's raw stacks ("frame;frame;... count" per line) as the shares of samples each
    function of Ember's was on the stack for (inclusive) and at the top of (its own time)."""
    inclusive, own, total = {}, {}, 0
    if not path.exists():
        return {"error": "py-spy wrote no profile (see py-spy.log; it needs ptrace)"}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + n
        for f in set(frames):
            if ".py)" in f:
                inclusive[f] = inclusive.get(f, 0) + n

    def shares(d, keep=lambda f: True):
        return [(f, round(100 * n / total, 1)) for f, n in sorted(d.items(), key=lambda kv: -kv[1]) if keep(f)][:top]

    ours = ("fleet.py", "dispatch.py", "placement.py", "autoscaler.py", "scheduler.py", "api.py", "ledger.py",
            "sqlite.py", "postgres.py", "usage.py", "shares.py", "auth.py", "apps.py", "validate.py", "refusals.py")
    return {"samples": total, "own": shares(own),
            "inclusive": shares(inclusive, lambda f: any(f.endswith(f"({m})") for m in ours))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="10,50,100,200", help="the sizes to run, comma-separated")
    p.add_argument("--containers-per-worker", type=int, default=10)
    p.add_argument("--map", type=int, default=20000, help="inputs of the measured .map")
    p.add_argument("--remote", type=int, default=200, help=".remote() calls for the round trip")
    p.add_argument("--settle", type=float, default=3.0, help="seconds each idle and steady figure is measured over")
    p.add_argument("--database-url", help="run the control plane on PostgreSQL (ember server --database-url): "
                   "each size gets a new database on that server, made from the one the URL names and dropped "
                   "after")
    p.add_argument("--profile", action="store_true", help="py-spy the server at the largest size")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.add_argument("--logs", help="keep the server's and the simulation's logs of each size under this directory")
    # The client's own run (cluster.py starts it as a process of its own).
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--containers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--stats", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        print(json.dumps(client(args)))
        return
    try:
        sizes = [int(n) for n in args.workers.split(",")]
    except ValueError:
        raise SystemExit(f"--workers {args.workers!r}: pass worker counts separated by commas, "
                         "e.g. 10,50,100,200") from None
    if not sizes or min(sizes) < 1:
        raise SystemExit("--workers: every size must be at least 1 worker")
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"store: {'PostgreSQL' if args.database_url else 'SQLite'}; map of {args.map}, "
          f"{args.containers_per_worker} containers per worker", flush=True)
    results = []
    for w in sizes:
        r = run_size(w, args, profile=args.profile and w == max(sizes))
        results.append(r)
        print(f"  {w} workers done: {r['containers']} containers placed in {r['place_all_s']:.2f}s, "
              f"map {r['map_rate']:,.0f}/s", flush=True)
    report(results)
    if args.json:
        print(json.dumps(results, indent=1))


def report(results: list[dict]):
    rows = [
        ("workers / containers", lambda r: f"{r['workers']} / {r['containers']}"),
        ("all registered (s)", lambda r: f"{r['register_s']:.2f}"),
        ("server CPU idle, W workers (ms/s)", lambda r: f"{r['idle_cpu_per_s'] * 1000:.0f}"),
        ("all containers connected (s)", lambda r: f"{r['place_all_s']:.2f}"),
        ("  placements per second", lambda r: f"{r['containers'] / r['place_all_s']:,.0f}"),
        ("  request to connected, p50 / p99 (s)", lambda r: f"{r['place_request_p50']:.2f} / "
                                                            f"{r['place_request_p99']:.2f}"),
        ("  StartContainer to connected, p50 / p99 (ms)", lambda r: f"{r['place_decision_p50'] * 1000:.0f} / "
                                                                    f"{r['place_decision_p99'] * 1000:.0f}"),
        ("  server CPU to place them all (s)", lambda r: f"{r['place_cpu']:.2f}"),
        ("  container streams opened again", lambda r: f"{r['reconnects']}"),
        ("server CPU steady, C containers (ms/s)", lambda r: f"{r['steady_cpu_per_s'] * 1000:.0f}"),
        ("`.map` (inputs/s)", lambda r: f"{r['map_rate']:,.0f}"),
        ("  server CPU per input (us)", lambda r: f"{r['map_cpu_us']:.0f}"),
        ("`.remote()` round trip, median (ms)", lambda r: f"{r['remote_ms']:.2f}"),
        ("server CPU in all (s)", lambda r: f"{r['server_cpu']:.1f}"),
        ("server RSS at end / peak (MiB)", lambda r: f"{r['server_rss_mb']:.0f} / {r['server_hwm_mb']:.0f}"),
        ("simulation CPU (s, processes)", lambda r: f"{r['sim_cpu']:.1f} ({r['sim_processes']})"),
        ("client CPU (s)", lambda r: f"{r['client_cpu']:.1f}"),
    ]
    print()
    print("| | " + " | ".join(f"{r['workers']} workers" for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name, cell in rows:
        print(f"| {name} | " + " | ".join(cell(r) for r in results) + " |")
    for r in results:
        if r.get("sim_errors"):
            print(f"\nsimulation errors at {r['workers']} workers (the last 20 of each process): {r['sim_errors']}")
        for phase, prof in r.get("profiles", {}).items():
            print(f"\nprofile of the server at {r['workers']} workers, {phase} ({prof.get('samples', 0)} samples "
                  "holding the GIL, py-spy):")
            if "error" in prof:
                print("  " + prof["error"])
                continue
            print("  own time:", "; ".join(f"{f} {s}%" for f, s in prof["own"]))
            print("  inclusive (Ember's):", "; ".join(f"{f} {s}%" for f, s in prof["inclusive"]))


if __name__ == "__main__":
    main()
