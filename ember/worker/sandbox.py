"""Start one process in a container: run as `python -S -E sandbox.py SPEC_JSON` by the worker.

Standard library only, and quick to start: it is on the cold-start path. It joins the
container's cgroups, unshares the mount, PID, IPC and UTS namespaces (and the network one when
asked), and forks: the child becomes PID 1 of the new PID namespace, mounts the root filesystem
(an overlay of the image's layers and a fresh writable layer), a private /proc and /dev and the
given bind mounts, pivots into it, joins the worker's user namespace (userns.py: container root
is an unprivileged host user; the files are mounted through idmapped mounts so that they keep
their owners), drops dangerous capabilities and forks the command, which reduces its own
capabilities, sets no_new_privs and a seccomp filter, and execs. Given an exec socket, the
init then confines itself the same way and forks the worker's commands in the container
(serve_execs). Build steps run the same way, so they are held the same. This process waits
for the child, forwards SIGTERM/SIGINT to it and exits as the command did, so the worker sees
the container's own exit status (a SIGKILL as a SIGKILL).

SPEC keys: layers_dir, lowers (top first, relative to layers_dir), upper, work, root, binds
([src, dst, read_only]), volumes ([{lower, upper, work, target, read_only}]), devices, hostname, new_net,
netns (a network namespace to join, made by the worker), cgroups, cwd, env, argv, parent_pid;
userns (the user namespace to join, by path), userns_base (the host ID of container root) and
idmapped (host directories the root filesystem and volumes are made of: layers and writable
layers), when the worker has a user namespace; agent_fd (the init's end of the worker's exec
socket, inherited), for containers; first_pid (the PID the command gets) and restore ({criu (its
argv here), images, work_dir, inherit ([[fd, resource]]: criu's --inherit-fd), status_fd}: the
container restored from a memory snapshot instead of its command run), for memory snapshots;
warm_parent (the command is a warm parent: confined by forkns.confine_parent, which lets it setns
into its forks' namespaces).
"""

import array
import ctypes
import errno
import fcntl
import json
import os
import platform
import select
import signal
import socket
import struct
import sys
import termios
import time
import warnings  # noqa: F401  os.execvpe imports it, after the pivot, where the host's library is gone

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
# The new mount API, for idmapped mounts (its calls have the same numbers on every architecture).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = 1, -100, 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH, MOUNT_ATTR_IDMAP = 4, 0x00100000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 4, 22, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
SECCOMP_MODE_FILTER = 2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
MACHINE = platform.machine()
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(MACHINE)
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


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def idmapped_clone(src, userns_fd) -> int:
    """A detached copy of the mount of `src` (and of those below it) that shows its files
    through the user namespace's mapping: what host root owns, container root owns, and what
    container root writes is host root's on disk."""
    fd = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, src.encode(), OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE)
    if fd < 0:
        _check(-1, f"clone the mount of {src}")
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr),
                            ctypes.sizeof(attr)), f"idmap the mount of {src}")
    except SetupError:
        os.close(fd)
        raise
    return fd


def idmapped_bind(src, target, userns_fd):
    fd = idmapped_clone(src, userns_fd)
    try:
        _check(libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
               f"mount {src} on {target}")
    finally:
        os.close(fd)


def bind(src, target, read_only, userns_fd=None):
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    idmapped = False
    if userns_fd is not None:
        try:
            idmapped_bind(src, target, userns_fd)
            idmapped = True
        except SetupError:
            pass  # device nodes, and filesystems that cannot idmap: bound as they are, their files nobody's
    if not idmapped:
        mount(src, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def setup_root(spec, userns_fd, for_fork: bool = False):
    """Mount the container's root and pivot into it. `for_fork`: a forked container's root
    (forkns.py), whose /proc, /sys and pivot are its init's, in the namespaces made for it."""
    root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if userns_fd is not None:
        # Layers, writable layers and volumes, remounted in place (in this mount namespace only)
        # through the mapping. What is created through such a mount must be by an ID the mapping
        # holds, which host root's 0 is not: from here this process makes files (mount points in
        # the root) as container root's host ID, keeping its capabilities. Overlayfs does its own
        # work (work files, copies up) with its mounter's credentials: these.
        for d in spec["idmapped"]:
            idmapped_bind(d, d, userns_fd)
        libc.setfsgid(spec["userns_base"])
        libc.setfsuid(spec["userns_base"])
        raise_effective_caps()  # a change of fsuid from 0 takes the file capabilities from the effective set
    # Relative lower paths keep the option string short enough for many layers.
    os.chdir(spec["layers_dir"])
    mount("overlay", root, "overlay", 0,
          f"lowerdir={':'.join(spec['lowers'])},upperdir={spec['upper']},workdir={spec['work']}")
    os.makedirs(f"{root}/proc", exist_ok=True)
    os.makedirs(f"{root}/sys", exist_ok=True)
    if not for_fork:
        mount_proc_and_sys(root)
    dev = f"{root}/dev"
    os.makedirs(dev, exist_ok=True)
    owner = "" if userns_fd is None else f",uid={spec['userns_base']},gid={spec['userns_base']}"
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=64k" + owner)
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
        bind(src, root + dst, read_only, userns_fd)
    for v in spec.get("volumes", ()):  # a volume: its version read-only below, the container's writes above
        os.makedirs(root + v["target"], exist_ok=True)
        mount("overlay", root + v["target"], "overlay", 0,
              f"lowerdir={v['lower']},upperdir={v['upper']},workdir={v['work']}")
        if v.get("read_only"):  # Volume.read_only(): writes there fail (EROFS); the container cannot remount
            mount(None, root + v["target"], None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    if for_fork:
        return
    # pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the new.
    os.chdir(root)
    if SYS_PIVOT_ROOT is not None:
        _check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
        _check(libc.umount2(b".", MNT_DETACH), "unmount the old root")
    else:
        mount(root, "/", None, 8192)  # MS_MOVE
        os.chroot(".")
    os.chdir("/")


def mount_proc_and_sys(root):
    """The container's /proc (of the PID namespace this process is in) and a read-only /sys."""
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for p in ("sys", "sysrq-trigger", "irq", "bus"):  # the kernel's knobs stay read-only
        target = f"{root}/proc/{p}"
        if os.path.exists(target):
            mount(target, target, None, MS_BIND | MS_REC)
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    try:
        mount("sysfs", f"{root}/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except SetupError:
        pass  # not allowed in every setup; programs cope without /sys


def drop_bounding_caps():
    """Drop what a container may not have from the bounding set: no process in it, nor any
    program it execs (setuid or with file capabilities), can get those back."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in KEEP_CAPS:
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def raise_effective_caps():
    header, data = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(libc.capget(ctypes.byref(header), data), "capget")
    for d in data:
        d.effective = d.permitted
    _check(libc.capset(ctypes.byref(header), data), "capset")


def enter_user_namespace(fd):
    """Become container root: the user namespace's 0, an unprivileged user of the host. Its
    other namespaces stay the host root's (made before), so it cannot mount in them, set their
    hostname or change their network, whatever capabilities it has in its own."""
    _check(libc.setns(fd, CLONE_NEWUSER), "join the containers' user namespace")
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a change of credentials clears it


def open_ports_to_container_root():
    """Its network namespace is host root's: let every user bind ports below 1024 and send
    pings there, as container root could without a user namespace (Docker does the same)."""
    for name, value in (("ip_unprivileged_port_start", "0"), ("ping_group_range", "0 2147483647")):
        with open(f"/proc/sys/net/ipv4/{name}", "w") as f:
            f.write(value)


def set_caps():
    """Reduce this process's effective and permitted capabilities to KEEP_CAPS and empty its
    inheritable and ambient ones (as Docker does since CVE-2022-24769: none pass to programs
    with file capabilities): what the container's processes show (`capsh --print`, CapEff in
    /proc/self/status) is what they can do."""
    mask = sum(1 << c for c in KEEP_CAPS)
    data = (_CapData * 2)()
    for i, word in enumerate((mask & 0xFFFFFFFF, mask >> 32)):
        data[i].effective = data[i].permitted = word
    _check(libc.capset(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data), "capset")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear the ambient capabilities")


# ---- seccomp: a filter with the semantics of Docker's default profile, as classic BPF.
# Denied calls answer EPERM (clone3 ENOSYS, so that libc falls back to clone, whose flags a
# classic filter can see: clone3 passes them in memory). Unlike Docker on new kernels, ptrace
# (and process_vm_readv/writev) is denied: a container may not trace, so no gdb or py-spy in it.
DENY = ("mount", "umount2", "pivot_root", "open_by_handle_at", "name_to_handle_at", "kexec_load", "kexec_file_load",
        "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms", "query_module",
        "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "ptrace", "process_vm_readv",
        "process_vm_writev", "setns", "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime",
        "adjtimex", "reboot", "acct", "quotactl", "quotactl_fd", "iopl", "ioperm", "userfaultfd", "lookup_dcookie",
        "nfsservctl", "uselib", "_sysctl", "vhangup", "fsopen", "fsconfig", "fsmount", "move_mount", "open_tree",
        "open_tree_attr", "fspick", "mount_setattr", "syslog", "io_uring_setup", "io_uring_enter",
        "io_uring_register")
# Numbers from the kernel's tables (arch/x86/entry/syscalls/syscall_64.tbl; asm-generic/unistd.h for arm64).
_COMMON = {"clone3": 435, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "move_mount": 429, "open_tree": 428,
           "fspick": 433, "mount_setattr": 442, "quotactl_fd": 443, "open_tree_attr": 467, "io_uring_setup": 425,
           "io_uring_enter": 426, "io_uring_register": 427}
SYSCALLS = {
    "x86_64": (0xC000003E, dict(_COMMON, mount=165, umount2=166, pivot_root=155, open_by_handle_at=304,
                                name_to_handle_at=303, kexec_load=246, kexec_file_load=320, init_module=175,
                                finit_module=313, delete_module=176, create_module=174, get_kernel_syms=177,
                                query_module=178, bpf=321, perf_event_open=298, keyctl=250, add_key=248,
                                request_key=249, ptrace=101, process_vm_readv=310, process_vm_writev=311, setns=308,
                                swapon=167, swapoff=168, settimeofday=164, clock_settime=227, clock_adjtime=305,
                                adjtimex=159, reboot=169, acct=163, quotactl=179, iopl=172, ioperm=173,
                                userfaultfd=323, lookup_dcookie=212, nfsservctl=180, uselib=134, _sysctl=156,
                                vhangup=153, syslog=103, clone=56, unshare=272, personality=135)),
    "aarch64": (0xC00000B7, dict(_COMMON, mount=40, umount2=39, pivot_root=41, open_by_handle_at=265,
                                 name_to_handle_at=264, kexec_load=104, kexec_file_load=294, init_module=105,
                                 finit_module=273, delete_module=106, bpf=280, perf_event_open=241, keyctl=219,
                                 add_key=217, request_key=218, ptrace=117, process_vm_readv=270,
                                 process_vm_writev=271, setns=268, swapon=224, swapoff=225, settimeofday=170,
                                 clock_settime=112, clock_adjtime=266, adjtimex=171, reboot=142, acct=89,
                                 quotactl=60, userfaultfd=282, lookup_dcookie=18, nfsservctl=42, vhangup=58,
                                 syslog=116, clone=220, unshare=97, personality=92)),
}
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers
NS_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NEWTIME = 0x80  # unshare's only: in clone it is part of the exit signal
PERSONALITY_OK = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)  # Linux, UNAME26, ADDR_NO_RANDOMIZE, both; query
_LD, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JSET|K, BPF_RET|K
RET_KILL, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
ARG0 = 16  # offsetof(struct seccomp_data, args[0]), its low 32 bits on a little-endian machine


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_program(machine: str, allow: frozenset[str] = frozenset()) -> list[tuple[int, int, int, int]]:
    """The filter for this machine, as (code, jt, jf, k) instructions; `allow`: calls of DENY it
    lets through (a warm parent's setns, forkns.py)."""
    audit_arch, nr = SYSCALLS[machine]
    prog: list[tuple] = []  # jump targets as label names until the end
    labels: dict[str, int] = {}

    def ins(code, k, jt=0, jf=0):
        prog.append((code, jt, jf, k))

    def label(name):
        labels[name] = len(prog)

    ins(_LD, 4)  # seccomp_data.arch: a call through another ABI (i386's int 0x80) has other numbers
    ins(_JEQ, audit_arch, jt=1)
    ins(_RET, RET_KILL)
    ins(_LD, 0)  # seccomp_data.nr
    if machine == "x86_64":
        ins(_JSET, X32_SYSCALL_BIT, jt="eperm")
    for name in DENY:
        if name in nr and name not in allow:
            ins(_JEQ, nr[name], jt="eperm")
    ins(_JEQ, nr["clone3"], jt="enosys")
    ins(_JEQ, nr["clone"], jt="clone")
    ins(_JEQ, nr["unshare"], jt="unshare")
    ins(_JEQ, nr["personality"], jt="personality")
    ins(_RET, RET_ALLOW)
    label("clone")
    ins(_LD, ARG0)
    ins(_JSET, NS_FLAGS, jt="eperm", jf="allow")
    label("unshare")
    ins(_LD, ARG0)
    ins(_JSET, NS_FLAGS | CLONE_NEWTIME, jt="eperm", jf="allow")
    label("personality")
    ins(_LD, ARG0)
    for value in PERSONALITY_OK:
        ins(_JEQ, value, jt="allow")
    label("eperm")
    ins(_RET, RET_ERRNO | errno.EPERM)
    label("enosys")
    ins(_RET, RET_ERRNO | errno.ENOSYS)
    label("allow")
    ins(_RET, RET_ALLOW)
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        jt, jf = (labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        assert 0 <= jt < 256 and 0 <= jf < 256, "a seccomp jump too far"
        out.append((code, jt, jf, k))
    return out


def install_seccomp(allow: frozenset[str] = frozenset()):
    """no_new_privs, then the filter: from here on, in this process and all it starts."""
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    if MACHINE not in SYSCALLS:
        return  # the worker says so when it starts (describe())
    prog = seccomp_program(MACHINE, allow)
    insns = (_SockFilter * len(prog))(*(_SockFilter(*i) for i in prog))
    fprog = _SockFprog(len(prog), insns)
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "install the seccomp filter")


def describe(userns: str) -> str:
    """What a container's processes are held by, for the worker to say when it starts
    (`userns`: what the worker's user namespace says of itself)."""
    if MACHINE in SYSCALLS:
        denied = sum(name in SYSCALLS[MACHINE][1] for name in DENY)
        seccomp = (f"seccomp on (as Docker's default profile, ptrace denied too: {denied} calls, namespace flags of "
                   "clone and unshare, foreign ABIs)")
    else:
        seccomp = f"seccomp off (no syscall table for {MACHINE})"
    caps = f"capabilities {len(KEEP_CAPS)} (Docker's default less MKNOD and NET_RAW)"
    return f"{seccomp}, no_new_privs on, {caps}, {userns}"


def confine():
    """The container's own process, right before exec: its capabilities, no_new_privs, seccomp."""
    set_caps()
    install_seccomp()


def run_command(spec):
    _confine_command()
    try:
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except FileNotFoundError:
        raise SetupError(f"the image has no {spec['argv'][0]} on its PATH ({spec['env'].get('PATH')}): Ember's "
                         "runtime needs Python 3.11 as python3 in the image") from None


_confine_command = confine  # a warm parent's is forkns.confine_parent (main sets it)


def _confine_warm_parent():
    """Imported before the pivot, after which the host's files (this module's directory) are gone."""
    global _confine_command
    try:
        from . import forkns
    except ImportError:  # run as a script, next to it
        import forkns
    _confine_command = forkns.confine_parent  # a container's confinement, but setns (worker/parents.py)


def restore(r) -> int:
    """Restore the container's process from its memory snapshot (worker/container_snapshots.py)
    with criu, run here, in the container's namespaces and root: it restores the process tree
    and its files (reopened by path in this root), not namespaces, and leaves cgroups as they
    are (the container's, which criu is in). The copy gets back what it was dumped with: its
    capabilities, bounding set, no_new_privs and seccomp filter. criu ends once it restored it,
    and the copy is this init's child then. Returns its PID."""
    os.makedirs(r["work_dir"], exist_ok=True)
    pidfile = os.path.join(r["work_dir"], "restored.pid")
    # The copy's descriptors (this process's, as numbered in `inherit`) go to criu under other
    # numbers: criu's own stdin must be one it may use (not the copy's).
    moved = {fd: 100 + i for i, (fd, _) in enumerate(r["inherit"])}
    inherit = [a for fd, resource in r["inherit"] for a in ("--inherit-fd", f"fd[{moved[fd]}]:{resource}")]
    where = ["-D", r["images"], "--work-dir", r["work_dir"], "-v1"]
    # Its memory comes lazily (userfaultfd): criu's lazy-pages daemon, a child of this init,
    # hands each page in as it is first touched and the rest in the background, so that the
    # copy runs before its hundreds of MB are in place; it ends once it handed them all over.
    socket_path = os.path.join(r["work_dir"], "lazy-pages.socket")
    lazy = _spawn([*r["criu"], "lazy-pages", *where, "-o", "lazy-pages.log"])
    while not os.path.exists(socket_path):  # listening: criu restore connects to it at once
        done, status = os.waitpid(lazy, os.WNOHANG)
        if done:
            raise SetupError(f"criu lazy-pages failed ({describe_status(status)}; its log: lazy-pages.log)")
        time.sleep(0.001)
    criu = os.fork()
    if criu == 0:
        try:
            for fd, to in moved.items():
                os.dup2(fd, to)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.execv(r["criu"][0], [*r["criu"], "restore", "--restore-detached", "--shell-job", "--lazy-pages",
                                    "--manage-cgroups=ignore", *where, "-o", "restore.log", "--pidfile", pidfile,
                                    *inherit])
        finally:
            os._exit(126)
    _, status = os.waitpid(criu, 0)
    # The daemon (root, unconfined, until it has handed every page over) takes no one else: its
    # socket's name goes before any process of the container runs (criu restore is connected).
    os.unlink(socket_path)
    if status != 0:
        raise SetupError(f"criu restore failed ({describe_status(status)}; its log: restore.log)")
    with open(pidfile) as f:
        return int(f.read())


def _spawn(argv) -> int:
    """Fork and exec argv with /dev/null as stdin; its PID."""
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.execv(argv[0], argv)
        finally:
            os._exit(126)
    return pid


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _forward_signals(pid):
    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # it ended (and was waited for) just now

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)


def child(spec, status_w):
    """PID 1 of the container: set up its root, start its command, reap, and tell how it ended.

    The command is not PID 1 itself, because the kernel ignores signals a PID 1 has no handler
    for: os.kill(os.getpid(), SIGKILL) in a function would do nothing, and orphans would stay
    zombies. This init cannot kill itself with the command's signal either (the same rule), so
    it writes the command's wait status to the launcher, which ends as the command did."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    restoring = spec.get("restore")
    if restoring:
        os.set_inheritable(restoring["status_fd"], False)  # the init's alone: not criu's, not the copy's
    if spec.get("first_pid"):
        # A memory snapshot's process (memory_snapshots.py) gets a PID that its restored copies
        # can have back in a new container, where criu's own process takes the low ones.
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:  # this process's (new) PID namespace's
            f.write(str(spec["first_pid"] - 1))
    userns_fd = os.open(spec["userns"], os.O_RDONLY | os.O_CLOEXEC) if spec.get("userns") else None
    setup_root(spec, userns_fd)
    socket.sethostname(spec.get("hostname", "ember"))
    if userns_fd is not None:
        enter_user_namespace(userns_fd)
        os.close(userns_fd)
    if not restoring:  # criu needs the full set to restore the copy (which gets its own, as dumped, back)
        drop_bounding_caps()  # after: joining a user namespace gives a full bounding set in it
    cwd = spec.get("cwd") or "/"
    os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)
    # Not dumpable: the container's processes cannot open /proc/1/exe (the host's python), /mem
    # or /root, whatever their capabilities. Set before the fork, so there is no moment when it
    # is; the command's exec makes it dumpable again.
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    agent = None
    if spec.get("agent_fd") is not None:  # the worker's socket for commands (serve_execs)
        agent = socket.socket(fileno=spec["agent_fd"])
        agent.set_inheritable(False)  # the container's processes never hold it
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes serve_execs, through its wakeup fd
    if restoring:
        pid = restore(restoring)
        drop_bounding_caps()
        os.write(restoring["status_fd"], b"R")
        os.close(restoring["status_fd"])
    else:
        pid = os.fork()
        if pid == 0:
            try:
                os.close(status_w)
                if spec.get("first_pid"):
                    os.setsid()  # criu dumps no process whose session began outside its PID namespace
                run_command(spec)
            except (SetupError, OSError) as e:
                print(f"ember sandbox: {e}", file=sys.stderr)
            os._exit(126)
    _forward_signals(pid)
    if agent is not None:
        # Held as the container's processes are from here (it needs no more than they have to
        # wait, reap and fork): the commands it forks are, without a confinement of their own
        # (a millisecond and a half of ctypes in each).
        confine()
        status = serve_execs(agent, pid)
    else:
        while True:
            done, status = os.waitpid(-1, 0)
            if done == pid:
                break
    os.write(status_w, str(status).encode())
    os._exit(0)  # the kernel ends whatever else still runs in the container


def main():
    with open(sys.argv[1]) as f:  # a file only root reads (images.sandbox_argv): taken, then removed
        spec = json.load(f)
    os.unlink(sys.argv[1])
    if spec.get("warm_parent"):
        _confine_warm_parent()
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
        if spec.get("new_net"):
            loopback_up()  # a network of its own has only loopback, down until brought up (as `ip link set lo up`)
        if spec.get("userns") and (spec.get("netns") or spec.get("new_net")):
            open_ports_to_container_root()
    except (SetupError, OSError) as e:
        print(f"ember sandbox: {e}", file=sys.stderr)
        os._exit(126)
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(status_r)
            child(spec, status_w)
        except (SetupError, OSError) as e:
            print(f"ember sandbox: {e}", file=sys.stderr)
        os._exit(126)
    os.close(status_w)
    if spec.get("agent_fd") is not None:
        os.close(spec["agent_fd"])  # the container's init holds it: its end is the init's
    _forward_signals(pid)
    _, status = os.waitpid(pid, 0)
    told = os.read(status_r, 64)
    if told:  # the command's own end, as its init saw it; else the init's (killed, or setup failed)
        status = int(told)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status))  # not reached after a signal


# ---- exec: commands in a running container (`ember container exec`, sandboxes' exec; worker/agent.py)
#
# The container's init is its exec agent: already in its namespaces, root, cgroups and user
# namespace, and confined as the container's processes (capabilities, no_new_privs, seccomp),
# it forks each command the worker asks for on a socket it inherits (a SOCK_SEQPACKET pair: a
# message per request, the command's stdio passed along as SCM_RIGHTS), which execs. No process
# starts on the host for a command, and the init, which waits anyway, costs nothing more.
#
# Requests (JSON): {"id": N, "argv", "env", "cwd", "tty"} with 3 descriptors (stdin, stdout,
# stderr) starts a command; {"kill": N} kills its session (and forgets it). Answers:
# {"exited": N, "status": WAIT_STATUS} once the command ended (the kernel's wait status).

# Bytes of a request at most (argv and env as JSON: twice what execve takes); the worker refuses more.
MAX_REQUEST = 4 << 20


def serve_execs(sock, main_pid) -> int:
    """Run the worker's commands until the container's command (main_pid) ends; its wait status."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # SIGCHLD (its handler is set before main_pid's fork) writes here
    running: dict[int, int] = {}  # command's PID -> its request's id, until it is reaped
    sessions: dict[int, int] = {}  # request id -> PID (its session's), until the worker says kill
    while True:
        readable = select.select([wake_r] + ([sock] if sock is not None else []), [], [])[0]
        if wake_r in readable:
            os.read(wake_r, 4096)
        while True:
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                done = 0
            if done == 0:
                break
            if done == main_pid:
                return status  # the init ends: the kernel kills every command still running
            n = running.pop(done, None)
            if n is not None and sock is not None:
                _answer(sock, {"exited": n, "status": status})
        if sock is not None and sock in readable:
            try:
                data, ancdata, _, _ = sock.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(3 * 4), socket.MSG_CMSG_CLOEXEC)
            except OSError:
                data, ancdata = b"", []
            fds = [fd for level, kind, raw in ancdata if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                   for fd in array.array("i", raw[:len(raw) - len(raw) % 4])]
            if not data:  # the worker is gone: the container runs on, without commands
                for fd in fds:
                    os.close(fd)
                sock.close()
                sock = None
                continue
            try:
                req = json.loads(data)
                if "kill" in req:
                    pid = sessions.pop(req["kill"], None)
                    if pid is not None:
                        _kill_session(pid)
                elif len(fds) == 3:
                    try:
                        pid = os.fork()
                    except OSError as e:  # at the container's pids limit, say: the command fails, not the init
                        os.write(fds[2], f"ember exec: cannot start {req['argv'][0]}: {e.strerror}\n".encode())
                        _answer(sock, {"exited": req["id"], "status": 126 << 8})
                        continue
                    if pid == 0:
                        try:
                            signal.set_wakeup_fd(-1)
                            sock.close()
                            for i, fd in enumerate(fds):
                                os.dup2(fd, i)
                            if req.get("port"):  # a tunnel: no command, this child relays (confined as the init)
                                os._exit(relay_port(req["port"]))
                            _exec_command(req, confined=False)  # confined as this process; execs, or exits
                        finally:
                            os._exit(126)
                    running[pid] = req["id"]
                    sessions[req["id"]] = pid
            except (ValueError, KeyError, TypeError, OSError) as e:  # the init, PID 1, goes on whatever comes
                print(f"ember exec agent: a request it cannot serve: {e!r}", file=sys.stderr)
            finally:
                for fd in fds:
                    os.close(fd)


def _kill_session(sid):
    """SIGKILL every process of the command's session (the container's /proc is this one's): what
    it left running, in process groups of their own too."""
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                if int(f.read().rpartition(b")")[2].split()[3]) == sid:
                    os.kill(int(name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue  # not a process, or it ended meanwhile


def loopback_up():
    """Bring up this network namespace's loopback (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP):
    the container's own processes, and its tunnels (relay_port), talk over it."""
    ifreq = bytearray(struct.pack("16sH22x", b"lo", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCGIFFLAGS, ifreq)
        flags = struct.unpack_from("H", ifreq, 16)[0]
        struct.pack_into("H", ifreq, 16, flags | IFF_UP)
        fcntl.ioctl(s, SIOCSIFFLAGS, ifreq)


def relay_port(port: int, stdin: int = 0, stdout: int = 1, stderr: int = 2, stop: int | None = None) -> int:
    """A sandbox's tunnel (server/tunnels.py): relay stdin to TCP port `port` on this network's
    loopback and what it answers to stdout, until it closes (or `stop` is readable); the exit
    code. It runs inside the container's network namespace (forked by its init), so it reaches
    what the sandbox listens on, and nothing the sandbox could not reach itself."""
    # A plain connect, not create_connection: its getaddrinfo imports the idna codec, which the
    # host's library (the worker's Python, gone after the pivot) may be the only one to have.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        os.write(stderr, f"nothing answers on port {port} in the sandbox ({e.strerror or e}): is its server "
                         "listening (on 0.0.0.0 or 127.0.0.1)?".encode())
        return 1
    with sock:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        inputs = [stdin, sock] + ([stop] if stop is not None else [])
        while True:
            for r in select.select(inputs, [], [])[0]:
                if r == stop:
                    return 137
                if r == stdin:
                    data = os.read(stdin, 256 << 10)
                    if data:
                        sock.sendall(data)
                    else:  # the client's side is done sending: so is ours (the server may still answer)
                        inputs.remove(stdin)
                        try:
                            sock.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                else:
                    try:
                        data = sock.recv(256 << 10)
                    except OSError:
                        data = b""
                    if not data:  # the server closed: the tunnel's connection ends
                        return 0
                    view = memoryview(data)
                    while view:
                        view = view[os.write(stdout, view):]


def _answer(sock, message):
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass  # the worker is gone


def _exec_command(spec, confined: bool):
    """Become the command: in a session of its own with its terminal, in its directory; a command
    that is not there exits 127 as a shell's does, saying so on stderr."""
    argv, cwd = spec["argv"], spec.get("cwd") or "/"
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()  # a group of its own, which the worker kills as one
        if spec.get("tty"):
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        os.chdir(cwd)
    except OSError as e:
        print(f"ember exec: cannot start {argv[0]} in {cwd}: {e}", file=sys.stderr)
        os._exit(126)
    if confined:
        confine()
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except FileNotFoundError:
        print(f"ember exec: {argv[0]}: command not found", file=sys.stderr)
        os._exit(127)
    except OSError as e:
        print(f"ember exec: {argv[0]}: {e.strerror}", file=sys.stderr)
        os._exit(126)


def probe_idmapped_mounts():
    """argv: a user namespace's path and directories. Exits 0 if each can be idmapped through
    it, else 1 saying which cannot (userns.py asks, when the worker starts)."""
    fd = os.open(sys.argv[1], os.O_RDONLY)
    try:
        for d in sys.argv[2:]:
            os.close(idmapped_clone(d, fd))  # never attached, so gone when closed
    except SetupError as e:
        sys.exit(f"no idmapped mounts here ({e})")


if __name__ == "__main__":
    main()
