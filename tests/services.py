"""Servers that tests share, each started at most once per test run and stopped when it exits.

`postgres_url()`: a fresh, empty database on the one PostgreSQL server of this run (Debian's
`postgresql` package, /usr/lib/postgresql/*/bin), started in a temporary directory of its own
on a unix socket there. As root it runs as the `postgres` user (PostgreSQL refuses root).
Durability is off (fsync=off): a test's data need not survive the machine crashing, and the
run is faster for it; a killed PostgreSQL process still keeps what it committed.
"""

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile

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
