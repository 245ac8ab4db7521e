"""Container limits: cgroups (v1 here; v2's decisions from a parsed mountinfo) and ephemeral_disk=.

This machine mounts cpu, cpuacct, memory and pids as cgroup v1 hierarchies and holds only hugetlb
in v2; a controller bound to v1 cannot be used in v2 at the same time, and freeing one would mean
unmounting the host's hierarchies, which other tests rely on. So v1 limits are tested with real
containers, and v2 as far as this host allows: the layout, files and values the v2 path decides on,
and a real v2 cgroup (in the host's unified hierarchy) that a process joins and is counted in.
test_cgroup_v2.py runs the v2 limits for real, in a virtual machine whose kernel has only v2.
"""

import errno
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from conftest import run_async, wait_for

from ember import exception
from ember.proto import api_pb2
from ember.worker import cgroups as cg
from ember.worker import disk as disks

import limits_app


@pytest.fixture(scope="module")
def running(container_cluster):
    with limits_app.app.run():
        yield container_cluster


def containers_dir(cluster) -> pathlib.Path:
    return cluster.tmp / "w1" / "containers"


# ---------------------------------------------------------------- cgroup v1, with real containers


def test_v1_limits_are_written_where_the_container_runs(running):
    layout = cg.host_layout()
    if any(layout.version(c) != 1 for c in cg.LIMITED):
        pytest.skip(f"this host does not use cgroup v1 for all of {cg.LIMITED}: {layout}")
    names = limits_app.limits_of_mine.remote()  # its container lives on, warm, while the test looks
    assert len(names) == 1  # one name in every hierarchy
    name = names.pop()
    assert name.startswith("ct-")
    mine = cg.Cgroups(name)
    assert (mine.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"  # cpu=0.5
    assert (mine.dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert int((mine.dirs["memory"] / "memory.limit_in_bytes").read_text()) == 200 << 20
    assert (mine.dirs["pids"] / "pids.max").read_text().strip() == str(cg.PIDS_MAX)
    assert mine.cpu_seconds() > 0  # its runtime's start, counted in cpuacct
    assert 1 << 20 < mine.memory_bytes() < 200 << 20  # its runtime in memory, under the limit


def test_pids_limit_stops_new_tasks(running):
    started = limits_app.threads_until_refused.remote(cg.PIDS_MAX + 500)
    # The runtime's own processes and threads count too, so a little fewer than the limit start.
    assert cg.PIDS_MAX - 100 < started < cg.PIDS_MAX


def test_cpu_quota_holds_across_processes(running):
    # Two processes spinning at once could use two cores; cpu=0.5 gives them half of one.
    share = limits_app.busy_processes.remote(2, 1.5)
    assert 0.05 < share < 0.75, f"cpu=0.5 gave two busy processes {share:.2f} cores"


def test_memory_limit_names_itself(running):
    # (tests/test_containers.py: a container above memory=100 is killed with OutOfMemoryError.)
    import container_app
    with container_app.app.run(), pytest.raises(exception.OutOfMemoryError, match="memory limit of 100 MiB"):
        container_app.hog.remote(300)


# ---------------------------------------------------------------- cgroup v2: the decisions, and what runs here

V2_HOST = ("30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
           "rw,nsdelegate,memory_recursiveprot\n"
           "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")
V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n"


def test_a_v2_only_host_uses_v2_for_every_controller():
    layout = cg.Layout.parse(V2_HOST, V2_CONTROLLERS)
    root = pathlib.Path("/sys/fs/cgroup")
    assert layout.v1 == {} and layout.v2 == root
    assert [layout.version(c) for c in cg.LIMITED] == [2, 2, 2] and layout.accounting == 2
    assert layout.missing() is None
    assert layout.parents() == [root / "ember"]
    ct = cg.Cgroups("ct-1", layout)
    assert ct.paths == [root / "ember" / "ct-1"]  # one cgroup, which the sandbox joins
    written = [(s.file.relative_to(root).as_posix(), s.value, s.optional)
               for s in ct.settings(api_pb2.Resources(cpu_limit=0.25, memory_limit_mb=512))]
    assert written == [("ember/ct-1/pids.max", "4096", False),
                       ("ember/ct-1/memory.max", str(512 << 20), False),
                       ("ember/ct-1/memory.swap.max", "0", True),  # where the kernel accounts swap
                       ("ember/ct-1/cpu.max", "25000 100000", False)]
    # No limits asked: only the pids limit, which every container gets.
    assert [s.file.name for s in ct.settings(api_pb2.Resources())] == ["pids.max"]


def test_the_layout_is_read_per_controller_on_hybrid_hosts():
    with open("/proc/self/mountinfo") as f:
        here = cg.Layout.parse(f.read(), "hugetlb")
    assert here == cg.host_layout()  # what the worker decides from: this host, as parsed
    # A hybrid host with memory moved to v2: memory's limits go there, cpu's and pids' stay in v1.
    hybrid = ("32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
              "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
              "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    layout = cg.Layout.parse(hybrid, "memory pids hugetlb")
    assert {c: layout.version(c) for c in cg.LIMITED} == {"memory": 2, "cpu": 1, "pids": 1}
    assert layout.on_v2 == ["memory"]  # pids is bound to v1, whatever v2 lists
    assert layout.describe() == "cgroups memory v2, cpu v1, pids v1"
    assert cg.Layout.parse(V2_HOST, V2_CONTROLLERS).describe() == "cgroup v2"
    ct = cg.Cgroups("ct-2", layout)
    v1, v2 = pathlib.Path("/sys/fs/cgroup/cpu,cpuacct/ember/ct-2"), pathlib.Path("/sys/fs/cgroup/unified/ember/ct-2")
    assert ct.paths == [v2, v1, pathlib.Path("/sys/fs/cgroup/pids/ember/ct-2")]  # cpu and cpuacct: one
    assert [str(s.file) for s in ct.settings(api_pb2.Resources(cpu_limit=1, memory_limit_mb=64))] == [
        "/sys/fs/cgroup/pids/ember/ct-2/pids.max", f"{v2}/memory.max", f"{v2}/memory.swap.max",
        f"{v1}/cpu.cfs_period_us", f"{v1}/cpu.cfs_quota_us"]


def test_a_host_without_a_controller_is_refused_with_the_fix():
    layout = cg.Layout.parse(V2_HOST, "cpuset io\n")  # the controllers not enabled at the v2 root
    assert layout.missing() == (
        "no cgroup memory controller: no cgroup v1 hierarchy has it and the cgroup v2 hierarchy at "
        "/sys/fs/cgroup offers only cpuset io (mount cgroup2 at /sys/fs/cgroup, or the v1 memory controller "
        "at /sys/fs/cgroup/memory)")
    spaced = V2_HOST.replace("/sys/fs/cgroup ", "/mnt/cgroup\\040two ", 1)
    assert cg.Layout.parse(spaced, V2_CONTROLLERS).v2 == pathlib.Path("/mnt/cgroup two")


def test_a_starting_worker_passes_over_cgroups_too_new_to_be_stale(tmp_path):
    # Workers on one machine share the ember parents: one that starts while another's container
    # has its cgroup, empty for a moment, must not take it for a dead worker's.
    layout = cg.Layout(v1={}, v2=tmp_path, v2_controllers=frozenset(cg.LIMITED))
    (tmp_path / "ember" / "ct-new").mkdir(parents=True)
    assert cg.stale(layout) == [tmp_path / "ember" / "ct-new"]
    assert cg.stale(layout, older_than=cg.STALE_AFTER) == []


def test_v2_limits_events_and_cpu_time_are_read_from_v2_files(tmp_path):
    # The v2 files, where this host has no v2 controllers: a directory standing in for the v2 root.
    layout = cg.Layout(v1={}, v2=tmp_path, v2_controllers=frozenset(cg.LIMITED))
    ct = cg.Cgroups("ct-3", layout)
    ct.create(api_pb2.Resources(cpu_limit=2, memory_limit_mb=100))
    d = tmp_path / "ember" / "ct-3"
    assert {p.name: p.read_text() for p in d.iterdir()} == {
        "pids.max": "4096", "memory.max": str(100 << 20), "cpu.max": "200000 100000"}
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert not ct.oom_killed()
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n")
    assert ct.oom_killed()
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    assert ct.cpu_seconds() == 2.5
    (d / "memory.current").write_text(str(150 << 20))
    assert ct.memory_bytes() == 150 << 20
    with pytest.raises(OSError, match="uses 150 MiB, more than the 100 MiB limit"):  # a spare too big to adopt
        ct.limit(api_pb2.Resources(memory_limit_mb=100))


@pytest.mark.skipif(os.geteuid() != 0 or cg.host_layout().v2 is None, reason="needs root and a cgroup v2 hierarchy")
@run_async
async def test_a_real_v2_cgroup_counts_the_cpu_time_of_a_process_in_it():
    # This host's unified hierarchy has no cpu, memory or pids controller, but every v2 cgroup
    # has cpu.stat: a real v2 cgroup, joined and counted as a container's would be, then removed.
    host = cg.host_layout()
    layout = cg.Layout(v1={}, v2=host.v2, v2_controllers=frozenset())
    cg.prepare(layout)
    ct = cg.Cgroups(f"ct-test-{os.getpid()}", layout)
    for p in ct.paths:
        p.mkdir()
    burn = subprocess.Popen([sys.executable, "-c", "import sys, time\nsys.stdin.readline()\nt = time.process_time()\n"
                             "while time.process_time() - t < 0.3: pass"], stdin=subprocess.PIPE)
    try:
        for p in ct.paths:  # as the sandbox joins them
            (p / "cgroup.procs").write_text(str(burn.pid))
        burn.communicate(b"go\n", timeout=60)
        assert ct.cpu_seconds() >= 0.25
    finally:
        burn.kill()
        burn.wait()
        await ct.remove()
    assert not any(p.exists() for p in ct.paths)
    try:  # the parent too: a worker on this host keeps its containers in v1
        (host.v2 / cg.PARENT).rmdir()
    except OSError:
        pass  # another test's, in use


# ---------------------------------------------------------------- ephemeral_disk=


def disk_mounts(root: pathlib.Path) -> set[str]:
    return set(disks.mounts_under(root))


def loop_backing_files(root: pathlib.Path) -> set[str]:
    """The files below `root` that back loop devices ("(deleted)" stripped)."""
    files = set()
    for f in pathlib.Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            name = f.read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if name.startswith(f"{root}/"):
            files.add(name)
    return files


def test_a_write_past_ephemeral_disk_fails_inside_the_container(running):
    written, err, size = limits_app.fill_disk.remote()
    assert err == errno.ENOSPC
    assert 40 <= written < 64 and 50 <= size <= 64  # ext4 keeps a little of the 64 MiB for itself
    # The container lives on, warm: its disk on the worker holds no more than its limit.
    images = list(containers_dir(running).glob("*/disk.img"))
    assert images and all(img.stat().st_blocks * 512 <= 64 << 20 for img in images)


def test_the_caller_is_told_the_disk_limit_and_how_to_raise_it(running):
    with pytest.raises(OSError) as info:
        limits_app.overfill_disk.remote()
    assert info.value.errno == errno.ENOSPC
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "The container's disk is full: its writable layer holds ephemeral_disk=64 MiB" in notes
    assert "Pass a larger ephemeral_disk= (MiB) to @app.function" in notes


def test_the_default_disk_is_a_share_of_the_workers_free_disk(running):
    line = next(x for x in running.log("worker-w1").splitlines() if "a container's disk holds" in x)
    default = int(line.split("a container's disk holds ")[1].split()[0])
    st = os.statvfs(containers_dir(running))
    free_mb = st.f_bavail * st.f_frsize >> 20
    # A tenth of what was free when the worker started (others write to this disk too: roughly).
    assert default <= disks.DEFAULT_CAP_MB and 0.05 * free_mb <= default <= 0.2 * free_mb
    size = limits_app.disk_size.remote()
    assert 0.9 * default <= size <= default


def test_disks_go_with_their_containers_and_after_a_worker_crash(running):
    root = containers_dir(running)
    wait_for(lambda: disk_mounts(root), what="a container's disk (a spare's at least)")
    call = limits_app.sleep.spawn(60)
    wait_for(lambda: len(disk_mounts(root)) >= 2, what="the sleeping container's disk")
    # Each disk on a loop device (read until no new spare's disk is on its way between the two reads).
    wait_for(lambda: {str(pathlib.Path(b).parent / "disk") for b in loop_backing_files(root)} == disk_mounts(root),
             what="each disk mounted from its loop device")
    worker = running.workers[-1]
    worker.send_signal(signal.SIGKILL)  # its containers die with it; their disks stay behind
    worker.wait()
    before = disk_mounts(root)  # (with any a mount it had started finished since)
    backing = loop_backing_files(root)
    assert len(before) >= 2 and len(backing) >= 2
    running.start_worker(backend="container", env={"EMBER_GPUS": "H100"})
    wait_for(lambda: not before & disk_mounts(root), what="the new worker to unmount what the old one left")
    wait_for(lambda: not backing & loop_backing_files(root), what="the old disks' loop devices to be freed")
    wait_for(lambda: not any(pathlib.Path(b).exists() for b in backing), what="the old disks' files to go")
    call.cancel()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10G", True, (3 << 20) + 1])
def test_ephemeral_disk_is_checked_where_it_is_written(bad):
    import ember
    with pytest.raises(exception.InvalidError, match=r"ephemeral_disk=.*: pass the size of the container.s disk"):
        ember.App("disk-options").function(ephemeral_disk=bad, serialized=True)(lambda: None)
