"""Start one process in a container: run as `python -S -E sandbox.py SPEC_JSON` by the worker.

Standard library only, and quick to start: it is on the cold-start path. It joins the
container's cgroups, unshares the mount, PID, IPC and UTS namespaces (and the network one when
asked), and forks: the child becomes PID 1 of the new PID namespace, mounts the root filesystem
(an overlay of the image's layers and a fresh writable layer), a private /proc and /dev and the
given bind mounts, pivots into it, drops dangerous capabilities and execs the command. This
process waits for the child, forwards SIGTERM/SIGINT to it and exits as it did, so the worker
sees the container's own exit status.

SPEC keys: layers_dir, lowers (top first, relative to layers_dir), upper, work, root, binds
([src, dst, read_only]), volumes ([{lower, upper, work, target}]), devices, hostname, new_net,
netns (a network namespace to join, made by the worker), cgroups, drop_caps, cwd, env, argv, parent_pid.
"""

import ctypes
import json
import os
import platform
import signal
import socket
import sys
import warnings  # noqa: F401  os.execvpe imports it, after the pivot, where the host's library is gone

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP = 1, 24
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
# Capabilities a container keeps (Docker's default set, less MKNOD and NET_RAW): enough for
# ordinary root work inside it, not enough to mount, load modules, trace or reach the host.
KEEP_CAPS = {0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def mount(src, target, fstype, flags=0, data=None):
    _check(libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
                      data and data.encode()), f"mount {fstype or src} on {target}")


def bind(src, target, read_only):
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    mount(src, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def setup_root(spec):
    root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Relative lower paths keep the option string short enough for many layers.
    os.chdir(spec["layers_dir"])
    mount("overlay", root, "overlay", 0,
          f"lowerdir={':'.join(spec['lowers'])},upperdir={spec['upper']},workdir={spec['work']}")
    os.makedirs(f"{root}/proc", exist_ok=True)
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for p in ("sys", "sysrq-trigger", "irq", "bus"):  # the kernel's knobs stay read-only
        target = f"{root}/proc/{p}"
        if os.path.exists(target):
            mount(target, target, None, MS_BIND | MS_REC)
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    os.makedirs(f"{root}/sys", exist_ok=True)
    try:
        mount("sysfs", f"{root}/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except SetupError:
        pass  # not allowed in every setup; programs cope without /sys
    dev = f"{root}/dev"
    os.makedirs(dev, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=64k")
    for name in DEVICES:
        bind(f"/dev/{name}", f"{dev}/{name}", False)
    for path in spec.get("devices", ()):
        bind(path, f"{dev}/{os.path.basename(path)}", False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    os.makedirs(f"{dev}/shm")
    mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for src, dst, read_only in spec.get("binds", ()):
        bind(src, root + dst, read_only)
    for v in spec.get("volumes", ()):  # a volume: its version read-only below, the container's writes above
        os.makedirs(root + v["target"], exist_ok=True)
        mount("overlay", root + v["target"], "overlay", 0,
              f"lowerdir={v['lower']},upperdir={v['upper']},workdir={v['work']}")
    # pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the new.
    os.chdir(root)
    if SYS_PIVOT_ROOT is not None:
        _check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
        _check(libc.umount2(b".", MNT_DETACH), "unmount the old root")
    else:
        mount(root, "/", None, 8192)  # MS_MOVE
        os.chroot(".")
    os.chdir("/")


def drop_caps():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in KEEP_CAPS:
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")


def child(spec):
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    setup_root(spec)
    socket.sethostname(spec.get("hostname", "ember"))
    if spec.get("drop_caps"):
        drop_caps()
    cwd = spec.get("cwd") or "/"
    os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)
    try:
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except FileNotFoundError:
        raise SetupError(f"the image has no {spec['argv'][0]} on its PATH ({spec['env'].get('PATH')}): Ember's "
                         "runtime needs Python 3.11 as python3 in the image") from None


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("parent_pid"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != spec["parent_pid"]:
            os._exit(1)
    try:
        for cg in spec.get("cgroups", ()):
            with open(f"{cg}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
        if spec.get("netns"):  # the network the worker made for it (network.py); the path is the host's
            fd = os.open(spec["netns"], os.O_RDONLY)
            _check(libc.setns(fd, CLONE_NEWNET), "join the container's network namespace")
            os.close(fd)
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (CLONE_NEWNET if spec.get("new_net") else 0)
        _check(libc.unshare(flags), "unshare namespaces")
    except (SetupError, OSError) as e:
        print(f"ember sandbox: {e}", file=sys.stderr)
        os._exit(126)
    pid = os.fork()
    if pid == 0:
        try:
            child(spec)
        except (SetupError, OSError) as e:
            print(f"ember sandbox: {e}", file=sys.stderr)
            os._exit(126)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
