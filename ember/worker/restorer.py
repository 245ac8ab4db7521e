"""Restore one copy of a memory snapshot: run as `python -S -E restorer.py SPEC_JSON` by the worker.

Standard library only. A restored process keeps the PID it was checkpointed with, so each copy
gets a PID namespace of its own (two copies, or a copy and whatever took that PID since, would
collide): this process unshares one with a mount namespace, and forks its init. The init mounts
its own /proc (criu reads it, and must see its own namespace's PIDs) and a tmpfs on /run (where
criu keeps its kernel probe between runs: a restore 20 ms quicker), runs `criu restore
--restore-detached --lazy-pages` (with criu's lazy-pages daemon), says so on the status pipe,
and waits: the restored process is its child then, and this process ends as it did. Signals
(SIGTERM) are passed on to it.

SPEC keys: criu (its argv), images, work_dir, log, kdat (where the worker keeps criu's kernel
probe), inherit ([[fd, resource]]: criu's
--inherit-fd, the restored process's pipes replaced by these descriptors), status_fd, parent_pid.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_REC, MS_PRIVATE = 16384, 1 << 18
PR_SET_PDEATHSIG = 1
KDAT = "/run/criu.kdat"
libc = ctypes.CDLL(None, use_errno=True)


def _mount(src, target, fstype, flags=0):
    if libc.mount(src.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags), None) != 0:
        sys.exit(f"ember restorer: mount {fstype or src} on {target}: {os.strerror(ctypes.get_errno())}")


def _copy(src, dst):
    try:
        with open(src, "rb") as f:
            data = f.read()
        with open(dst + ".tmp", "wb") as f:
            f.write(data)
        os.rename(dst + ".tmp", dst)
    except FileNotFoundError:
        pass  # none yet: criu probes the kernel this time


def _forward(pid):
    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)


def init(spec, status_w):
    """PID 1 of the copy's namespace: restore it, then wait for it; returns its wait status."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc")
    _mount("tmpfs", "/run", "tmpfs")
    # criu probes the kernel as it starts (20 ms), and keeps what it found in /run/criu.kdat, on a
    # tmpfs only: each copy's /run is new, so the worker keeps the file (per boot) for the next.
    _copy(spec["kdat"], KDAT)
    pidfile = "/run/restored.pid"
    where = ["-D", spec["images"], "--work-dir", spec["work_dir"], "-v1"]
    # Its memory comes lazily (userfaultfd): a daemon of this namespace hands each page in as it
    # is first touched, and the rest in the background, so that the copy runs before its hundreds
    # of MB are in place. The daemon ends once it handed all of them over (init reaps it).
    socket = os.path.join(spec["work_dir"], "lazy-pages.socket")
    lazy = subprocess.Popen([*spec["criu"], "lazy-pages", *where, "-o", spec["log"] + ".lazy"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(socket):  # listening: criu restore connects to it at once
        if lazy.poll() is not None:
            sys.exit(f"ember restorer: criu lazy-pages exited with code {lazy.returncode} "
                     f"(its log: {spec['log']}.lazy)")
        time.sleep(0.001)
    inherit = [a for fd, resource in spec["inherit"] for a in ("--inherit-fd", f"fd[{fd}]:{resource}")]
    done = subprocess.run([*spec["criu"], "restore", "--restore-detached", "--shell-job", "--lazy-pages", *where,
                           "-o", spec["log"], "--pidfile", pidfile, *inherit],
                          pass_fds=[fd for fd, _ in spec["inherit"]], stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"ember restorer: criu restore exited with code {done.returncode} (its log: {spec['log']})")
    for fd, _ in spec["inherit"]:
        os.close(fd)
    with open(pidfile) as f:
        pid = int(f.read())
    _forward(pid)
    if not os.path.exists(spec["kdat"]):
        _copy(KDAT, spec["kdat"])
    os.write(spec["status_fd"], b"R%d" % pid)  # restored (its PID here): the worker tells it who it is
    os.close(spec["status_fd"])
    while True:  # orphans of the restored process are reparented here, and reaped
        done_pid, status = os.waitpid(-1, 0)
        if done_pid == pid:
            os.write(status_w, str(status).encode())
            os._exit(0)  # the kernel ends whatever else still runs in the namespace


def main():
    spec = json.loads(sys.argv[1])
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != spec["parent_pid"]:
        os._exit(1)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWPID) != 0:
        sys.exit(f"ember restorer: unshare: {os.strerror(ctypes.get_errno())}")
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(status_r)
        init(spec, status_w)
    os.close(status_w)
    os.close(spec["status_fd"])
    for fd, _ in spec["inherit"]:
        os.close(fd)
    _forward(pid)
    _, status = os.waitpid(pid, 0)
    told = os.read(status_r, 64)
    if not told:  # the restore failed (init said why on stderr), or init was killed
        os._exit(os.waitstatus_to_exitcode(status) or 1)
    status = int(told)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
