"""The embedded local cluster: a control plane and one worker, started for one run.

State lives under $EMBER_HOME/local (default ~/.ember/local); logs in $EMBER_HOME/local/logs.
Both processes die with the process that started them. They talk over a unix socket. The
control plane makes its first admin and worker tokens on its first start; the worker joins
with the one, this process calls with the other (and so do the processes it starts).
"""

import fcntl
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .. import config, exception
from .auth import read_token_file
from .client import Client

TOKEN_WAIT = 30.0  # seconds for a new control plane to write its first tokens
TOKEN_ENV = ("EMBER_SERVER_URL", "EMBER_TOKEN_ID", "EMBER_TOKEN_SECRET")


class LocalCluster:
    def __init__(self, base: pathlib.Path, lock_fd: int, sock_dir: pathlib.Path, procs, logs, owned_base: bool):
        self.saved_env = {k: os.environ.get(k) for k in TOKEN_ENV}
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
        env = {k: v for k, v in os.environ.items() if k not in TOKEN_ENV}
        env["EMBER_PARENT_PID"] = str(os.getpid())
        cmd = [sys.executable, "-m", "ember.cli.main"]
        server_dir = base / "server"
        procs = {}

        def start(name, args):
            with open(logs / f"{name}.log", "ab") as log:
                procs[name] = subprocess.Popen(cmd + args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                               env=env, start_new_session=True)

        start("server", ["server", "--address", url, "--data-dir", str(server_dir)])
        cluster = cls(base, lock_fd, sock_dir, procs, logs, owned_base)
        try:
            # On the first start the worker waits for the token the new control plane writes.
            cluster._wait_for(server_dir / "worker-token.json")
            start("worker", ["worker", "--server", url, "--data-dir", str(base / "worker"),
                             "--token-file", str(server_dir / "worker-token.json"),
                             "--cache-dir", os.environ.get("EMBER_CACHE_DIR") or str(home / "cache")])
            token = read_token_file(server_dir / "admin-token.json")
            Client.for_url(url, token)
        except (exception.ConnectionError, exception.AuthError) as e:
            cluster.stop()
            tail = (logs / "server.log").read_text(errors="replace")[-2000:]
            raise exception.ExecutionError(
                f"The local Ember cluster did not start ({e}); its log ({logs / 'server.log'}) ends with:\n"
                f"{tail}") from None
        os.environ.update(EMBER_SERVER_URL=url, EMBER_TOKEN_ID=token[0], EMBER_TOKEN_SECRET=token[1])
        return cluster

    def _wait_for(self, path: pathlib.Path):
        deadline = time.monotonic() + TOKEN_WAIT
        while not path.exists():
            if self.procs["server"].poll() is not None or time.monotonic() > deadline:
                raise exception.ConnectionError(f"the control plane did not write {path}")
            time.sleep(0.01)

    def stop(self):
        if os.environ.get("EMBER_SERVER_URL") == self.url:
            for key, value in self.saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        Client.close_url(self.url)
        # The worker first, so that it stops its containers while the control plane still runs.
        for name in ("worker", "server"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
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
