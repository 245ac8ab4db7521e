"""A container's cgroups: CPU, memory and process limits in; out-of-memory kills and CPU time out.

Each controller is used where the host has it: in a cgroup v1 hierarchy of its own
(/sys/fs/cgroup/memory, ...), or in the unified cgroup v2 hierarchy, which current
distributions mount alone at /sys/fs/cgroup, and hybrid hosts beside the v1 ones with some
controllers or none. Layout reads that from /proc/self/mountinfo and the v2 root's
cgroup.controllers, controller by controller, so a host with any mix works.

A container gets one cgroup per v1 hierarchy it uses (ROOT/ember/CONTAINER_ID) and one in the
v2 hierarchy (V2_ROOT/ember/CONTAINER_ID, under a parent that delegates cpu, memory and pids
to its children). The limits written, by controller:

    memory  v1: memory.limit_in_bytes, memory.swappiness=0   v2: memory.max, memory.swap.max=0
    cpu     v1: cpu.cfs_period_us, cpu.cfs_quota_us          v2: cpu.max "QUOTA PERIOD"
    pids    v1 and v2: pids.max

Out-of-memory kills are read from memory.oom_control (v1) or memory.events (v2), both "oom_kill N";
CPU time from cpuacct.usage (v1, nanoseconds) or cpu.stat's usage_usec (v2, which the kernel
keeps for every v2 cgroup, with or without the cpu controller).
"""

import asyncio
import dataclasses
import errno
import functools
import pathlib
import time

from ..proto import api_pb2

LIMITED = ("memory", "cpu", "pids")  # the controllers a container is limited by
ACCOUNTING = "cpuacct"  # v1's CPU time; v2 has it in cpu.stat, always
PARENT = "ember"  # the cgroup, in each hierarchy, under which containers' cgroups go
# An empty container cgroup younger than this may be another worker's, whose container is starting (stale()).
STALE_AFTER = 60.0
PIDS_MAX = 4096
CFS_PERIOD = 100_000  # microseconds


class CgroupError(Exception):
    """The cgroups a container needs cannot be made on this host."""


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each controller lives on this host."""
    v1: dict[str, pathlib.Path]  # controller -> the mount point of its v1 hierarchy
    v2: pathlib.Path | None  # the v2 hierarchy's mount point, if mounted
    v2_controllers: frozenset[str]  # what the v2 root offers (its cgroup.controllers)

    @classmethod
    def parse(cls, mountinfo: str, v2_controllers: str = "") -> "Layout":
        """From /proc/self/mountinfo's text and the v2 root's cgroup.controllers ("cpu memory pids")."""
        v1: dict[str, pathlib.Path] = {}
        v2 = None
        for line in mountinfo.splitlines():
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            if sep < 5 or len(fields) < sep + 4:
                continue
            point, fstype, options = pathlib.Path(_unescape(fields[4])), fields[sep + 1], fields[sep + 3]
            if fstype == "cgroup2" and v2 is None:
                v2 = point
            elif fstype == "cgroup":
                for opt in options.split(","):
                    if opt in LIMITED or opt == ACCOUNTING:
                        v1.setdefault(opt, point)  # the first mount of a hierarchy; bind mounts repeat it
        offered = frozenset(v2_controllers.split()) if v2 is not None else frozenset()
        # A controller bound to a v1 hierarchy is not usable in v2, whatever v2 says.
        return cls(v1=v1, v2=v2, v2_controllers=offered - set(v1))

    @classmethod
    def detect(cls) -> "Layout":
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
        v2 = cls.parse(mountinfo).v2
        try:
            offered = (v2 / "cgroup.controllers").read_text() if v2 is not None else ""
        except OSError:
            offered = ""
        return cls.parse(mountinfo, offered)

    def version(self, controller: str) -> int | None:
        """1 or 2: the hierarchy the controller is used in; None if the host has it in neither."""
        if controller in self.v1:
            return 1
        if controller in self.v2_controllers:
            return 2
        return None

    @property
    def accounting(self) -> int | None:
        """Where a container's CPU time is read: v1's cpuacct, else v2's cpu.stat."""
        return 1 if ACCOUNTING in self.v1 else (2 if self.v2 is not None else None)

    @property
    def on_v2(self) -> list[str]:
        return [c for c in LIMITED if self.version(c) == 2]

    def describe(self) -> str:
        """In words, for the worker's log: "cgroup v1", "cgroup v2", or each controller's on a mix."""
        versions = {c: self.version(c) for c in LIMITED}
        if len(set(versions.values())) == 1:
            return f"cgroup v{versions['memory']}"
        return "cgroups " + ", ".join(f"{c} v{v}" for c, v in versions.items())

    def missing(self) -> str | None:
        """Why containers cannot be limited here (naming the fix), or None."""
        for c in LIMITED:
            if self.version(c) is None:
                where = (f"the cgroup v2 hierarchy at {self.v2} offers only "
                         f"{' '.join(sorted(self.v2_controllers)) or 'none'}" if self.v2 is not None
                         else "no cgroup v2 hierarchy is mounted")
                return (f"no cgroup {c} controller: no cgroup v1 hierarchy has it and {where} (mount cgroup2 "
                        f"at /sys/fs/cgroup, or the v1 {c} controller at /sys/fs/cgroup/{c})")
        if self.accounting is None:
            return ("no cgroup cpuacct controller and no cgroup v2 hierarchy to count CPU time in (mount cgroup2 "
                    "at /sys/fs/cgroup, or the v1 cpuacct controller at /sys/fs/cgroup/cpuacct)")
        return None

    def parents(self) -> list[pathlib.Path]:
        """The ember parent cgroup in each hierarchy containers use."""
        roots = {self.v1[c] for c in (*LIMITED, ACCOUNTING) if c in self.v1}
        if self.on_v2 or self.accounting == 2:
            roots.add(self.v2)
        return sorted(r / PARENT for r in roots)


@functools.cache
def host_layout() -> Layout:
    return Layout.detect()


def prepare(layout: Layout):
    """Make the ember parent cgroups; in v2, delegate the controllers containers are limited by
    to the parent's children (a v2 controller works in a cgroup only if its parent's
    cgroup.subtree_control enables it, all the way from the root)."""
    enable = " ".join(f"+{c}" for c in layout.on_v2)
    for parent in layout.parents():
        parent.mkdir(exist_ok=True)
        if enable and parent.parent == layout.v2:
            for d in (layout.v2, parent):
                try:
                    if set(layout.on_v2) - set((d / "cgroup.subtree_control").read_text().split()):
                        (d / "cgroup.subtree_control").write_text(enable)
                except OSError as e:
                    raise CgroupError(
                        f"cannot enable the {' '.join(layout.on_v2)} cgroup controllers for containers in "
                        f"{d / 'cgroup.subtree_control'}: {e.strerror or e} (a v2 cgroup with processes of its own "
                        "cannot delegate controllers: run the worker from the root cgroup, or give it a delegated "
                        "cgroup, e.g. a systemd unit with Delegate=yes)") from e


def stale(layout: Layout, older_than: float = 0) -> list[pathlib.Path]:
    """The containers' cgroups left in the ember parents (by a worker that is gone), made at least
    `older_than` seconds ago. Workers on one machine share the parents, and another worker's new
    container has an empty cgroup for a moment before its first process joins it, as a stale one
    has: a worker that starts then must pass over it, not remove it (its container would not start)."""
    now = time.time()
    return [d for p in layout.parents() for d in p.glob("ct-*") if now - _made_at(d) >= older_than]


def _made_at(d: pathlib.Path) -> float:
    try:
        return d.stat().st_ctime
    except FileNotFoundError:  # removed meanwhile (by its own worker)
        return float("inf")


@dataclasses.dataclass(frozen=True)
class Setting:
    file: pathlib.Path
    value: str
    optional: bool = False  # written only where the kernel has the file (memory.swap.max: swap accounting)


class Cgroups:
    """One container's cgroups."""

    def __init__(self, container_id: str, layout: Layout | None = None):
        self.layout = layout or host_layout()
        lay = self.layout
        v2 = lay.v2 / PARENT / container_id if lay.v2 is not None else None
        self.dirs = {c: (lay.v1[c] / PARENT / container_id if lay.version(c) == 1 else v2) for c in LIMITED}
        self.accounting = lay.v1[ACCOUNTING] / PARENT / container_id if lay.accounting == 1 else v2
        # Where cpu and cpuacct are mounted together, the two are one directory: it is joined once.
        self.paths = list(dict.fromkeys(p for p in (*self.dirs.values(), self.accounting) if p is not None))

    def _file(self, controller: str, v1_name: str, v2_name: str) -> pathlib.Path:
        return self.dirs[controller] / (v1_name if self.layout.version(controller) == 1 else v2_name)

    def settings(self, resources: api_pb2.Resources, pids: bool = True) -> list[Setting]:
        """The files to write for these limits, and what to write in them, in order."""
        out = [Setting(self.dirs["pids"] / "pids.max", str(PIDS_MAX))] if pids else []
        if resources.memory_limit_mb:
            limit = str(resources.memory_limit_mb << 20)
            if self.layout.version("memory") == 1:
                out += [Setting(self.dirs["memory"] / "memory.limit_in_bytes", limit),
                        Setting(self.dirs["memory"] / "memory.swappiness", "0")]
            else:  # no swap: a limit that spilled to swap would not be one
                out += [Setting(self.dirs["memory"] / "memory.max", limit),
                        Setting(self.dirs["memory"] / "memory.swap.max", "0", optional=True)]
        if resources.cpu_limit:
            quota = max(1000, int(resources.cpu_limit * CFS_PERIOD))
            if self.layout.version("cpu") == 1:
                out += [Setting(self.dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD)),
                        Setting(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))]
            else:
                out.append(Setting(self.dirs["cpu"] / "cpu.max", f"{quota} {CFS_PERIOD}"))
        return out

    def create(self, resources: api_pb2.Resources):
        for p in self.paths:
            p.mkdir(parents=True, exist_ok=True)
        self._write(self.settings(resources))

    def limit(self, resources: api_pb2.Resources):
        """Limit a running container (a spare being adopted). Raises OSError if it already uses
        more memory than the limit allows, as v1 does by itself (v2 would reclaim, then kill)."""
        if resources.memory_limit_mb and self.layout.version("memory") == 2:
            current = int((self.dirs["memory"] / "memory.current").read_text())
            if current > resources.memory_limit_mb << 20:
                raise OSError(errno.EBUSY, f"it uses {current >> 20} MiB, more than the {resources.memory_limit_mb} "
                              "MiB limit")
        self._write(self.settings(resources, pids=False))

    @staticmethod
    def _write(settings: list[Setting]):
        for s in settings:
            if s.optional and not s.file.exists():
                continue
            s.file.write_text(s.value)

    def cpu_seconds(self) -> float:
        """The CPU time (user and system) its processes have used, exactly, ended ones included."""
        try:
            if self.layout.accounting == 1:
                return int((self.accounting / "cpuacct.usage").read_text()) / 1e9
            return _counter(self.accounting / "cpu.stat", "usage_usec") / 1e6
        except (OSError, ValueError):
            return 0.0

    def memory_bytes(self) -> int:
        """The memory its processes use now (page cache included, as the limit counts it)."""
        try:
            return int(self._file("memory", "memory.usage_in_bytes", "memory.current").read_text())
        except (OSError, ValueError):
            return 0

    def oom_killed(self) -> bool:
        events = "memory.oom_control" if self.layout.version("memory") == 1 else "memory.events"
        try:
            return _counter(self.dirs["memory"] / events, "oom_kill") > 0
        except (OSError, ValueError):
            return False

    async def remove(self):
        for p in self.paths:
            await remove_dir(p)


def _counter(path: pathlib.Path, key: str) -> int:
    """A value of a flat-keyed cgroup file ("key value" lines: cpu.stat, memory.events, memory.oom_control)."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise ValueError(f"{path} has no {key}")


async def remove_dir(p: pathlib.Path, timeout: float = 10.0):
    # A killed container's last processes leave its cgroup only when they have exited, and exiting frees
    # all their memory first: a second or more for a few GiB. One second of retries (as before) was too
    # short: in test_cgroup_v2.py's guest a killed 100 MiB process still held its v2 cgroup after 1.2 s,
    # and the cgroup stayed behind until the worker's next start.
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            p.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return  # still busy: stale() finds it when the worker starts again
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
