"""Ray's side of the core benchmark: prints one JSON line. Run with a Python that has ray."""

import json
import statistics
import sys
import time

import ray


@ray.remote
def ident(x):
    return x


def main():
    n_map = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    for _ in range(300):
        ray.get(ident.remote(1))
    times = []
    for _ in range(200):
        t = time.perf_counter()
        ray.get(ident.remote(1))
        times.append(time.perf_counter() - t)
    ray.get([ident.remote(i) for i in range(1000)])  # warm the workers for throughput
    t = time.perf_counter()
    out = ray.get([ident.remote(i) for i in range(n_map)])
    dt = time.perf_counter() - t
    assert out == list(range(n_map))
    print(json.dumps({"remote_median_ms": statistics.median(times) * 1e3, "map_per_s": n_map / dt}))
    ray.shutdown()


if __name__ == "__main__":
    main()
