"""PID 1 of the KVM guest that test_cgroup_v2.py boots with cgroup_no_v1=all.

It runs Ember's own cgroups.py (copied into the guest unchanged) against the kernel's real cgroup v2
controllers, the way the container backend uses it: Layout.detect(), prepare(), Cgroups(...).create()
with Resources, processes that join each of the container's cgroups as the sandbox does, limit() on a
running container, oom_killed(), cpu_seconds(), stale() and remove(). What it saw goes to
/results.json on the guest's disk (the host reads it with debugfs) and to the console; then it
powers the machine off. Only the measuring is here: the test on the host decides what passes.

The fixture writes the interpreter's "#!" line above this text. Nothing here may assume the host.
"""

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time
import traceback

sys.path.insert(0, "/ember-src")  # the guest's copies of ember (cgroups.py and what it imports) and protobuf
libc = ctypes.CDLL(None, use_errno=True)
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
results: dict = {}


@contextlib.contextmanager
def section(name: str):
    """One measurement; an exception is recorded under its name and the next one still runs."""
    out = results.setdefault(name, {})
    start = time.monotonic()
    try:
        yield out
    except BaseException:
        out["error"] = traceback.format_exc()
    out["seconds"] = round(time.monotonic() - start, 2)  # where an emulated guest's time goes


def mounted(target: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == target for line in f)
    except FileNotFoundError:  # no /proc yet
        return False


def mount(source: str, target: str, fstype: str):
    if mounted(target):
        return  # the initramfs moved its /proc and /sys here already
    os.makedirs(target, exist_ok=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {fstype} on {target}: {os.strerror(e)}")


def read(path) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"<{e.strerror}>"


def spawn(cgroups, work, *args) -> tuple[int, int]:
    """A child that joins every cgroup of the container (as sandbox.py does), then runs work(pipe, *args)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            for p in cgroups.paths:
                with open(p / "cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
            os.write(w, b"j")
            work(w, *args)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(w)
    if os.read(r, 1) != b"j":
        raise RuntimeError("the child could not join its cgroups")
    return pid, r


def read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out


def allocate(w: int, mib: int, stay: bool = False):
    blocks = [b"\x01" * (1 << 20) for _ in range(mib)]  # written, so every page is charged to the cgroup
    os.write(w, b"allocated")
    if stay:  # a warm container holding its memory
        os.close(w)
        while True:
            signal.pause()
    del blocks


def burn(w: int):
    os.close(w)
    while True:
        pass


def threads_until_refused(w: int, cap: int):
    stop, started = threading.Event(), []
    try:
        while len(started) < cap:
            t = threading.Thread(target=stop.wait)
            t.start()
            started.append(t)
    except RuntimeError:  # "can't start new thread": clone() failed
        pass
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        fork_errno = 0
    except OSError as e:
        fork_errno = e.errno
    os.write(w, json.dumps({"threads": len(started), "fork_errno": fork_errno}).encode())
    stop.set()
    for t in started:
        t.join()


def cpu_rate(cgroups, seconds: float) -> float:
    """Cores used over a wall interval, from cpu_seconds()."""
    t0, c0 = time.monotonic(), cgroups.cpu_seconds()
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cgroups.cpu_seconds()
    return (c1 - c0) / (t1 - t0)


def reap(pid: int, timeout: float = 30) -> tuple[int, float]:
    """Wait for a child: its wait status and the CPU seconds it used (rusage). One that does not end
    in time (a limit that stalls it rather than kills it) is killed, and its section fails."""
    deadline = time.monotonic() + timeout
    while True:
        done, status, ru = os.wait4(pid, os.WNOHANG)
        if done:
            return status, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"the child did not end in {timeout} s")
        time.sleep(0.01)


def status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


def run():
    start = time.monotonic()
    from ember.proto import api_pb2
    from ember.worker import cgroups as cg
    results["import_seconds"] = round(time.monotonic() - start, 2)

    made = []  # every container's Cgroups, for the removal check
    with section("boot") as out:
        out["kernel"] = os.uname().release
        out["cmdline"] = read("/proc/cmdline")
        out["cpus"] = os.cpu_count()

    with section("layout") as out:
        layout = cg.host_layout()  # Layout.detect(), as the worker does
        out.update(describe=layout.describe(), missing=layout.missing(), v1=sorted(layout.v1),
                   v2=str(layout.v2), v2_controllers=sorted(layout.v2_controllers), on_v2=layout.on_v2,
                   accounting=layout.accounting, parents=[str(p) for p in layout.parents()])
        cg.prepare(layout)
        cg.prepare(layout)  # a worker that restarts prepares again
        out["root_subtree_control"] = read(f"{layout.v2}/cgroup.subtree_control")
        out["parent_subtree_control"] = read(f"{layout.v2}/{cg.PARENT}/cgroup.subtree_control")

    with section("memory") as out:
        mem = cg.Cgroups("ct-memory")
        made.append(mem)
        mem.create(api_pb2.Resources(memory_limit_mb=64))
        out.update(paths=[str(p) for p in mem.paths], memory_max=read(mem.dirs["memory"] / "memory.max"),
                   swap_max=read(mem.dirs["memory"] / "memory.swap.max"), oom_killed_before=mem.oom_killed())
        pid, r = spawn(mem, allocate, 256)
        status, _ = reap(pid)
        out["child_said"] = read_all(r).decode()
        out.update(child=status_text(status), oom_killed=mem.oom_killed(),
                   events=read(mem.dirs["memory"] / "memory.events"),
                   peak=read(mem.dirs["memory"] / "memory.peak"))

    with section("spare") as out:
        # A spare starts without limits (create(Resources())), then limit() adopts it for a function.
        spare = cg.Cgroups("ct-spare")
        made.append(spare)
        spare.create(api_pb2.Resources())
        out.update(memory_max=read(spare.dirs["memory"] / "memory.max"), cpu_max=read(spare.dirs["cpu"] / "cpu.max"),
                   pids_max=read(spare.dirs["pids"] / "pids.max"))
        pid, r = spawn(spare, allocate, 100, True)
        out["child_said"] = os.read(r, 64).decode()
        out["current_mib"] = int(read(spare.dirs["memory"] / "memory.current")) >> 20
        try:
            spare.limit(api_pb2.Resources(memory_limit_mb=64))
            out["too_small"] = "accepted"
        except OSError as e:
            out["too_small"] = f"errno {e.errno}: {e}"
        out["memory_max_after_refusal"] = read(spare.dirs["memory"] / "memory.max")
        spare.limit(api_pb2.Resources(memory_limit_mb=256, cpu_limit=0.25))
        out.update(memory_max_adopted=read(spare.dirs["memory"] / "memory.max"),
                   cpu_max_adopted=read(spare.dirs["cpu"] / "cpu.max"),
                   alive_after_adoption=os.waitpid(pid, os.WNOHANG) == (0, 0), oom_killed=spare.oom_killed())
        # The worker removes a container's cgroups right after killing it, without waiting for anything.
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        asyncio.run(spare.remove())
        out["remove_seconds"] = round(time.monotonic() - t0, 3)
        out["exists_after_remove"] = [str(p) for p in spare.paths if p.exists()]
        out["child"] = status_text(reap(pid)[0])

    with section("pids") as out:
        pids = cg.Cgroups("ct-pids")
        made.append(pids)
        # Every container gets pids.max = PIDS_MAX (4096, the spare's above). Starting 4,095 threads takes
        # 30 s in an emulated guest, so this one gets a lower PIDS_MAX, written by the same code.
        default, cg.PIDS_MAX = cg.PIDS_MAX, 64
        try:
            pids.create(api_pb2.Resources())
        finally:
            cg.PIDS_MAX = default
        out["limit"] = 64
        out["pids_max"] = read(pids.dirs["pids"] / "pids.max")
        pid, r = spawn(pids, threads_until_refused, 1000)
        out["child"] = status_text(reap(pid)[0])
        out.update(json.loads(read_all(r)))
        out["events"] = read(pids.dirs["pids"] / "pids.events")

    with section("cpu") as out:
        limited = cg.Cgroups("ct-cpu")
        made.append(limited)
        limited.create(api_pb2.Resources(cpu_limit=0.5))
        out["cpu_max"] = read(limited.dirs["cpu"] / "cpu.max")
        out["cpu_seconds_empty"] = limited.cpu_seconds()
        children = [spawn(limited, burn)[0] for _ in range(2)]
        out["limited_cores"] = cpu_rate(limited, 2.0)
        # The same two busy processes without a quota: what the guest's two vCPUs give when not held back.
        free = cg.Cgroups("ct-cpu-free")
        made.append(free)
        free.create(api_pb2.Resources())
        for pid in children:
            os.kill(pid, signal.SIGSTOP)  # the limited ones pause, so the free ones have the vCPUs
        free_children = [spawn(free, burn)[0] for _ in range(2)]
        out["free_cores"] = cpu_rate(free, 1.0)
        out["limited_stat"] = read(limited.dirs["cpu"] / "cpu.stat")
        out["free_stat"] = read(free.dirs["cpu"] / "cpu.stat")
        before_exit = limited.cpu_seconds()
        for pid in children + free_children:
            os.kill(pid, signal.SIGKILL)
        used = [reap(pid)[1] for pid in children]
        for pid in free_children:
            reap(pid)
        # Ended processes stay counted: what the worker reads after a container's processes are gone.
        out.update(cpu_seconds_before_exit=before_exit, cpu_seconds_after_exit=limited.cpu_seconds(),
                   rusage_seconds=sum(used), free_cpu_seconds=free.cpu_seconds())

    with section("removal") as out:
        out["stale_before"] = sorted(str(p) for p in cg.stale(layout))
        for c in made:
            asyncio.run(c.remove())
        out["exists_after"] = sorted(str(p) for c in made for p in c.paths if p.exists())
        out["stale_after"] = sorted(str(p) for p in cg.stale(layout))


def main():
    try:
        mount("proc", "/proc", "proc")
        mount("sysfs", "/sys", "sysfs")
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2")
        run()
    except BaseException:
        results["error"] = traceback.format_exc()
    text = json.dumps(results, indent=1)
    with open("/results.json", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    print("EMBER-CGV2-RESULTS " + json.dumps(results), flush=True)
    libc.sync()
    libc.reboot(LINUX_REBOOT_CMD_POWER_OFF)  # PID 1 must not exit: the kernel would panic


main()
