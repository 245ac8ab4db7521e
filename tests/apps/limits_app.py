"""Functions the limit tests call: each runs in a container and reports what its limits let it do."""

import os
import subprocess
import sys
import threading
import time

import ember

app = ember.App("limit-tests")
base = ember.Image.debian_slim()


@app.function(image=base, cpu=(0.5, 0.5), memory=200)
def limits_of_mine():
    """The name of the container's cgroups (a spare's, if it started as one), for the test to read
    them on the host: the last part of its cgroup paths, which it sees as the host does."""
    with open("/proc/self/cgroup") as f:
        return {line.rstrip().rpartition("/")[2] for line in f if "/ember/" in line}


@app.function(image=base)
def threads_until_refused(most):
    """Start threads (each a task, counted by the pids limit) until one is refused; how many started."""
    stop = threading.Event()
    started = []
    try:
        for _ in range(most):
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()
            started.append(t)
    except RuntimeError:  # "can't start new thread": clone() failed with EAGAIN
        pass
    finally:
        stop.set()
    for t in started:
        t.join()
    return len(started)


@app.function(image=base, cpu=(0.5, 0.5))
def busy_processes(n, seconds):
    """Spin in n processes at once for `seconds`; return CPU time used / wall time taken.

    The processes are new interpreters, not forks: a fork of a process with gRPC's threads
    running may abort in gRPC's fork handlers (seen here; noted for the runtime)."""
    t0, c0 = time.monotonic(), os.times()
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]
    for p in procs:
        p.wait()
    c1 = os.times()
    return (c1.children_user + c1.children_system - c0.children_user - c0.children_system) / (time.monotonic() - t0)


@app.function(image=base, ephemeral_disk=64)
def fill_disk():
    """Write 1 MiB at a time until the disk refuses; MiB written, the error, the disk's size in MiB."""
    written, err = 0, None
    chunk = os.urandom(1 << 20)  # incompressible, not that ext4 compresses
    with open("/tmp/fill", "wb") as f:
        try:
            while written < 1024:
                f.write(chunk)
                f.flush()
                written += 1
        except OSError as e:
            err = e.errno
    os.unlink("/tmp/fill")
    st = os.statvfs("/")
    return written, err, st.f_blocks * st.f_frsize >> 20


@app.function(image=base, ephemeral_disk=64, retries=0)
def overfill_disk():
    with open("/tmp/fill", "wb") as f:
        for _ in range(1024):
            f.write(bytes(1 << 20))
            f.flush()


@app.function(image=base)
def disk_size():
    st = os.statvfs("/")
    return st.f_blocks * st.f_frsize >> 20


@app.function(image=base)
def sleep(seconds):
    time.sleep(seconds)

