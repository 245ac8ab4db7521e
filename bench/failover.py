"""Control-plane failover: the time from SIGKILL of the leader to outputs flowing again.

    python bench/failover.py                  # 3 rounds, SQLite, --leader-lease 3, a map of 10,000
    python bench/failover.py --store postgres # the same on PostgreSQL (started here, as the tests do)
    python bench/failover.py --lease 2 --rounds 5 --inputs 20000 --spawns 300 --servers 3

Each round: `--servers` (2) `ember server --leader-lease L` on one database (one SQLite file in
one data dir; or a fresh database on one PostgreSQL server, which this script starts with
Debian's `postgresql` programs, durable: fsync on), one worker (process backend) and this client
given every address; `--spawns` spawned calls (half before the .map, half after the kill) and a .map
of trivial inputs; SIGKILL of the leader once a quarter of the map's outputs are in. Prints, per
round, the time from the kill to a standby leading (its log) and to the next output reaching the
client, and that every output came and every spawned call's result was fetched.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "tests"))  # services.py: PostgreSQL as the tests start it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def one_round(tmp: pathlib.Path, lease: float, n: int, spawns: int, servers: int,
              database_url: str | None) -> tuple[float, float, int]:
    """(kill to a standby leading, kill to the next output) in seconds, and the map's outputs in by the kill."""
    cmd = [sys.executable, "-m", "ember.cli.main"]
    ports = [free_port() for _ in range(servers)]
    urls = [f"127.0.0.1:{p}" for p in ports]
    logs = [tmp / f"server{i}.log" for i in range(servers)]
    procs = []
    try:
        for port, log in zip(ports, logs):
            procs.append(subprocess.Popen(
                [*cmd, "server", "--port", str(port), "--data-dir", str(tmp / "server"), "--http",
                 f"127.0.0.1:{free_port()}", "--leader-lease", str(lease),
                 *(["--database-url", database_url] if database_url else [])],
                stdout=log.open("ab"), stderr=subprocess.STDOUT))
            # One at a time: the first leads (and makes the database and tokens), the others stand by.
            wait_for(lambda log=log: "ember server listening" in logs[0].read_text()
                     and (log == logs[0] or "standing by" in log.read_text()), what="the control planes")
        procs.append(subprocess.Popen(
            [*cmd, "worker", "--server", ",".join(urls), "--data-dir", str(tmp / "worker"), "--backend", "process",
             "--token-file", str(tmp / "server" / "worker-token.json")],
            stdout=(tmp / "worker.log").open("ab"), stderr=subprocess.STDOUT))
        token = json.loads((tmp / "server" / "admin-token.json").read_text())
        os.environ.update(EMBER_SERVER_URL=",".join(urls), EMBER_TOKEN_ID=token["token_id"],
                          EMBER_TOKEN_SECRET=token["token_secret"])
        import core_app

        times = []
        with core_app.app.run():
            assert list(core_app.ident.map(range(10))) == list(range(10))  # warm
            mapping = threading.Thread(target=lambda: times.extend(
                time.monotonic() for _ in core_app.ident.map(range(n))))
            # Half the spawned calls first (a spawn takes a round trip: beside the map, few would be
            # made before the kill), the other half after the kill (while no one leads, at first).
            spawned = [core_app.ident.spawn(i) for i in range(spawns // 2)]
            mapping.start()
            wait_for(lambda: len(times) >= n // 4, what="a quarter of the outputs")
            procs[0].send_signal(signal.SIGKILL)
            killed, killed_wall = time.monotonic(), time.time()
            at_kill = len(times)
            procs[0].wait()
            if at_kill == n:
                raise RuntimeError("the map ended before the kill: pass more --inputs")
            spawned += [core_app.ident.spawn(i) for i in range(spawns // 2, spawns)]
            mapping.join(timeout=300)
            if len(times) != n:
                raise RuntimeError(f"only {len(times)} of {n} outputs came")
            results = [call.get(timeout=120) for call in spawned]
            if results != list(range(spawns)):
                raise RuntimeError(f"spawned calls' results are wrong: {results[:10]}...")
        after = [t for t in times if t > killed]
        gaps = [b - a for a, b in zip([killed, *after], after)]
        flowing = sum(gaps[:gaps.index(max(gaps)) + 1])
        led = min(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                  for log in logs[1:] for m in [re.search(r"^(\S+ \S+) server INFO leading", log.read_text(), re.M)]
                  if m)
        return led - killed_wall, flowing, at_kill
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lease", type=float, default=3.0, help="--leader-lease of the servers (seconds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs of the .map")
    parser.add_argument("--spawns", type=int, default=300, help="spawned calls, half of them after the kill")
    parser.add_argument("--servers", type=int, default=2, help="control planes on the one database (at least 2)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="sqlite: one data dir; postgres: a PostgreSQL server started here (Debian's postgresql)")
    args = parser.parse_args()
    if args.servers < 2:
        parser.error("--servers takes 2 or more: one leads, the others stand by")
    pg = None
    if args.store == "postgres":
        import services

        bin_dir = services.postgres_bin()
        if bin_dir is None:
            sys.exit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        pg = services.Postgres(bin_dir, durable=True)
    print(f"{datetime.now():%Y-%m-%d}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{args.store}, {args.servers} control planes, lease {args.lease:g}s, map of {args.inputs}, "
          f"{args.spawns} spawns")
    results = []
    try:
        for i in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="ember-failover-") as tmp:
                from ember._client.client import Client
                Client.close_all()
                try:
                    leading, flowing, at_kill = one_round(
                        pathlib.Path(tmp), args.lease, args.inputs, args.spawns, args.servers,
                        pg.create_database() if pg else None)
                except Exception:
                    kept = shutil.copytree(tmp, f"{tmp}-failed", ignore=shutil.ignore_patterns("*.db*", "blobs"))
                    print(f"round {i + 1} failed: its logs are in {kept}", flush=True)
                    raise
            results.append(flowing)
            print(f"round {i + 1}: killed with {at_kill} outputs in; a standby led "
                  f"{leading:.2f}s after the SIGKILL; outputs flowed again after "
                  f"{flowing:.2f}s; all {args.inputs} outputs came, all {args.spawns} spawned results fetched",
                  flush=True)
    finally:
        if pg:
            pg.stop()
    print(f"kill to outputs flowing again: median {statistics.median(results):.2f}s "
          f"({', '.join(f'{r:.2f}' for r in results)})")


if __name__ == "__main__":
    main()
