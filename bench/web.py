"""Web endpoint load: Ember's gateway against the same FastAPI app on plain uvicorn, in one run.

    python bench/web.py [--duration 30] [--connections 200] [--containers 1]
    python bench/web.py --against REV [--rounds 3]   # also Ember at commit REV, alternating, in one run

Needs wrk (apt-get install wrk) and FastAPI on this side (pip install -e '.[dev]').
Both serve the same handler (bench/web_app.py) on loopback: Ember through the control plane's
HTTP gateway to N warm containers (@ember.concurrent), the peer by uvicorn with N worker
processes (--workers N, httptools): as many processes running the app. wrk runs with
2 threads and 200 connections; throughput, latency percentiles and errors of each are
printed, and their ratios. Then `ember serve` redeploys: the time from saving a changed
file to its URL answering with the new code (a new container included), over 5 saves.

    python bench/web.py --profile DIR --no-serve   # also py-spy (pip install py-spy) on each party

With --profile, py-spy records the control plane, each container's runtime and uvicorn's workers
during the measured run (100 samples/s of the thread holding the GIL: Python's CPU time, collapsed stacks in
DIR/PARTY-PID.txt), and prints each party's busiest frames: where a request's CPU goes.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from core import cpu_seconds, descendants, free_port, start_cluster, stop_cluster, summarize_profiles  # noqa: E402
from revisions import alternate  # noqa: E402


def wrk(url: str, duration: int, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    result = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        result[f"p{pct}_ms"] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return result


def measured(url: str, duration: int, connections: int, parties: dict, profile: pathlib.Path | None = None) -> dict:
    """wrk's figures, and the CPU each party (name: a function giving its processes now) spent per
    request in the run: each hop's cost, which the load of other processes on the machine moves
    less than it moves throughput. With profile (a folder), py-spy records each party's Python
    processes meanwhile."""
    pids = {name: processes() for name, processes in parties.items()}
    before = {pid: cpu_seconds_or_none(pid) for ps in pids.values() for pid in ps}
    spies = start_profiles(profile, pids, duration) if profile else []
    result = wrk(url, duration, connections)
    for spy in spies:
        spy.wait(60)
    for name, ps in pids.items():
        spent = 0.0
        for pid in ps:
            after = cpu_seconds_or_none(pid)
            if after is not None and before[pid] is not None:
                spent += after - before[pid]
        result[f"{name}_cpu_us"] = spent / result["requests"] * 1e6
    return result


def cpu_seconds_or_none(pid: int) -> float | None:
    """A process's CPU seconds; None for one that is gone (a short-lived helper of the worker's:
    not counted)."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


def start_profiles(folder: pathlib.Path, pids: dict, duration: int) -> list[subprocess.Popen]:
    """py-spy on each Python process of each party, for the measured run's duration."""
    py_spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, ps in pids.items():
        for pid in ps:
            try:
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"python" not in cmdline or b"ember.worker" in cmdline or b"multiprocessing" in cmdline:
                continue  # not Python, or the worker (no part of a request), or uvicorn's supervisor's helper
            out = folder / f"{name.replace(' ', '-')}-{pid}.txt"
            spies.append(subprocess.Popen([py_spy, "record", "-r", "100", "-d", str(duration), "-f", "raw",
                                           "--nonblocking", "--gil", "-o", str(out), "--pid", str(pid)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def wait_ok(url: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                if json.loads(r.read()) == {"hello": "world"}:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


SERVED = """
import ember
app = ember.App("bench-serve")

async def answer(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"VERSION"})

@app.function()
@ember.asgi_app()
def page():
    return answer
"""


def get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()
    except OSError:
        return b""


def bench_serve(tmp: pathlib.Path, saves: int = 5) -> list[float]:
    """Seconds from saving a changed app file to its URL answering with the new version."""
    app_file = tmp / "served.py"
    app_file.write_text(SERVED.replace("VERSION", "v0"))
    log = tmp / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "ember.cli.main", "serve", str(app_file)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=tmp)
    try:
        while "watching" not in log.read_text():
            if proc.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.05)
        url = re.search(r"page => (\S+)", log.read_text()).group(1)
        times = []
        for i in range(1, saves + 1):
            while get(url) != f"v{i - 1}".encode():
                time.sleep(0.01)
            time.sleep(0.3)
            t0 = time.perf_counter()
            app_file.write_text(SERVED.replace("VERSION", f"v{i}"))
            while get(url) != f"v{i}".encode():
                time.sleep(0.005)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        proc.send_signal(2)
        proc.wait(30)


def bench_ember(args) -> dict:
    os.environ["BENCH_WEB_CONTAINERS"] = str(args.containers)
    import web_app
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-web-"))
    server, worker = start_cluster(tmp, args.backend)
    try:
        with web_app.app.run():
            url = web_app.endpoint.get_web_url()
            wait_ok(url)
            wrk(url, 3, args.connections)  # warm-up
            result = measured(url, args.duration, args.connections, {
                "control plane": lambda: [server.pid],
                "worker": lambda: [worker.pid], "containers": lambda: descendants(worker.pid)}, args.profile)
        if not args.no_serve:
            result["serve_redeploy_s"] = bench_serve(tmp)
        return result
    finally:
        stop_cluster(server, worker, timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_uvicorn(args) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "web_app:peer", "--port", str(port),
                             "--workers", str(args.containers), "--http", "httptools", "--no-access-log",
                             "--log-level", "warning"], cwd=HERE)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ok(url)
        wrk(url, 3, args.connections)
        return measured(url, args.duration, args.connections,
                        {"uvicorn processes": lambda: [proc.pid, *descendants(proc.pid)]}, args.profile)
    finally:
        proc.terminate()
        proc.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--containers", type=int, default=1, help="warm containers serving the endpoint "
                        "(and uvicorn's worker processes)")
    parser.add_argument("--backend", default="auto", choices=("auto", "container", "process"))
    parser.add_argument("--against", metavar="REV", help="also measure Ember at this commit (a temporary git "
                        "worktree of it), alternating with this checkout, each run beside its own uvicorn")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each, with --against (default 3)")
    parser.add_argument("--no-serve", action="store_true", help="skip the `ember serve` redeploys")
    parser.add_argument("--profile", type=pathlib.Path, metavar="DIR", help="py-spy each party during the measured "
                        "run (collapsed stacks in DIR), and print where their time went")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one run's figures, for --against
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/web.py needs wrk: apt-get install wrk")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {os.cpu_count()} cores, "
          f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.containers} container(s) / uvicorn worker(s)",
          flush=True)
    if args.against:
        return compare(args)
    results = {"uvicorn": bench_uvicorn(args), "ember": bench_ember(args)}
    if args.json:
        print(json.dumps(results))
    for name, r in results.items():
        print(line(name, r))
    print(ratios(results["ember"], results["uvicorn"]))
    if args.profile:
        summarize_profiles(args.profile)
    if not args.no_serve:
        redeploys = results["ember"]["serve_redeploy_s"]
        print(f"ember serve: save to new version answering: median {statistics.median(redeploys):.2f} s, "
              f"max {max(redeploys):.2f} s over {len(redeploys)} saves (goal: within a second)")


def line(name: str, r: dict) -> str:
    cpu = ", ".join(f"{k.removesuffix('_cpu_us')} {v:.0f}" for k, v in r.items() if k.endswith("_cpu_us"))
    return (f"{name:10s} {r['requests_per_s']:9.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p90 {r['p90_ms']:7.2f} ms  "
            f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']} of {r['requests']}; CPU us/request: {cpu}")


def ratios(ember: dict, uvicorn: dict) -> str:
    return (f"ember / uvicorn throughput: {ember['requests_per_s'] / uvicorn['requests_per_s']:.2f} (goal >= 0.80), "
            f"p99: {ember['p99_ms'] / uvicorn['p99_ms']:.2f} (goal <= 1.50)")


def compare(args):
    """Ember at REV and this checkout, alternating round by round, each beside its own uvicorn run
    (the machine's speed drifts: compare each with the uvicorn of its round)."""
    child = ["--duration", str(args.duration), "--connections", str(args.connections),
             "--containers", str(args.containers), "--backend", args.backend, "--no-serve"]
    runs = alternate(__file__, child, args.against, args.rounds)
    for label, each in runs.items():
        for i, (results, _) in enumerate(each, 1):
            print(f"{label} round {i}:")
            print("  " + line("uvicorn", results["uvicorn"]))
            print("  " + line("ember", results["ember"]))
            print("  " + ratios(results["ember"], results["uvicorn"]))
        print(f"{label}: median ember / uvicorn throughput "
              f"{statistics.median(r['ember']['requests_per_s'] / r['uvicorn']['requests_per_s'] for r, _ in each):.2f}"
              f", p99 {statistics.median(r['ember']['p99_ms'] / r['uvicorn']['p99_ms'] for r, _ in each):.2f}")


if __name__ == "__main__":
    main()
