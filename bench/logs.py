"""Logs that last (issue 16): does keeping every line slow the work beside it?

    python bench/logs.py                 # process backend; EMBER_CACHE_DIR is honoured
    python bench/logs.py --n 5000 --rate 10000
    python bench/logs.py --against REV   # also Ember at commit REV, alternating, in the same run
    python bench/logs.py --follow        # with `ember app logs -f` following the app (the client's end)

A deployed app: `work` (1 ms an input, two containers) and `chatter` (its own container, printing
RATE lines a second). Prints the throughput of a .map of N inputs of `work` alone, then while
`chatter` prints, and how many of its lines the control plane's store kept (ember.db: every line
goes through the group commit).
"""

import argparse
import json
import os
import pathlib
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from core import start_cluster, stop_cluster  # noqa: E402
from revisions import alternate  # noqa: E402


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


def followed(tmp: pathlib.Path) -> int:
    """Lines of the chatterbox the follower printed."""
    return (tmp / "followed").read_bytes().count(b"of the chatterbox")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="inputs of each map (default 5,000)")
    ap.add_argument("--rate", type=int, default=10_000, help="lines a second the chatterbox prints (default 10,000)")
    ap.add_argument("--backend", default="process")
    ap.add_argument("--against", metavar="REV", help="also measure Ember at this commit (a temporary git worktree "
                                                     "of it), alternating with this checkout, --rounds times")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--follow", action="store_true", help="with a follower printing the app's log, as "
                                                          "`ember app logs -f` (and `ember run`) print it")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a round's figures, for --against
    args = ap.parse_args()
    if args.against:
        compare(args)
        return
    figures = measure(args)
    print(json.dumps(figures) if args.json else report(figures, args))


def report(f: dict, args) -> str:
    kept = f"{f['kept']:,}" if f["kept"] is not None else "none (this control plane keeps no logs)"
    return (f".map of {args.n:,} inputs (1 ms each, 2 containers): {f['quiet']:,.0f}/s alone, {f['noisy']:,.0f}/s "
            f"while another container prints {args.rate:,} lines/s ({f['noisy'] / f['quiet']:.2f}x)\n"
            f"  server CPU during the map: {f['cpu_quiet']:.2f} s alone, {f['cpu_noisy']:.2f} s with the printing\n"
            f"lines printed {f['printed']:,} in {f['seconds']:.1f} s, kept in the store: {kept}\n"
            f"printing alone: {f['server_us_per_line']:.1f} us of server CPU a line"
            + (f"; a follower (`ember app logs -f`) printed {f['followed']:,} of {f['total']:,} lines, "
               f"{f['follower_us_per_line']:.1f} us of its CPU a line" if "followed" in f else ""))


def compare(args):
    """This checkout and commit REV, alternating, each round in fresh processes (bench/revisions.py)."""
    child = ["--n", str(args.n), "--rate", str(args.rate), "--backend", args.backend] + (["--follow"] if args.follow
                                                                                       else [])
    runs = {label: [figures for figures, _ in results]
            for label, results in alternate(__file__, child, args.against, args.rounds).items()}
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"{args.rounds} rounds, {args.against} against this checkout")
    for name, results in runs.items():
        for f in results:
            print(f"--- {name}\n{report(f, args)}")
    print(json.dumps(runs))


def measure(args) -> dict:
    import ember
    from logs_app import app

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-logs-"))
    server, worker = start_cluster(tmp, args.backend)
    follower = None
    try:
        app.deploy("bench-logs")
        work = ember.Function.from_name("bench-logs", "work")
        chatter = ember.Function.from_name("bench-logs", "chatter")
        if not args.json:
            print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
        # A follower, as `ember app logs -f` or `ember run` prints them: the client's end of the path.
        if args.follow:
            follower = subprocess.Popen([sys.executable, "-m", "ember.cli.main", "app", "logs", "bench-logs", "-f"],
                                        stdout=open(tmp / "followed", "wb"), stderr=subprocess.DEVNULL)
        list(work.map(range(200)))  # its containers warm
        chatter.remote(0.1, args.rate)  # its container warm
        time.sleep(1)  # its lines in (they travel apart from its result)
        # The printing alone: what a line costs the control plane (receiving, storing, sending it on).
        cpu = cpu_seconds(server.pid)
        alone = chatter.remote(2.0, args.rate)
        time.sleep(0.5)
        server_us_per_line = (cpu_seconds(server.pid) - cpu) / alone * 1e6
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
        figures = {"quiet": quiet, "noisy": noisy, "cpu_quiet": cpu_quiet, "cpu_noisy": cpu_noisy,
                   "printed": printed, "seconds": seconds, "kept": kept if before is not None else None,
                   "server_us_per_line": server_us_per_line}
        if follower is not None:
            total = kept_lines(db_path) or 0  # all the chatterbox printed
            while followed(tmp) < total and time.monotonic() < deadline:
                time.sleep(0.2)
            figures.update(followed=followed(tmp), total=total,
                           follower_us_per_line=cpu_seconds(follower.pid) / max(1, total) * 1e6)
        return figures
    finally:
        if follower is not None:
            follower.terminate()
            follower.wait(10)
        stop_cluster(server, worker, timeout=10)


if __name__ == "__main__":
    main()
