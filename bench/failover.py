"""Control-plane failover: the time from SIGKILL of the leader to outputs flowing again.

    python bench/failover.py                  # 3 rounds, --leader-lease 3, a map of 10,000
    python bench/failover.py --lease 2 --rounds 5 --inputs 20000

Each round: two `ember server --leader-lease L` on one data dir (one SQLite file), one worker
(process backend) and this client given both addresses; a .map of trivial inputs; SIGKILL of
the leader once a quarter of the outputs are in. Prints, per round, the time from the kill to
the standby leading (its log) and to the next output reaching the client, and that every
output came.
"""

import argparse
import json
import os
import pathlib
import platform
import re
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


def one_round(tmp: pathlib.Path, lease: float, n: int) -> tuple[float, float]:
    """(kill to the standby leading, kill to the next output), in seconds."""
    cmd = [sys.executable, "-m", "ember.cli.main"]
    ports = [free_port(), free_port()]
    urls = [f"127.0.0.1:{p}" for p in ports]
    logs = [tmp / f"server{i}.log" for i in range(2)]
    procs = []
    try:
        for port, log in zip(ports, logs):
            procs.append(subprocess.Popen(
                [*cmd, "server", "--port", str(port), "--data-dir", str(tmp / "server"), "--http",
                 f"127.0.0.1:{free_port()}", "--leader-lease", str(lease)],
                stdout=log.open("ab"), stderr=subprocess.STDOUT))
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
            mapping.start()
            wait_for(lambda: len(times) >= n // 4, what="a quarter of the outputs")
            procs[0].send_signal(signal.SIGKILL)
            killed, killed_wall = time.monotonic(), time.time()
            procs[0].wait()
            mapping.join(timeout=300)
            if len(times) != n:
                raise RuntimeError(f"only {len(times)} of {n} outputs came")
        after = [t for t in times if t > killed]
        gaps = [b - a for a, b in zip([killed, *after], after)]
        flowing = sum(gaps[:gaps.index(max(gaps)) + 1])
        led = re.search(r"^(\S+ \S+) server INFO leading", logs[1].read_text(), re.M)
        leading = datetime.strptime(led.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - killed_wall
        return leading, flowing
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
    parser.add_argument("--lease", type=float, default=3.0, help="--leader-lease of both servers (seconds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inputs", type=int, default=10_000)
    args = parser.parse_args()
    print(f"{datetime.now():%Y-%m-%d}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"lease {args.lease:g}s, map of {args.inputs}")
    results = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="ember-failover-") as tmp:
            from ember._client.client import Client
            Client.close_all()
            leading, flowing = one_round(pathlib.Path(tmp), args.lease, args.inputs)
        results.append(flowing)
        print(f"round {i + 1}: the standby led {leading:.2f}s after the SIGKILL; outputs flowed again after "
              f"{flowing:.2f}s; all {args.inputs} outputs came")
    print(f"kill to outputs flowing again: median {statistics.median(results):.2f}s "
          f"({', '.join(f'{r:.2f}' for r in results)})")


if __name__ == "__main__":
    main()
