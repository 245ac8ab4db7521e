"""Volume throughput: writing then reading back 1 GB of files inside a container, on a mounted
volume, next to the same operations on the worker's disk directly, in one run.

    python bench/volumes.py          # Linux, root, debootstrap (the container backend)

Each side writes 16 files of 64 MiB (each fsync'ed), then reads them back, and reports MB/s.
The host side runs the same code in a directory on the worker's disk (the filesystem that holds
the worker's data, where volume versions and container writes live).
"""

import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FILES, SIZE = 16, 64 << 20


def write_then_read(root: str) -> dict:
    block = os.urandom(1 << 20)
    os.makedirs(root, exist_ok=True)
    t = time.perf_counter()
    for i in range(FILES):
        with open(f"{root}/part-{i}.bin", "wb") as f:
            for _ in range(SIZE // len(block)):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    total = 0
    for i in range(FILES):
        with open(f"{root}/part-{i}.bin", "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    read_s = time.perf_counter() - t
    mb = FILES * SIZE / 1e6
    return {"write_mb_s": mb / write_s, "read_mb_s": mb / read_s, "bytes": total}


def main():
    from core import start_cluster, stop_cluster

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-volumes-"))
    server, worker = start_cluster(tmp, "container")
    try:
        import ember
        app = ember.App("bench-volumes")
        vol = ember.Volume.from_name("bench-volume", create_if_missing=True)

        @app.function(volumes={"/data": vol}, timeout=600, serialized=True)
        def in_container():
            return write_then_read("/data/run")

        with app.run():
            inside = in_container.remote()
        host = write_then_read(str(tmp / "worker" / "host-run"))
    finally:
        stop_cluster(server, worker)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# volume benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores; "
          f"{FILES} files of {SIZE >> 20} MiB")
    print(f"{'':28}{'container':>12}{'worker disk':>12}{'ratio':>8}")
    for key, label in (("write_mb_s", "write (fsync), MB/s"), ("read_mb_s", "read back, MB/s")):
        print(f"{label:28}{inside[key]:12.0f}{host[key]:12.0f}{inside[key] / host[key]:8.2f}")


if __name__ == "__main__":
    main()
