"""A warm parent: Ember's runtime and one function's module imported, forking its containers.

Run as `python -m ember.container.parent` by the worker (worker/parents.py), with a socket of
the worker's on EMBER_PARENT_FD (a SOCK_SEQPACKET pair: one JSON message each) and nothing
that names a container: a parent has no credential and never talks to the control plane. The
worker's first message is the function's definition (FunctionDefinition bytes, hex); the
parent sets its env=, imports its module, and answers {"ready": true}, or {"refused": WHY}
where a fork of it would not be sound:
  - a thread runs after the import (a fork has only the thread that forked: a lock another
    thread held stays held in the child forever);
  - the module opts out with `__ember_fork__ = False`.
Then each {"fork": {"env", "cwd", "log"}} forks a container (on the container backend, with
no "log" but descriptors: the fork's namespaces, made by the worker, which the child joins
(worker/forkns.py), its `go` pipe and its log; the parent itself runs in a sandbox of its own
there, confined by forkns.confine_parent): the child takes a session of its
own, closes every descriptor it inherited (nothing the import opened is shared by siblings),
writes to its own log, takes its identity from `env` (the worker's, made for it) and runs the
runtime as any container's, which connects (a gRPC channel made after the fork, in the child
only: RUNTIME_ENV). The parent answers {"pid": N}, and {"exited": N, "status": WAIT_STATUS}
when the child ends (it is the child's parent, and reaps it). The socket's end ends it.

Its memory (the interpreter, Ember's runtime, the module and what it imported: numpy's pages)
is shared copy-on-write by every fork.
"""

import array
import gc
import json
import os
import select
import signal
import socket
import sys
import threading

from .._proc import die_with_parent
from ..proto import api_pb2
from ..worker import forkns  # a fork's join, on the container backend (imported here: not in each fork)
from . import runtime  # its imports are what a fork skips


def _load(d: api_pb2.FunctionDefinition) -> str | None:
    """Import the function's module as a container would; why a fork of this would not be sound, or None."""
    os.environ.update(d.env)
    runtime.note_image(d)
    if d.code_blob_id:
        sys.path.insert(0, os.path.join(os.environ["EMBER_CODE_CACHE"], d.code_blob_id))
    module = __import__(d.module, fromlist=["_"])
    if getattr(module, "__ember_fork__", True) is False:
        return f"its module {d.module} opts out (__ember_fork__ = False)"
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:
        return f"importing {d.module} started threads ({', '.join(others)})"
    return None


def _child(sock: socket.socket, request: dict, fds: list[int]):
    """Become the container the worker asked for: its session, its log, its identity; then the
    runtime. With `fds` (the container backend's), first its namespaces: the fork's (made by the
    worker, worker/forkns.py), joined with `go`, the worker's word that this process is in the
    fork's cgroups, and its log."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    sock.close()
    if fds:
        names = [name for name, _ in forkns.NAMESPACES]
        if len(fds) != len(names) + 2:
            os._exit(1)
        die_with_parent(os.getppid())  # this child waits for the fork's process: it ends with the parent
        forkns.join(dict(zip(names, fds)), go=fds[len(names)])
        # The fork's process, in its namespaces: its parent (the child above, which is outside
        # its PID namespace) ends as it does, and it with that parent.
        die_with_parent(0)
        log = fds[len(names) + 1]
        os.makedirs(request["cwd"], exist_ok=True)  # its image's workdir, in its own root
    else:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        die_with_parent(os.getppid())  # the parent ends with the worker: so do its forks
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, src in ((0, null), (1, log), (2, log)):
        os.dup2(src, fd)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # what the parent, or the module's import, held
    os.chdir(request["cwd"])
    os.environ.update(request["env"])
    runtime.Runtime(os.environ["EMBER_CONTAINER_ID"], os.environ["EMBER_SERVER_URL"]).run()


def _send(sock: socket.socket, message: dict):
    sock.send(json.dumps(message).encode())


def main():
    sock = socket.socket(fileno=int(os.environ.pop("EMBER_PARENT_FD")))
    sock.set_inheritable(False)
    die_with_parent(int(os.environ["EMBER_WORKER_PID"]) if "EMBER_WORKER_PID" in os.environ else None)
    d = api_pb2.FunctionDefinition.FromString(bytes.fromhex(json.loads(sock.recv(64 << 20))["definition"]))
    try:
        why = _load(d)
    except BaseException as e:  # noqa: BLE001 - its container fails to import it too, and says why there
        why = f"importing {d.module} failed ({type(e).__name__}: {e})"
    _send(sock, {"refused": why} if why else {"ready": True})
    if why:
        return
    # What is imported now stays out of the collector's sight: its passes would write to every
    # object's page in each fork, copying what the forks would otherwise share.
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below, through the wakeup fd
    while True:
        readable = select.select([sock, wake_r], [], [])[0]
        if wake_r in readable:
            os.read(wake_r, 4096)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                _send(sock, {"exited": pid, "status": status})
        if sock in readable:
            data, ancdata, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4))
            fds = [fd for level, kind, raw in ancdata if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                   for fd in array.array("i", raw[:len(raw) - len(raw) % 4])]
            if not data:
                return  # the worker retired it (or is gone)
            request = json.loads(data)["fork"]
            pid = os.fork()
            if pid == 0:
                try:
                    _child(sock, request, fds)
                finally:
                    os._exit(1)
            for fd in fds:  # the child's alone
                os.close(fd)
            _send(sock, {"pid": pid})


if __name__ == "__main__":
    main()
