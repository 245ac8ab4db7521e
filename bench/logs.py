"""Logs that last (issue 16): does keeping every line slow the work beside it?

    python bench/logs.py                 # process backend; EMBER_CACHE_DIR is honoured
    python bench/logs.py --n 5000 --rate 10000

A deployed app: `work` (1 ms an input, two containers) and `chatter` (its own container, printing
RATE lines a second). Prints the throughput of a .map of N inputs of `work` alone, then while
`chatter` prints, and how many of its lines the control plane's store kept (ember.db: every line
goes through the group commit).
"""

import argparse
import os
import pathlib
import platform
import sqlite3
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from core import start_cluster  # noqa: E402


def throughput(f, n: int) -> float:
    t = time.perf_counter()
    out = list(f.map(range(n)))
    elapsed = time.perf_counter() - t
    assert out[-1] == n - 1, out[-1]
    return n / elapsed


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kept_lines(db_path: pathlib.Path) -> int | None:
    """Lines of chatter in the store; None for a control plane that keeps none (--against)."""
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        return db.execute("SELECT count(*) FROM logs WHERE function_name='chatter' "
                          "AND data LIKE '%' || char(10)").fetchone()[0]
    except sqlite3.OperationalError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="inputs of each map (default 5,000)")
    ap.add_argument("--rate", type=int, default=10_000, help="lines a second the chatterbox prints (default 10,000)")
    ap.add_argument("--backend", default="process")
    args = ap.parse_args()
    import ember
    from logs_app import app

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-logs-"))
    server, worker = start_cluster(tmp, args.backend)
    try:
        app.deploy("bench-logs")
        work = ember.Function.from_name("bench-logs", "work")
        chatter = ember.Function.from_name("bench-logs", "chatter")
        print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
        list(work.map(range(200)))  # its containers warm
        chatter.remote(0.1, args.rate)  # its container warm
        time.sleep(1)  # its lines in (they travel apart from its result)
        cpu = cpu_seconds(server.pid)
        quiet = throughput(work, args.n)
        cpu_quiet = cpu_seconds(server.pid) - cpu
        seconds = max(3.0, 1.5 * args.n / quiet)
        db_path = tmp / "server" / "ember.db"
        before = kept_lines(db_path)
        call = chatter.spawn(seconds, args.rate)
        time.sleep(0.5)  # the chatterbox in full swing
        cpu = cpu_seconds(server.pid)
        noisy = throughput(work, args.n)
        cpu_noisy = cpu_seconds(server.pid) - cpu
        printed = call.get(timeout=seconds + 60)
        deadline = time.monotonic() + 30
        while before is not None and (kept := kept_lines(db_path) - before) < printed and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f".map of {args.n:,} inputs (1 ms each, 2 containers): {quiet:,.0f}/s alone, {noisy:,.0f}/s while "
              f"another container prints {args.rate:,} lines/s ({noisy / quiet:.2f}x)")
        print(f"  server CPU during the map: {cpu_quiet:.2f} s alone, {cpu_noisy:.2f} s with the printing")
        print(f"lines printed {printed:,} in {seconds:.1f} s, kept in the store: "
              + (f"{kept:,}" if before is not None else "none (this control plane keeps no logs)"))
    finally:
        for p in (worker, server):
            p.terminate()
        for p in (worker, server):
            p.wait(10)


if __name__ == "__main__":
    main()
