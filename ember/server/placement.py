"""Placement: which worker a new container goes to, and asking that worker to start it.

A container starts only if its workspace's quotas and fair share allow (shares.py).
A function with region= runs only on workers whose `region` label is one of its regions.

A container goes to the connected worker with the most free CPU among those with room for its
function's CPU and memory, a free GPU of the kind it asks for, and (a @web_server function)
its server's port free on that worker's network (unless each container there has a network of
its own). Draining and cordoned workers (breaker.py) take none.
"""

import logging
import time

from .._ids import new_id
from ..proto import api_pb2
from .apps import FunctionState
from .auth import Identity
from .builds import Builds
from .fleet import ContainerState, Fleet, WorkerState
from .objects import volume_manifest
from .shares import Shares
from .store import Store

log = logging.getLogger("ember.server")

CAPACITY_WARN_EVERY = 10.0  # seconds between notes that a function's inputs wait (for room, a quota)


class Placement:
    def __init__(self, store: Store, fleet: Fleet, builds: Builds, identity: Identity, shares: Shares, *,
                 clock=time.monotonic):
        self.store = store
        self.shares = shares
        self.identity = identity
        self.fleet = fleet
        self.builds = builds
        self.clock = clock
        # (container_id, its volume mounts) -> None: the blob collector keeps what they name.
        self.on_volumes = None
        # With a provisioner (provisioner/, which makes it a dict): function_id -> when a
        # container of it last found no worker with room, the demand it asks for workers for.
        self.unplaced: dict[str, float] | None = None

    def start_container(self, fn: FunctionState) -> bool:
        """Start a container for the function on the worker that fits it best; False if none has room."""
        res = fn.definition.resources
        reason = self.shares.must_wait(fn)
        if reason is not None:
            self._waits(fn, reason)
            return False
        worker = self._choose(fn)
        if worker is None:
            self.shares.wants_room(fn)
            if self.unplaced is not None:
                self.unplaced[fn.function_id] = self.clock()
            if not self.fleet.connected_workers():
                self._waits(fn, "no worker is connected", logging.WARNING)
            elif not any(in_region(w, fn) for w in self.fleet.connected_workers()):
                self._waits(fn, f"no connected worker is in its region ({', '.join(fn.definition.regions)}): "
                            f"start one with `ember worker --label region={fn.definition.regions[0]}`",
                            logging.WARNING, tell_app=True)
            else:
                self._waits(fn, f"no worker has {res.cpu:.2f} CPU, {res.memory_mb} MiB"
                            f"{f' and GPU {res.gpu}' if res.gpu else ''} free")
            return False
        if self.unplaced is not None:
            self.unplaced.pop(fn.function_id, None)
        cid = new_id("ct")
        gpu_indices = worker.gpus.assign(cid, res.gpu) if res.gpu else []
        if gpu_indices is None:
            return False
        credential, credential_hash = self.identity.container_credential(cid, fn.app.workspace)
        self.store.create_container(cid, fn.function_id, worker.worker_id, worker.boot_id, credential_hash)
        self.fleet.add(ContainerState(cid, fn, worker, self.clock()), new=True)
        image = fn.definition.image
        read_only = set(fn.definition.read_only_volumes)
        volumes = [api_pb2.VolumeMount(path=path, manifest=volume_manifest(self.store, vid),
                                       read_only=path in read_only)
                   for path, vid in sorted(fn.definition.volume_mounts.items())]
        if volumes and self.on_volumes is not None:
            self.on_volumes(cid, volumes)
        # A snapshot serves the containers of one deployed version: an ephemeral app's are its one run's.
        snapshot_init = None
        if fn.definition.enable_memory_snapshot and fn.app.deployed:
            snapshot_init = api_pb2.ContainerInit(function_id=fn.function_id, app_id=fn.app.app_id,
                                                  definition=fn.definition, app_function_ids=fn.app.function_ids())
        worker.send(api_pb2.WorkerCommand(start_container=api_pb2.StartContainer(
            container_id=cid, function_id=fn.function_id, app_id=fn.app.app_id, resources=res, image=image,
            layers=self.builds.known(image), gpu_indices=gpu_indices, block_network=fn.definition.block_network,
            volumes=volumes, credential=credential, cidr_allowlist=fn.definition.cidr_allowlist,
            definition=fn.definition, snapshot_init=snapshot_init, workspace=fn.app.workspace)))
        self.shares.started(fn)
        log.info("starting container %s for %s on worker %s", cid, fn.name, worker.name)
        return True

    def _waits(self, fn: FunctionState, reason: str, level=logging.INFO, tell_app=False):
        """Say why the function's inputs wait: once a while per function, not on every try;
        with tell_app, on its app's terminal too (a wait that only its owner can end)."""
        now = self.clock()
        if now - fn.capacity_warned > CAPACITY_WARN_EVERY:
            fn.capacity_warned = now
            log.log(level, "inputs of %s wait: %s", fn.name, reason)
            if tell_app:
                fn.app.log.event(f"inputs of {fn.name} wait: {reason}", fn.name, caller=True)

    def _choose(self, fn: FunctionState) -> WorkerState | None:
        res = fn.definition.resources
        port = _server_port(fn)
        best, best_free = None, None
        workers = list(self.fleet.open_workers())
        if fn.definition.cidr_allowlist and any(w.own_network for w in workers):
            # Only a network of its own can be limited to some networks. With no such worker, one
            # that cannot refuses the container, saying why (backend.refusal).
            workers = [w for w in workers if w.own_network]
        for w in workers:
            cpu, mem = w.free()
            if res.gpu and not (w.gpus.free() and w.gpus.can_ever_satisfy(res.gpu)):
                continue
            if not in_region(w, fn):
                continue
            if port and not w.own_network and any(_server_port(c.function) == port for c in w.containers.values()):
                continue  # its server's port is taken on that worker's network
            if cpu + 1e-9 >= res.cpu and mem >= res.memory_mb and (best is None or cpu > best_free):
                best, best_free = w, cpu
        return best


def in_region(w: WorkerState, fn: FunctionState) -> bool:
    """Whether the worker is in a region the function may run in (region=; none: anywhere)."""
    return not fn.definition.regions or w.labels.get("region") in fn.definition.regions


def _server_port(fn: FunctionState) -> int:
    """The port a @web_server function's containers listen on, on their worker's network (or
    their own)."""
    return fn.definition.web.port if fn.definition.web.kind == api_pb2.WebEndpoint.WEB_SERVER else 0
