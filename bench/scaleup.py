"""Scale up at once (issue 18): how soon a backlog gets the containers it needs, this checkout
against another commit, alternating in one run (bench/revisions.py).

    .venv/bin/python bench/scaleup.py --against main --rounds 3

In a fresh cluster each (bench/core.py's start_cluster, the worker's default backend):
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


def until_idle(fn):
    """Wait until its containers scaled down, so that the next case starts on an empty worker."""
    deadline = time.monotonic() + 60
    while fn.get_current_stats().num_total_runners and time.monotonic() < deadline:
        time.sleep(0.2)


def measure(backend: str) -> dict:
    import scaleup_app
    from scaleup_app import app

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-scaleup-"))
    server, worker = start_cluster(tmp, backend)
    result = {}
    try:
        with app.run():
            t = time.perf_counter()
            scaleup_app.square.remote(7)  # the quick start: its image's first start on this worker, then
            sum(scaleup_app.square.map(range(10)))
            result["hello_s"] = time.perf_counter() - t
            until_idle(scaleup_app.square)
            t = time.perf_counter()
            sum(scaleup_app.square_cold.map(range(10)))
            result["cold_map_of_10_s"] = time.perf_counter() - t
            until_idle(scaleup_app.square_cold)
            result["capped"] = backlog(scaleup_app.capped)
            until_idle(scaleup_app.capped)
            result["uncapped"] = backlog(scaleup_app.uncapped)
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
