"""The embedded local cluster (what `with app.run():` starts when no server is configured: a
control plane and a worker on a unix socket, ember/_client/local_cluster.py): a warm `.remote()`
round trip and a Dict put+get, this checkout against another revision, in one run.

    python bench/embedded.py --against REV --rounds 3   # alternating (bench/revisions.py)
    python bench/embedded.py                            # this checkout, frames then gRPC

Each round is a fresh process with a fresh EMBER_HOME (its worker shares the image cache of
EMBER_CACHE_DIR, default bench/.cache) and reports medians of 2,000 after 200 warm-up.
"""

import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from revisions import alternate  # noqa: E402

N, WARMUP = 2000, 200
FIGURES = ("remote_ms", "dict_ms", "queue_ms")


def timed(op) -> float:
    for _ in range(WARMUP):
        op()
    times = []
    for _ in range(N):
        t = time.perf_counter()
        op()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def bench() -> dict:
    """This process's figures, on an embedded cluster of its own."""
    for key in ("EMBER_SERVER_URL", "EMBER_TOKEN_ID", "EMBER_TOKEN_SECRET"):
        os.environ.pop(key, None)
    os.environ.setdefault("EMBER_CACHE_DIR", str(HERE / ".cache"))
    with tempfile.TemporaryDirectory(prefix="ember-bench-embedded-") as home:
        os.environ["EMBER_HOME"] = home
        import core_app
        import ember
        with core_app.app.run():
            d = ember.Dict.from_name("bench", create_if_missing=True)
            q = ember.Queue.from_name("bench", create_if_missing=True)
            value = {"user": 42, "name": "ada"}

            def dict_rt():
                d.put("key", value)
                d.get("key")

            def queue_rt():
                q.put(value)
                q.get()
            return {"remote_ms": timed(lambda: core_app.ident.remote(1)), "dict_ms": timed(dict_rt),
                    "queue_ms": timed(queue_rt)}


def main():
    if sys.argv[1:2] == ["--json"]:
        print(json.dumps(bench()))
        return
    stamp = f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores"
    if sys.argv[1:2] == ["--against"]:
        rev = sys.argv[2]
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
        runs = alternate(__file__, [], rev, rounds)
        print(f"# embedded local cluster, this checkout against {rev}, medians of {rounds} rounds, {stamp}")
        print(f"{'':14}{rev[:10]:>10}{'this':>10}")
        for key in FIGURES:
            old, new = (statistics.median(f[key] for f, _ in runs[label]) for label in (rev, "this"))
            print(f"{key:14}{old:10.3f}{new:10.3f}")
        return
    print(f"# embedded local cluster, this checkout, {stamp}")
    for transport in ("frames", "grpc"):
        out = subprocess.run([sys.executable, __file__, "--json"], env=dict(os.environ, EMBER_TRANSPORT=transport),
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"the benchmark on {transport} failed:\n{out.stderr[-3000:]}")
        figures = json.loads(out.stdout.splitlines()[-1])
        print(f"{transport:8}" + "".join(f"{key} {figures[key]:.3f}  " for key in FIGURES))


if __name__ == "__main__":
    main()
