"""A forked container's namespaces (worker/forkns.py), with real processes and a real kernel.

A stand-in for a warm parent (confined as worker/parents.py says a parent on the container
backend is: container root of the worker's user namespace, a container's capabilities and
seccomp filter except for setns, in a PID and mount namespace of its own) is handed the
namespaces of two forks, made by forkns.py as the worker would make them. What it and its
forks can and cannot do is what the design rests on.
"""

import array
import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from ember.worker import forkns, sandbox, userns
from ember.worker.images import SANDBOX_DIR

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs Linux and root")

FORKNS = str(pathlib.Path(SANDBOX_DIR) / "forkns.py")

# The parent's stand-in: argv is its socket, the worker's user namespace and two host namespaces
# (the host's network and user namespaces), as a leaked descriptor would give them.
PARENT = r"""
import array, errno, json, os, socket, sys
sys.path.insert(0, SANDBOX_DIR)
import sandbox as sb, forkns
sock, userns, host_net, host_user = (int(a) for a in sys.argv[1:5])
sock = socket.socket(fileno=sock)
sb._check(sb.libc.unshare(sb.CLONE_NEWPID | sb.CLONE_NEWNS), "unshare")
pid = os.fork()
if pid:
    os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) & 0xFF)
sb.mount(None, "/", None, sb.MS_REC | sb.MS_PRIVATE)
sb.mount("proc", "/proc", "proc", sb.MS_NOSUID | sb.MS_NODEV | sb.MS_NOEXEC)
sb.enter_user_namespace(userns)
forkns.confine_parent()

def attempt(call):
    if call() == 0:
        return "allowed"
    return errno.errorcode[sb.ctypes.get_errno()]

def attacks():
    return {"setns host net": attempt(lambda: sb.libc.setns(host_net, sb.CLONE_NEWNET)),
            "setns host user": attempt(lambda: sb.libc.setns(host_user, sb.CLONE_NEWUSER)),
            "unshare user": attempt(lambda: sb.libc.unshare(sb.CLONE_NEWUSER)),
            "unshare mount": attempt(lambda: sb.libc.unshare(sb.CLONE_NEWNS)),
            "mount tmpfs": attempt(lambda: sb.libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))}

sock.send(json.dumps(attacks()).encode())
while True:
    data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4 * len(forkns.NAMESPACES)))
    if not data:
        break
    fds = dict(zip((n for n, _ in forkns.NAMESPACES), array.array("i", anc[0][2])))
    child = os.fork()
    if child == 0:
        try:
            forkns.join(fds)
            name = json.loads(data)["name"]
            with open(f"/{name}", "w") as f:
                f.write(name)
            with open("/proc/self/status") as f:
                caps = [line.split()[1] for line in f if line.startswith("CapEff")][0]
        except OSError as e:
            import traceback
            sock.send(json.dumps({"error": traceback.format_exc()}).encode())
            os._exit(1)
        sock.send(json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(), "uid": os.getuid(),
                              "root": sorted(os.listdir("/")), "procs": sorted(p for p in os.listdir("/proc")
                                                                               if p.isdigit()),
                              "caps": caps, **attacks()}).encode())
        os._exit(0)
    for fd in fds.values():
        os.close(fd)
    os.waitpid(child, 0)
"""


def test_a_fork_joins_namespaces_made_for_it_and_nothing_else(tmp_path):
    try:
        userns_fd = userns._new_namespace()
    except OSError as e:
        pytest.skip(f"no user namespaces here: {e}")
    lower = tmp_path / "image"
    lower.mkdir()
    (lower / "from-the-image").write_text("x")
    for p in (lower, lower / "from-the-image"):  # container root's, as the image's files are through idmapped mounts
        os.chown(p, userns.BASE, userns.BASE)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    host_net = os.open("/proc/self/ns/net", os.O_RDONLY)
    host_user = os.open("/proc/self/ns/user", os.O_RDONLY)
    parent = subprocess.Popen(
        [sys.executable, "-S", "-E", "-c", f"SANDBOX_DIR = {SANDBOX_DIR!r}\n" + PARENT,
         *(str(fd) for fd in (theirs.fileno(), userns_fd, host_net, host_user))],
        pass_fds=(theirs.fileno(), userns_fd, host_net, host_user))
    theirs.close()
    makers = []
    try:
        ours.settimeout(60)
        refused = json.loads(ours.recv(1 << 16))
        # The parent, whose imported code is the user's, gains nothing of the host by its setns.
        assert refused == {"setns host net": "EPERM", "setns host user": "EPERM", "unshare user": "EPERM",
                           "unshare mount": "EPERM", "mount tmpfs": "EPERM"}, refused
        parent_pid = int(open(f"/proc/{parent.pid}/task/{parent.pid}/children").read().split()[0])
        forks = {}
        for name in ("first", "second"):
            d = tmp_path / name
            for sub in ("upper", "work", "root"):
                (d / sub).mkdir(parents=True)
            os.chown(d / "upper", userns.BASE, userns.BASE)  # the root's owner: container root, as through idmapping
            spec = d / "spec.json"
            spec.write_text(json.dumps({"userns": f"/proc/{os.getpid()}/fd/{userns_fd}", "parent_pid": parent_pid,
                                        "root": str(d / "root"), "lower": str(lower), "upper": str(d / "upper"),
                                        "work": str(d / "work"), "hostname": f"fork-{name}"}))
            maker = subprocess.Popen([sys.executable, "-S", "-E", FORKNS, str(spec)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            makers.append(maker)
            line = maker.stdout.readline()
            assert line.strip().isdigit(), maker.stderr.read()
            init = int(line)
            fds = forkns.open_namespaces(init)
            ours.sendmsg([json.dumps({"name": name}).encode()],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds.values()))])
            for fd in fds.values():
                os.close(fd)
            forks[name] = json.loads(ours.recv(1 << 16))
            assert "error" not in forks[name], forks[name]
            os.kill(init, 9)  # the fork's namespaces end with their init
            assert maker.wait(timeout=30) != 0
        for name, fork in forks.items():
            other = "second" if name == "first" else "first"
            assert fork["pid"] == 2 and fork["procs"] == ["1", "2"], fork  # its own PID namespace, only its own
            assert fork["hostname"] == f"fork-{name}" and fork["uid"] == 0
            # Its own root and writable layer: the image's file and its own, not its sibling's.
            assert "from-the-image" in fork["root"] and name in fork["root"] and other not in fork["root"], fork
            assert int(fork["caps"], 16) == sum(1 << c for c in sandbox.KEEP_CAPS), fork  # a container's
            for attack in ("setns host net", "setns host user", "unshare user", "unshare mount", "mount tmpfs"):
                assert fork[attack] == "EPERM", (name, attack, fork)
        assert (tmp_path / "first" / "upper" / "first").read_text() == "first"
        assert not (tmp_path / "second" / "upper" / "first").exists()
    finally:
        ours.close()
        parent.wait(timeout=30)
        for maker in makers:
            if maker.poll() is None:
                maker.kill()
                maker.wait()
        for fd in (host_net, host_user, userns_fd):
            os.close(fd)
