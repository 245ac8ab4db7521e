"""A full disk under the control plane's data: the one error for it, whoever hit it.

The store (SQLite's SQLITE_FULL) and the blob store (ENOSPC) both raise DiskFull, which the
API answers with RESOURCE_EXHAUSTED: what could not be written fails, with a message naming
the directory and the room left, and everything written before stays. Nothing is wedged: the
next write tries again, so the control plane carries on by itself once there is room.
"""

import errno
import os
import sqlite3

# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_IOERR, _SQLITE_FULL = 10, 13
_NEARLY_NONE = 1 << 20  # bytes: an I/O error with less than this free is the disk being full


class DiskFull(Exception):
    """The control plane could not write `what` under `directory`: its disk is full."""

    def __init__(self, directory: str | os.PathLike, what: str):
        self.directory = os.fspath(directory)
        super().__init__(
            f"the control plane's disk is full: {what} could not be written to {self.directory} "
            f"({format_bytes(free_bytes(self.directory))} free there). Free space on that disk, or move the "
            "control plane's --data-dir to a larger one; it carries on by itself once there is room, and "
            "keeps everything it accepted before")


def free_bytes(directory: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of directory."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def format_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def is_disk_full(e: BaseException, directory: str | os.PathLike) -> bool:
    """Whether e is a write that failed for want of room under directory."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, sqlite3.Error):
        code = (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF
        # A write of the WAL that meets a full disk can come back as an I/O error instead.
        return code == _SQLITE_FULL or (code == _SQLITE_IOERR and free_bytes(directory) < _NEARLY_NONE)
    return False
