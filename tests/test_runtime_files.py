"""The runtime directories a worker gives its containers: one per Ember version, kept while a
worker process uses it, removed once none does."""

import subprocess
import sys

from conftest import wait_for

from ember.worker import runtime_files

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
sys.stdin.read()
"""


def test_runtime_directories_of_other_versions_go_once_no_worker_holds_them(tmp_path):
    unused = tmp_path / "py3.11-0000000000000000"
    held = tmp_path / "py3.11-1111111111111111"
    for d in (unused, held):
        (d / "ember").mkdir(parents=True)
        (d / "ember" / "__init__.py").write_text("")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(held / runtime_files.LOCK)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # a running worker of another version
        mine = runtime_files.prepare(tmp_path)
        assert (mine / "ember" / "__init__.py").is_file() and (mine / "grpc").is_dir()
        wait_for(lambda: not unused.exists(), what="the unused directory removed")
        assert held.is_dir()
        assert runtime_files.prepare(tmp_path) == mine  # made once
    finally:
        holder.communicate("")
    runtime_files.prepare(tmp_path)  # the other worker has stopped: its directory goes too
    # Renamed away at once, then removed in the background: wait for the directory to be empty of it.
    wait_for(lambda: sorted(p.name for p in tmp_path.iterdir()) == [mine.name],
             what="the released directory removed, and nothing else left")
