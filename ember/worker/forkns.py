"""A forked container's namespaces, made for it by the worker and joined by the fork itself.

Run as `python -S -E forkns.py SPEC_JSON` by the worker (as root), next to sandbox.py, whose
helpers it uses. It makes one forked container's namespaces (worker/parents.py says why they
are made this way) and prints the host PID of their init, whose /proc/PID/ns/* the worker opens
and hands to the warm parent with the fork request; the parent's child calls join(), which
leaves it in them, confined as any container's process.

  the maker (host root): joins the parent's PID namespace for its children (a PID namespace
    can only be joined from its parent's), unshares a mount namespace of its own and mounts the
    fork's root there as a container's is mounted (sandbox.setup_root: the image's layers and a
    fresh writable layer, idmapped, /dev, binds, volumes); then becomes container root (the
    worker's user namespace, userns.py) and forks:
  the owner: unshares a user namespace (owned by container root, mapped one to one onto the
    worker's, written by the maker: only a process with CAP_SETUID in the worker's namespace
    may write a mapping of more than its own ID), then the mount, PID, network, IPC and UTS
    namespaces, all owned by that user namespace, and forks:
  the init: PID 1 of the fork's PID namespace. It mounts the fork's /proc and /sys (of its own
    PID and network namespaces), binds the root onto itself (the copy from the maker's mount namespace is locked:
    pivot_root refuses it), pivots, sets the hostname and brings up loopback; then it is made
    not dumpable (the parent runs as the same host user, and could otherwise write its memory
    through /proc), confines itself as a container's processes are and reaps orphans until the
    worker kills it, which ends the fork's namespaces.

SPEC keys: a container's (sandbox.py: layers_dir, lowers, upper, work, root, binds, volumes,
devices, hostname; userns, userns_base and idmapped, the worker's user namespace being needed
here), parent_pid (a process of the warm parent's PID namespace: its host PID); cgroups (the
fork's, joined by the maker first) and agent_fd (the init's end of the worker's exec socket,
inherited: the init serves the worker's commands in the fork, as a container's init does).
"""

import json
import os
import signal
import socket
import sys

try:
    from . import sandbox as sb
except ImportError:  # run as a script, next to it
    import sandbox as sb

COUNT = 65536  # IDs of the worker's user namespace (userns.py), mapped one to one into a fork's
# In this order: the user namespace first (it gives the capabilities over the others), the mount
# namespace before the PID one (which takes effect for the next child only).
NAMESPACES = (("user", sb.CLONE_NEWUSER), ("mnt", sb.CLONE_NEWNS), ("pid", sb.CLONE_NEWPID),
              ("net", sb.CLONE_NEWNET), ("ipc", sb.CLONE_NEWIPC), ("uts", sb.CLONE_NEWUTS))
PARENT_ALLOWS = frozenset({"setns"})  # what a warm parent's seccomp filter lets through of DENY


def confine_parent():
    """A warm parent's own confinement: a container's, except that it may setns (into the
    namespaces the worker hands it for its forks: it can reach no others, see parents.py)."""
    sb.drop_bounding_caps()
    sb.set_caps()
    sb.install_seccomp(PARENT_ALLOWS)


def open_namespaces(init_pid: int) -> dict[str, int]:
    """The worker's side: the fork's namespaces, by the host PID of their init."""
    return {name: os.open(f"/proc/{init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name, _ in NAMESPACES}


def join(fds: dict[str, int], go: int | None = None):
    """In the warm parent's child: enter the fork's namespaces, then fork into its PID
    namespace. Returns in that grandchild, confined as a container's process (its filter
    stacks on the parent's, so it may not setns any more); the child in between waits for it
    and ends as it does. With `go` (a pipe's end), it waits for a byte there before that fork:
    the worker moves it into the fork's cgroups meanwhile, so that all that runs in the fork's
    PID namespace is held by the fork's limits from its first instruction."""
    for name, flag in NAMESPACES:
        sb._check(sb.libc.setns(fds[name], flag), f"join the fork's {name} namespace")
        os.close(fds[name])
    if go is not None:
        if os.read(go, 1) != b"1":
            os._exit(1)  # the worker gave up on it
        os.close(go)
    pid = os.fork()
    if pid:
        status = os.waitpid(pid, 0)[1]
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        os._exit(os.waitstatus_to_exitcode(status))
    os.chdir("/")
    sb.libc.prctl(sb.PR_SET_DUMPABLE, 0, 0, 0, 0)
    sb.drop_bounding_caps()
    sb.confine()


def _init(spec, ready_w):
    """PID 1 of the fork; it starts in its root (the maker's working directory), which it may
    not reach by path: the host's directories above it are not container root's to search."""
    sb.libc.prctl(sb.PR_SET_PDEATHSIG, signal.SIGKILL)
    sb.loopback_up()
    sb.mount(".", ".", None, sb.MS_BIND | sb.MS_REC)
    # Into the new mount on top: through the parent directory (the ct directory, which any user
    # may search), as a name's lookup ends on the topmost mount of it and "." does not move.
    os.chdir("..")
    os.chdir(os.path.basename(spec["root"]))
    sb.mount_proc_and_sys(".")  # of its own PID and network namespaces
    sb._check(sb.libc.syscall(sb.SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    sb._check(sb.libc.umount2(b".", sb.MNT_DETACH), "unmount the old root")
    os.chdir("/")
    socket.sethostname(spec.get("hostname", "ember"))
    sb.libc.prctl(sb.PR_SET_DUMPABLE, 0, 0, 0, 0)
    sb.drop_bounding_caps()
    agent = None
    if spec.get("agent_fd") is not None:  # the worker's socket for commands in the fork (sandbox.serve_execs)
        agent = socket.socket(fileno=spec["agent_fd"])
        agent.set_inheritable(False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes serve_execs, through its wakeup fd
    sb.confine()
    if agent is not None:
        os.write(ready_w, b"1")
        os.close(ready_w)
        sb.serve_execs(agent, 0)  # until the worker kills it: the fork's process is not its child
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    os.write(ready_w, b"1")
    os.close(ready_w)
    while True:  # PID 1: what the fork leaves behind is reparented here
        signal.sigwait([signal.SIGCHLD])
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def _owner(mapped_r, unshared_w, ready_w, spec):
    sb.libc.prctl(sb.PR_SET_PDEATHSIG, signal.SIGKILL)
    sb._check(sb.libc.unshare(sb.CLONE_NEWUSER), "unshare the fork's user namespace")
    os.write(unshared_w, b"1")
    if os.read(mapped_r, 1) != b"1":
        os._exit(1)
    sb._check(sb.libc.unshare(sb.CLONE_NEWNS | sb.CLONE_NEWPID | sb.CLONE_NEWNET | sb.CLONE_NEWIPC
                              | sb.CLONE_NEWUTS), "unshare the fork's namespaces")
    sb.libc.prctl(sb.PR_SET_DUMPABLE, 0, 0, 0, 0)
    pid = os.fork()
    if pid == 0:
        try:
            _init(spec, ready_w)
        except (sb.SetupError, OSError) as e:
            print(f"ember forkns: {e}", file=sys.stderr)
        os._exit(126)
    os.close(ready_w)
    _close_agent(spec)  # the init's alone
    os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) & 0xFF)


def _close_agent(spec):
    if spec.get("agent_fd") is not None:
        os.close(spec["agent_fd"])


def make(spec):
    """The maker: prints the fork's init's host PID once its namespaces are ready, then waits."""
    sb.libc.prctl(sb.PR_SET_PDEATHSIG, signal.SIGKILL)
    for cgroup in spec.get("cgroups", ()):  # the fork's: its init, and the commands it forks, are held by them
        with open(f"{cgroup}/cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
    with open(f"/proc/{spec['parent_pid']}/ns/pid", "rb") as f:
        sb._check(sb.libc.setns(f.fileno(), sb.CLONE_NEWPID), "join the warm parent's PID namespace")
    sb._check(sb.libc.unshare(sb.CLONE_NEWNS), "unshare a mount namespace")
    root = spec["root"]
    userns = os.open(spec["userns"], os.O_RDONLY | os.O_CLOEXEC)
    sb.setup_root(spec, userns, for_fork=True)  # as a container's root is made, less what is the init's
    os.chdir(root)  # where the init starts (_init)
    sb.enter_user_namespace(userns)
    os.close(userns)
    # Dumpable, so that this process (container root now) may write the owner's ID maps.
    sb.libc.prctl(sb.PR_SET_DUMPABLE, 1, 0, 0, 0)
    mapped_r, mapped_w = os.pipe()
    unshared_r, unshared_w = os.pipe()
    ready_r, ready_w = os.pipe()
    owner = os.fork()
    if owner == 0:
        try:
            _owner(mapped_r, unshared_w, ready_w, spec)
        except (sb.SetupError, OSError) as e:
            print(f"ember forkns: {e}", file=sys.stderr)
        os._exit(126)
    for fd in (mapped_r, unshared_w, ready_w):
        os.close(fd)
    _close_agent(spec)
    if os.read(unshared_r, 1) == b"1":
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{owner}/{name}", "w") as f:
                f.write(f"0 0 {COUNT}\n")
        os.write(mapped_w, b"1")
        if os.read(ready_r, 1) == b"1":
            with open(f"/proc/{owner}/task/{owner}/children") as f:
                print(f.read().split()[0], flush=True)
    os.close(mapped_w)
    status = os.waitpid(owner, 0)[1]
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        make(json.load(f))
