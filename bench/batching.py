"""@ember.batched and spawn_map (issue 14), side by side in one run on one machine.

    python bench/batching.py                 # process backend; EMBER_CACHE_DIR is honoured
    python bench/batching.py --n 10000 --spawn 100000

Measures, with warm containers (one container per function: the same room for both):
  - N inputs through .map of a function that costs 2 ms a call, unbatched and @ember.batched
    (max_batch_size=64, wait_ms=10): inputs per second of each, and their ratio;
  - the same for a trivial function (no cost per call: what the runtime itself costs per input);
  - spawn_map of S trivial inputs: seconds until the call returns, every input accepted.
"""

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from core import start_cluster, stop_cluster  # noqa: E402


def throughput(f, n: int) -> float:
    list(f.map(range(50)))  # its container started and warm
    t = time.perf_counter()
    out = list(f.map(range(n)))
    elapsed = time.perf_counter() - t
    assert out[-1] in (2 * (n - 1), n - 1), out[-1]
    return n / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="inputs through each function (default 10,000)")
    ap.add_argument("--spawn", type=int, default=100_000, help="inputs of the spawn_map (default 100,000)")
    ap.add_argument("--backend", default="process")
    args = ap.parse_args()
    import batching_app
    from batching_app import app

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-batching-"))
    server, worker = start_cluster(tmp, args.backend)
    try:
        with app.run():
            print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
            for plain, batched, what in ((batching_app.double, batching_app.double_batched, "2 ms a call"),
                                         (batching_app.trivial, batching_app.trivial_batched, "trivial")):
                a = throughput(plain, args.n)
                b = throughput(batched, args.n)
                print(f"{args.n} inputs, {what}: unbatched {a:,.0f}/s, batched (64) {b:,.0f}/s: {b / a:.1f}x")
            batching_app.noop.remote(0)
            t = time.perf_counter()
            call = batching_app.noop.spawn_map(range(args.spawn))
            accepted = time.perf_counter() - t
            print(f"spawn_map of {args.spawn:,} inputs: all accepted in {accepted:.2f} s "
                  f"({args.spawn / accepted:,.0f} inputs/s); num_inputs={call.num_inputs()}")
            t = time.perf_counter()
            call.get(index=args.spawn - 1, timeout=600)
            print(f"  ... and its last input done {time.perf_counter() - t:.1f} s later")
            call.cancel()
    finally:
        stop_cluster(server, worker, timeout=10)


if __name__ == "__main__":
    main()
