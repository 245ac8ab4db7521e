"""Core benchmark: Ember against Ray on a trivial function, in one run on one machine.

    python bench/core.py                      # installs Ray into bench/.venv-ray the first time
    python bench/core.py --against REV        # also this same benchmark on an earlier commit
    python bench/core.py --tls                # Ember over TLS (`ember server --tls auto`, https with its CA)
    python bench/core.py --tls-against-plain  # this checkout over TLS against the same without, alternating
    python bench/core.py --postgres-against-sqlite  # the control plane on PostgreSQL against SQLite, alternating
    python bench/core.py --watched-against-unwatched  # with a browser on the function's live dashboard page
                                                      # and a /metrics scrape every second, against none, alternating

Measures, with warm containers/workers:
  - the round trip of one .remote() call: median of 200 after warm-up; on the frame transport,
    where it goes (bench/objects.py's split: in the client before its frame is written, from then
    to the answer's arrival, from there to the caller), and the client's thread -> loop hop;
  - 10,000 inputs through .map (Ray: ray.get([f.remote(i) ...])), inputs per second;
  - 100,000 calls spawned at once, all completed, and the control plane's peak memory.
"""

import argparse
import importlib.util
import asyncio
import collections
import itertools
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
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from revisions import alternate  # noqa: E402
RAY_VENV = HERE / ".venv-ray"
RAY_VERSION = "2.60.0"
WARMUP = 5.0  # seconds of calls before the round trip is measured


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below pid (its children, theirs, ...)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    ppid = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    found, todo = [], [pid]
    while todo:
        found.extend(kids := children.get(todo.pop(), []))
        todo.extend(kids)
    return found


def percentiles(xs: list[float]) -> str:
    """Seconds, as their median, 90th percentile and least, in milliseconds."""
    xs = sorted(xs)
    return (f"p50 {statistics.median(xs) * 1000:.1f} ms, p90 {xs[int(len(xs) * 0.9)] * 1000:.1f} ms, "
            f"min {xs[0] * 1000:.1f} ms")


def shell_floor(n: int) -> list[float]:
    """Seconds of `sh -c 'echo hi'` run from here, n times: the floor of a command's round trip."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["sh", "-c", "echo hi"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return times


def start_cluster(tmp: pathlib.Path, backend: str = "auto", tls: bool = False, server_args=(), worker_args=()):
    """The control plane and a worker (given `worker_args`); the gateway's URL is in EMBER_BENCH_WEB_URL."""
    port = free_port()
    http_port = free_port()
    server_args = [*server_args, "--http", f"127.0.0.1:{http_port}"]
    os.environ["EMBER_BENCH_WEB_URL"] = f"{'https' if tls else 'http'}://127.0.0.1:{http_port}"
    url = f"https://127.0.0.1:{port}" if tls else f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "ember.cli.main"]
    log = open(tmp / "cluster.log", "ab")
    server = subprocess.Popen(cmd + ["server", "--port", str(port), "--data-dir", str(tmp / "server")]
                              + (["--tls", "auto"] if tls else []) + list(server_args), stdout=log, stderr=log)
    if tls:
        # The worker and this client trust the CA the server makes; the worker reads it as it starts.
        ca = tmp / "server" / "tls" / "ca.pem"
        _wait_for(ca, server, tmp)
        os.environ["EMBER_CA_CERT"] = str(ca)
    # Image layers are kept between runs (a Debian base takes a minute to build).
    cache = os.environ.get("EMBER_CACHE_DIR") or str(HERE / ".cache")
    tokens = []
    if importlib.util.find_spec("ember.server.auth") is not None:
        # A control plane with tokens (not one from before them, with --against): the worker joins
        # with the worker token it writes, this client calls with its admin token.
        worker_token = tmp / "server" / "worker-token.json"
        _wait_for(worker_token, server, tmp)
        tokens = ["--token-file", str(worker_token)]
        admin = json.loads((tmp / "server" / "admin-token.json").read_text())
        os.environ.update(EMBER_TOKEN_ID=admin["token_id"], EMBER_TOKEN_SECRET=admin["token_secret"])
    worker = subprocess.Popen(cmd + ["worker", "--server", url, "--data-dir", str(tmp / "worker"), "--cache-dir", cache,
                               "--backend", backend, *worker_args] + tokens,
                              stdout=log, stderr=log)
    os.environ["EMBER_SERVER_URL"] = url
    return server, worker


def stop_cluster(server: subprocess.Popen, worker: subprocess.Popen, timeout: float | None = None):
    """Stop what start_cluster started: both asked at once, then waited for."""
    for p in (worker, server):
        p.terminate()
    for p in (worker, server):
        p.wait(timeout)


def _wait_for(path: pathlib.Path, server: subprocess.Popen, tmp: pathlib.Path):
    deadline = time.monotonic() + 30
    while not path.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the control plane did not write {path}; see {tmp / 'cluster.log'}")
        time.sleep(0.05)


class Watcher:
    """What watches a cluster while it is measured: headless Chromium (Debian's /usr/bin/chromium,
    through Playwright) logged in to the dashboard, on the live page of the benchmark's app, and
    a Prometheus-style scrape of /metrics every second. Each in a thread of its own, in a process
    of its own (watch_in_a_process): in the measuring process, its threads would take the GIL from
    the calls measured."""

    def __init__(self, web_url: str, app_id: str):
        self.web_url, self.app_id = web_url, app_id
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.scrapes = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._browse, daemon=True),
                        threading.Thread(target=self._scrape, daemon=True)]
        for t in self.threads:
            t.start()
        if not self.ready.wait(60) or self.errors:
            raise SystemExit(f"the dashboard could not be watched: {self.errors or 'it did not open in 60 s'}")

    def _browse(self):
        try:
            from playwright.sync_api import sync_playwright
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page()
                page.goto(self.web_url + "/dashboard/login")
                page.fill("input[name=token_id]", os.environ["EMBER_TOKEN_ID"])
                page.fill("input[name=token_secret]", os.environ["EMBER_TOKEN_SECRET"])
                page.click("button[type=submit]")
                page.wait_for_url(self.web_url + "/dashboard/")
                page.goto(f"{self.web_url}/dashboard/apps/{self.app_id}")
                page.locator("td", has_text="ident").first.wait_for()
                self.ready.set()
                while not self.stop.is_set():
                    page.wait_for_timeout(200)  # the page's events are handled meanwhile
                browser.close()
        except Exception as e:  # reported by the caller, which waits for ready
            self.errors.append(repr(e))
            self.ready.set()

    def _scrape(self):
        import urllib.request
        while not self.stop.wait(1.0):
            with urllib.request.urlopen(self.web_url + "/metrics", timeout=10) as r:
                r.read()
            self.scrapes += 1

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def watch_in_a_process(web_url: str, app_id: str) -> subprocess.Popen:
    """A process of its own that watches (Watcher) until terminated, once it watches."""
    watcher = subprocess.Popen([sys.executable, __file__, "--watch", web_url, app_id], stdout=subprocess.PIPE,
                               text=True)
    if watcher.stdout.readline().strip() != "watching":
        raise SystemExit("the dashboard could not be watched (see above)")
    return watcher


def stop_watching(watcher: subprocess.Popen) -> int:
    """Its scrapes of /metrics."""
    watcher.terminate()
    out, _ = watcher.communicate(timeout=60)
    return int(out.strip() or 0)


def watch(web_url: str, app_id: str):
    """--watch: a Watcher until SIGTERM, then its scrapes on stdout."""
    import signal
    watcher = Watcher(web_url, app_id)
    ended = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: ended.set())
    print("watching", flush=True)
    ended.wait()
    watcher.close()
    print(watcher.scrapes, flush=True)


def process_cpu_seconds(pids: list[int]) -> float:
    """The CPU time the processes have used so far (those gone meanwhile count nothing)."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            pass
    return total


def start_profiles(pids: dict[str, int], folder: pathlib.Path) -> list[subprocess.Popen]:
    """py-spy (from this interpreter's environment, or on PATH) sampling each process without
    stopping it, only threads that hold the GIL (what runs Python, not what waits), into
    folder/NAME.txt (collapsed stacks: one line per stack with its count of samples)."""
    spy = pathlib.Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        spy = shutil.which("py-spy") or sys.exit(f"--profile needs py-spy: {sys.executable} -m pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([str(spy), "record", "--nonblocking", "--gil", "--threads", "--format", "raw",
                              "--rate", "250", "-o", str(folder / f"{name}.txt"), "-p", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in pids.items()]


def stop_profiles(spies: list[subprocess.Popen]):
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled as it stops
    for spy in spies:
        spy.wait(60)


def summarize_profiles(folder: pathlib.Path, top: int = 25):
    """Each profile's samples, and the functions they were in: on top of the stack (self) and
    anywhere on it (total), the most first."""
    for path in sorted(folder.glob("*.txt")):
        own, total, samples = collections.Counter(), collections.Counter(), 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [f for f in stack.split(";") if not f.startswith(("thread (", "process "))]
            if not frames or not count.isdigit():
                continue
            n = int(count)
            samples += n
            own[_short(frames[-1])] += n
            for frame in {_short(f) for f in frames}:
                total[frame] += n
        if not samples:
            continue
        print(f"## {path.stem}: {samples} samples")
        for name, counter in (("self", own), ("total", total)):
            print(f"  {name}:")
            for frame, n in counter.most_common(top):
                print(f"    {n / samples * 100:5.1f}%  {frame}")


def _short(frame: str) -> str:
    """A py-spy frame, `function (path:line)`, as `function (file)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({pathlib.Path(where.rstrip(')')).name.split(':')[0]})" if where else name


def bench_ember(n_map: int, n_spawn: int, backend: str, tls: bool = False, database_url: str | None = None,
                watched: bool = False, profile: pathlib.Path | None = None) -> dict:
    import core_app
    from core_app import app
    from objects import marked, split, timed

    from ember._client.client import Client

    marks = marked()  # before the client connects
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-"))
    server, worker = start_cluster(tmp, backend, tls, ["--database-url", database_url] if database_url else [])
    result = {}
    watcher = None
    try:
        with app.run():
            f = core_app.ident
            f.remote(1)
            if watched:
                watcher = watch_in_a_process(os.environ["EMBER_BENCH_WEB_URL"], app.app_id)
            # Warm up for 300 calls and at least WARMUP seconds: on the container backend the
            # worker starts a spare container after the first one, and its start (a second or
            # so of both cores) must not fall into the measured calls.
            started = time.monotonic()
            for i in itertools.count():
                f.remote(1)
                if i >= 300 and time.monotonic() - started > WARMUP:
                    break
            times = []
            cpu = cpu_seconds(server.pid)
            for _ in range(200):
                t = time.perf_counter()
                f.remote(1)
                times.append(time.perf_counter() - t)
            # The control plane's CPU per call: what its own work costs, less noisy than times.
            result["server_cpu_us_per_remote"] = (cpu_seconds(server.pid) - cpu) / 200 * 1e6
            result["remote_median_ms"] = statistics.median(times) * 1e3
            if profile:
                # Where each party spends a .remote(): 3,000 calls sampled (apart from the 200
                # measured above: the samplers slow every party).
                spies = start_profiles({"remote-server": server.pid, "remote-client": os.getpid(), **{
                    f"remote-container-{pid}": pid for pid in descendants(worker.pid)}}, profile)
                for _ in range(3000):
                    f.remote(1)
                stop_profiles(spies)
            # Where a round trip goes (when .remote() is on the frame transport: marks were made).
            if "written" in marks:
                result.update(split(lambda: f.remote(1), "remote", marks))
            client = Client.from_env()

            async def nothing():
                pass
            result["hop_ms"] = timed(lambda: client.run(nothing()))
            list(f.map(range(1000)))
            # Each party's CPU per input: the control plane, the containers (all the worker's
            # descendants: its own work is elsewhere) and this client.
            containers = descendants(worker.pid)
            spies = start_profiles({"server": server.pid, "client": os.getpid(), **{
                f"container-{pid}": pid for pid in containers}}, profile) if profile else []
            cpu, cpu_client = cpu_seconds(server.pid), time.process_time()
            cpu_containers = process_cpu_seconds(containers)
            t = time.perf_counter()
            out = list(f.map(range(n_map)))
            dt = time.perf_counter() - t
            result["server_cpu_us_per_map_input"] = (cpu_seconds(server.pid) - cpu) / n_map * 1e6
            result["container_cpu_us_per_map_input"] = (process_cpu_seconds(containers) - cpu_containers) / n_map * 1e6
            result["client_cpu_us_per_map_input"] = (time.process_time() - cpu_client) / n_map * 1e6
            stop_profiles(spies)
            assert out == list(range(n_map))
            result["map_per_s"] = n_map / dt

            peak = [0.0]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(server.pid))
                    time.sleep(0.05)

            threading.Thread(target=sample, daemon=True).start()

            async def spawn_all():
                calls = []
                for start in range(0, n_spawn, 2000):
                    calls += await asyncio.gather(*(f.spawn.aio(i) for i in range(start, min(n_spawn, start + 2000))))
                results = []
                for start in range(0, n_spawn, 2000):
                    results += await asyncio.gather(*(c.get.aio() for c in calls[start:start + 2000]))
                return results

            t = time.perf_counter()
            results = asyncio.run(spawn_all())
            dt = time.perf_counter() - t
            stop.set()
            assert results == list(range(n_spawn))
            result["spawn_n"] = n_spawn
            result["spawn_seconds"] = dt
            result["server_peak_rss_mb"] = max(peak[0], rss_mb(server.pid, "VmHWM"))
    finally:
        if watcher is not None:
            result["scrapes"] = stop_watching(watcher)
        worker.terminate()
        server.terminate()
        worker.wait()
        server.wait()
    return result


def bench_ray(n_map: int) -> dict:
    python = RAY_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing ray=={RAY_VERSION} into {RAY_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(RAY_VENV)], check=True)
        subprocess.run([str(RAY_VENV / "bin" / "pip"), "install", "-q", f"ray=={RAY_VERSION}"], check=True)
    out = subprocess.run([str(python), str(HERE / "ray_core.py"), str(n_map)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--map", type=int, default=10_000)
    p.add_argument("--spawn", type=int, default=100_000)
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--backend", default="auto", help="the worker's backend: auto, container or process")
    p.add_argument("--against", metavar="REV", help="also measure Ember at this commit, in the same run "
                                                    "(alternating with this checkout, --rounds times)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--tls", action="store_true", help="run Ember's control plane with --tls auto, and connect over "
                                                      "https (with --against, REV must have --tls too)")
    p.add_argument("--tls-against-plain", action="store_true",
                   help="measure this checkout over TLS and without, alternating, --rounds times")
    p.add_argument("--postgres-against-sqlite", action="store_true",
                   help="measure this checkout with its state in PostgreSQL (a server started here, durable "
                        "as PostgreSQL is by default) and in SQLite, alternating, --rounds times")
    p.add_argument("--watched-against-unwatched", action="store_true",
                   help="measure this checkout with a browser open on the app's live dashboard page and /metrics "
                        "scraped every second, and without, alternating, --rounds times")
    p.add_argument("--profile", metavar="DIR", type=pathlib.Path,
                   help="sample the control plane, the containers and this client with py-spy during 3,000 "
                        ".remote() calls and during the map (into DIR), and print where each spent its time; "
                        "Ember alone")
    p.add_argument("--watched", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--watch", nargs=2, metavar=("WEB_URL", "APP_ID"), help=argparse.SUPPRESS)
    p.add_argument("--database-url", help=argparse.SUPPRESS)
    # One run of Ember alone, its figures as JSON (--json: what bench/revisions.py asks of a benchmark).
    p.add_argument("--ember-only", "--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.watch:
        watch(*args.watch)
        return
    if args.profile:
        r = bench_ember(args.map, args.spawn, args.backend, args.tls, profile=args.profile)
        summarize_profiles(args.profile)
        print(json.dumps(r))
        return
    if args.ember_only:
        print(json.dumps(bench_ember(args.map, args.spawn, args.backend, args.tls, args.database_url, args.watched)))
        return
    if args.against or args.tls_against_plain or args.postgres_against_sqlite or args.watched_against_unwatched:
        compare(args)
        return
    ember_r = bench_ember(args.map, args.spawn, args.backend, args.tls)
    ray_r = None if args.no_ray else bench_ray(args.map)
    print(f"# core benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"{'':36}{'Ember':>12}{'Ray':>12}{'ratio':>10}")
    rows = [("remote() round trip, median (ms)", "remote_median_ms", "{:.3f}"),
            (f"map of {args.map} (inputs/s)", "map_per_s", "{:.0f}")]
    for label, key, fmt in rows:
        e = ember_r[key]
        r = ray_r[key] if ray_r else None
        ratio = f"{e / r:.2f}x" if r else "-"
        print(f"{label:36}{fmt.format(e):>12}{fmt.format(r) if r else '-':>12}{ratio:>10}")
    print(f"{ember_r['spawn_n']} spawned calls: all completed in {ember_r['spawn_seconds']:.1f}s; "
          f"control plane peak RSS {ember_r['server_peak_rss_mb']:.0f} MB")
    print(json.dumps({"ember": ember_r, "ray": ray_r}))


def _child_args(args, tls: bool | None = None, database_url: str | None = None, watched: bool = False) -> list[str]:
    """The arguments of one --ember-only run of this benchmark, in a process of its own."""
    tls = args.tls if tls is None else tls
    return (["--ember-only", "--map", str(args.map), "--spawn", str(args.spawn), "--backend", args.backend]
            + (["--tls"] if tls else []) + (["--database-url", database_url] if database_url else [])
            + (["--watched"] if watched else []))


def compare(args):
    """This checkout against an earlier commit (or, with --tls-against-plain, over TLS against
    without; with --postgres-against-sqlite, on PostgreSQL against SQLite), alternating, each
    round in fresh processes."""
    def here(tls: bool, database_url: str | None = None, watched: bool = False) -> dict:
        out = subprocess.run([sys.executable, __file__, *_child_args(args, tls, database_url, watched)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    if args.watched_against_unwatched:
        runs = {"unwatched": [], "watched": []}
        for _ in range(args.rounds):
            runs["unwatched"].append(here(args.tls))
            runs["watched"].append(here(args.tls, watched=True))
        report(args, runs, "with the dashboard's live page open and /metrics scraped every second, against none")
        return

    if args.postgres_against_sqlite:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from services import Postgres, postgres_bin  # the tests' PostgreSQL, here with fsync on
        postgres = Postgres(postgres_bin() or sys.exit("PostgreSQL is not installed (apt-get install postgresql)"),
                            durable=True)
        try:
            runs = {"sqlite": [], "postgres": []}
            for _ in range(args.rounds):
                runs["sqlite"].append(here(args.tls))
                runs["postgres"].append(here(args.tls, postgres.create_database()))
        finally:
            postgres.stop()
        what = "PostgreSQL against SQLite"
        report(args, runs, what)
        return
    if args.tls_against_plain:
        runs = {"plain": [], "tls": []}
        for _ in range(args.rounds):
            runs["plain"].append(here(False))
            runs["tls"].append(here(True))
        report(args, runs, "over TLS against without")
        return
    runs = {label: [figures for figures, _ in results]
            for label, results in alternate(__file__, _child_args(args), args.against, args.rounds).items()}
    report(args, runs, f"{args.against} against this checkout")


def report(args, runs: dict[str, list[dict]], what: str):
    print(f"# core benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}: {what}, {args.rounds} rounds")
    for label, key, fmt in [("remote() round trip, median (ms)", "remote_median_ms", "{:.3f}"),
                            (f"map of {args.map} (inputs/s)", "map_per_s", "{:.0f}"),
                            ("control plane CPU per remote() (us)", "server_cpu_us_per_remote", "{:.0f}"),
                            ("thread -> client loop -> thread (ms)", "hop_ms", "{:.3f}"),
                            ("remote(): client to frame written (ms)", "remote_client_ms", "{:.3f}"),
                            ("remote(): frame written to answer (ms)", "remote_server_ms", "{:.3f}"),
                            ("remote(): answer to caller (ms)", "remote_back_ms", "{:.3f}"),
                            ("control plane CPU per map input (us)", "server_cpu_us_per_map_input", "{:.1f}"),
                            ("containers' CPU per map input (us)", "container_cpu_us_per_map_input", "{:.1f}"),
                            ("client CPU per map input (us)", "client_cpu_us_per_map_input", "{:.1f}"),
                            (f"{args.spawn} spawned calls (s)", "spawn_seconds", "{:.1f}")]:
        for name, results in runs.items():
            print(f"{label:36}{name:>14}  " + "  ".join(fmt.format(r[key]) if key in r else "-" for r in results))
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
