"""cgroup v2 limits, for real: cgroups.py in a virtual machine whose kernel has only the v2 hierarchy.

This host binds cpu, cpuacct, memory and pids to cgroup v1, so its v2 hierarchy cannot have them
(test_limits.py tests v1 here). This module boots a virtual machine once: Debian's kernel with
cgroup_no_v1=all, a small ext4 root made from the host's own Python (no debootstrap) holding Ember's
cgroups.py unchanged and the guest script cgroup_v2_guest.py as PID 1. The guest limits processes
with Ember's code against the kernel's real v2 controllers and records what happened; the tests
here decide on those records. QEMU runs it with KVM where KVM can run a stock kernel, else with its
own emulation (this machine: about 45 s for the module, most of it the emulated boot).

Needs root, qemu-system-x86_64, a kernel and initrd in /boot and e2fsprogs (.ci/run installs
qemu-system-x86 and linux-image-amd64).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import google.protobuf
import pytest

from ember.worker import cgroups as cg

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUEST_SCRIPT = pathlib.Path(__file__).resolve().parent / "cgroup_v2_guest.py"
MIB = 1 << 20
# cgroups.py and what it imports. ember/__init__.py is left empty in the guest: the real one imports
# the client (grpc and more), which cgroups.py does not use and the guest does not have.
EMBER_FILES = ["worker/__init__.py", "worker/cgroups.py", "proto/__init__.py", "proto/api_pb2.py"]


def kernel() -> tuple[pathlib.Path, pathlib.Path] | None:
    """The newest kernel in /boot that has an initrd (Debian's initrd loads virtio_blk and ext4)."""
    for vmlinuz in sorted(pathlib.Path("/boot").glob("vmlinuz-*"), reverse=True):
        initrd = vmlinuz.with_name("initrd.img-" + vmlinuz.name.removeprefix("vmlinuz-"))
        if initrd.exists():
            return vmlinuz, initrd
    return None


def accelerator() -> list[str]:
    """KVM where it can run a stock kernel, else QEMU's emulation (TCG), a few times slower.

    PVM ("kvm_pvm", the nested KVM of some cloud sandboxes, this project's machine among them) runs
    only guest kernels built for it (CONFIG_PVM_GUEST): Debian's hangs before its first message."""
    if os.access("/dev/kvm", os.R_OK | os.W_OK) and not os.path.exists("/sys/module/kvm_pvm"):
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (to read /boot's kernel)"
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("mkfs.ext4", "e2fsprogs"),
                          ("debugfs", "e2fsprogs"), ("ldd", "libc-bin")):
        if shutil.which(tool) is None:
            return f"no {tool} (apt-get install {package})"
    if kernel() is None:
        return "no kernel with an initrd in /boot (apt-get install linux-image-amd64)"
    return None


def copy_host_file(path: str, root: pathlib.Path):
    """Copy a host file to the same path under root, and the symlink it was reached by, if any."""
    real = os.path.realpath(path)
    dest = root / real.lstrip("/")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, dest)
    link = root / path.lstrip("/")
    if real != path and not os.path.lexists(link):
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(real, link)


def shared_libraries(files: list[str]) -> set[str]:
    """What ldd says these executables and extension modules load (the loader included)."""
    out = subprocess.run(["ldd", *files], capture_output=True, text=True).stdout
    return set(re.findall(r"(?:=> |^\s+)(/\S+) \(0x", out, re.MULTILINE))


def build_root(root: pathlib.Path):
    """The guest's root: the host's Python (interpreter, standard library, the libraries they load),
    protobuf from this environment, Ember's cgroups.py, and the guest script as /init.py."""
    for name in ("bin", "lib", "lib64", "sbin"):  # merged /usr: /lib -> usr/lib, as on the host
        host = pathlib.Path("/") / name
        if host.is_symlink():
            (root / os.readlink(host)).mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(host), root / name)
    for name in ("proc", "sys", "dev", "run", "tmp"):  # where the initramfs moves its mounts
        (root / name).mkdir(exist_ok=True)
    python = os.path.realpath(sys.executable)
    copy_host_file(python, root)
    stdlib = sysconfig.get_path("stdlib")
    shutil.copytree(stdlib, root / stdlib.lstrip("/"), symlinks=False, ignore_dangling_symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "dist-packages", "test"))
    protobuf = pathlib.Path(google.protobuf.__file__).parent
    src = root / "ember-src"
    shutil.copytree(protobuf, src / "google" / "protobuf")
    if (protobuf.parent / "_upb").is_dir():  # protobuf's C implementation, if installed
        shutil.copytree(protobuf.parent / "_upb", src / "google" / "_upb")
    (src / "ember").mkdir()
    (src / "ember" / "__init__.py").write_text("")
    for f in EMBER_FILES:
        (src / "ember" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "ember" / f, src / "ember" / f)
    extensions = [str(p) for p in root.rglob("*.so")]
    for lib in shared_libraries([python, *extensions]):
        copy_host_file(lib, root)
    init = root / "init.py"
    init.write_text(f"#!{python} -S\n" + GUEST_SCRIPT.read_text())
    init.chmod(0o755)


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> dict:
    """Boot the guest once; what it recorded, by section."""
    why = missing()
    if why:
        pytest.skip(f"cannot boot a cgroup-v2 guest: {why}")
    tmp = tmp_path_factory.mktemp("cgv2")
    root, image = tmp / "root", tmp / "root.ext4"
    root.mkdir()
    build_root(root)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(image), "256M"], check=True)
    shutil.rmtree(root)
    vmlinuz, initrd = kernel()
    cmdline = "root=/dev/vda rw console=ttyS0 cgroup_no_v1=all init=/init.py panic=-1 quiet"
    try:
        try:
            boot = subprocess.run(
                ["qemu-system-x86_64", *accelerator(), "-m", "512", "-smp", "2", "-nographic",
                 "-no-reboot", "-net", "none", "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
                 "-drive", f"file={image},format=raw,if=virtio"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
            console, ended = boot.stdout, f"qemu exit {boot.returncode}"
        except subprocess.TimeoutExpired as e:
            console, ended = e.stdout or b"", "the guest still ran after 180 s"
        console = console.decode(errors="replace")
        # The file, not the console: kernel messages (an OOM kill's) can land inside a console line.
        dump = subprocess.run(["debugfs", "-R", "cat /results.json", str(image)], capture_output=True, text=True)
        assert dump.stdout.strip(), f"the guest recorded nothing ({ended}):\n{console[-4000:]}"
        results = json.loads(dump.stdout)
    finally:
        image.unlink(missing_ok=True)
    assert "error" not in results, results["error"] + console[-4000:]
    print(json.dumps(results, indent=1))  # shown with -s, and in a failure's captured output
    return results


def section(results: dict, name: str) -> dict:
    out = results[name]
    assert "error" not in out, out["error"]
    return out


def test_guest_has_only_cgroup_v2(guest):
    assert "cgroup_no_v1=all" in section(guest, "boot")["cmdline"]
    lay = section(guest, "layout")
    assert lay["v1"] == []
    assert lay["v2"] == "/sys/fs/cgroup"
    assert {"cpu", "memory", "pids"} <= set(lay["v2_controllers"])
    assert lay["describe"] == "cgroup v2" and lay["missing"] is None and lay["accounting"] == 2
    assert lay["parents"] == ["/sys/fs/cgroup/ember"]
    # prepare() delegated the controllers: from the root to the ember parent, and from it to containers.
    for control in (lay["root_subtree_control"], lay["parent_subtree_control"]):
        assert {"cpu", "memory", "pids"} <= set(control.split())


def test_memory_limit_kills_and_oom_killed_says_so(guest):
    mem = section(guest, "memory")
    assert mem["paths"] == ["/sys/fs/cgroup/ember/ct-memory"]  # one cgroup for every controller
    assert int(mem["memory_max"]) == 64 * MIB
    assert mem["swap_max"] == "0"
    assert mem["oom_killed_before"] is False
    assert mem["child"] == "signal SIGKILL" and mem["child_said"] == ""  # killed before its 256 MiB
    assert mem["oom_killed"] is True
    assert int(mem["peak"]) <= 64 * MIB


def test_a_running_spare_is_limited_and_refused_when_too_big(guest):
    spare = section(guest, "spare")
    assert spare["memory_max"] == "max" and spare["cpu_max"].startswith("max ")  # a spare has no limits yet
    assert spare["pids_max"] == str(cg.PIDS_MAX)
    assert spare["child_said"] == "allocated" and spare["current_mib"] >= 100  # more than 64 MiB, unlimited
    assert spare["too_small"].startswith("errno 16:")  # EBUSY: limit() refuses, rather than the kernel killing
    assert spare["memory_max_after_refusal"] == "max"
    assert int(spare["memory_max_adopted"]) == 256 * MIB
    assert spare["cpu_max_adopted"] == "25000 100000"
    assert spare["alive_after_adoption"] is True and spare["oom_killed"] is False
    # Removed right after its process was killed (not yet reaped): remove() waits for it to leave.
    assert spare["exists_after_remove"] == []
    assert spare["child"] == "signal SIGKILL"


def test_pids_limit_stops_new_tasks(guest):
    pids = section(guest, "pids")
    assert pids["pids_max"] == str(pids["limit"])  # a lower PIDS_MAX (the default is checked on the spare)
    # The child itself is one task in its cgroup, so one thread fewer than the limit starts.
    assert pids["threads"] == pids["limit"] - 1
    assert pids["fork_errno"] == 11  # EAGAIN
    assert pids["child"] == "exit 0"
    assert int(dict(line.split() for line in pids["events"].splitlines())["max"]) > 0


def stat(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def test_cpu_quota_holds_two_busy_processes_to_half_a_core(guest):
    cpu = section(guest, "cpu")
    assert cpu["cpu_max"] == "50000 100000"
    # Generous bounds (a shared host, virtual CPUs): about 0.5 cores, never two.
    assert 0.2 < cpu["limited_cores"] < 0.8, cpu
    assert stat(cpu["limited_stat"])["nr_throttled"] > 0  # the quota, not idleness, held them
    assert stat(cpu["free_stat"])["nr_throttled"] == 0
    assert cpu["free_cores"] > cpu["limited_cores"], cpu  # without the quota the same work gets more


def test_cpu_seconds_counts_and_keeps_ended_processes(guest):
    cpu = section(guest, "cpu")
    assert cpu["cpu_seconds_empty"] == 0.0
    assert cpu["cpu_seconds_before_exit"] > 0.5  # two busy processes at about half a core, for 2 s and more
    assert cpu["cpu_seconds_after_exit"] >= cpu["cpu_seconds_before_exit"]
    # What the kernel charged the cgroup is most of what the processes used (their rusage), never more:
    # rusage also has each child's start before it joined (in the root cgroup), up to 0.17 s emulated.
    assert 0.7 * cpu["rusage_seconds"] < cpu["cpu_seconds_after_exit"] <= cpu["rusage_seconds"] + 0.01, cpu
    assert cpu["free_cpu_seconds"] > 0


def test_removal_leaves_nothing(guest):
    removal = section(guest, "removal")
    assert "/sys/fs/cgroup/ember/ct-memory" in removal["stale_before"]  # what a restarted worker would clean
    assert removal["exists_after"] == [] and removal["stale_after"] == []
