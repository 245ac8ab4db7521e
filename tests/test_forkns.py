"""A forked container's namespaces (worker/forkns.py), with real processes and a real kernel.

A stand-in for a warm parent (confined as worker/parents.py says a parent on the container
backend is: container root of the worker's user namespace, a container's capabilities and
seccomp filter except for setns, in a PID and mount namespace of its own) is handed the
namespaces of two forks, made by forkns.py as the worker would make them. What it and its
forks can and cannot do is what the design rests on.
"""

import array
import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from ember.proto import api_pb2
from ember.worker import cgroups as cg
from ember.worker import forkns, sandbox, userns
from ember.worker.network import Network, missing as network_missing
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
    request = json.loads(data)
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go_w)
        try:
            forkns.join(fds, go_r)
            if request.get("exec"):  # a program of the fork's image, as the container's process
                sock.close()
                os.execve(request["exec"][0], request["exec"], request["env"])
            if request.get("allocate_mb"):  # more than its cgroup's limit: the kernel kills it
                held = bytearray(request["allocate_mb"] << 20)
                for i in range(0, len(held), 4096):
                    held[i] = 1
            name = request["name"]
            with open(f"/{name}", "w") as f:
                f.write(name)
            with open("/proc/self/status") as f:
                caps = [line.split()[1] for line in f if line.startswith("CapEff")][0]
            with open("/proc/self/cgroup") as f:
                cgroup = f.read()
            with open("/proc/net/dev") as f:  # of the network namespace it is in
                links = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
            with open("/proc/net/fib_trie") as f:
                addresses = f.read()
        except OSError:
            import traceback
            sock.send(json.dumps({"error": traceback.format_exc()}).encode())
            os._exit(1)
        sock.send(json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(), "uid": os.getuid(),
                              "root": sorted(os.listdir("/")), "procs": sorted(p for p in os.listdir("/proc")
                                                                               if p.isdigit()),
                              "caps": caps, "cgroup": cgroup, "links": links, "addresses": addresses,
                              "owner of /": os.stat("/").st_uid,
                              "owner of the image's file": os.stat("/from-the-image").st_uid, **attacks()}).encode())
        os._exit(0)
    os.close(go_r)
    for fd in fds.values():
        os.close(fd)
    sock.send(json.dumps({"forked": child}).encode())
    if sock.recv(16) == b"go":
        os.write(go_w, b"1")
    os.close(go_w)
    sock.send(json.dumps({"exited": os.waitpid(child, 0)[1]}).encode())
"""


class Parent:
    """The stand-in, started; make() runs a fork of it in namespaces made by forkns.py."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        try:
            self.userns = userns._new_namespace()
        except OSError as e:
            pytest.skip(f"no user namespaces here: {e}")
        (tmp / "image").mkdir()
        (tmp / "image" / "from-the-image").write_text("x")
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(60)
        self.host_net = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.host_user = os.open("/proc/self/ns/user", os.O_RDONLY)
        fds = (theirs.fileno(), self.userns, self.host_net, self.host_user)
        self.proc = subprocess.Popen([sys.executable, "-S", "-E", "-c", f"SANDBOX_DIR = {SANDBOX_DIR!r}\n" + PARENT,
                                      *map(str, fds)], pass_fds=fds)
        theirs.close()
        self.refused = json.loads(self.sock.recv(1 << 16))
        self.pid = int(open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()[0])

    def fork(self, name: str, cgroups: cg.Cgroups | None = None, network: Network | None = None,
             spec: dict | None = None, **request) -> tuple[dict | None, int]:
        """Make a fork's namespaces (its network attached to `network`; `spec`: what of a
        container's spec differs from a one-file image's), have the parent fork into them (into
        `cgroups` first); what the fork reported (None if it did not, or exec'd) and the wait
        status of the parent's child."""
        d = self.tmp / name
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True)
        spec_file = d / "spec.json"
        # A container's spec (a one-layer image), as the container backend writes it (container.py).
        spec_file.write_text(json.dumps({
            "layers_dir": str(self.tmp), "lowers": ["image"], "upper": str(d / "upper"), "work": str(d / "work"),
            "root": str(d / "root"), "binds": [], "volumes": [], "devices": [], "hostname": f"fork-{name}",
            "userns": f"/proc/{os.getpid()}/fd/{self.userns}", "userns_base": userns.BASE,
            "idmapped": [str(self.tmp)], "parent_pid": self.pid, **(spec or {})}))
        maker = subprocess.Popen([sys.executable, "-S", "-E", FORKNS, str(spec_file)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            line = maker.stdout.readline()
            assert line.strip().isdigit(), maker.stderr.read()
            init = int(line)
            with open(f"/proc/{init}/uid_map") as f:  # as the host sees it
                self.host_uid_map = f.read().split()
            if network is not None:
                attached = asyncio.run(network.attach(of_pid=init))
                self.address = attached.address
            fds = forkns.open_namespaces(init)
            self.sock.sendmsg([json.dumps({"name": name, **request}).encode()],
                              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds.values()))])
            for fd in fds.values():
                os.close(fd)
            assert "forked" in json.loads(self.sock.recv(1 << 16))
            if cgroups is not None:  # the worker's part: the child, by its host PID, into the fork's cgroups
                child = int(open(f"/proc/{self.pid}/task/{self.pid}/children").read().split()[0])
                for path in cgroups.paths:
                    (path / "cgroup.procs").write_text(str(child))
            self.sock.send(b"go")
            report, status = None, None
            while status is None:
                message = json.loads(self.sock.recv(1 << 16))
                if "exited" in message:
                    status = message["exited"]
                else:
                    report = message
            assert report is None or "error" not in report, report
            os.kill(init, 9)  # the fork's namespaces end with their init
            assert maker.wait(timeout=30) != 0
            if network is not None:
                asyncio.run(network.release(attached))
            return report, status
        finally:
            if maker.poll() is None:
                maker.kill()
                maker.wait()

    def close(self):
        self.sock.close()
        self.proc.wait(timeout=30)
        for fd in (self.host_net, self.host_user, self.userns):
            os.close(fd)


@pytest.fixture
def parent(tmp_path):
    p = Parent(tmp_path)
    yield p
    p.close()


ATTACKS = ("setns host net", "setns host user", "unshare user", "unshare mount", "mount tmpfs")


def test_a_fork_joins_namespaces_made_for_it_and_nothing_else(parent, tmp_path):
    # The parent, whose imported code is the user's, gains nothing of the host by its setns.
    assert parent.refused == dict.fromkeys(ATTACKS, "EPERM"), parent.refused
    forks = {name: parent.fork(name) for name in ("first", "second")}
    for name, (fork, status) in forks.items():
        other = "second" if name == "first" else "first"
        assert status == 0 and fork is not None
        assert fork["pid"] == 2 and fork["procs"] == ["1", "2"], fork  # its own PID namespace, only its own
        assert fork["hostname"] == f"fork-{name}" and fork["uid"] == 0
        # Its files are container root's, through the idmapped mounts, as in any container.
        assert fork["owner of /"] == fork["owner of the image's file"] == 0, fork
        # Its own root and writable layer: the image's file and its own, not its sibling's.
        assert "from-the-image" in fork["root"] and name in fork["root"] and other not in fork["root"], fork
        assert int(fork["caps"], 16) == sum(1 << c for c in sandbox.KEEP_CAPS), fork  # a container's
        for attack in ATTACKS:
            assert fork[attack] == "EPERM", (name, attack, fork)
    assert (tmp_path / "first" / "upper" / "first").read_text() == "first"
    assert not (tmp_path / "second" / "upper" / "first").exists()


def test_a_fork_is_held_by_its_own_cgroups_from_its_start(parent):
    if why := cg.host_layout().missing():
        pytest.skip(why)
    cg.prepare(cg.host_layout())
    name = f"ct-forkns-{os.urandom(4).hex()}"
    limits = cg.Cgroups(name)
    limits.create(api_pb2.Resources(memory_limit_mb=64))
    try:
        fork, status = parent.fork("small")
        assert status == 0 and name not in fork["cgroup"]  # not in them unless moved
        fork, status = parent.fork("in-limits", limits)
        assert status == 0 and f"/{name}" in fork["cgroup"], fork
        # 200 MiB against a limit of 64: the kernel kills it, and counts it in the fork's cgroup.
        fork, status = parent.fork("too-big", limits, allocate_mb=200)
        assert fork is None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (fork, status)
        assert limits.oom_killed()
    finally:
        asyncio.run(limits.remove())


def test_a_fork_has_the_network_the_worker_attaches_to_its_namespace(parent, tmp_path):
    if why := network_missing():
        pytest.skip(why)
    fork, _ = parent.fork("alone")
    assert fork["links"] == ["lo"], fork  # a network namespace of its own: only loopback
    network = Network(tmp_path / "net")
    try:
        fork, status = parent.fork("attached", network=network)
        assert status == 0 and fork["links"] == ["eth0", "lo"], fork
        assert f"|-- {parent.address}\n" in fork["addresses"], fork["addresses"]  # the address it was given
    finally:
        network.close()
