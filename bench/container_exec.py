"""`ember container exec` (issue 16; the path issue 17's Sandbox.exec reuses): how long from asking
to the first byte of `echo hi`, and to its exit, in a running container.

    python bench/container_exec.py                      # the process backend
    python bench/container_exec.py --backend container  # namespaces (root); EMBER_CACHE_DIR is honoured
    python bench/container_exec.py --against REV        # also the code of commit REV, alternating, in one run

One container waits in a function's input; N execs of `echo hi` run in it one after another over
ContainerExec (client -> control plane -> the worker's stream -> the container), timed from
opening the stream. Next to them, the floor: `sh -c 'echo hi'` started by this process.
"""

import argparse
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from core import percentiles, shell_floor, start_cluster, stop_cluster  # noqa: E402
from revisions import alternate  # noqa: E402


async def one_exec(client, container_id: str) -> tuple[float, float]:
    from ember._client.container_exec import ContainerExec

    t = time.perf_counter()
    first = None
    ex = ContainerExec(client, container_id, ["sh", "-c", "echo hi"])
    async for out in ex.outputs():
        if out.data and first is None:
            first = time.perf_counter() - t
        if out.exited:
            assert out.exit_code == 0 and not out.error, out
    return first, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="execs (default 50)")
    ap.add_argument("--backend", default="process")
    ap.add_argument("--against", metavar="REV", help="also measure the code of this commit (a temporary git "
                                                    "worktree of it), alternating with this checkout")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each, with --against (default 2)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one run's figures, for --against
    args = ap.parse_args()
    if args.against:
        return compare(args)
    import ember
    from ember._client.client import Client
    from ember.proto import api_pb2

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-exec-cluster-"))
    server, worker = start_cluster(tmp, args.backend)
    app = ember.App("bench-exec")
    image = ember.Image.debian_slim() if args.backend == "container" else None

    @app.function(image=image, serialized=True)
    def wait(path):
        import os
        import time
        while not os.path.exists(path):
            time.sleep(0.01)

    try:
        with app.run():
            release = f"/tmp/ember-bench-exec-{os.getpid()}"  # made by the last exec, in the container's /tmp
            call = wait.spawn(release)
            client = Client.from_env()
            while True:
                running = [c for c in client.run(client.rpc("ContainerList", api_pb2.ContainerListRequest())).containers
                           if c.inputs_in_flight]
                if running:
                    break
                time.sleep(0.05)
            cid = running[0].container_id
            client.run(one_exec(client, cid))  # warm
            firsts, totals = [], []
            for _ in range(args.n):
                first, total = client.run(one_exec(client, cid))
                firsts.append(first)
                totals.append(total)
            floor = shell_floor(args.n)
            if args.json:
                print(json.dumps({"firsts": firsts, "totals": totals}))
            print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}, "
                  f"{args.backend} backend")
            print(f"exec of `echo hi` ({args.n}): first byte {percentiles(firsts)}; exit {percentiles(totals)}")
            print(f"floor, sh -c 'echo hi' from this process: {percentiles(floor)}")
            if args.backend == "container":
                print(memory(worker.pid))
            client.run(_release(client, cid, release))
            call.get(timeout=60)
            if os.path.exists(release):  # the process backend's /tmp is this machine's
                os.unlink(release)
    finally:
        stop_cluster(server, worker, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def memory(worker_pid: int) -> str:
    """What the processes of the container (its sandbox launcher, its init: the exec agent, and
    Ember's runtime) take in memory, proportional set size (shared pages divided among sharers)."""
    def children(pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    def pss_kib(pid):
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))

    out = []
    for launcher in children(worker_pid):
        with open(f"/proc/{launcher}/cmdline", "rb") as f:
            if b"sandbox.main()" not in f.read():
                continue
        for init in children(launcher):
            runtime = children(init)
            out.append(f"launcher {pss_kib(launcher) / 1024:.1f} MiB, init (exec agent) "
                       f"{pss_kib(init) / 1024:.1f} MiB, runtime {sum(map(pss_kib, runtime)) / 1024:.1f} MiB")
    return "memory (PSS) of each container: " + ("; ".join(out) or "none found")


def compare(args):
    """This checkout and REV, alternating round by round (revisions.py)."""
    runs = alternate(__file__, ["--n", str(args.n), "--backend", args.backend], args.against, args.rounds)
    print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}; {args.rounds} rounds of {args.n} execs each")
    last = runs["this"][-1][1].splitlines()
    print("\n".join(line for line in last if line.startswith(("machine", "floor"))))
    for label, each in runs.items():
        for _, output in each:
            for line in output.splitlines():
                if line.startswith("memory"):
                    print(f"{label}: {line}")
        firsts = [x for figures, _ in each for x in figures["firsts"]]
        totals = [x for figures, _ in each for x in figures["totals"]]
        print(f"{label}: exec of `echo hi`: first byte {percentiles(firsts)}; exit {percentiles(totals)}")


async def _release(client, cid: str, path: str):
    from ember._client.container_exec import ContainerExec
    async for _ in ContainerExec(client, cid, ["touch", path]).outputs():
        pass


if __name__ == "__main__":
    main()
