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
    def __init__(self, build_id: str, image: api_pb2.Image, worker, workspace: str,
                 secret_env: dict[int, dict[str, str]]):
        self.build_id = build_id
        self.image = image
        self.worker = worker
        self.workspace = workspace  # of the client that started it
        self.secret_env = secret_env  # step index -> the variables of its secrets (for the worker only)
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
        # Builds waiting for a worker to connect: demand for one, to a provisioner (provisioner/).
        self.waiting: set[str] = set()
        # The layers each worker (by id) was asked to build: what it may report, even after its
        # build is done (it uploads a layer's archive in the background).
        self.asked: dict[str, set[str]] = {}

    def is_built(self, image: api_pb2.Image) -> bool:
        return all(s.layer_id in self.layers for s in image.steps)

    def forget(self, layer_ids: list[str]):
        """These layers are no longer in the blob store (collected): the next build makes them again."""
        for layer_id in layer_ids:
            self.layers.pop(layer_id, None)

    def known(self, image: api_pb2.Image) -> list[api_pb2.Layer]:
        return [api_pb2.Layer(layer_id=s.layer_id, blob_id=self.layers[s.layer_id])
                for s in image.steps if self.layers.get(s.layer_id)]

    def listing(self, functions) -> list[api_pb2.ImageInfo]:
        """The images of these functions, with their layers' sizes as their builders reported them."""
        sizes = {layer_id: (blob_id, size, archive) for layer_id, blob_id, size, archive, _ in self.store.layer_rows()}
        images: dict[str, api_pb2.ImageInfo] = {}
        for fn in functions:
            image = fn.definition.image
            info = images.get(image.image_id)
            if info is None:
                info = images[image.image_id] = api_pb2.ImageInfo(image_id=image.image_id)
                for step in image.steps:
                    blob_id, size, archive = sizes.get(step.layer_id, ("", 0, 0))
                    info.layers += bool(blob_id or size)
                    info.size += size
                    info.archive_size += archive
            info.functions.append(f"{fn.app.name}.{fn.name}")
        return sorted(images.values(), key=lambda i: -i.size)

    async def follow(self, image: api_pb2.Image, force: bool, workspace: str,
                     secret_env: dict[int, dict[str, str]] | None = None):
        """The events of the image's build, from the start; starts one if none is running.
        secret_env: the variables of each step's secrets, checked to be the workspace's."""
        if not force and not any(s.force_build for s in image.steps) and self.is_built(image):
            self.store.use_layers([s.layer_id for s in image.steps])  # a recent use: kept (blob_gc.py)
            yield api_pb2.ImageBuildEvent(done=True)
            return
        build = self.by_image.get(image.image_id)
        if build is None:
            build = await self._start(image, force, workspace, secret_env or {})
        seen = 0
        while True:
            while seen < len(build.events):
                yield build.events[seen]
                seen += 1
            if build.done:
                return
            await build.changed.wait()

    async def _start(self, image: api_pb2.Image, force: bool, workspace: str,
                     secret_env: dict[int, dict[str, str]]) -> Build:
        worker = self.fleet.builder()
        build = Build(new_id("bd"), image, worker, workspace, secret_env)
        self.by_image[image.image_id] = build
        self.by_id[build.build_id] = build
        if worker is None:
            asyncio.get_running_loop().create_task(self._wait_for_worker(build, force))
        else:
            self._send(build, force)
        return build

    async def _wait_for_worker(self, build: Build, force: bool):
        build.add(api_pb2.ImageBuildEvent(log="waiting for a worker to build the image...\n"))
        self.waiting.add(build.build_id)
        try:
            async with asyncio.timeout(WORKER_WAIT):
                while (worker := self.fleet.builder()) is None:
                    await self.fleet.worker_joined()
        except TimeoutError:
            self._finish(build, f"no worker connected within {WORKER_WAIT:.0f}s to build the image: start one with "
                                "`ember worker`")
            return
        finally:
            self.waiting.discard(build.build_id)
        build.worker = worker
        self._send(build, force)

    def _send(self, build: Build, force: bool):
        self.asked.setdefault(build.worker.worker_id, set()).update(s.layer_id for s in build.image.steps)
        log.info("building image %s on worker %s", build.image.image_id[:12], build.worker.name)
        build.worker.send(api_pb2.WorkerCommand(build_image=api_pb2.BuildImage(
            build_id=build.build_id, image=build.image, layers=self.known(build.image), force=force,
            workspace=build.workspace,
            secret_env={i: api_pb2.BuildSecretEnv(env=env) for i, env in build.secret_env.items()})))

    # ---- what the building worker reports

    def _own(self, build_id: str, worker) -> Build | None:
        """The build, if it is this worker's: a worker speaks only of the builds given to it."""
        build = self.by_id.get(build_id)
        return build if build is not None and build.worker is worker else None

    def on_log(self, msg: api_pb2.BuildLog, worker):
        build = self._own(msg.build_id, worker)
        if build is None:
            return
        event = api_pb2.ImageBuildEvent(log=msg.data)
        total = len(build.image.steps)
        # A step's start or end, passed on if it is one of the image's steps (clients index by it).
        if msg.HasField("step") and 1 <= msg.step.index <= total and msg.step.total == total:
            event.step.CopyFrom(msg.step)
        build.add(event)

    def on_layer(self, msg: api_pb2.LayerBuilt, worker):
        # Reported after the layer's upload, which may outlast its build: checked against what the
        # worker was asked to build (whose ids validate.py checked: workers name directories by them).
        asked = self.asked.get(worker.worker_id, set())
        # Or the archive of a layer built without one yet: a worker stopped before archiving it
        # does so when it starts again (worker/images.py).
        resumed = msg.layer.blob_id and self.layers.get(msg.layer.layer_id) == ""
        if (msg.layer.layer_id not in asked and not resumed) or (
                msg.layer.blob_id and not is_blob_id(msg.layer.blob_id)):
            log.warning("worker %s reported layer %s, which it was not asked to build: ignored", worker.name,
                        msg.layer.layer_id[:12])
            return
        if msg.layer.blob_id:  # its final report: where its archive is
            asked.discard(msg.layer.layer_id)
        elif self.layers.get(msg.layer.layer_id):
            # A build's first report (the layer is usable on its worker) after an archive's report
            # for the same layer (an upload resumed at the worker's start, another worker's build):
            # where that archive is stays known, so that other workers fetch it.
            return
        self.layers[msg.layer.layer_id] = msg.layer.blob_id
        self.store.add_layer(msg.layer)

    def on_done(self, msg: api_pb2.BuildDone, worker):
        build = self._own(msg.build_id, worker)
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
