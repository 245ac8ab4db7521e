"""Attacks on the container's walls, for tests/test_escape.py: each is tried from inside a real
container (a function's, a build step's, or a sandbox's command: this file is run there too)
and its outcome recorded.

`attempts` uses the standard library only: it is shipped by value into build steps, where
Ember's runtime is not imported. An outcome is "ok" when the attempt worked, else the errno
name (or what else stopped it).
"""

import ctypes
import errno
import hashlib
import json
import os
import platform
import socket
import subprocess
import threading
import time

import ember

app = ember.App("escape-tests")
base = ember.Image.debian_slim()

CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x00020000, 17
PTRACE_TRACEME, PTRACE_ATTACH = 0, 16
# The calls ctypes reaches only by number.
NR = {"x86_64": {"init_module": 175, "finit_module": 313, "open_by_handle_at": 304, "name_to_handle_at": 303,
                 "clone": 56, "fsopen": 430, "bpf": 321, "kexec_load": 246, "keyctl": 250, "setns": 308},
      "aarch64": {"init_module": 105, "finit_module": 273, "open_by_handle_at": 265, "name_to_handle_at": 264,
                  "clone": 220, "fsopen": 430, "bpf": 280, "kexec_load": 104, "keyctl": 219, "setns": 268}}


def attempts(host_paths: list[str]) -> dict[str, str]:
    libc = ctypes.CDLL(None, use_errno=True)
    nr = NR[platform.machine()]
    out = {}

    def outcome(ret):
        return "ok" if ret >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

    def attempt(name, fn):
        try:
            fn()
            out[name] = out.get(name) or "ok"
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e))
        except subprocess.CalledProcessError as e:
            out[name] = f"exit {e.returncode}"

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    for p in host_paths:  # the host's files, by their paths there
        attempt(f"read {p}", lambda p=p: read(p))
    out["shadow sha256"] = hashlib.sha256(read("/etc/shadow")).hexdigest()  # the image's own, not the host's

    # By handle (the "shocker" escape): inode 2, the root of whatever filesystem a bind mount
    # from the host (the runtime's directory) lives on.
    class FileHandle(ctypes.Structure):
        _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 8)]

    mount_fd = os.open("/ember/lib", os.O_RDONLY)
    handle = FileHandle(8, 1, (ctypes.c_ubyte * 8)(2, 0, 0, 0, 0, 0, 0, 0))  # FILEID_INO32_GEN
    fd = libc.syscall(nr["open_by_handle_at"], mount_fd, ctypes.byref(handle), os.O_RDONLY)
    out["open_by_handle_at"] = outcome(fd)
    mount_id = ctypes.c_int()
    big = FileHandle(8)
    out["name_to_handle_at"] = outcome(libc.syscall(nr["name_to_handle_at"], -100, b"/ember/lib", ctypes.byref(big),
                                                    ctypes.byref(mount_id), 0))
    os.close(mount_fd)

    attempt("mknod a char device", lambda: os.mknod("/tmp/mem", 0o600 | 0o020000, os.makedev(1, 1)))
    attempt("mknod a block device", lambda: os.mknod("/tmp/sda", 0o600 | 0o060000, os.makedev(8, 0)))
    os.makedirs("/mnt/try", exist_ok=True)
    out["mount tmpfs"] = outcome(libc.mount(b"none", b"/mnt/try", b"tmpfs", 0, None))
    out["mount proc"] = outcome(libc.mount(b"proc", b"/mnt/try", b"proc", 0, None))
    out["mount cgroup"] = outcome(libc.mount(b"cgroup", b"/mnt/try", b"cgroup", 0, b"memory"))
    out["remount / read-write"] = outcome(libc.mount(None, b"/proc/sys", None, 32 | 4096, None))  # REMOUNT|BIND
    out["fsopen tmpfs"] = outcome(libc.syscall(nr["fsopen"], b"tmpfs", 0))

    def raise_cgroup_limit():
        for ctl in ("memory/memory.limit_in_bytes", "memory.max", "pids/pids.max"):
            try:
                with open(f"/sys/fs/cgroup/{ctl}", "w") as f:
                    f.write("max")
                return
            except FileNotFoundError:
                continue
        raise FileNotFoundError(errno.ENOENT, "no cgroup file")
    attempt("write a cgroup limit", raise_cgroup_limit)

    # Trace a process of its own (root may, where ptrace is allowed), and the container's init.
    child = subprocess.Popen(["sleep", "30"])
    out["ptrace attach a child"] = outcome(libc.ptrace(PTRACE_ATTACH, child.pid, None, None))
    out["ptrace attach pid 1"] = outcome(libc.ptrace(PTRACE_ATTACH, 1, None, None))
    child.kill()
    child.wait()
    attempt("open /proc/1/exe", lambda: read("/proc/1/exe"))  # the host's python, were it allowed

    ko = b"\x7fELF" + bytes(60)
    out["init_module"] = outcome(libc.syscall(nr["init_module"], ko, len(ko), b""))
    with open("/tmp/x.ko", "wb") as f:
        f.write(ko)
    ko_fd = os.open("/tmp/x.ko", os.O_RDONLY)
    out["finit_module"] = outcome(libc.syscall(nr["finit_module"], ko_fd, b"", 0))
    os.close(ko_fd)
    out["kexec_load"] = outcome(libc.syscall(nr["kexec_load"], 0, 0, None, 0))
    out["bpf"] = outcome(libc.syscall(nr["bpf"], 0, None, 0))  # BPF_MAP_CREATE
    out["keyctl"] = outcome(libc.syscall(nr["keyctl"], 0, -4, 0))  # KEYCTL_GET_KEYRING_ID of the session's
    net_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    out["setns"] = outcome(libc.syscall(nr["setns"], net_fd, 0))
    os.close(net_fd)

    # A user namespace, where a process is root with every capability again.
    out["unshare(CLONE_NEWUSER)"] = outcome(libc.unshare(CLONE_NEWUSER))
    out["unshare(CLONE_NEWNS)"] = outcome(libc.unshare(CLONE_NEWNS))
    pid = libc.syscall(nr["clone"], CLONE_NEWUSER | SIGCHLD, None, None, None, None)
    if pid == 0:
        os._exit(0)  # the clone worked: this is its child
    if pid > 0:
        os.waitpid(pid, 0)
    out["clone(CLONE_NEWUSER)"] = outcome(pid)
    attempt("unshare -U -r", lambda: subprocess.run(["unshare", "-U", "-r", "true"], check=True,
                                                   stderr=subprocess.DEVNULL))

    with open("/proc/self/uid_map") as f:
        out["uid_map"] = f.read().split()  # [first ID inside, first ID on the host, count] per range
    with open("/proc/self/status") as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    out["status"] = {k: status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs",
                                                     "Seccomp")}
    return out


def ordinary_work() -> dict:
    """What an ordinary function does: files in its root (and their owners), subprocesses,
    threads, a port below 1024."""
    with open("/usr/local/share/note.txt", "w") as f:
        f.write("mine")
    with open("/usr/local/share/note.txt") as f:
        note = f.read()
    os.chown("/usr/local/share/note.txt", 1000, 1000)
    owners = {p: os.stat(p).st_uid for p in ("/etc/shadow", "/usr/local/share/note.txt", "/ember/lib")}
    with socket.socket() as s:
        s.bind(("0.0.0.0", 80))
    sub = subprocess.run(["sh", "-c", "echo $$ from a shell; ls / >/dev/null"], capture_output=True, text=True,
                         check=True).stdout
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"note": note, "owners": owners, "sub": sub.split()[1:], "threads": sorted(results),
            "sleep": time.sleep(0) is None}


@app.function(image=base)
def attack(host_paths):
    return attempts(host_paths)


@app.function(image=base)
def ordinary():
    return ordinary_work()


@app.function(image=base)
def kill_myself(sig):
    os.kill(os.getpid(), sig)
    time.sleep(30)  # not reached: the signal ends the container
    return "survived"


def record_attempts(host_paths):
    """A build step: what `attempts` met, kept in the layer for a function to read (and a file
    it gives to another user)."""
    with open("/escape.json", "w") as f:
        json.dump(attempts(host_paths), f)
    with open("/owned-by-1000", "w") as f:
        f.write("theirs")
    os.chown("/owned-by-1000", 1000, 1000)


def read_record():
    with open("/escape.json") as f:
        return json.load(f)


IMPORTED = os.urandom(8).hex()  # made by the process that imported this module: one parent's forks share it


@app.function(image=base, single_use_containers=True)
def attack_as_a_cold_start(host_paths):
    """attack's attempts in a container that is a cold start each time: forked from the module's
    warm parent once the worker keeps one (tests/test_container_forks.py)."""
    return {"imported": IMPORTED, **attempts(host_paths)}
