"""`ember container list|logs|exec|stop` and `ember shell`, driven as a user would: the CLI against a
real cluster (the process backend, and the container backend where namespaces matter), in a
pseudo-terminal where the command is interactive; and another workspace trying the same."""

import asyncio
import errno
import fcntl
import json
import os
import pty
import queue
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time

import grpc
import pytest

from conftest import APPS, PY, ROOT, module_cluster, wait_for
from ember._client.auth import metadata
from ember._client.client import Client
from ember._client.container_exec import ContainerExec
from ember.proto import api_pb2, api_pb2_grpc

import inspect_app


def cli(*args, env=None, input=None, timeout=60):
    return subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, input=input, env=dict(os.environ, PYTHONPATH=str(APPS), **(env or {})))


def containers(app=None, env=None) -> list[dict]:
    out = cli("container", "list", "--json", *(["--app", app] if app else []), env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class Terminal:
    """A command in a pseudo-terminal of its own: what it prints, and keys typed into it."""

    def __init__(self, argv, rows=24, cols=80):
        # Not pty.fork(): a fork of this process, whose gRPC client has threads, can crash in gRPC.
        self.fd, terminal = pty.openpty()
        self.resize(rows, cols)
        self.proc = subprocess.Popen([PY, *argv], stdin=terminal, stdout=terminal, stderr=terminal, cwd=ROOT,
                                     start_new_session=True,
                                     env=dict(os.environ, PYTHONPATH=str(APPS), TERM="xterm"))
        self.pid = self.proc.pid
        os.close(terminal)
        self.output = b""

    def resize(self, rows, cols):
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str):
        os.write(self.fd, text.encode())

    def read_until(self, text: str, timeout=60, more=False) -> str:
        """What it printed, once it holds text (with more: once more of it holds text)."""
        deadline = time.monotonic() + timeout
        start = len(self.output) if more else 0
        while text.encode() not in self.output[start:]:
            assert time.monotonic() < deadline, f"never printed {text!r}; printed:\n{self.printed()}"
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError as e:  # EIO: the command ended
                    assert e.errno == errno.EIO
                    raise AssertionError(f"ended before printing {text!r}:\n{self.printed()}") from None
        return self.printed()

    def read_match(self, pattern: str, timeout=60) -> str:
        """The first group of the pattern, once what the command printed matches it."""
        deadline = time.monotonic() + timeout
        while not (m := re.search(pattern, self.printed())):
            assert time.monotonic() < deadline, f"never printed {pattern!r}; printed:\n{self.printed()}"
            self.read_until("\n", timeout=deadline - time.monotonic(), more=True)
        return m.group(1)

    def printed(self) -> str:
        return self.output.decode(errors="replace")

    def wait(self, timeout=30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_output = select.select([self.fd], [], [], 0.05)[0]
            if with_output:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:
                    pass
            if self.proc.poll() is not None:
                os.close(self.fd)
                return self.proc.returncode
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"still running; printed:\n{self.printed()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("cluster")) as c:
        # Another workspace, whose token tries to reach this one's containers.
        assert cli("workspace", "create", "intruders", env=c.env).returncode == 0
        token = json.loads(cli("token", "new", "--workspace", "intruders", "--json", env=c.env).stdout)
        c.intruder = {"EMBER_TOKEN_ID": token["token_id"], "EMBER_TOKEN_SECRET": token["token_secret"]}
        yield c


def test_list_logs_exec_stop(cluster, tmp_path):
    marker, release = tmp_path / "marker", tmp_path / "release"
    with inspect_app.app.run():
        call = inspect_app.hold.spawn(str(marker), str(release))
        wait_for(lambda: marker.exists() and marker.read_text(), what="the input to start")
        first_pid = int(marker.read_text())
        [c] = containers()
        cid = c["container_id"]
        assert (c["app"], c["function"], c["worker"], c["state"], c["inputs"]) == ("inspect-tests", "hold", "w1",
                                                                                   "running", 1)
        assert [x["container_id"] for x in containers(app=c["app_id"])] == [cid]
        assert containers(app="some-other-app") == []
        piped = cli("container", "list")  # not a terminal: one tab-separated line a container
        assert piped.stdout.split("\t")[0] == cid, piped.stdout

        # Its logs, by its id alone.
        logs = cli("container", "logs", cid)
        assert logs.returncode == 0 and "holding in" in logs.stdout, logs.stderr

        # Exec: the function's environment and working directory; the command's exit code.
        out = cli("container", "exec", cid, "--", "sh", "-c", 'echo "$GREETING"; pwd; echo oops >&2; exit 3')
        assert out.returncode == 3, out.stderr
        workdir = logs.stdout.split("holding in ")[1].split()[0]
        assert out.stdout == f"hello from the function's env\n{workdir}\n" and out.stderr == "oops\n"
        # Stdin, piped through both ways; a command that is not there.
        out = cli("container", "exec", cid, "--", "sh", "-c", "tr a-z A-Z; echo done", input="piped text\n")
        assert (out.returncode, out.stdout) == (0, "PIPED TEXT\ndone\n"), out.stderr
        # What a command leaves running ends with it (here, on the worker's machine), its jobs in
        # process groups of their own (set -m) too.
        out = cli("container", "exec", cid, "--", "sh", "-c", "set -m; sleep 62 & sleep 63 & echo started")
        assert out.stdout == "started\n", out.stderr
        wait_for(lambda: not {b"sleep\x0062\x00", b"sleep\x0063\x00"} & set(_cmdlines()), what="its jobs to end")
        out = cli("container", "exec", cid, "--", "no-such-command", "arg")
        assert out.returncode == 127 and "no-such-command: command not found" in out.stderr, out.stderr

        # Another workspace's token: nothing runs, and the container is not even there for it.
        intruded = tmp_path / "intruded"
        out = cli("container", "exec", cid, "--", "touch", str(intruded), env=cluster.intruder)
        assert out.returncode == 1 and f"no running container {cid}" in out.stderr, out.stderr
        assert cli("container", "stop", cid, env=cluster.intruder).returncode == 1
        assert containers(env=cluster.intruder) == []
        assert cli("container", "logs", cid, env=cluster.intruder).returncode == 1
        raw = api_pb2_grpc.ClientApiStub(grpc.insecure_channel(cluster.url))
        md = metadata((cluster.intruder["EMBER_TOKEN_ID"], cluster.intruder["EMBER_TOKEN_SECRET"]))
        start = api_pb2.ContainerExecRequest(start=api_pb2.ExecStart(container_id=cid, argv=["touch", str(intruded)]))
        with pytest.raises(grpc.RpcError) as info:
            list(raw.ContainerExec(iter([start]), metadata=md, timeout=30))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert not intruded.exists()

        # A client that goes away: its command is killed.
        sleeper = subprocess.Popen([PY, "-m", "ember.cli.main", "container", "exec", cid, "--", "sleep", "61"],
                                   stdin=subprocess.DEVNULL, cwd=ROOT)
        wait_for(lambda: b"sleep\x0061\x00" in list(_cmdlines()), what="the command to run")
        sleeper.kill()
        sleeper.wait()
        wait_for(lambda: b"sleep\x0061\x00" not in list(_cmdlines()), what="the command to be killed")

        # A container stopped while a command runs in it: the command ends with an error saying
        # so, and the input it ran is retried in another container.
        sleeper = subprocess.Popen([PY, "-m", "ember.cli.main", "container", "exec", cid, "--", "sleep", "60"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        wait_for(lambda: b"sleep\x0060\x00" in list(_cmdlines()), what="the command to run")
        marker.unlink()
        out = cli("container", "stop", cid)
        assert out.returncode == 0 and f"stopped container {cid}" in out.stdout, out.stderr
        _, err = sleeper.communicate(timeout=30)
        assert sleeper.returncode == 1 and cid in err and "while" in err, err
        wait_for(lambda: marker.exists() and marker.read_text(), what="the input to run again")
        [again] = [c["container_id"] for c in containers()]
        assert again != cid

        # Its logs followed (-f): what it printed, then what it prints.
        follower = subprocess.Popen([PY, "-m", "ember.cli.main", "container", "logs", again, "-f"],
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
        try:
            assert "holding in" in lines.get(timeout=30)
            release.touch()
            assert lines.get(timeout=30) == "released\n"
        finally:
            follower.kill()
            follower.wait()
        assert call.get(timeout=60) != first_pid


async def _many_execs(client, cid: str, n: int) -> list[tuple[bytes, int]]:
    async def one(i):
        printed = b""
        async for out in ContainerExec(client, cid, ["sh", "-c", f"sleep 0.2; echo {i}; exit {i}"]).outputs():
            printed += out.data
            if out.exited:
                assert not out.error, out.error
                return printed, out.exit_code

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _cmdlines():
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                yield f.read()
        except OSError:
            pass


def test_shell_in_a_terminal(cluster):
    term = Terminal(["-m", "ember.cli.main", "shell", str(APPS / "inspect_app.py") + "::hold"], rows=30, cols=100)
    try:
        term.read_until("$ " if os.geteuid() else "# ")  # the shell's prompt
        term.type("echo $((6 * 7))\n")
        term.read_until("42\r\n")
        term.type("stty size\n")  # the terminal's size, passed through
        term.read_until("30 100\r\n")
        term.resize(40, 120)
        os.kill(term.pid, signal.SIGWINCH)  # as the terminal would, for a resize
        time.sleep(0.2)
        term.type("stty size\n")
        term.read_until("40 120\r\n")
        [c] = containers(app="inspect-tests")
        assert c["function"] == "hold" and c["inputs"] == 0  # it runs no input
        term.type("exit 5\n")
        assert term.wait() == 5
    finally:
        term.proc.kill()  # (when it failed: else it is gone already)
        term.proc.wait()
    wait_for(lambda: containers(app="inspect-tests") == [], what="the shell's container to stop")


def test_shell_on_an_image_with_pipes(cluster):
    out = cli("shell", "--image", f"{APPS / 'inspect_app.py'}::shell_image", "-T",
              "--cmd", 'read line; echo "$SHELL_TEST: $line"; exit 3', input="typed\n")
    assert (out.returncode, out.stdout) == (3, "from the image: typed\n"), out.stderr
    out = cli("shell", "--image", f"{APPS / 'inspect_app.py'}::no_such_image")
    assert out.returncode == 2 and "has no ember.Image named 'no_such_image'" in out.stderr, out.stderr


def test_exec_joins_an_isolated_container(container_cluster):
    """On the container backend: a command runs in the container's namespaces, root, cgroups,
    environment and working directory, as its function does; with a terminal inside it too."""
    with inspect_app.app.run():
        call = inspect_app.isolated.spawn()
        wait_for(lambda: [c for c in containers() if c["function"] == "isolated" and c["inputs"] == 1],
                 timeout=120, what="the function's container to run its input")
        [c] = [c for c in containers() if c["function"] == "isolated"]
        cid = c["container_id"]
        out = cli("container", "exec", cid, "--", "sh", "-c", 'hostname; pwd; echo "$GREETING"; id -u; '
                  "cut -d' ' -f4 /proc/$$/stat; "
                  "readlink /proc/self/ns/mnt /proc/self/ns/pid; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' "
                  "/proc/self/status; cat /proc/self/cgroup")
        assert out.returncode == 0, out.stderr
        hostname, cwd, greeting, uid, parent, mnt, pid_ns, *rest = out.stdout.splitlines()
        confined, cgroup = rest[:4], rest[4:]
        # Forked by the container's init, its exec agent, inside already (no helper on the host,
        # which the container's PID namespace would show as its parent 0).
        assert parent == "1"
        # Stdin, exit codes, a command that is not there, as on the process backend.
        out = cli("container", "exec", cid, "--", "sh", "-c", "tr a-z A-Z; exit 4", input="piped\n")
        assert (out.returncode, out.stdout) == (4, "PIPED\n"), out.stderr
        out = cli("container", "exec", cid, "--", "no-such-command")
        assert out.returncode == 127 and "no-such-command: command not found" in out.stderr, out.stderr
        # What a command leaves running ends with it; so does a command whose client goes away.
        job = "import os, time; os.setpgid(0, 0); time.sleep(58)"  # a job in a process group of its own
        out = cli("container", "exec", cid, "--", "sh", "-c", f"python3 -c '{job}' & sleep 0.5; echo started")
        assert out.stdout == "started\n", out.stderr
        wait_for(lambda: not any(job.encode() in c for c in _cmdlines()), what="its job to end")
        sleeper = subprocess.Popen([PY, "-m", "ember.cli.main", "container", "exec", cid, "--", "sleep", "57"],
                                   stdin=subprocess.DEVNULL, cwd=ROOT)
        wait_for(lambda: b"sleep\x0057\x00" in list(_cmdlines()), what="the command to run")
        sleeper.kill()
        sleeper.wait()
        wait_for(lambda: b"sleep\x0057\x00" not in list(_cmdlines()), what="the command to be killed")
        # Many at once, over the SDK's stream (what a sandbox's exec uses): each its own output and code.
        client = Client.from_env()
        assert client.run(_many_execs(client, cid, 12)) == [(f"{i}\n".encode(), i) for i in range(12)]
        term = Terminal(["-m", "ember.cli.main", "container", "exec", cid, "--", "sh"], rows=33, cols=91)
        try:
            term.read_until("# ")  # its prompt
            term.type("stty size; echo processes: $(ls /proc | grep -c '^[0-9]')\n")
            term.read_until("33 91\r\n")
            processes = term.read_match(r"processes: (\d+)\r\n")
            term.type("touch /tmp/release; exit 7\n")  # what the function waits for, in its own /tmp
            assert term.wait() == 7
        finally:
            term.proc.kill()
            term.proc.wait()
        seen = call.get(timeout=60)
        # Stopped while a command runs in it: the init's end ends the command, with an error saying so.
        sleeper = subprocess.Popen([PY, "-m", "ember.cli.main", "container", "exec", cid, "--", "sleep", "56"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        wait_for(lambda: b"sleep\x0056\x00" in list(_cmdlines()), what="the command to run")
        assert cli("container", "stop", cid).returncode == 0
        _, err = sleeper.communicate(timeout=30)
        assert sleeper.returncode == 1 and cid in err and "while" in err, err
    assert (hostname, cwd, mnt, pid_ns) == (seen["hostname"], seen["cwd"], seen["mnt"], seen["pid_ns"])
    assert "\n".join(cgroup) + "\n" == seen["cgroup"] and hostname.startswith("ct-")
    assert confined == seen["confined"] and "Seccomp:\t2" in confined  # its capabilities and seccomp filter
    assert greeting == "hello from the function's env" and uid == "0"
    assert int(processes) < 10  # its own PID namespace: the host has hundreds
