"""Scale up at once (issue 18): how soon a backlog gets the containers it needs, this checkout
against another commit, alternating in one run (bench/revisions.py).

    .venv/bin/python bench/scaleup.py --against main --rounds 3

Each case in a fresh cluster (bench/core.py's start_cluster; --backend, the worker's):
  - 20 inputs of a 1 s function with max_containers=2, and 20 with no max: the time from the
    .map to the last container's first input, the inputs each container ran, the total time;
  - examples/hello.py's entrypoint (a .remote, then a .map of 10), and the same .map of 10 with
    no call before it: the time each takes (what starting containers for short inputs costs).
"""

import argparse
import collections
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from core import start_cluster  # noqa: E402
from revisions import alternate  # noqa: E402

N = 20          # inputs of a backlog
SECONDS = 1.0   # each input's time


def backlog(fn) -> dict:
    """N inputs of SECONDS each at once: when the last container began its first, who ran what."""
    t0 = time.time()
    ran = list(fn.map([SECONDS] * N))
    total = time.time() - t0
    first = {}
    for cid, began in ran:
        first[cid] = min(began, first.get(cid, began))
    split = sorted(collections.Counter(cid for cid, _ in ran).values(), reverse=True)
    return {"last_first_input_s": max(first.values()) - t0, "split": split, "total_s": total}


def cold_map(fn) -> float:
    """A .map of 10 short inputs with no call before it: nothing tells the autoscaler they are short."""
    t = time.perf_counter()
    sum(fn.map(range(10)))
    return time.perf_counter() - t


def hello(fn) -> float:
    """examples/hello.py's entrypoint."""
    t = time.perf_counter()
    fn.remote(7)
    sum(fn.map(range(10)))
    return time.perf_counter() - t


CASES = {"hello_s": ("square", hello), "cold_map_of_10_s": ("square", cold_map),
         "capped": ("capped", backlog), "uncapped": ("uncapped", backlog)}


def measure(backend: str) -> dict:
    """Each case in a cluster of its own: the first start of the app's image on its worker, as
    for a first `ember run` (layers are kept between runs, bench/core.py's cache)."""
    import scaleup_app
    from scaleup_app import app

    result = {}
    for key, (name, case) in CASES.items():
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-scaleup-"))
        server, worker = start_cluster(tmp, backend)
        try:
            with app.run():
                result[key] = case(getattr(scaleup_app, name))
        finally:
            worker.terminate()
            server.terminate()
            worker.wait()
            server.wait()
    return result


ROWS = [("quick start: .remote + .map of 10 (s)", lambda r: r["hello_s"]),
        ("a first .map of 10 short inputs (s)", lambda r: r["cold_map_of_10_s"])]
for case in ("capped", "uncapped"):
    what = f"{N} x {SECONDS:g}s, " + ("max_containers=2" if case == "capped" else "no max")
    ROWS += [(f"{what}: last container's first input (s)", lambda r, c=case: r[c]["last_first_input_s"]),
             (f"{what}: containers", lambda r, c=case: len(r[c]["split"])),
             (f"{what}: total (s)", lambda r, c=case: r[c]["total_s"])]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--against", metavar="REV", default="main", help="the commit to measure beside this checkout")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backend", default="auto", help="the worker's backend: auto, container or process")
    p.add_argument("--json", action="store_true", help="one run of this checkout alone, its figures as JSON")
    args = p.parse_args()
    if args.json:
        print(json.dumps(measure(args.backend)))
        return
    runs = alternate(__file__, ["--backend", args.backend], args.against, args.rounds)
    print(f"# scale-up benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}: {args.against} against this checkout, {args.rounds} rounds, "
          f"backend {args.backend}; medians, then each round")
    for label, value in ROWS:
        for name, results in runs.items():
            figures = [value(r) for r, _ in results]
            print(f"{label:58}{name:>6}  {statistics.median(figures):7.2f}   "
                  + " ".join(f"{f:.2f}" for f in figures))
    for case in ("capped", "uncapped"):
        for name, results in runs.items():
            print(f"{case} split per container, {name}: " + "; ".join(str(r[case]["split"]) for r, _ in results))
    print(json.dumps({name: [r for r, _ in results] for name, results in runs.items()}))


if __name__ == "__main__":
    main()
