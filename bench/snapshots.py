"""Memory snapshot benchmark: a cold start restored from a snapshot against the same without, in one run.

    python bench/snapshots.py [--runs 5] [--backend process|container]

Starts a control plane and a worker of the backend (process by default), deploys bench/snapshots_app.py (two
classes whose @ember.enter(snap=True) spends about 3 s filling 300 MB and building a table; one
with enable_memory_snapshot=True) and measures, alternately, the cold start of each: `.remote()`
of a method on a new container (the last one ended) to its result. Also the first cold start
with a snapshot, which takes it. CRIU is installed into the cache on first need.
"""

import argparse
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def cold_start(cls, log: pathlib.Path) -> float:
    """Seconds of a method's .remote() on a new container; that container is ended afterwards."""
    model = cls()
    t = time.perf_counter()
    model.predict.remote(7)
    took = time.perf_counter() - t
    ended = log.read_text().count(" exited with code 0")
    model.leave.remote()
    deadline = time.monotonic() + 30
    while log.read_text().count(" exited with code 0") == ended:  # the worker saw it end
        if time.monotonic() > deadline:
            raise SystemExit(f"the container did not end; see {log}")
        time.sleep(0.05)
    return took


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", choices=("process", "container"), default="process")
    args = parser.parse_args()
    from core import percentiles, start_cluster, stop_cluster

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-snapshots-"))
    server, worker = start_cluster(tmp, backend=args.backend)
    try:
        import ember
        out = subprocess.run([sys.executable, "-m", "ember.cli.main", "deploy", str(HERE / "snapshots_app.py")],
                             capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(HERE)))
        if out.returncode:
            raise SystemExit(out.stderr)
        snapped = ember.Cls.from_name("bench-snapshots", "Snapped")
        plain = ember.Cls.from_name("bench-snapshots", "Plain")
        log = tmp / "cluster.log"
        first = cold_start(snapped, log)
        with_snapshot, without = [], []
        for _ in range(args.runs):
            with_snapshot.append(cold_start(snapped, log))
            without.append(cold_start(plain, log))
        size = sum(f.stat().st_size for f in (tmp / "worker" / "memory-snapshots").rglob("*.img")) / 1e6
    finally:
        stop_cluster(server, worker)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"date: {time.strftime('%Y-%m-%d')}, machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.platform()}")
    print(f"backend: {args.backend}")
    print(f"cold start from a memory snapshot ({size:.0f} MB), {args.runs} runs: {percentiles(with_snapshot)}")
    print(f"cold start without (the ~3 s @enter(snap=True) runs), {args.runs} runs: {percentiles(without)}")
    print(f"first cold start with enable_memory_snapshot (the snapshot taken, then restored): {first * 1000:.0f} ms")
    print(f"speed-up: {statistics.median(without) / statistics.median(with_snapshot):.1f}x")


if __name__ == "__main__":
    main()
