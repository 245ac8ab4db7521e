"""Process helpers shared by the daemons Ember starts."""

import ctypes
import os
import signal


def die_with_parent(parent_pid: int | None):
    """Ask the kernel to SIGKILL this process when its parent dies, so nothing is orphaned."""
    if parent_pid is None:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before we could ask
