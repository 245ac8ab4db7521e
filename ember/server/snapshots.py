"""Snapshots of sandboxes' filesystems (sb.snapshot_filesystem()): images that are never built.

A snapshot is the sandbox's image plus one layer: its container's writable layer, which its
worker archives into the blob store (worker/images.py). That layer is named for the sandbox's
workspace and its archive (_layers.snapshot_layer_id), and it is known here as any built layer
is (builds.layers, the store's layers): so an image with it is built already, other workers
fetch it, and blob_gc.py keeps it as it keeps layers (while a live app's image has it, and a
while after its last use). Its archive is granted to the workspace, whose clients name it in
the image's SNAPSHOT step. A SNAPSHOT step that names an archive no snapshot made names a
layer nobody knows, which no worker builds: a client cannot make one up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing

from .._ids import new_id
from .._layers import snapshot_layer_id
from ..proto import api_pb2
from .blobs import is_blob_id

if typing.TYPE_CHECKING:
    from .builds import Builds
    from .fleet import WorkerState
    from .sandboxes import SandboxState
    from .store import Store

log = logging.getLogger("ember.server")

Info = api_pb2.SandboxInfo


class SnapshotFailed(Exception):
    """It could not be taken: the message says why (and what to do)."""


class _Pending(typing.NamedTuple):
    worker: WorkerState
    parent: str
    workspace: str
    done: asyncio.Future  # of the worker's SnapshotDone


class Snapshots:
    def __init__(self, store: Store, builds: Builds):
        self.store = store
        self.builds = builds
        self._pending: dict[str, _Pending] = {}

    async def take(self, box: SandboxState, timeout: float) -> api_pb2.Image:
        """The sandbox's filesystem now, as an image (SnapshotFailed: why not, within timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while box.state == Info.STARTING:  # just created: once it runs
            if not await _changed(box, deadline - loop.time()):
                raise SnapshotFailed(f"sandbox {box.sandbox_id} did not start within the snapshot's timeout of "
                                     f"{timeout:g}s: pass a larger timeout= to snapshot_filesystem()")
        c = box.container
        if box.state == Info.ENDED or box.finishing or c is None:
            raise SnapshotFailed(_ended(box))
        if c.worker.backend != api_pb2.BACKEND_CONTAINER:
            raise SnapshotFailed(f"a snapshot of a sandbox's filesystem needs the container backend, and sandbox "
                                 f"{box.sandbox_id} runs on worker {c.worker.name}, which runs the "
                                 f"{api_pb2.Backend.Name(c.worker.backend).removeprefix('BACKEND_').lower()} backend "
                                 "(its containers have no filesystem of their own): run the worker as root on Linux")
        image = box.function.definition.image
        snapshot_id = new_id("ss")
        pending = _Pending(c.worker, image.image_id, box.workspace, loop.create_future())
        self._pending[snapshot_id] = pending
        c.worker.send(api_pb2.WorkerCommand(snapshot_container=api_pb2.SnapshotContainer(
            snapshot_id=snapshot_id, container_id=c.container_id, parent_layer_id=image.image_id,
            workspace=box.workspace)))
        try:
            while not pending.done.done():
                if box.state == Info.ENDED:  # its container died, or its worker was lost
                    raise SnapshotFailed(f"the snapshot of sandbox {box.sandbox_id} failed: {_ended(box)}")
                if not await _changed(box, deadline - loop.time(), pending.done):
                    raise SnapshotFailed(f"the snapshot of sandbox {box.sandbox_id} took longer than its timeout "
                                         f"of {timeout:g}s: pass a larger timeout= to snapshot_filesystem()")
        finally:
            del self._pending[snapshot_id]
        done: api_pb2.SnapshotDone = pending.done.result()
        if done.error:
            raise SnapshotFailed(f"the snapshot of sandbox {box.sandbox_id} failed: {done.error}")
        log.info("sandbox %s: snapshot layer %s, %.1f MB", box.sandbox_id, done.layer.layer_id[:12],
                 done.layer.size / 1e6)
        return await self.record(image, done.layer, box.workspace)

    async def record(self, image: api_pb2.Image, layer: api_pb2.Layer, workspace: str) -> api_pb2.Image:
        """A snapshot's layer, on `image`, archived: known from now on as a built layer (kept as one),
        its archive the workspace's to name. Returns the snapshot's image."""
        self.builds.layers[layer.layer_id] = layer.blob_id
        self.store.add_layer(layer)
        self.store.grant_blob(workspace, layer.blob_id)
        await self.store.durable()
        snap = api_pb2.Image()
        snap.CopyFrom(image)
        snap.steps.append(api_pb2.ImageStep(kind=api_pb2.ImageStep.SNAPSHOT, blob_id=layer.blob_id,
                                            layer_id=layer.layer_id))
        snap.image_id = layer.layer_id
        return snap

    def on_done(self, msg: api_pb2.SnapshotDone, worker: WorkerState):
        """A worker's answer: taken only from the worker asked, with the layer named as it must be."""
        pending = self._pending.get(msg.snapshot_id)
        if pending is None or pending.worker is not worker or pending.done.done():
            return
        if not msg.error and (not is_blob_id(msg.layer.blob_id) or msg.layer.layer_id != snapshot_layer_id(
                pending.parent, pending.workspace, msg.layer.blob_id)):
            log.warning("worker %s reported snapshot %s with a layer not named for its archive: refused", worker.name,
                        msg.snapshot_id)
            msg = api_pb2.SnapshotDone(error=f"worker {worker.name} reported a malformed snapshot layer")
        pending.done.set_result(msg)

    def check(self, image: api_pb2.Image) -> str:
        """Why the image cannot run here ("" if it can): a snapshot step whose layer is unknown (never
        taken, or collected since)."""
        for step in image.steps:
            if step.kind == api_pb2.ImageStep.SNAPSHOT and self.builds.layers.get(step.layer_id) != step.blob_id:
                return ("the image is a sandbox snapshot whose layer is not kept any more (a snapshot is kept while "
                        "an app uses it, and a while after its last use), or was never taken in this workspace: "
                        "take a new one with sb.snapshot_filesystem()")
        return ""


async def _changed(box: SandboxState, left: float, *also: asyncio.Future) -> bool:
    """Wait for the sandbox to change (or one of `also` to be done); False if `left` passed first."""
    if left <= 0:
        return False
    changed = asyncio.ensure_future(box.changed.wait())
    try:
        done, _ = await asyncio.wait([changed, *also], timeout=left, return_when=asyncio.FIRST_COMPLETED)
    finally:
        changed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await changed
    return bool(done)


def _ended(box: SandboxState) -> str:
    return (f"sandbox {box.sandbox_id} has ended (returncode {box.returncode}"
            + (f": {box.error}" if box.error else "") + ")")
