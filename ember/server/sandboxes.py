"""Sandboxes (ember.Sandbox): containers of a workspace that run no function, driven from code.

A sandbox is one container of an app, placed, accounted and limited by quotas like any other
(placement.py, usage.py, shares.py): it belongs to a hidden function of its app whose definition
says `sandbox` (never found by name, never scaled by the autoscaler: this module owns its one
container). Its container's runtime loads no code and waits. Once it is placed, its main command
(if it has one) runs in it as an exec that the control plane itself holds (execs.py): its output
is kept here for any client to read from any offset, and its stdin is fed by any client, so a
client that goes away leaves the sandbox running, to be found again by id or by name.

It ends, once, with the first of: its main command's exit, terminate, its timeout, its idle
timeout (no exec and no stdin for that long), its container's end (killed for memory, say), the
loss of its worker (it is not started again elsewhere: its state was in that container), or its
app's stop. Then its container is killed, and it is kept here ENDED_KEPT seconds for its
returncode and output to be read.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing

from .._ids import new_id
from ..proto import api_pb2
from .tunnels import tunnel_infos

if typing.TYPE_CHECKING:
    from .apps import Apps, AppState, FunctionState
    from .fleet import ContainerState, Fleet
    from .placement import Placement

log = logging.getLogger("ember.server")

Info = api_pb2.SandboxInfo
ENDED_KEPT = 600.0          # seconds an ended sandbox is still found (its returncode, its output)
OUTPUT_KEPT = 16 << 20      # bytes of each of its main command's stdout and stderr kept (the latest)
STDIN_KEPT = 16 << 20       # bytes of stdin kept for its main command until it starts
# Return codes of sandboxes whose command did not exit by itself (as a shell's and timeout(1)'s).
TIMED_OUT = 124
KILLED = 137                # 128 + SIGKILL: terminated, killed for memory, lost


class NameTaken(Exception):
    """The app has a running sandbox of that name."""


class QuotaRefused(Exception):
    """Its workspace's quotas do not allow another container (the message says which)."""


class Output:
    """One of its main command's streams: the latest OUTPUT_KEPT bytes, from offset `base` on."""

    __slots__ = ("base", "data")

    def __init__(self):
        self.base = 0
        self.data = bytearray()

    def append(self, data: bytes):
        self.data += data
        if len(self.data) > OUTPUT_KEPT:
            drop = len(self.data) - OUTPUT_KEPT
            del self.data[:drop]
            self.base += drop

    def since(self, offset: int) -> tuple[int, bytes]:
        """What it has from offset on (from the oldest kept byte, if offset is older)."""
        start = max(offset, self.base)
        return start, bytes(self.data[start - self.base:])

    @property
    def end(self) -> int:
        return self.base + len(self.data)


class SandboxState:
    def __init__(self, sandbox_id: str, function: FunctionState, req: api_pb2.SandboxCreateRequest,
                 env: dict[str, str], now: float):
        self.sandbox_id = sandbox_id
        self.function = function
        self.app: AppState = function.app
        self.workspace = function.app.workspace
        self.name = req.name
        self.argv = list(req.argv)
        self.workdir = req.workdir
        self.env = env  # its main command's: its env= over its secrets'
        self.timeout = req.timeout
        self.idle_timeout = req.idle_timeout
        # Ports the gateway serves (tunnels.py): port -> declared in unencrypted_ports.
        self.ports = {**{p: False for p in req.encrypted_ports}, **{p: True for p in req.unencrypted_ports}}
        self.public_ports = req.public_ports
        self.tags: dict[str, str] = {}
        self.created_at = time.time()
        self.started = now        # clock seconds: its timeout counts from here
        self.active = now         # its last exec or stdin: its idle timeout counts from here
        self.container: ContainerState | None = None
        self.exec_id = ""         # its main command's, while it runs
        self.exit_code: int | None = None  # its main command's, once it exited
        self.why = ""             # why it ends, when something else than its command's exit ends it
        self.outputs = {1: Output(), 2: Output()}
        self.stdin: list[api_pb2.ExecInput] = []  # what came before its main command started
        self.state = Info.STARTING
        self.returncode = 0
        self.error = ""
        self.ended_at = 0.0
        self.changed = asyncio.Event()  # set (and replaced) when output comes or its state moves
        self.finishing = False    # its container is to be killed (its command exited, say)
        self.killed_via: object = None  # the worker (WorkerState) last told to kill it

    def wake(self):
        self.changed.set()
        self.changed = asyncio.Event()

    def output_done(self) -> bool:
        """Whether its main command's output is complete: it exited, or the sandbox ended."""
        return self.state == Info.ENDED or self.exit_code is not None

    def info(self, base_url: str = "") -> api_pb2.SandboxInfo:
        """What clients see of it; with the gateway's base_url, its tunnels while it runs."""
        c = self.container
        tunnels = tunnel_infos(self, base_url) if base_url and self.state == Info.RUNNING else ()
        return Info(tunnels=tunnels,
                    sandbox_id=self.sandbox_id, app_id=self.app.app_id, app_name=self.app.name, name=self.name,
                    container_id=c.container_id if c is not None else "",
                    worker=c.worker.name if c is not None else "", tags=self.tags, created_at=self.created_at,
                    state=self.state, returncode=self.returncode, error=self.error, argv=self.argv,
                    workspace=self.workspace)


class Sandboxes:
    def __init__(self, apps: Apps, fleet: Fleet, placement: Placement, *, clock=time.monotonic):
        self.apps = apps
        self.fleet = fleet
        self.placement = placement
        self.clock = clock
        self._boxes: dict[str, SandboxState] = {}
        self._by_container: dict[str, SandboxState] = {}
        fleet.on_end = self.container_ended

    # ---- lifecycle

    def create(self, app: AppState, req: api_pb2.SandboxCreateRequest, env: dict[str, str]) -> SandboxState:
        """A new sandbox of the app (validate.py checked the request; api.py its images and
        secrets): placed now, or as soon as a worker has room. NameTaken: its name is taken;
        QuotaRefused: a quota refuses it (the message says which)."""
        if req.name and any(b.name == req.name and b.app is app and b.state != Info.ENDED
                            for b in self._boxes.values()):
            raise NameTaken(f"app {app.name or app.app_id} has a running sandbox named {req.name!r} already: "
                              "terminate it, or pick another name")
        d = api_pb2.FunctionDefinition()
        d.CopyFrom(req.definition)
        sandbox_id = new_id("sb")
        d.name = f"sandbox-{sandbox_id}"
        d.sandbox = True
        d.max_containers = 1
        d.timeout = req.timeout
        fid = self.apps.create_function(app.app_id, d, app.workspace)
        fn = self.apps.function(fid)
        reason = self.placement.shares.quota_refusal(fn)
        if reason is not None:
            self.apps.forget_function(fn)
            raise QuotaRefused(f"the sandbox cannot start: {reason}")
        box = SandboxState(sandbox_id, fn, req, env, self.clock())
        self._boxes[sandbox_id] = box
        log.info("sandbox %s of app %s: %s", sandbox_id, app.name or app.app_id, " ".join(box.argv)[:200])
        self._place(box)
        return box

    def _place(self, box: SandboxState):
        """Placed, it runs: its container runs no code of the app, so execs (and its main command)
        need not wait for Ember's runtime in it to connect. They go to its worker right behind
        the StartContainer, on the same stream, and the worker holds them until the container is
        started (worker/execs.py): placing and the first exec overlap."""
        if self.placement.start_container(box.function):
            box.container = next(iter(box.function.containers.values()))
            self._by_container[box.container.container_id] = box
            self._running(box, box.container)

    def _running(self, box: SandboxState, c: ContainerState):
        """Its main command starts (once)."""
        if box.state != Info.STARTING:
            return
        box.state = Info.RUNNING
        box.active = self.clock()
        if box.argv:
            start = api_pb2.ExecStart(container_id=c.container_id, argv=box.argv, workdir=box.workdir, env=box.env)
            box.exec_id = self.fleet.execs.open(c, start, lambda out: self._main_output(box, out))
            for inp in box.stdin:
                self.fleet.execs.input(box.exec_id, inp)
            box.stdin.clear()
        box.wake()

    def _main_output(self, box: SandboxState, out: api_pb2.ExecOutput):
        if out.data:
            box.outputs[2 if out.fd == 2 else 1].append(out.data)
        if out.exited:
            box.exec_id = ""
            if out.error:
                box.why = box.why or (f"sandbox {box.sandbox_id} is lost: {out.error} (a sandbox is not started "
                                      "again elsewhere)")
                box.exit_code = KILLED
            else:
                code = out.exit_code
                box.exit_code = 128 - code if code < 0 else code  # killed by signal N: 128 + N
            self._finish(box, "")
        box.wake()

    def container_ended(self, c: ContainerState, why: str, oom: bool):
        """Its container ended (the fleet's word: reported by its worker, or given up as lost)."""
        box = self._by_container.pop(c.container_id, None)
        if box is None:
            return
        if box.state == Info.ENDED:  # ended already (terminated, timed out): its container is gone now
            self.apps.forget_function(box.function)
            return
        if oom:
            limit = c.function.definition.resources
            box.why = (f"sandbox {box.sandbox_id} was killed for memory: it exceeded its memory limit of "
                       f"{limit.memory_limit_mb or limit.memory_mb} MiB (pass a larger memory= to Sandbox.create)")
            box.exit_code = KILLED
        elif not box.why and box.exit_code is None:
            box.why = f"sandbox {box.sandbox_id} ended: its container {why}"
        self._end(box)
        self.apps.forget_function(box.function)

    def app_stopped(self, app: AppState, reason: str):
        """Its app stopped: its sandboxes end, saying so (before their containers are stopped)."""
        for box in list(self._boxes.values()):
            if box.app is app:
                self._finish(box, f"sandbox {box.sandbox_id} ended: its app {app.name or app.app_id} stopped "
                                  f"({reason})")

    def terminate(self, box: SandboxState, why: str):
        self._finish(box, why)

    def _finish(self, box: SandboxState, why: str):
        """It is to end (why: what ends it, "" for its command's exit): its container is killed."""
        if box.state == Info.ENDED:
            return
        box.why = box.why or why
        c = box.container
        if c is None or c.container_id not in self._by_container:
            self._end(box)
            self.apps.forget_function(box.function)
            return
        c.stopping = True
        c.stop_why = c.stop_why or (box.why or "its sandbox's command exited")
        if box.exec_id:
            self.fleet.execs.close(box.exec_id)
        self._kill(box, c)
        if why:
            # Ended by this decision: so it is from now on (no exec starts in it while its container
            # is killed). Its command's own end waits for its container's, which tells an OOM kill.
            self._end(box)

    def _kill(self, box: SandboxState, c: ContainerState):
        """Have its container killed: by its worker now, or once that worker is back (tick)."""
        box.finishing = True
        if c.worker.connected and box.killed_via is not c.worker:
            box.killed_via = c.worker  # a worker that registers again is another WorkerState
            c.worker.send(api_pb2.WorkerCommand(stop_container=api_pb2.StopContainer(container_id=c.container_id,
                                                                                      kill=True)))

    def _end(self, box: SandboxState):
        if box.state == Info.ENDED:
            return
        box.state = Info.ENDED
        box.ended_at = self.clock()
        if box.exit_code is not None and not box.why:
            box.returncode = box.exit_code
        else:
            box.returncode = box.exit_code if box.exit_code is not None else (
                TIMED_OUT if "timeout" in box.why else KILLED)
            box.error = box.why
        log.info("sandbox %s ended: returncode %d%s", box.sandbox_id, box.returncode,
                 f" ({box.error})" if box.error else "")
        box.wake()

    # ---- what clients do

    def get(self, sandbox_id: str, workspace: str | None) -> SandboxState | None:
        """A sandbox of the workspace (None: any, for an admin); another workspace's is None."""
        box = self._boxes.get(sandbox_id)
        return box if box is not None and workspace in (None, box.workspace) else None

    def by_name(self, app: AppState, name: str) -> SandboxState | None:
        """The app's sandbox of that name: the running one, else the latest that ended."""
        found = [b for b in self._boxes.values() if b.app.app_id == app.app_id and b.name == name]
        found.sort(key=lambda b: (b.state != Info.ENDED, b.created_at))
        return found[-1] if found else None

    def listing(self, workspace: str | None, app_id: str = "", tags=None) -> list[SandboxState]:
        return [b for b in self._boxes.values() if workspace in (None, b.workspace)
                and (not app_id or b.app.app_id == app_id)
                and all(b.tags.get(k) == v for k, v in (tags or {}).items())]

    def of_container(self, container_id: str) -> SandboxState | None:
        return self._by_container.get(container_id)

    def touched(self, box: SandboxState):
        """An exec or stdin: its idle timeout counts from now."""
        box.active = self.clock()

    def stdin(self, box: SandboxState, data: bytes, eof: bool) -> bool:
        """Feed its main command's stdin (kept until it starts, up to STDIN_KEPT bytes: False beyond)."""
        self.touched(box)
        inp = api_pb2.ExecInput(data=data, eof=eof)
        if box.exec_id:
            self.fleet.execs.input(box.exec_id, inp)
        elif box.state == Info.STARTING:
            if sum(len(i.data) for i in box.stdin) + len(data) > STDIN_KEPT:
                return False
            box.stdin.append(inp)
        return True

    # ---- time-driven

    def tick(self, now: float):
        for box in list(self._boxes.values()):
            c = box.container
            if box.finishing and c is not None and c.container_id in self._by_container:
                self._kill(box, c)  # asked while its worker was away: asked again once it is back
            if box.state == Info.ENDED:
                if now - box.ended_at > ENDED_KEPT:
                    del self._boxes[box.sandbox_id]
                continue
            if box.finishing:
                continue
            if c is not None and self.fleet.execs.running_in(c.container_id, but=box.exec_id):
                box.active = now  # an exec runs: it is not idle
            if not box.app.running:
                self._finish(box, f"sandbox {box.sandbox_id} ended: its app {box.app.name or box.app.app_id} stopped")
            elif now - box.started > box.timeout:
                self._finish(box, f"sandbox {box.sandbox_id} passed its timeout of {box.timeout:g}s"
                             + (" before it could start (no worker had room for it)" if c is None else ""))
            elif box.idle_timeout and now - box.active > box.idle_timeout:
                self._finish(box, f"sandbox {box.sandbox_id} passed its idle timeout of {box.idle_timeout:g}s "
                                  "(no exec and no stdin for that long)")
            elif box.container is None:
                self._place(box)  # no worker had room yet
