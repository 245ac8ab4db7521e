"""Image builds: which layers exist, and builds run on workers with their output streamed back.

An image is built when every one of its layers is known here (in the blob store, or empty):
then resolving it costs one lookup per step. Otherwise one worker builds it, fetching the
layers that exist and building the rest; every client asking for the same image meanwhile
follows the same build. A build whose worker disconnects fails, and the next request builds
again: layers already stored are kept.
"""

import asyncio
import logging

from .._ids import new_id
from ..proto import api_pb2
from .blobs import is_blob_id
from .fleet import Fleet
from .store import Store

log = logging.getLogger("ember.server")

WORKER_WAIT = 60.0  # seconds a build waits for a worker to connect


class Build:
    def __init__(self, build_id: str, image: api_pb2.Image, worker):
        self.build_id = build_id
        self.image = image
        self.worker = worker
        self.events: list[api_pb2.ImageBuildEvent] = []   # all of them, for followers joining late
        self.changed = asyncio.Event()
        self.done = False

    def add(self, event: api_pb2.ImageBuildEvent):
        self.events.append(event)
        self.done = self.done or event.done
        self.changed.set()
        self.changed = asyncio.Event()


class Builds:
    def __init__(self, store: Store, fleet: Fleet):
        self.store = store
        self.fleet = fleet
        self.layers: dict[str, str] = store.layers()   # layer id -> blob id
        self.by_image: dict[str, Build] = {}
        self.by_id: dict[str, Build] = {}

    def is_built(self, image: api_pb2.Image) -> bool:
        return all(s.layer_id in self.layers for s in image.steps)

    def known(self, image: api_pb2.Image) -> list[api_pb2.Layer]:
        return [api_pb2.Layer(layer_id=s.layer_id, blob_id=self.layers[s.layer_id])
                for s in image.steps if self.layers.get(s.layer_id)]

    async def follow(self, image: api_pb2.Image, force: bool):
        """The events of the image's build, from the start; starts one if none is running."""
        if not force and not any(s.force_build for s in image.steps) and self.is_built(image):
            yield api_pb2.ImageBuildEvent(done=True)
            return
        build = self.by_image.get(image.image_id)
        if build is None:
            build = await self._start(image, force)
        seen = 0
        while True:
            while seen < len(build.events):
                yield build.events[seen]
                seen += 1
            if build.done:
                return
            await build.changed.wait()

    async def _start(self, image: api_pb2.Image, force: bool) -> Build:
        worker = self.fleet.builder()
        build = Build(new_id("bd"), image, worker)
        self.by_image[image.image_id] = build
        self.by_id[build.build_id] = build
        if worker is None:
            asyncio.get_running_loop().create_task(self._wait_for_worker(build, force))
        else:
            self._send(build, force)
        return build

    async def _wait_for_worker(self, build: Build, force: bool):
        build.add(api_pb2.ImageBuildEvent(log="waiting for a worker to build the image...\n"))
        try:
            async with asyncio.timeout(WORKER_WAIT):
                while (worker := self.fleet.builder()) is None:
                    await self.fleet.worker_joined()
        except TimeoutError:
            self._finish(build, f"no worker connected within {WORKER_WAIT:.0f}s to build the image: start one with "
                                "`ember worker`")
            return
        build.worker = worker
        self._send(build, force)

    def _send(self, build: Build, force: bool):
        log.info("building image %s on worker %s", build.image.image_id[:12], build.worker.name)
        build.worker.send(api_pb2.WorkerCommand(build_image=api_pb2.BuildImage(
            build_id=build.build_id, image=build.image, layers=self.known(build.image), force=force)))

    # ---- what the building worker reports

    def _build_of(self, build_id: str, worker, what: str) -> Build | None:
        """The running build a worker reports on; None (and a warning) if another worker runs it.
        A build that already ended is None too, quietly: its worker may not know yet."""
        build = self.by_id.get(build_id)
        if build is not None and (build.worker is None or build.worker.worker_id != worker.worker_id):
            log.warning("worker %s sent %s of build %s, which is not its build: ignored", worker.name, what, build_id)
            return None
        return build

    def on_log(self, msg: api_pb2.BuildLog, worker):
        build = self._build_of(msg.build_id, worker, "the log")
        if build is not None:
            build.add(api_pb2.ImageBuildEvent(log=msg.data))

    def on_layer(self, msg: api_pb2.LayerBuilt):
        # Layers are reported after their upload, which may outlast the build: no build to check
        # against, but the ids must be ids (workers name cache directories by layer id).
        layer = msg.layer
        if not is_blob_id(layer.layer_id) or (layer.blob_id and not is_blob_id(layer.blob_id)):
            log.warning("a worker reported a layer with a malformed id (%r, blob %r): ignored", layer.layer_id[:80],
                        layer.blob_id[:80])
            return
        self.layers[layer.layer_id] = layer.blob_id
        self.store.add_layer(layer)

    def on_done(self, msg: api_pb2.BuildDone, worker):
        build = self._build_of(msg.build_id, worker, "the end")
        if build is not None:
            self._finish(build, msg.error)

    def worker_lost(self, worker):
        for build in list(self.by_id.values()):
            if build.worker is worker:
                self._finish(build, f"the worker building the image ({worker.name}) disconnected; run again to retry")

    def _finish(self, build: Build, error: str):
        self.by_id.pop(build.build_id, None)
        if self.by_image.get(build.image.image_id) is build:
            del self.by_image[build.image.image_id]
        if error:
            log.warning("image %s failed to build: %s", build.image.image_id[:12], error.splitlines()[0])
        build.add(api_pb2.ImageBuildEvent(done=True, error=error))
