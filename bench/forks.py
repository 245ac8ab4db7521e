"""Fork benchmark: a cold start forked from a warm parent, next to a spare and the floor, in one run.

    python bench/forks.py [--runs 10] [--at-once 100]

Measures `.remote()` to its result of a function whose module imports numpy (images_app), each
in a new app run after the last one's container stopped (so each is a cold start), on:
  - the process backend with warm parents (`ember worker --warm-parents on`, the default): the
    first two runs start its code's parent, the ones measured fork from it;
  - the process backend without them (`--warm-parents off`): a new interpreter each time;
  - the container backend (Linux, root) with warm parents: the parent runs in a sandbox of its
    own, and each fork joins namespaces the worker made for it ahead (worker/forkns.py);
  - the container backend without them: a container from a spare;
and the floor, a fresh `python -c "import numpy"` with compiled bytecode.

With --at-once N, on the same three: a `.map` of N inputs on an idle worker, each of which holds
its container for HOLD seconds (so it needs N new containers at once): the time until all have
answered, how many containers answered, and the worker's containers' memory at its peak (the sum
of the PSS, /proc/PID/smaps_rollup, of every process under the worker: containers, a warm parent,
a backend's helpers; PSS counts a page shared by k processes as 1/k in each).
"""

import argparse
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def cold_starts(tmp: pathlib.Path, backend: str, runs: int, warm_up: int, worker_args=()) -> tuple[list[float], int]:
    """Seconds from `.remote()` to the result of `runs` cold starts, after `warm_up` unmeasured
    ones; and how many of all the containers were forks."""
    from core import start_cluster, stop_cluster

    import images_app
    from ember._client.client import Client
    from ember.app import build_image

    server, worker = start_cluster(tmp, backend=backend, worker_args=worker_args)
    try:
        client = Client.from_env()
        client.run(build_image(client, images_app.numpy_image._resolve(client.upload_sync)))
        times = []
        for i in range(warm_up + runs):
            with images_app.app.run():
                t = time.perf_counter()
                images_app.numpy_sum.remote(10)
                if i >= warm_up:
                    times.append(time.perf_counter() - t)
            time.sleep(1)  # its container stops; the next run starts cold
    finally:
        stop_cluster(server, worker)
    return times, (tmp / "cluster.log").read_text().count("forked from a warm parent")


HOLD = 3.0  # seconds each input of --at-once holds its container


def pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass  # it ended meanwhile
    return total / 1024


def at_once(tmp: pathlib.Path, backend: str, n: int, worker_args=()) -> tuple[float, int, float, int]:
    """A map of n inputs that needs n new containers on an idle worker: seconds until all answered,
    containers that answered, the peak PSS (MB) of the processes under the worker, and their count then."""
    from core import descendants, start_cluster, stop_cluster

    import images_app
    from ember._client.client import Client
    from ember.app import build_image

    server, worker = start_cluster(tmp, backend=backend, worker_args=worker_args)
    try:
        client = Client.from_env()
        client.run(build_image(client, images_app.numpy_image._resolve(client.upload_sync)))
        for _ in range(2):  # two cold starts of its code: a warm parent is started (where there are any)
            with images_app.app.run():
                images_app.numpy_hold.remote(0)
            time.sleep(1)
        time.sleep(1)
        peak = [0.0, 0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                pids = descendants(worker.pid)
                if (mb := pss_mb(pids)) > peak[0]:
                    peak[:] = [mb, len(pids)]
                time.sleep(0.2)

        with images_app.app.run():
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t = time.perf_counter()
            containers = set(images_app.numpy_hold.map([HOLD] * n))
            elapsed = time.perf_counter() - t
            done.set()
            sampler.join()
    finally:
        stop_cluster(server, worker)
    return elapsed, len(containers), peak[0], peak[1]


CONFIGS = (("fork from a warm parent (process backend)", "process", 2, ("--warm-parents", "on")),
           ("new interpreter (process backend, --warm-parents off)", "process", 1, ("--warm-parents", "off")),
           ("fork from a warm parent (container backend)", "container", 2, ("--warm-parents", "on")),
           ("spare container (container backend, --warm-parents off)", "container", 1, ("--warm-parents", "off")))


def on_each_cluster(tmp: pathlib.Path, measure) -> dict:
    """measure(folder, backend, warm_up, worker_args) on each of CONFIGS (where it can run here), by name."""
    from ember.worker.container import ContainerBackend

    results = {}
    for name, backend, warm_up, worker_args in CONFIGS:
        if backend == "container" and (why := ContainerBackend.available()):
            print(f"{name}: skipped ({why})")
            continue
        d = tmp / f"{backend}-{worker_args[-1]}"
        d.mkdir()
        results[name] = measure(d, backend, warm_up, worker_args)
    return results


def print_machine():
    print(f"date: {time.strftime('%Y-%m-%d')}, machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.platform()}")


def main_at_once(n: int):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-forks-"))
    try:
        results = on_each_cluster(tmp, lambda d, backend, _, worker_args: at_once(d, backend, n, worker_args))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_machine()
    print(f"{n} cold starts at once: a .map of {n} inputs, each holding its container {HOLD:g} s, on an idle worker:")
    for name, (elapsed, containers, mb, procs) in results.items():
        print(f"  {name}: all answered in {elapsed:.2f} s ({elapsed - HOLD:.2f} s over the hold), "
              f"{containers} containers; peak PSS under the worker {mb:.0f} MB in {procs} processes "
              f"({mb / max(containers, 1):.1f} MB per container)")


def main():
    from images import median_ms, numpy_floor, uv_baseline

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--at-once", type=int, metavar="N",
                        help="instead: N cold starts at once (a .map needing N new containers)")
    args = parser.parse_args()
    if args.at_once:
        return main_at_once(args.at_once)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-forks-"))
    try:
        results = on_each_cluster(tmp, lambda d, backend, warm_up, worker_args:
                                  cold_starts(d, backend, args.runs, warm_up, worker_args))
        uv_baseline(tmp, 1)  # a venv with numpy, for the floor
        floor = numpy_floor(tmp / "venv1", args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_machine()
    print(f"cold start .remote() of a numpy function, runs 1 s apart, median of {args.runs}:")
    for name, (times, forks) in results.items():
        print(f"  {name}: {median_ms(times):.1f} ms (min {min(times) * 1000:.1f}; {forks} forks; "
              f"{' '.join(f'{t * 1000:.0f}' for t in times)})")
    print(f"  floor, `python -c 'import numpy'`: {median_ms(floor):.1f} ms (min {min(floor) * 1000:.1f})")
    for backend in ("process", "container"):
        if fork := results.get(f"fork from a warm parent ({backend} backend)"):
            print(f"goal <= 15 ms through a fork ({backend} backend): "
                  f"{'met' if statistics.median(fork[0]) <= 0.015 else 'not met'}")


if __name__ == "__main__":
    main()
