"""A container's disk: its writable layer on a filesystem of its own, of `ephemeral_disk=` MiB.

The overlay's upper (writable) directory, and the scratch layers of its volumes, live on an ext4
filesystem in a sparse file of that size, loop-mounted by the worker: a container that fills it
gets ENOSPC, and the worker's own disk holds no more of it than the limit. The file takes only
what is written to it; making one (mkfs on a sparse file with lazy inode tables, then mount) costs
about 13 ms for a 3 GiB disk and 25 ms for 100 GiB on the machine of MACHINE.md, which spare
containers pay before they are needed.

The mounts are the worker's (in its mount namespace): `mount -o loop` frees its loop device when
it is unmounted, and a worker that starts after a crash unmounts and detaches what its previous
run left (clean_stale).
"""

import asyncio
import os
import pathlib
import shutil
import subprocess

MAX_MB = 3 << 20  # 3 TiB, Modal's most
DEFAULT_SHARE = 0.10  # of the worker's free disk, by default, for each container
DEFAULT_CAP_MB = 100 << 10  # but never more than 100 GiB
MIN_MB = 64  # smaller filesystems leave too little room for ext4's own
# No journal (the filesystem dies with its container), no space reserved for root (a container's
# root is its only user), inode tables left for the kernel to treat as empty rather than written
# out now; and at mount, no background zeroing of them (noinit_itable) that would write the
# tables in full into the sparse file.
MKFS = ("mkfs.ext4", "-F", "-q", "-m", "0", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard")
MOUNT_OPTIONS = "loop,noinit_itable,nosuid,nodev"


class DiskError(Exception):
    pass


def default_mb(path: pathlib.Path) -> int:
    """The limit of a container that does not give one: a share of the free disk where the
    worker keeps containers, so that one container cannot fill it."""
    st = os.statvfs(path)
    free_mb = st.f_bavail * st.f_frsize >> 20
    return max(MIN_MB, min(DEFAULT_CAP_MB, int(free_mb * DEFAULT_SHARE)))


def available() -> str | None:
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4, which makes containers' disks, is not installed (apt-get install e2fsprogs)"
    return None


class Disk:
    """One container's disk, at DIR/disk (mounted) from DIR/disk.img."""

    def __init__(self, directory: pathlib.Path, size_mb: int):
        self.size_mb = max(MIN_MB, size_mb)
        self.image = directory / "disk.img"
        self.mount_point = directory / "disk"
        self.mounted = False

    async def create(self):
        self.mount_point.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size_mb << 20)  # sparse: it takes what is written
        await _run(*MKFS, str(self.image))
        self.mounted = True  # from here remove() unmounts: a start cancelled now must not leave a mount
        await _run("mount", "-o", MOUNT_OPTIONS, str(self.image), str(self.mount_point))

    def full(self) -> bool:
        """Whether (almost) nothing is left: what a write that failed with ENOSPC leaves."""
        try:
            st = os.statvfs(self.mount_point)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize <= max(1 << 20, (self.size_mb << 20) // 100)

    async def remove(self):
        if self.mounted:
            # Lazily: a process of the container that has not quite ended may hold it a moment
            # longer; the loop device goes with the last reference.
            await _run("umount", "--lazy", str(self.mount_point), check=False)
            self.mounted = False
        self.image.unlink(missing_ok=True)


async def _run(*argv: str, check: bool = True):
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await proc.communicate()
    except asyncio.CancelledError:
        # A mount finishes even if its caller is cancelled: wait for it, so that the cleanup
        # that follows undoes it rather than running before it.
        await proc.wait()
        raise
    if check and proc.returncode:
        raise DiskError(f"{' '.join(argv[:1])} failed for a container's disk: {err.decode(errors='replace').strip()}")


def mounts_under(root: pathlib.Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def loops_under(root: pathlib.Path) -> list[str]:
    """Loop devices whose backing file is below `root`."""
    prefix = str(root).rstrip("/") + "/"
    devices = []
    for backing in pathlib.Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip().startswith(prefix):
                devices.append("/dev/" + backing.parent.parent.name)
        except OSError:
            pass
    return devices


def clean_stale(root: pathlib.Path):
    """Unmount and detach the disks of containers that are gone (a worker that crashed left them)."""
    for point in mounts_under(root):
        subprocess.run(["umount", "--lazy", point], capture_output=True)
    for dev in loops_under(root):
        subprocess.run(["losetup", "--detach", dev], capture_output=True)
