"""ember.Sandbox (issue 17): Sandbox.create() to the first byte of `echo hi` from exec, an exec
in a running sandbox to its first byte, many idle sandboxes at once, and sb.snapshot_filesystem().

    python bench/sandbox.py                      # the process backend
    python bench/sandbox.py --backend container  # namespaces (root); EMBER_CACHE_DIR is honoured
    python bench/sandbox.py --tunnel             # also: a GET through a tunnel (encrypted_ports) vs direct
    python bench/sandbox.py --steps              # and where the time of each create goes, step by step
    python bench/sandbox.py --against REV        # also the code of commit REV, alternating, in one run
    python bench/sandbox.py --n 5 --many 100 --at-once   # 100 idle sandboxes, all created at once
    python bench/sandbox.py --backend container --snapshot  # and snapshots of a small change

The image is warm on the worker (one sandbox is made first). Next to the figures, the floor:
`sh -c 'echo hi'` started by this process (and `bwrap` of it, where bwrap is installed).
"""

import argparse
import asyncio
import http.client
import json
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
from core import percentiles, shell_floor, start_cluster  # noqa: E402
from revisions import alternate  # noqa: E402


def tree_memory_mib(pid: int) -> tuple[float, float]:
    """Memory of a process and all its descendants (the worker and its containers): their RSS
    summed (pages they share, as the interpreter's, counted in each), and their PSS (each shared
    page divided among those that share it: what they take of the machine)."""
    children: dict[int, list[int]] = {}
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in pathlib.Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("Rss", "Pss"):
                    kib = int(value.split()[0])
                    rss, pss = (rss + kib, pss) if key == "Rss" else (rss, pss + kib)
        except (OSError, ValueError):
            pass
        todo += children.get(p, [])
    return rss / 1024, pss / 1024


STEPS = ("resolve image", "SandboxCreate", "to the worker's start of its container", "then to RUNNING",
         "then exec to first byte")


def create_in_steps(app, image, log_path: pathlib.Path) -> tuple[list[float], object]:
    """Sandbox.create() then exec `echo hi`, timed step by step: the client's own steps, and the
    worker's (its log's line when it started the container; the clocks are this machine's)."""
    from ember import sandbox as sdk
    from ember.proto import api_pb2
    client = sdk._client()

    async def steps():
        t0 = time.time()
        spec = sdk.FunctionSpec(image=image, timeout=60)
        d = spec.definition("sandbox", False)
        d.image.CopyFrom(await sdk._build(client, spec.image))
        t1 = time.time()
        info = await client.rpc("SandboxCreate", api_pb2.SandboxCreateRequest(
            app_id=app.app_id, definition=d, timeout=60))
        t2 = time.time()
        while info.state == api_pb2.SandboxInfo.STARTING:
            info = await client.rpc("SandboxWait", api_pb2.SandboxWaitRequest(
                sandbox_id=info.sandbox_id, timeout=60, until_running=True))
        t3 = time.time()
        sb = sdk.Sandbox(info)
        p = await sb.exec.aio("echo", "hi")
        async for line in p.stdout:
            assert line == "hi\n"
            break
        t4 = time.time()
        return [t0, t1, t2, t3, t4], sb

    (t0, t1, t2, t3, t4), sb = client.bridge.run(steps())
    started = t2
    for line in log_path.read_text(errors="replace").splitlines():
        if " worker INFO container " in line and f"{sb._info.container_id} started" in line:
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
            started = max(t2, min(stamp, t4))
    # Started before it was RUNNING (so far), or after (the exec waited for it, server-side).
    return [t1 - t0, t2 - t1, started - t2, max(0.0, t3 - started), t4 - max(t3, started)], sb


def first_byte(sb) -> float:
    t = time.perf_counter()
    p = sb.exec("echo", "hi")
    assert next(iter(p.stdout)) == "hi\n"
    return time.perf_counter() - t


# A GET loop run inside the sandbox: the direct figure where this process cannot reach its port.
INSIDE = """
import http.client, sys, time
xs = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
    c.request("GET", "/hi.txt")
    assert c.getresponse().read() == b"hi\\n"
    c.close()
    xs.append(time.perf_counter() - t)
print(" ".join(map(str, xs)))
"""


def get_loop(host: str, port: int, path: str, n: int, headers=None) -> list[float]:
    """n GETs of path, each on a connection of its own (as the tunnel's each are, to the port)."""
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        c = http.client.HTTPConnection(host, port, timeout=30)
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"hi\n", r.status
        c.close()
        xs.append(time.perf_counter() - t)
    return xs


def tunnel(app, image, n: int, backend: str):
    """GET of a small file from `python3 -m http.server` in a sandbox: through its tunnel (the
    gateway, the control plane's exec relay, the worker, the relay in the sandbox) vs direct."""
    import urllib.parse

    import ember
    port = 8000 if backend == "container" else free_port()
    sb = ember.Sandbox.create("sh", "-c", f"cd /tmp && echo hi > hi.txt && exec python3 -m http.server {port} "
                              "--bind 127.0.0.1", app=app, image=image, timeout=600, encrypted_ports=[port])
    url = urllib.parse.urlsplit(sb.tunnels()[port].url)
    auth = {"Authorization": f"Bearer {os.environ['EMBER_TOKEN_ID']}:{os.environ['EMBER_TOKEN_SECRET']}"}
    deadline = time.monotonic() + 60
    while True:
        try:
            get_loop(url.hostname, url.port, url.path + "/hi.txt", 1, auth)
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    through = get_loop(url.hostname, url.port, url.path + "/hi.txt", n, auth)
    print(f"GET through the tunnel, a new connection each ({n}): {percentiles(through)}")
    if backend == "process":
        direct = get_loop("127.0.0.1", port, "/hi.txt", n)
        print(f"GET direct to the port, from this process ({n}): {percentiles(direct)}")
    else:
        out = sb.exec("python3", "-c", INSIDE, str(port), str(n)).stdout.read()
        print(f"GET direct to the port, inside the sandbox ({n}): {percentiles([float(x) for x in out.split()])}")
    sb.terminate()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def many_at_once(app, image, n: int):
    """n sandboxes created concurrently, then each asked for `echo hi` (all at once too)."""
    import ember
    made = await asyncio.gather(*(ember.Sandbox.create.aio(app=app, image=image, timeout=600, cpu=0.01)
                                  for _ in range(n)), return_exceptions=True)
    boxes = [sb for sb in made if not isinstance(sb, BaseException)]
    for e in {repr(e) for e in made if isinstance(e, BaseException)}:
        print(f"a create failed: {e}")

    async def answers(sb) -> bool:
        try:
            p = await sb.exec.aio("echo", "hi")
            return await p.stdout.read.aio() == "hi\n"
        except Exception as e:
            print(f"{sb.object_id}: {e!r}")
            return False
    return boxes, sum(await asyncio.gather(*(answers(sb) for sb in boxes)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="sandboxes created, and execs (default 20)")
    ap.add_argument("--many", type=int, default=0, help="then this many idle sandboxes at once (default none)")
    ap.add_argument("--at-once", action="store_true",
                    help="create the --many sandboxes all at once (concurrently), not one after another")
    ap.add_argument("--backend", default="process")
    ap.add_argument("--tunnel", action="store_true", help="then GETs through a tunnel, next to direct ones")
    ap.add_argument("--steps", action="store_true", help="also time each create step by step (median of --n)")
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds between creates (default 0: back to back, as a loop of them would)")
    ap.add_argument("--against", metavar="REV", help="also measure the code of this commit (a temporary git "
                                                    "worktree of it), alternating with this checkout")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each, with --against (default 2)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one run's figures, for --against
    ap.add_argument("--snapshot", action="store_true",
                    help="then snapshot_filesystem() of a small change, n times (container backend)")
    ap.add_argument("--snapshot-mb", type=int, default=0, help="and once of a change of this many MiB")
    args = ap.parse_args()
    if (args.snapshot or args.snapshot_mb) and args.backend != "container":
        ap.error("--snapshot needs --backend container: snapshots need a filesystem of the sandbox's own")
    if args.against:
        return compare(args)
    import ember

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-sandbox-"))
    server, worker = start_cluster(tmp, args.backend)
    try:
        app = ember.App.lookup("bench-sandbox", create_if_missing=True)
        image = ember.Image.debian_slim() if args.backend == "container" else None
        warm = ember.Sandbox.create(app=app, image=image, timeout=600)
        first_byte(warm)
        creates = []
        for _ in range(args.n):
            time.sleep(args.pause)
            t = time.perf_counter()
            sb = ember.Sandbox.create(app=app, image=image, timeout=60)
            first_byte(sb)
            creates.append(time.perf_counter() - t)
            sb.terminate()
        steps = []
        for _ in range(args.n if args.steps else 0):
            time.sleep(args.pause)
            took, sb = create_in_steps(app, image, tmp / "cluster.log")
            steps.append(took)
            sb.terminate()
        spared = (tmp / "cluster.log").read_text(errors="replace").count(", from a spare)")
        execs = [first_byte(warm) for _ in range(args.n)]
        floor = shell_floor(args.n)
        if args.json:
            print(json.dumps({"creates": creates, "execs": execs, "steps": steps}))
        print(f"machine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}, "
              f"{args.backend} backend")
        print(f"Sandbox.create() to the first byte of exec `echo hi` ({args.n}): {percentiles(creates)}")
        if steps:
            print(f"  step by step (median of each, ms): {in_steps(steps)}")
        if args.backend == "container":
            print(f"  containers started from a spare: {spared} of {args.n * (2 if steps else 1) + 1}")
        print(f"exec `echo hi` in a running sandbox to its first byte ({args.n}): {percentiles(execs)}")
        print(f"floor, sh -c 'echo hi' from this process: {percentiles(floor)}")
        if shutil.which("bwrap"):
            bw = []
            for _ in range(args.n):
                t = time.perf_counter()
                # Namespaces of its own (as a sandbox's: user, mount, PID, IPC, UTS, network, cgroup).
                subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                                "--die-with-parent", "sh", "-c", "echo hi"], capture_output=True, check=True)
                bw.append(time.perf_counter() - t)
            print(f"floor, bwrap (namespaces of its own) of it: {percentiles(bw)}")
        if args.many:
            before = tree_memory_mib(worker.pid)
            t = time.perf_counter()
            if args.at_once:
                boxes, answers = asyncio.run(many_at_once(app, image, args.many))
            else:
                boxes = [ember.Sandbox.create(app=app, image=image, timeout=600, cpu=0.01)
                         for _ in range(args.many)]
                answers = sum(first_byte(sb) >= 0 for sb in boxes)
            took = time.perf_counter() - t
            after = tree_memory_mib(worker.pid)
            fds = len(os.listdir(f"/proc/{worker.pid}/fd"))
            limit = next(line.split()[3] for line in open(f"/proc/{worker.pid}/limits")
                         if line.startswith("Max open files"))
            rss, pss = ((a - b) / args.many for a, b in zip(after, before))
            how = "all at once" if args.at_once else "one after another"
            print(f"{args.many} idle sandboxes, created {how}: {answers} answering in {took:.1f} s; "
                  f"the worker's memory per idle sandbox (its process tree's): {rss:.1f} MiB RSS, {pss:.1f} MiB PSS; "
                  f"the worker's open files: {fds} (its limit {limit})")
            for sb in boxes:
                sb.terminate()
        if args.tunnel:
            tunnel(app, image, args.n, args.backend)
        if args.snapshot or args.snapshot_mb:
            snapshots(app, image, args)
        warm.terminate()
    finally:
        for p in (worker, server):  # the worker first: it stops its containers while it still has its server
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                print(f"pid {p.pid} did not stop within 60 s of SIGTERM: killed", file=sys.stderr)
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def in_steps(steps: list[list[float]]) -> str:
    return ", ".join(f"{name} {statistics.median(s[i] for s in steps) * 1000:.1f}" for i, name in enumerate(STEPS))


def compare(args):
    """This checkout and REV, alternating round by round (revisions.py)."""
    child = ["--n", str(args.n), "--backend", args.backend, "--pause", str(args.pause)] + (
        ["--steps"] if args.steps else [])
    runs = alternate(__file__, child, args.against, args.rounds)
    print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}; {args.rounds} rounds of {args.n} each, "
          f"{args.backend} backend")
    last = runs["this"][-1][1].splitlines()
    print("\n".join(line for line in last if line.startswith(("machine", "floor"))))
    for label, each in runs.items():
        creates = [x for figures, _ in each for x in figures["creates"]]
        execs = [x for figures, _ in each for x in figures["execs"]]
        steps = [x for figures, _ in each for x in figures["steps"]]
        print(f"{label}: Sandbox.create() to the first byte of exec `echo hi`: {percentiles(creates)}")
        if steps:
            print(f"{label}:   step by step (median of each, ms): {in_steps(steps)}")
        print(f"{label}: exec `echo hi` in a running sandbox to its first byte: {percentiles(execs)}")


def snapshots(app, image, args):
    """snapshot_filesystem() of a small change (a few files, 64 KiB) after each of n changes; a sandbox
    from the last snapshot to its first byte; and one snapshot of a change of --snapshot-mb MiB."""
    import ember
    sb = ember.Sandbox.create(app=app, image=image, timeout=600)
    first_byte(sb)
    took, snap = [], None
    for i in range(args.n if args.snapshot else 0):
        assert sb.exec("sh", "-c", f"mkdir -p /work/{i} && head -c 65536 /dev/urandom > /work/{i}/data && "
                       f"echo {i} > /work/{i}/n && rm -f /work/{i - 1}/n").wait() == 0
        t = time.perf_counter()
        snap = sb.snapshot_filesystem()
        took.append(time.perf_counter() - t)
    if took:
        print(f"snapshot_filesystem() of a small change (64 KiB in 2 files, 1 deleted) ({args.n}): {percentiles(took)}")
        t = time.perf_counter()
        copy = ember.Sandbox.create(app=app, image=snap, timeout=60)
        first_byte(copy)
        print(f"Sandbox.create(image=snapshot) to the first byte of exec `echo hi` (its layer on this worker): "
              f"{(time.perf_counter() - t) * 1000:.0f} ms")
        copy.terminate()
    if args.snapshot_mb:
        assert sb.exec("sh", "-c", f"head -c {args.snapshot_mb << 20} /dev/urandom > /work/big").wait() == 0
        t = time.perf_counter()
        sb.snapshot_filesystem(timeout=600)
        print(f"snapshot_filesystem() of {args.snapshot_mb} MiB of random bytes: {time.perf_counter() - t:.2f} s")
    sb.terminate()


if __name__ == "__main__":
    main()
