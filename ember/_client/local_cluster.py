"""The embedded local cluster: a control plane and one worker, started for one run.

State lives under $EMBER_HOME/local (default ~/.ember/local); logs in $EMBER_HOME/local/logs.
Both processes die with the process that started them. They talk over a unix socket.
"""

import fcntl
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile

from .. import config, exception
from .client import Client


class LocalCluster:
    def __init__(self, base: pathlib.Path, lock_fd: int, sock_dir: pathlib.Path, procs, logs, owned_base: bool):
        self.base = base
        self.lock_fd = lock_fd
        self.sock_dir = sock_dir
        self.procs = procs
        self.logs = logs
        self.owned_base = owned_base
        self.url = f"unix:{sock_dir}/ember.sock"

    @classmethod
    def start(cls) -> "LocalCluster":
        home = config.ember_home()
        home.mkdir(parents=True, exist_ok=True)
        base = home / "local"
        owned_base = False
        base.mkdir(exist_ok=True)
        lock_fd = os.open(base / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Another run uses the local cluster's state: this one gets a private, temporary one.
            os.close(lock_fd)
            base = pathlib.Path(tempfile.mkdtemp(prefix="local-", dir=home))
            lock_fd = -1
            owned_base = True
        logs = base / "logs"
        logs.mkdir(exist_ok=True)
        # A short path: unix socket paths are limited to about 100 bytes.
        sock_dir = pathlib.Path(tempfile.mkdtemp(prefix="ember-"))
        url = f"unix:{sock_dir}/ember.sock"
        env = dict(os.environ, EMBER_PARENT_PID=str(os.getpid()))
        env.pop("EMBER_SERVER_URL", None)
        cmd = [sys.executable, "-m", "ember.cli.main"]
        procs = {}
        for name, args in (
            ("server", ["server", "--address", url, "--data-dir", str(base / "server")]),
            ("worker", ["worker", "--server", url, "--data-dir", str(base / "worker"),
                        "--cache-dir", os.environ.get("EMBER_CACHE_DIR") or str(home / "cache")]),
        ):
            with open(logs / f"{name}.log", "ab") as log:
                procs[name] = subprocess.Popen(cmd + args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                               env=env, start_new_session=True)
        cluster = cls(base, lock_fd, sock_dir, procs, logs, owned_base)
        try:
            Client.for_url(url)
        except exception.ConnectionError:
            cluster.stop()
            tail = (logs / "server.log").read_text(errors="replace")[-2000:]
            raise exception.ExecutionError(
                f"The local Ember cluster did not start; its log ({logs / 'server.log'}) ends with:\n{tail}") from None
        os.environ["EMBER_SERVER_URL"] = url
        return cluster

    def stop(self):
        if os.environ.get("EMBER_SERVER_URL") == self.url:
            del os.environ["EMBER_SERVER_URL"]
        Client.close_url(self.url)
        # The worker first, so that it stops its containers while the control plane still runs.
        for name in ("worker", "server"):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
        if self.owned_base:
            shutil.rmtree(self.base, ignore_errors=True)
