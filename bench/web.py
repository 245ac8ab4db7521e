"""Web endpoint load: Ember's gateway against the same FastAPI app on plain uvicorn, in one run.

    python bench/web.py [--duration 30] [--connections 200] [--containers 1]

Needs wrk (apt-get install wrk) and FastAPI on this side (pip install -e '.[dev]').
Both serve the same handler (bench/web_app.py) on loopback: Ember through the control plane's
HTTP gateway to a warm container (@ember.concurrent), the peer by one uvicorn process with
httptools. wrk runs with 2 threads and 200 connections; throughput, latency percentiles and
errors of each are printed, and their ratio.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from core import free_port, start_cluster  # noqa: E402


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
            return wrk(url, args.duration, args.connections)
    finally:
        for p in (worker, server):
            p.terminate()
            p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_uvicorn(args) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "web_app:peer", "--port", str(port),
                             "--http", "httptools", "--no-access-log", "--log-level", "warning"], cwd=HERE)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ok(url)
        wrk(url, 3, args.connections)
        return wrk(url, args.duration, args.connections)
    finally:
        proc.terminate()
        proc.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--containers", type=int, default=1, help="warm containers serving the endpoint")
    parser.add_argument("--backend", default="auto", choices=("auto", "container", "process"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/web.py needs wrk: apt-get install wrk")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {os.cpu_count()} cores, "
          f"wrk -t2 -c{args.connections} -d{args.duration}s", flush=True)
    results = {"uvicorn": bench_uvicorn(args), "ember": bench_ember(args)}
    for name, r in results.items():
        print(f"{name:8s} {r['requests_per_s']:9.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p90 {r['p90_ms']:7.2f} ms  "
              f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']} of {r['requests']}")
    ratio = results["ember"]["requests_per_s"] / results["uvicorn"]["requests_per_s"]
    print(f"ember / uvicorn throughput: {ratio:.2f} (goal >= 0.50)")


if __name__ == "__main__":
    main()
