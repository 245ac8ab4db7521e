"""The exec agent of a container's init (worker/sandbox.py serve_execs) driven by the worker's side
(worker/agent.py), in a plain process here: the protocol, exits, kills and the agent's end,
without a container around them (test_container_commands.py runs them in one)."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from ember.worker import agent as agents

# An init as the container's: a main command (sleep), then the commands the worker asks for.
INIT = """
import os, signal, socket, sys
sys.path.insert(0, sys.argv[2])
import sandbox
sock = socket.socket(fileno=int(sys.argv[1]))
sock.set_inheritable(False)
signal.signal(signal.SIGCHLD, lambda *_: None)
main = os.fork()
if main == 0:
    os.execvp("sleep", ["sleep", "60"])
print(main, flush=True)
status = sandbox.serve_execs(sock, main)
print(os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.fixture
def init():
    ours, theirs = agents.socket_pair()
    proc = subprocess.Popen([sys.executable, "-S", "-E", "-c", INIT, str(theirs.fileno()),
                             str(ROOT / "ember" / "worker")], pass_fds=[theirs.fileno()], stdout=subprocess.PIPE,
                            text=True)
    theirs.close()
    main = int(proc.stdout.readline())
    yield ours, proc, main
    proc.kill()
    proc.wait()
    ours.close()


async def run(agent, argv, stdin=b"", env=None, cwd="/") -> tuple[int, bytes, bytes]:
    """argv through the agent, with pipes: its exit code, stdout and stderr."""
    (r0, w0), (r1, w1), (r2, w2) = os.pipe(), os.pipe(), os.pipe()
    command = agent.start(argv, env or {"PATH": os.defpath}, cwd, False, (r0, w1, w2))
    for fd in (r0, w1, w2):
        os.close(fd)
    os.write(w0, stdin)
    os.close(w0)
    code = await command.wait()
    command.kill()  # what it left running, holding its stdout too
    return code, await asyncio.to_thread(_read_all, r1), await asyncio.to_thread(_read_all, r2)


def _read_all(fd: int) -> bytes:
    with open(fd, "rb") as f:
        return f.read()


def test_commands_through_the_agent(init, tmp_path):
    sock, proc, main = init

    async def go():
        agent = agents.Agent(sock)
        # stdin, stdout, stderr, the exit code, its environment and working directory.
        assert await run(agent, ["sh", "-c", 'tr a-z A-Z; echo "$X" >&2; pwd; exit 3'], b"piped\n",
                         env={"PATH": os.defpath, "X": "from env"}, cwd=str(tmp_path)) \
            == (3, f"PIPED\n{tmp_path}\n".encode(), b"from env\n")
        code, _, err = await run(agent, ["no-such-command"])
        assert code == 127 and b"no-such-command: command not found" in err
        code, _, err = await run(agent, ["true"], cwd=str(tmp_path / "missing"))
        assert code == 126 and b"cannot start true in" in err
        # Large arguments (what execve takes: 128 KiB each), and more than a request may carry.
        assert await run(agent, ["sh", "-c", 'echo $#', "_", *["x" * 100_000] * 16]) == (0, b"16\n", b"")
        with pytest.raises(agents.Refused, match="more than the"):
            agent.start(["true", "x" * agents.MAX_REQUEST], {}, "/", False, (0, 1, 2))
        # Many at once.
        results = await asyncio.gather(*(run(agent, ["sh", "-c", f"echo {i}; exit {i}"]) for i in range(20)))
        assert results == [(i, f"{i}\n".encode(), b"") for i in range(20)]
        # What a command leaves running, in a process group of its own too, goes with its kill.
        marker = tmp_path / "job"
        job = f"import os, time; os.setpgid(0, 0); open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(59)"
        code, out, _ = await run(agent, ["sh", "-c", f"{sys.executable} -c \"{job}\" & while [ ! -s {marker} ]; do "
                                         "sleep 0.01; done; echo left"])
        assert (code, out) == (0, b"left\n")
        job = int(marker.read_text())
        await _gone(job)
        # A command killed by a signal: its code says which.
        assert (await run(agent, ["sh", "-c", "kill -TERM $$"]))[0] == -signal.SIGTERM
        # The container's end (its main command's, and so its init's) ends what still runs, as killed.
        (r0, w0), (r1, w1) = os.pipe(), os.pipe()
        long = agent.start(["sh", "-c", "read line"], {"PATH": os.defpath}, "/", False, (r0, w1, w1))
        for fd in (r0, w1):
            os.close(fd)
        os.kill(main, signal.SIGKILL)
        assert await asyncio.wait_for(long.wait(), 30) == -signal.SIGKILL
        assert not agent.alive
        with pytest.raises(agents.AgentGone):
            agent.start(["true"], {}, "/", False, (r1, r1, r1))
        for fd in (w0, r1):
            os.close(fd)  # (its stdin's end: here, with no kernel to kill it, it ends by itself)

    asyncio.run(go())
    assert proc.wait(30) == 0 and proc.stdout.read().strip() == str(-signal.SIGKILL)


def test_what_an_agent_may_not_say():
    """The agent runs in the container: its answers are the container's to forge. Only the exit
    of a command the worker started, by its id, with a number for a status, counts."""
    ours, theirs = agents.socket_pair()

    async def go():
        agent = agents.Agent(ours)
        r, w = os.pipe()
        command = agent.start(["true"], {}, "/", False, (r, w, w))
        request = theirs.recv(1 << 20)
        assert b'"argv": ["true"]' in request
        for forged in (b"not json", b'{"exited": 999, "status": 0}', b'{"exited": 1, "status": "0"}', b"[]"):
            theirs.send(forged)
        theirs.send(b'{"exited": %d, "status": %d}' % (command.n, 7 << 8))
        assert await asyncio.wait_for(command.wait(), 10) == 7
        agent.close()
        for fd in (r, w):
            os.close(fd)

    try:
        asyncio.run(go())
    finally:
        theirs.close()


async def _gone(pid: int, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
        assert time.monotonic() < deadline, f"process {pid} still runs"
        await asyncio.sleep(0.02)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return "Z"
