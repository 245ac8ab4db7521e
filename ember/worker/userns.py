"""The user namespace containers run in: container root is an unprivileged user of the host.

IDs 0 to 65535 of every container (and build step) of this worker are host IDs BASE to
BASE + 65535, so a process that got out of its container's other namespaces would hold no
capability over the host and own none of its files. Files keep their ordinary owners on disk
(layers, writable layers, volumes, binds): the sandbox mounts them into the container through
idmapped mounts of this namespace, which show host root's files as container root's and store
container root's writes as host root's. All of a worker's containers share the one mapping, as
with Docker's userns-remap: they are kept apart by their other namespaces.

The worker makes the namespace once and holds it open; the sandbox joins it by the worker's
file descriptor (/proc/WORKER/fd/N). Where the kernel or a filesystem cannot do this (no user
namespaces, no idmapped mounts of the layers' filesystem) containers run without one, as the
worker says when it starts.
"""

import os
import pathlib
import subprocess
import sys

from .images import SANDBOX_DIR

BASE = int(os.environ.get("EMBER_USERNS_BASE", str(1 << 30)))  # far above the IDs people and useradd hand out
COUNT = 65536

# Blocks until its stdin closes, in a namespace of its own for the worker to map and keep.
_HOLDER = ("import ctypes, os, sys\n"
           "if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:\n"
           "    sys.exit(os.strerror(ctypes.get_errno()))\n"
           "os.write(1, b'1'); os.read(0, 1)\n")
_PROBE = [sys.executable, "-S", "-E", "-c",
          f"import sys; sys.path.append({SANDBOX_DIR!r}); import sandbox; sandbox.probe_idmapped_mounts()"]


class UserNamespace:
    def __init__(self, fd: int | None, why_not: str = ""):
        self.fd = fd
        self.why_not = why_not

    @classmethod
    def make(cls, dirs: list[pathlib.Path]) -> "UserNamespace":
        """The namespace, if the kernel can map it and idmap `dirs` (the filesystems of the
        layers and of the worker's data) through it; else one that is off, saying why."""
        try:
            fd = _new_namespace()
        except OSError as e:
            return cls(None, f"the kernel gives no user namespace here ({e})")
        ns = cls(fd)
        probe = subprocess.run([*_PROBE, ns.path, *map(str, dirs)], capture_output=True, text=True)
        if probe.returncode != 0:
            os.close(fd)
            return cls(None, probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "the probe failed")
        return ns

    @property
    def path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def spec(self, idmapped: list[pathlib.Path | str]) -> dict:
        """The sandbox spec's keys for a container whose files live under `idmapped`."""
        if self.fd is None:
            return {}
        idmapped = [pathlib.Path(d) for d in idmapped]
        # One mount each, outermost only: a mount already idmapped cannot be idmapped again.
        outermost = [d for d in idmapped if not any(d != o and d.is_relative_to(o) for o in idmapped)]
        return {"userns": self.path, "userns_base": BASE, "idmapped": [str(d) for d in dict.fromkeys(outermost)]}

    def describe(self) -> str:
        if self.fd is None:
            return f"user namespace off (container root is host root, held by the above: {self.why_not})"
        last = COUNT - 1
        return f"user namespace on (container IDs 0-{last} are host IDs {BASE}-{BASE + last}, idmapped mounts)"

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _new_namespace() -> int:
    holder = subprocess.Popen([sys.executable, "-S", "-E", "-c", _HOLDER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if holder.stdout.read(1) != b"1":
            raise OSError(holder.stderr.read().decode().strip() or "unshare failed")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{holder.pid}/{name}", "w") as f:
                f.write(f"0 {BASE} {COUNT}\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.stdin.close()
        holder.wait()
