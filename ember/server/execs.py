"""Commands run in running containers (`ember container exec`, `ember shell`): the control plane's relay.

A client's ContainerExec stream (api.py checks that the container is its workspace's before
anything reaches a worker) becomes a session here, relayed over the stream of the container's
worker: ExecStart and ExecInput down, ExecOutput up. The worker runs the command in the
container (worker/execs.py). A session ends with the command's exit, or with an error when
its container ends, its worker goes away, or its client does (the worker then kills it).
"""

from __future__ import annotations

import logging
import typing

from .._ids import new_id
from ..proto import api_pb2

if typing.TYPE_CHECKING:
    from .fleet import ContainerState, WorkerState

log = logging.getLogger("ember.server")


class Session:
    __slots__ = ("container_id", "exec_id", "send", "worker")

    def __init__(self, exec_id: str, container_id: str, worker: WorkerState, send):
        self.exec_id = exec_id
        self.container_id = container_id
        self.worker = worker
        self.send = send  # puts an ExecOutput on its client's stream


class Execs:
    def __init__(self):
        self._sessions: dict[str, Session] = {}

    def open(self, c: ContainerState, start: api_pb2.ExecStart, send) -> str:
        """Start the command on the container's worker; its outputs go to send(ExecOutput)."""
        exec_id = new_id("ex")
        command = api_pb2.ExecStart()
        command.CopyFrom(start)
        command.exec_id = exec_id
        self._sessions[exec_id] = Session(exec_id, c.container_id, c.worker, send)
        log.info("exec %s in container %s: %s", exec_id, c.container_id, " ".join(start.argv)[:200])
        c.worker.send(api_pb2.WorkerCommand(exec_start=command))
        return exec_id

    def input(self, exec_id: str, inp: api_pb2.ExecInput):
        s = self._sessions.get(exec_id)
        if s is not None:
            forwarded = api_pb2.ExecInput()
            forwarded.CopyFrom(inp)
            forwarded.exec_id = exec_id
            s.worker.send(api_pb2.WorkerCommand(exec_input=forwarded))

    def close(self, exec_id: str):
        """Its client is done (or gone): a command still running is killed."""
        s = self._sessions.pop(exec_id, None)
        if s is not None and s.worker.connected:
            s.worker.send(api_pb2.WorkerCommand(exec_input=api_pb2.ExecInput(exec_id=exec_id, terminate=True)))

    def output(self, out: api_pb2.ExecOutput, worker: WorkerState):
        """What a worker sends of a command: only of the commands it was given."""
        s = self._sessions.get(out.exec_id)
        if s is None or s.worker.worker_id != worker.worker_id:
            return
        if out.exited:
            del self._sessions[out.exec_id]
        s.send(out)

    def running_in(self, container_id: str, but: str = "") -> bool:
        """Whether a command (other than `but`) runs in the container."""
        return any(s.container_id == container_id and s.exec_id != but for s in self._sessions.values())

    def container_gone(self, container_id: str):
        """Its container is no more (its worker normally said so of each command first)."""
        for s in [s for s in self._sessions.values() if s.container_id == container_id]:
            self._end(s, f"container {container_id} ended while the command ran")

    def worker_lost(self, worker: WorkerState):
        for s in [s for s in self._sessions.values() if s.worker.worker_id == worker.worker_id]:
            self._end(s, f"the worker {worker.name} of container {s.container_id} disconnected while the command ran")

    def _end(self, s: Session, error: str):
        del self._sessions[s.exec_id]
        s.send(api_pb2.ExecOutput(exec_id=s.exec_id, exited=True, error=error))
