"""The blob collector: deletes the blobs that nothing refers to any more, once their time is up.

What refers to a blob, and so keeps it:
  - a call's payloads (large arguments and results), until its outputs expire (--output-retention)
    and it has left the control plane's memory (a minute after its caller read it, else ten);
  - a live app's functions (deployed, running, or a superseded version still draining): their
    code, their images' local files and pickled functions, and their images' layer archives;
  - a layer built or used by a build less than --layer-grace ago, and an image being built;
  - a volume's files in its newest --volume-versions versions, and the versions that containers
    were started with (`hold`), while they run.
A blob that nothing refers to goes once it has been so for --blob-retention, as seen by the
collections of this process. A layer that nothing keeps is forgotten first (a later build makes
or uploads it again), and then its archive goes the same way.

The protocol that keeps a new reference safe: whoever is about to refer to a blob first puts it
(BlobPut) or asks for it (BlobExists), and either makes the blob count as put now; the blob store
never deletes a blob put less than --blob-retention ago (`delete_unless_put_since`, atomic with
puts). So an upload that is referenced right as a collection runs survives it: the collection
either sees the reference, or sees the blob as too fresh to go.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..proto import api_pb2
from .blobs import BlobStore, is_blob_id
from .store import Store

if TYPE_CHECKING:
    from .scheduler import Scheduler

log = logging.getLogger("ember.server")


@dataclass
class Collected:
    blobs: int = 0       # blobs deleted
    bytes: int = 0       # their size
    layers: int = 0      # layers forgotten
    kept: int = 0        # blobs left in the store


class BlobCollector:
    def __init__(self, store: Store, blobs: BlobStore, sched: Scheduler, *, blob_retention: float,
                 layer_grace: float, volume_versions: int, clock=time.time):
        self.store = store
        self.blobs = blobs
        self.sched = sched
        self.blob_retention = blob_retention
        self.layer_grace = layer_grace
        self.volume_versions = volume_versions
        self.clock = clock
        # When each blob was first seen unreferenced by a collection (lost with the process: then
        # its retention starts again, which errs on the side of keeping).
        self.unreferenced_since: dict[str, float] = {}
        # Blob ids of the volume versions each live container was started with.
        self.holds: dict[str, set[str]] = {}

    def hold(self, container_id: str, mounts: list[api_pb2.VolumeMount]):
        """A container starts with these volume versions: keep their files while it lives."""
        held = {f.blob_id for m in mounts for f in m.manifest.files}
        if held:
            self.holds[container_id] = held

    async def collect(self) -> Collected:
        """One collection: forget unused layers, then delete what nothing refers to and whose
        retention has passed."""
        self.sched.ledger.expire()
        stored = [entry async for entry in self.blobs.list()]
        # With the local blob store, no await from here to the end gives the loop to anyone else:
        # what is referenced does not change under us. The S3 store's calls do suspend; a reference
        # made meanwhile is safe all the same, since its maker refreshed or put the blob first and
        # delete_unless_put_since then keeps it (atomic with both, per blob).
        now = self.clock()
        done = Collected(layers=self._forget_layers(now))
        referenced = self._referenced()
        put_before = now - self.blob_retention
        gone = []
        for blob_id, _size, _put_at in stored:
            if blob_id in referenced:
                self.unreferenced_since.pop(blob_id, None)
                done.kept += 1
                continue
            since = self.unreferenced_since.setdefault(blob_id, now)
            freed = 0
            if now - since >= self.blob_retention:
                freed = await self.blobs.delete_unless_put_since(blob_id, put_before)
            if freed or not await self.blobs.exists(blob_id):
                self.unreferenced_since.pop(blob_id, None)
                gone.append(blob_id)
                done.blobs += 1
                done.bytes += freed
            else:
                done.kept += 1
        if gone:
            self.store.forget_blob_grants(gone)
        live = {b for b, _, _ in stored}
        for blob_id in [b for b in self.unreferenced_since if b not in live]:
            del self.unreferenced_since[blob_id]
        if done.blobs or done.layers:
            log.info("blob collection: deleted %d blobs (%.1f MB), forgot %d unused layers; %d blobs kept",
                     done.blobs, done.bytes / 1e6, done.layers, done.kept)
        return done

    # ---- what refers to blobs

    def _live_definitions(self) -> list[api_pb2.FunctionDefinition]:
        return [fn.definition for fn in self.sched.apps.functions()]

    def _forget_layers(self, now: float) -> int:
        """Forget the layers that no live app's image has and no build used within the grace."""
        in_use = {s.layer_id for d in self._live_definitions() for s in d.image.steps}
        in_use |= {s.layer_id for b in self.sched.builds.by_image.values() for s in b.image.steps}
        stale = [layer_id for layer_id, _blob, _size, _archive, used_at in self.store.layer_rows()
                 if layer_id not in in_use and now - used_at >= self.layer_grace]
        if stale:
            self.store.delete_layers(stale)
            self.sched.builds.forget(stale)
        return len(stale)

    def _referenced(self) -> set[str]:
        refs = self.store.payload_blobs() | self.sched.ledger.payload_blobs()
        refs |= {blob_id for _layer, blob_id, _size, _archive, _used in self.store.layer_rows()}
        refs |= self.store.volume_blobs(self.volume_versions)
        for d in self._live_definitions():
            refs.update((d.code_blob_id, d.pickled.blob_id))
            refs.update(s.blob_id for s in d.image.steps)
        for build in self.sched.builds.by_image.values():
            refs.update(s.blob_id for s in build.image.steps)
        live = {c.container_id for c in self.sched.fleet.containers()}
        for container_id in [c for c in self.holds if c not in live]:
            del self.holds[container_id]
        for held in self.holds.values():
            refs |= held
        return {r for r in refs if is_blob_id(r)}
