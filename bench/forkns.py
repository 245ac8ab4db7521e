"""A forked container's namespaces (worker/forkns.py): what making and joining them costs, in one run.

    python bench/forkns.py [--rounds 20]     (Linux, root)

Each round, side by side:
  - make: the worker's maker, from its start to its init's ready (an interpreter, a container's
    root of a one-file image, idmapped, a user namespace and the five it owns, /proc and /sys,
    the pivot, the init's confinement): the
    part a worker would do ahead of a fork, as it makes spares;
  - join: in a warm parent's stand-in (confined as parents.py says), from its fork to the
    container's process confined in the fork's namespaces (six setns, a fork into the PID
    namespace, a container's capabilities and seccomp filter);
  - the floor of make: `python -S -E -c pass`.
"""

import argparse
import array
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ember.worker import forkns, userns  # noqa: E402
from ember.worker.images import SANDBOX_DIR  # noqa: E402

PARENT = r"""
import array, json, os, socket, sys, time
sys.path.insert(0, SANDBOX_DIR)
import sandbox as sb, forkns
sock, userns = int(sys.argv[1]), int(sys.argv[2])
sock = socket.socket(fileno=sock)
sb._check(sb.libc.unshare(sb.CLONE_NEWPID | sb.CLONE_NEWNS), "unshare")
if pid := os.fork():
    os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) & 0xFF)
sb.mount(None, "/", None, sb.MS_REC | sb.MS_PRIVATE)
sb.mount("proc", "/proc", "proc", sb.MS_NOSUID | sb.MS_NODEV | sb.MS_NOEXEC)
sb.enter_user_namespace(userns)
forkns.confine_parent()
sock.send(b"ready")
while True:
    data, anc, _, _ = sock.recvmsg(64, socket.CMSG_SPACE(4 * len(forkns.NAMESPACES)))
    if not data:
        break
    fds = dict(zip((n for n, _ in forkns.NAMESPACES), array.array("i", anc[0][2])))
    forked_at = time.perf_counter()
    if os.fork() == 0:
        forkns.join(fds)
        sock.send(json.dumps([forked_at, time.perf_counter()]).encode())
        os._exit(0)
    for fd in fds.values():
        os.close(fd)
    os.wait()
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    userns_fd = userns._new_namespace()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="forkns-bench-"))
    (tmp / "image").mkdir()
    (tmp / "image" / "a-file").write_text("x")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = subprocess.Popen([sys.executable, "-S", "-E", "-c", f"SANDBOX_DIR = {SANDBOX_DIR!r}\n" + PARENT,
                               str(theirs.fileno()), str(userns_fd)], pass_fds=(theirs.fileno(), userns_fd))
    theirs.close()
    assert ours.recv(16) == b"ready"
    parent_pid = int(open(f"/proc/{parent.pid}/task/{parent.pid}/children").read().split()[0])
    make, join, floor = [], [], []
    try:
        for i in range(args.rounds):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-S", "-E", "-c", "pass"], check=True)
            floor.append(time.perf_counter() - t)
            d = tmp / f"fork{i}"
            for sub in ("upper", "work", "root"):
                (d / sub).mkdir(parents=True)
            spec = d / "spec.json"
            spec.write_text(json.dumps({  # a container's spec, with a one-file image
                "layers_dir": str(tmp), "lowers": ["image"], "upper": str(d / "upper"), "work": str(d / "work"),
                "root": str(d / "root"), "binds": [], "volumes": [], "devices": [], "hostname": f"fork{i}",
                "userns": f"/proc/{os.getpid()}/fd/{userns_fd}", "userns_base": userns.BASE,
                "idmapped": [str(tmp)], "parent_pid": parent_pid}))
            t = time.perf_counter()
            maker = subprocess.Popen([sys.executable, "-S", "-E", str(pathlib.Path(SANDBOX_DIR) / "forkns.py"),
                                      str(spec)], stdout=subprocess.PIPE, text=True)
            init = int(maker.stdout.readline())
            make.append(time.perf_counter() - t)
            fds = forkns.open_namespaces(init)
            ours.sendmsg([b"fork"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds.values()))])
            for fd in fds.values():
                os.close(fd)
            forked_at, confined_at = json.loads(ours.recv(256))
            join.append(confined_at - forked_at)
            os.kill(init, 9)
            maker.wait()
    finally:
        ours.close()
        parent.wait()
        subprocess.run(["rm", "-rf", str(tmp)])
    print(f"{args.rounds} rounds, medians (min-max), ms:")
    for name, xs in (("make a fork's namespaces (forkns.py)", make), ("join them (in the parent's child)", join),
                     ("floor of make: python -S -E -c pass", floor)):
        print(f"  {name:40s} {statistics.median(xs) * 1e3:7.2f}  ({min(xs) * 1e3:.2f}-{max(xs) * 1e3:.2f})")


if __name__ == "__main__":
    main()
