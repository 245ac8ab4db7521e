"""Test fixtures: a real control plane and real workers, as processes on loopback.

Nothing of Ember's own is mocked. Timeouts are shortened so that fault tests (lost leases,
dead workers) finish quickly; waiting is always for a condition, never a fixed sleep.
"""

import asyncio
import contextlib
import json
import functools
import os
import pathlib
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest
import services

ROOT = pathlib.Path(__file__).resolve().parent.parent
APPS = pathlib.Path(__file__).resolve().parent / "apps"
PY = sys.executable

sys.path.insert(0, str(APPS))
# Image layers (a Debian base takes a minute to build) are shared by every test's workers,
# and kept between runs; tests that need a cold cache give their worker its own.
os.environ.setdefault("EMBER_CACHE_DIR", str(ROOT / ".cache" / "tests"))
# Never the developer's own profiles (~/.ember.toml): they could point tests at a real server.
os.environ["EMBER_CONFIG_PATH"] = os.devnull


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before in this run: two picks in a row can otherwise be
    the same port (a control plane's gRPC and HTTP ports once were, and it could not start)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def dead(pid: int) -> bool:
    """Whether a process has ended (a zombie whose parent is frozen has ended too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def scenario_test(make_plane, scenario):
    """A test of scenario(plane) for a control plane's parts without processes (make_plane(tmp_path),
    which has a store), run on an event loop of its own: the store commits on it."""

    def test(tmp_path):
        async def main():
            plane = make_plane(tmp_path)
            try:
                await scenario(plane)
            finally:
                plane.store.close()

        asyncio.run(main())

    test.__doc__ = scenario.__doc__
    return test


def run_async(test):
    """Run a coroutine test in an event loop of its own (a store's writes need a running loop)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return run


# The stores a control plane keeps its state in: SQLite (the default), or PostgreSQL (the one
# server of the test run, a fresh database per cluster; tests/services.py).
STORES = ["sqlite", "postgres"]


def on_both_stores(fixture: str = "cluster", unix: bool = False):
    """Run a test twice, its `cluster` (or the fixture named) on SQLite and on PostgreSQL; with
    unix, a third time on SQLite with the control plane on a unix socket (Cluster's "unix")."""
    return pytest.mark.parametrize(fixture, [*STORES, "unix"] if unix else STORES, indirect=True)


def on_tcp_and_unix(fixture: str = "cluster"):
    """Run a test twice, its `cluster` (or the fixture named) on TCP and on a unix socket."""
    return pytest.mark.parametrize(fixture, ["sqlite", "unix"], indirect=True)


# Clusters started and not stopped, and those stopped during the current test (often in its own
# `finally`): their logs go with a failure's report.
LIVE_CLUSTERS: list["Cluster"] = []
STOPPED_IN_TEST: list["Cluster"] = []


def pytest_runtest_setup(item):
    STOPPED_IN_TEST.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report ends with the last lines of each of its clusters' logs (the server's
    and the workers'), which is often all a CI run shows of why."""
    report = yield
    if report.failed:
        for c in LIVE_CLUSTERS + STOPPED_IN_TEST:
            for log in sorted(c.logs.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-40:]
                report.sections.append((f"{log.name} of the cluster in {c.tmp}", "\n".join(tail)))
    return report


class Cluster:
    """A control plane and workers on loopback, each its own process."""

    def __init__(self, tmp: pathlib.Path, app_timeout: float = 20, host: str = "127.0.0.1", store: str = "sqlite"):
        """store: "sqlite" or "postgres"; or "unix", SQLite with the control plane on a unix
        socket rather than TCP (as the embedded local cluster's: frames on a unix socket too)."""
        self.tmp = tmp
        self.database_url = services.postgres_url() if store == "postgres" else None
        self.app_timeout = app_timeout
        self.host = host  # where the control plane listens (test_hosts.py: a bridge's address)
        self.port = free_port()
        self.url = f"{host}:{self.port}"
        # A short directory: a unix socket's path is limited to about 100 bytes.
        self.sock_dir = pathlib.Path(tempfile.mkdtemp(prefix="ember-test-")) if store == "unix" else None
        if self.sock_dir:
            self.url = f"unix:{self.sock_dir}/ember.sock"
        self.http_port = free_port()
        self.web_url = f"http://{host}:{self.http_port}"
        self.dashboard_port = free_port()
        self.dashboard_url = f"http://{host}:{self.dashboard_port}"
        self.server = None
        self.workers: list[subprocess.Popen] = []
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.ca_file = tmp / "server" / "tls" / "ca.pem"  # what `--tls auto` makes
        self.ready_file = tmp / "server-ready"  # written once the gRPC services answer
        LIVE_CLUSTERS.append(self)

    def start_server(self, extra_args=()):
        """Start the control plane; with TLS among extra_args (--tls auto, --tls-cert), its URLs are https."""
        if any(a in ("--tls", "--tls-cert") for a in extra_args):
            self.url = f"https://{self.host}:{self.port}"
            self.web_url = f"https://{self.host}:{self.http_port}"
            self.dashboard_url = f"https://{self.host}:{self.dashboard_port}"
        log = open(self.logs / "server.log", "ab")
        self.ready_file.unlink(missing_ok=True)
        if self.sock_dir:
            self.sock_dir.mkdir(exist_ok=True)  # (again, after a stop())
        self.server = subprocess.Popen(
            [PY, "-m", "ember.cli.main", "server",
             *(["--address", self.url] if self.sock_dir else ["--host", self.host, "--port", str(self.port)]),
             "--ready-file", str(self.ready_file),
             "--data-dir", str(self.tmp / "server"), "--http", f"{self.host}:{self.http_port}",
             "--dashboard", f"{self.host}:{self.dashboard_port}",
             "--lease-timeout", "3", "--worker-timeout", "3", "--app-timeout", str(self.app_timeout),
             *(["--database-url", self.database_url] if self.database_url else []), *extra_args],
            stdout=log, stderr=log, cwd=self.tmp)
        wait_for(self._server_up, what="the control plane to listen")
        # Its first admin token (what this process's clients call with) and worker token.
        self.token_file = self.tmp / "server" / "admin-token.json"
        self.worker_token_file = self.tmp / "server" / "worker-token.json"
        token = json.loads(self.token_file.read_text())
        self.env = {"EMBER_SERVER_URL": self.url, "EMBER_TOKEN_ID": token["token_id"],
                    "EMBER_TOKEN_SECRET": token["token_secret"]}

    def _server_up(self):
        # Not a connect() probe: one can reach another listener on the port, or connect to itself.
        assert self.server.poll() is None, (self.logs / "server.log").read_text()
        return self.ready_file.exists()

    def start_worker(self, name="w1", backend="process", env=None, prefix=(), **opts):
        """A worker; `prefix` runs it inside something (test_hosts.py: a network namespace)."""
        log = open(self.logs / f"worker-{name}.log", "ab")
        args = [*prefix, PY, "-m", "ember.cli.main", "worker", "--server", self.url, "--data-dir", str(self.tmp / name),
                "--name", name, "--backend", backend, "--token-file", str(self.worker_token_file)]
        for k, v in opts.items():
            args += [f"--{k}", str(v)]
        w = subprocess.Popen(args, stdout=log, stderr=log, cwd=self.tmp, env=dict(os.environ, **(env or {})))
        self.workers.append(w)
        return w

    def store_url(self) -> str:
        """Where the control plane keeps its state: its PostgreSQL database, or its SQLite file."""
        return self.database_url or str(self.tmp / "server" / "ember.db")

    def query(self, sql: str) -> list[tuple]:
        """Rows of a query on the control plane's database (read-only), as it is now."""
        if self.database_url:
            import psycopg
            with psycopg.connect(self.database_url) as db:
                return db.execute(sql).fetchall()
        with contextlib.closing(sqlite3.connect(f"file:{self.store_url()}?mode=ro", uri=True)) as db:
            return db.execute(sql).fetchall()

    def kill_server(self):
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()

    def stop(self):
        if self in LIVE_CLUSTERS:
            LIVE_CLUSTERS.remove(self)
            STOPPED_IN_TEST.append(self)
        for p in self.workers + [self.server]:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in self.workers + [self.server]:
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.sock_dir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)

    def log(self, name="server") -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def cluster(tmp_path, monkeypatch, request):
    c = Cluster(tmp_path, store=getattr(request, "param", "sqlite"))  # on_both_stores() gives param
    c.start_server()
    c.start_worker()
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EMBER_TEST_DIR", str(tmp_path))
    yield c
    c.stop()


def container_backend_missing() -> str | None:
    """Why the container backend cannot run here (tests that need it skip), or None."""
    from ember.worker.container import ContainerBackend
    return ContainerBackend.available()


@pytest.fixture(scope="module")
def container_cluster(tmp_path_factory):
    """A control plane and one container-backend worker (declaring one H100), for a module."""
    why = container_backend_missing()
    if why:
        pytest.skip(f"container backend unavailable: {why}")
    with module_cluster(tmp_path_factory.mktemp("cluster"), backend="container", env={"EMBER_GPUS": "H100"}) as c:
        yield c


@contextlib.contextmanager
def module_cluster(tmp: pathlib.Path, store: str = "sqlite", **worker_opts):
    """A control plane and one worker that this process's clients use, for a module's tests."""
    c = Cluster(tmp, store=store)
    c.start_server()
    c.start_worker(**worker_opts)
    try:
        with environ(c.env):
            yield c
    finally:
        c.stop()


@contextlib.contextmanager
def environ(env: dict):
    """os.environ with env's variables set; as it was before, after."""
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_py(code: str, env_extra=None, timeout=120, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(APPS), **(env_extra or {}))
    return subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
