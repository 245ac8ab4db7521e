"""Fork benchmark: a cold start forked from a warm parent, next to a spare and the floor, in one run.

    python bench/forks.py [--runs 10]

Measures `.remote()` to its result of a function whose module imports numpy (images_app), each
in a new app run after the last one's container stopped (so each is a cold start), on:
  - the process backend with warm parents (`ember worker --warm-parents on`, the default): the
    first two runs start its code's parent, the ones measured fork from it;
  - the process backend without them (`--warm-parents off`): a new interpreter each time;
  - the container backend (Linux, root): a container from a spare, as every cold start there is
    (it forks no parents yet);
and the floor, a fresh `python -c "import numpy"` with compiled bytecode.
"""

import argparse
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def cold_starts(tmp: pathlib.Path, backend: str, runs: int, warm_up: int, worker_args=()) -> tuple[list[float], int]:
    """Seconds from `.remote()` to the result of `runs` cold starts, after `warm_up` unmeasured
    ones; and how many of all the containers were forks."""
    from core import start_cluster

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
        for p in (worker, server):
            p.terminate()
            p.wait()
    return times, (tmp / "cluster.log").read_text().count("forked from a warm parent")


def main():
    from images import median_ms, numpy_floor, uv_baseline

    from ember.worker.container import ContainerBackend

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-forks-"))
    results = {}
    try:
        for name, backend, warm_up, worker_args in (
                ("fork from a warm parent (process backend)", "process", 2, ("--warm-parents", "on")),
                ("new interpreter (process backend, --warm-parents off)", "process", 1, ("--warm-parents", "off")),
                ("spare container (container backend)", "container", 1, ())):
            if backend == "container" and (why := ContainerBackend.available()):
                print(f"{name}: skipped ({why})")
                continue
            d = tmp / name.split()[0]
            d.mkdir()
            results[name] = cold_starts(d, backend, args.runs, warm_up, worker_args)
        uv_baseline(tmp, 1)  # a venv with numpy, for the floor
        floor = numpy_floor(tmp / "venv1", args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"date: {time.strftime('%Y-%m-%d')}, machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.platform()}")
    print(f"cold start .remote() of a numpy function, runs 1 s apart, median of {args.runs}:")
    for name, (times, forks) in results.items():
        print(f"  {name}: {median_ms(times):.1f} ms (min {min(times) * 1000:.1f}; {forks} forks; "
              f"{' '.join(f'{t * 1000:.0f}' for t in times)})")
    print(f"  floor, `python -c 'import numpy'`: {median_ms(floor):.1f} ms (min {min(floor) * 1000:.1f})")
    if fork := results.get("fork from a warm parent (process backend)"):
        print(f"goal <= 15 ms through a fork: {'met' if statistics.median(fork[0]) <= 0.015 else 'not met'}")


if __name__ == "__main__":
    main()
