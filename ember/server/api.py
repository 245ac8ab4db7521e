"""The control plane's gRPC services (one per kind of caller): requests become calls of the
scheduler's parts (scheduler.py).

Every RPC first proves who calls (auth.py): each handler gets the caller's Principal as its
last argument, and reaches only the objects of `who.workspace`.
"""

import asyncio
import contextlib
import functools
import hmac
import inspect
import logging
import time

import grpc

from .._layers import name_layers
from .._client.stream import Outbox
from ..proto import api_pb2, api_pb2_grpc
from .auth import ADMIN, CONTAINER, WORKER, WORKSPACE, Forbidden, Identity, Principal, Unauthenticated
from . import validate
from .blob_rights import BlobNotGranted, BlobRights
from .blobs import BlobNotFound, BlobStore, is_blob_id
from .disk import DiskFull
from .fleet import STARTING
from .identity_api import IdentityRpcs
from .objects import ObjectError, Objects
from .sandboxes import NameTaken, QuotaRefused, SandboxState
from .scheduler import Scheduler
from .secrets import SecretGone, Secrets
from .snapshots import SnapshotFailed
from .store import NotLeader, StoreUnavailable
from .tokens import ProxyTokens

EMPTY = api_pb2.Empty()
CHUNK = 1 << 20  # bytes of a sandbox's output per message at most
log = logging.getLogger("ember.server")


def authenticated(servicer_base, *roles: str):
    """Class decorator: each RPC of `servicer_base` first authenticates its caller as one of
    `roles` (refused before anything runs otherwise) and gets the Principal as its last argument.
    A stream whose credential stops being valid (Identity.check raises) ends UNAUTHENTICATED,
    a write that meets a full disk (DiskFull) ends its RPC RESOURCE_EXHAUSTED, and one that
    cannot reach the database (StoreUnavailable) or was fenced (NotLeader) UNAVAILABLE: its
    caller tries again, here or at another control plane (one cut off from the database stops
    leading soon)."""

    def prove(self, name: str, metadata, request) -> Principal:
        """Who calls, from the request's metadata (Unauthenticated, Forbidden otherwise); the
        frame transport (transport.py) asks this too."""
        who = self.identity.authenticate(metadata, roles)
        if who.role == CONTAINER and servicer_base is api_pb2_grpc.ClientApiServicer:
            self.fleet.check_access(who.token_id, name, request)
        return who

    async def caller(self, context, name: str, request) -> Principal:
        try:
            return prove(self, name, context.invocation_metadata(), request)
        except (Unauthenticated, Forbidden) as e:
            if hasattr(request, "__aiter__"):
                # A stream refused before its first message was read would end INTERNAL
                # instead (a race in gRPC's core): its first message is taken first.
                with contextlib.suppress(grpc.RpcError, StopAsyncIteration):
                    await anext(aiter(request))
            Code = grpc.StatusCode
            await context.abort(Code.UNAUTHENTICATED if isinstance(e, Unauthenticated) else Code.PERMISSION_DENIED,
                                str(e))

    def wrap(method):
        name = method.__name__
        if inspect.isasyncgenfunction(method):
            async def rpc(self, request, context):
                who = await caller(self, context, name, request)
                try:
                    async with contextlib.aclosing(method(self, request, context, who)) as replies:
                        async for reply in replies:
                            yield reply
                except STREAM_ENDINGS as e:
                    await context.abort(*ending(name, e))
        else:
            async def rpc(self, request, context):
                who = await caller(self, context, name, request)
                try:
                    return await method(self, request, context, who)
                except (DiskFull, StoreUnavailable, NotLeader) as e:
                    await context.abort(*ending(name, e))
        return functools.wraps(method)(rpc)

    def decorate(cls):
        cls.prove = prove
        for name, attr in vars(servicer_base).items():
            if callable(attr) and not name.startswith("_"):
                setattr(cls, name, wrap(getattr(cls, name)))
        return cls

    return decorate


def ending(name: str, e: Exception) -> tuple[grpc.StatusCode, str]:
    """How an RPC that raised e (one of STREAM_ENDINGS) ends for its caller."""
    if isinstance(e, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, str(e)
    if isinstance(e, Ended):
        return e.code, e.details
    if isinstance(e, DiskFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)
    return grpc.StatusCode.UNAVAILABLE, f"{name}: {e}; try again shortly"


class Ended(Exception):
    """What ends a stream from the control plane's side: its peer gets code and details."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


STREAM_ENDINGS = (Unauthenticated, Ended, DiskFull, StoreUnavailable, NotLeader)


class Duplex:
    """One side of a bidirectional stream: what is put with `send` goes to the peer, and
    `run(handle)` calls handle(message) for each message from the peer while yielding the
    outgoing ones. It ends when the peer stops sending."""

    def __init__(self, requests):
        self.requests = requests
        self.outbox = Outbox()
        self.send = self.outbox.put
        # A stream that takes replies itself (the frame transport's: transport.py's FrameRequests).
        self.reply_now = getattr(requests, "reply_now", None)
        self.ended = False  # run() is over: nothing sent from now on reaches the peer
        self._broken = getattr(requests, "broken", None)  # whether its connection is gone (frames')

    def gone(self) -> bool:
        """Whether what is sent now can no longer reach the peer: the stream is over, or its
        connection broke (and run() has not seen it yet)."""
        return self.ended or (self._broken is not None and self._broken())

    def end(self, code: grpc.StatusCode, details: str):
        """End the stream with an error for the peer, after what was sent before."""
        self.outbox.put(Ended(code, details))

    async def run(self, handle, first=None):
        async def read():
            push = getattr(self.requests, "push", None)  # the frame transport's (transport.py)
            if push is not None:
                await push(handle)
                return
            async for msg in self.requests:
                handle(msg)

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: self.outbox.close())
        try:
            if first is not None:
                yield first
            if self.reply_now is not None:  # after the first: it goes before any other
                self.outbox.direct(self.reply_now)
            async for msg in self.outbox.messages():
                if isinstance(msg, Ended):
                    raise msg
                yield msg
        finally:
            self.ended = True
            reader.cancel()
        # What ended the reading (a frame that did not parse, a failing handle) ends the stream
        # with an error, instead of a quiet end the peer would take for success.
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()


class BlobRpcs:
    """The blob RPCs, the same in each of the three services. A workspace's caller reads only the
    blobs its workspace may (blob_rights.py). Where the blob store has URLs of its own (S3's
    presigned ones), BlobUrl hands them out, so that large blobs move between the store and
    their users directly; what still passes through this process then is logged."""

    def __init__(self, blobs: BlobStore, identity: Identity, rights: BlobRights):
        self.blobs = blobs
        self.identity = identity
        self.rights = rights

    async def BlobPut(self, request_iterator, context, who):
        size = 0

        def counted(chunk):
            nonlocal size
            size += len(chunk.data)
            return chunk.data

        try:
            blob_id = await self.blobs.put(counted(chunk) async for chunk in request_iterator)
        except DiskFull:
            # Take the rest of the upload first: a sender cut off mid-stream sees a broken
            # stream (INTERNAL) instead of this error.
            async for _ in request_iterator:
                pass
            raise
        await self.rights.grant(who, blob_id)
        self._relayed("BlobPut", who, blob_id, size)
        return api_pb2.BlobRef(blob_id=blob_id)

    async def BlobGet(self, req, context, who):
        if not self.rights.may_read(who, req.blob_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, _no_blob(req.blob_id))
        size = 0
        async with contextlib.aclosing(self.blobs.get(req.blob_id)) as chunks:
            try:
                async for data in chunks:
                    size += len(data)
                    yield api_pb2.BlobChunk(data=data)
            except BlobNotFound:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no blob {req.blob_id}")
        self._relayed("BlobGet", who, req.blob_id, size)

    async def BlobExists(self, req, context, who):
        if who.workspace and not self.rights.granted(who, req.blob_id):
            # Its caller may have just uploaded it through a URL handed to its workspace.
            tag = await self.blobs.upload_tag(req.blob_id)
            if tag is not None and hmac.compare_digest(tag, self.rights.upload_tag(who, req.blob_id)):
                await self.rights.grant(who, req.blob_id)
            elif not self.rights.may_read(who, req.blob_id):
                return api_pb2.BlobExistsResponse(exists=False)  # as if missing: it puts the bytes itself
        # Asking counts as putting it again: whoever asks is about to refer to it (blob_gc.py).
        return api_pb2.BlobExistsResponse(exists=await self.blobs.refresh(req.blob_id))

    async def BlobUrl(self, req, context, who):
        if not is_blob_id(req.blob_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "BlobUrlRequest.blob_id must name a blob: 64 "
                                f"lowercase hex digits (got {req.blob_id!r})")
        if req.upload:
            # Anyone may upload: the store takes only the bytes whose hash the id is.
            put = await self.blobs.put_url(req.blob_id, self.rights.upload_tag(who, req.blob_id))
            if put is None:
                return api_pb2.BlobUrlResponse()
            return api_pb2.BlobUrlResponse(url=put.url, headers=put.headers)
        if not self.rights.may_read(who, req.blob_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, _no_blob(req.blob_id))
        return api_pb2.BlobUrlResponse(url=self.blobs.url_for(req.blob_id) or "")

    def _relayed(self, rpc: str, who: Principal, blob_id: str, size: int):
        if self.blobs.url_for(blob_id) is not None:
            log.info("%s: %d bytes of blob %s passed through the control plane (%s %s), though the blob store "
                     "takes them directly", rpc, size, blob_id, who.role, who.workspace or who.token_id)


def _no_container(container_id: str) -> str:
    return (f"there is no running container {container_id} in this workspace (`ember container list` shows "
            "those there are)")


def _sandbox_ended(box: SandboxState) -> str:
    return (f"sandbox {box.sandbox_id} has ended (returncode {box.returncode}"
            + (f": {box.error}" if box.error else "") + "): create another with ember.Sandbox.create()")


def _no_blob(blob_id: str) -> str:
    return f"there is no blob {blob_id} in this workspace (put it first: only the bytes' uploader may read them)"


@authenticated(api_pb2_grpc.ClientApiServicer, ADMIN, WORKSPACE, CONTAINER)
class ClientService(BlobRpcs, IdentityRpcs, api_pb2_grpc.ClientApiServicer):
    """What clients (the SDK, the CLI, and containers' own code) call."""

    def __init__(self, sched: Scheduler, blobs: BlobStore, secrets: Secrets, tokens: ProxyTokens,
                 heartbeat_interval: float):
        super().__init__(blobs, sched.identity, sched.blob_rights)
        self.sched = sched
        self.store = sched.store
        self.apps = sched.apps
        self.ledger = sched.ledger
        self.fleet = sched.fleet
        self.routes = sched.routes
        self.builds = sched.builds
        self.heartbeat_interval = heartbeat_interval
        self.transport_port = 0  # where the frame transport listens, once it does (main.py); 0: it does not
        self.transport_unix_path = ""  # or the unix socket it listens on, for a control plane on one
        self.objects = Objects(sched.store)
        self.secrets = secrets
        self.tokens = tokens

    # ------------------------------------------------------------------ containers

    def _container(self, who: Principal, container_id: str):
        """A live container the caller may inspect: its workspace's (any, for an admin); None if not."""
        return self.fleet.container(container_id, None if who.is_admin else who.workspace)

    async def _people_only(self, context, who: Principal, rpc: str):
        if who.role == CONTAINER:  # a function's code does not list, enter or stop containers
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"containers may not call {rpc}")

    async def ContainerList(self, req, context, who):
        await self._people_only(context, who, "ContainerList")
        now, clock = time.time(), self.fleet.clock()
        rows = []
        for c in self.fleet.containers():
            app = c.function.app
            if (not who.is_admin and app.workspace != who.workspace) or (req.app_id and app.app_id != req.app_id) \
                    or (req.app_name and app.name != req.app_name):
                continue
            rows.append(api_pb2.ContainerInfo(
                container_id=c.container_id, app_id=app.app_id, app_name=app.name, function_name=c.function.name,
                worker=c.worker.name, image_id=c.function.definition.image.image_id,
                started_at=now - (clock - c.requested_at), state=c.state, inputs_in_flight=len(c.held),
                workspace=app.workspace, stopping=c.stopping, function_id=c.function.function_id))
        rows.sort(key=lambda r: r.started_at)
        return api_pb2.ContainerListResponse(containers=rows)

    async def ContainerStop(self, req, context, who):
        await self._people_only(context, who, "ContainerStop")
        validate.required(req, "container_id")
        c = self._container(who, req.container_id)
        if c is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, _no_container(req.container_id))
        # As Modal does: killed now, and the inputs it ran go to other containers (as for a lost one).
        self.fleet.lost(c, "it was stopped with `ember container stop`")
        await self.store.durable()
        return EMPTY

    async def ContainerExec(self, request_iterator, context, who):
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "start":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ContainerExec's first request must be `start`")
        start = first.start
        validate.exec_start(start)
        c = self._container(who, start.container_id)
        if c is None:  # nothing reaches a worker for a container that is not the caller's
            await context.abort(grpc.StatusCode.NOT_FOUND, _no_container(start.container_id))
        box = self.sched.sandboxes.of_container(c.container_id)
        if box is None:  # a function's code enters no function's container; its workspace's sandboxes it may
            await self._people_only(context, who, "ContainerExec")
        if not c.worker.connected:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the worker {c.worker.name} of container "
                                f"{c.container_id} is disconnected: try again once it is back")
        if c.state == STARTING and box is None:  # a sandbox's worker holds it until its container is up
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"container {c.container_id} is still starting: try again once `ember container "
                                "list` shows it ready")
        if box is not None:
            if box.state == api_pb2.SandboxInfo.ENDED:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, _sandbox_ended(box))
            self.sched.sandboxes.touched(box)
            start.workdir = start.workdir or box.workdir  # a sandbox's workdir= is its execs' too
        # The environment its function sees: its env= and its secrets, under what the caller adds
        # (the worker, which runs the container and could read them there, gets them to start it).
        # env= comes after the secrets, as the function's code sees them (Modal's order); then the
        # command's own secrets (the workspace's own) and env.
        try:
            for secret_id in start.secret_ids:
                self.secrets.owned(who.workspace, secret_id)
            env = {**self.secrets.env_for(c.function.definition.secret_ids, c.function.app.workspace),
                   **c.function.definition.env,
                   **self.secrets.env_for(start.secret_ids, c.function.app.workspace), **start.env}
        except SecretGone as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except (LookupError, ObjectError, Forbidden) as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        start.env.clear()
        start.env.update(env)
        del start.secret_ids[:]
        stream = Duplex(request_iterator)
        execs, identity = self.fleet.execs, self.identity
        exec_id = execs.open(c, start, stream.send)

        def handle(msg):
            identity.check(who)  # a revoked token types no more
            if msg.WhichOneof("msg") == "input":
                validate.exec_input(msg.input)
                execs.input(exec_id, msg.input)

        try:
            # First an empty output, which says the command is on its way: only then does the
            # client send its stdin (a refusal with requests unread would reach it as INTERNAL).
            async with contextlib.aclosing(stream.run(handle, first=api_pb2.ExecOutput(exec_id=exec_id))) as outputs:
                async for out in outputs:
                    yield out
                    if out.exited:
                        break
        finally:
            execs.close(exec_id)

    # ------------------------------------------------------------------ sandboxes

    async def _sandbox(self, context, who: Principal, sandbox_id: str) -> SandboxState:
        """The caller's workspace's sandbox (any, for an admin); another's is as if it did not exist.
        (A function's code may drive its workspace's sandboxes, as Modal's may.)"""
        box = self.sched.sandboxes.get(sandbox_id, None if who.is_admin else who.workspace) if sandbox_id else None
        if box is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no sandbox {sandbox_id!r} (it may have ended "
                                "long ago: see `ember sandbox list`)")
        return box

    async def SandboxCreate(self, req, context, who):
        validate.sandbox_create(req)
        app = self.apps.app(req.app_id, who.workspace)
        if app is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"app {req.app_id} is not running: pass app= an app "
                                "that runs (ember.App.lookup(NAME, create_if_missing=True), or a running app)")
        d = req.definition
        if d.HasField("image"):
            name_layers(d.image, who.workspace)
        try:
            self._check_owned(who.workspace, d)
            env = {**self.secrets.env_for(d.secret_ids, app.workspace), **d.env}
            box = self.sched.sandboxes.create(app, req, env)
        except SecretGone as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except NameTaken as e:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(e))
        except QuotaRefused as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except (LookupError, ObjectError) as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except Forbidden as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        await self.store.durable()
        return box.info(self.sched.routes.base_url)

    async def SandboxGet(self, req, context, who):
        if req.sandbox_id:
            return (await self._sandbox(context, who, req.sandbox_id)).info(self.sched.routes.base_url)
        validate.required(req, "app_name", "name")
        try:
            app = self.apps.current_app(who.workspace, req.app_name)
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        box = self.sched.sandboxes.by_name(app, req.name)
        if box is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"app {req.app_name} has no sandbox named {req.name!r}")
        return box.info(self.sched.routes.base_url)

    async def SandboxList(self, req, context, who):
        boxes = self.sched.sandboxes.listing(None if who.is_admin else who.workspace, req.app_id, dict(req.tags))
        base_url = self.sched.routes.base_url
        boxes.sort(key=lambda b: b.created_at)
        return api_pb2.SandboxListResponse(sandboxes=[b.info(base_url) for b in boxes])

    async def SandboxWait(self, req, context, who):
        validate.number("SandboxWaitRequest.timeout", req.timeout, high=86400)
        box = await self._sandbox(context, who, req.sandbox_id)
        deadline = time.monotonic() + req.timeout
        awaited = (api_pb2.SandboxInfo.STARTING,) if req.until_running else (api_pb2.SandboxInfo.STARTING,
                                                                             api_pb2.SandboxInfo.RUNNING)
        while box.state in awaited and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.changed.wait(), left)
        return box.info(self.sched.routes.base_url)

    async def SandboxTerminate(self, req, context, who):
        box = await self._sandbox(context, who, req.sandbox_id)
        self.sched.sandboxes.terminate(box, f"sandbox {box.sandbox_id} was terminated")
        return EMPTY

    async def SandboxSetTags(self, req, context, who):
        validate.sandbox_tags(req.tags, "SandboxSetTagsRequest.tags")
        box = await self._sandbox(context, who, req.sandbox_id)
        box.tags = dict(req.tags)
        return EMPTY

    async def SandboxOutput(self, req, context, who):
        box = await self._sandbox(context, who, req.sandbox_id)
        if req.fd not in (1, 2):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"SandboxOutputRequest.fd must be 1 (stdout) or "
                                f"2 (stderr) (got {req.fd})")
        out, offset = box.outputs[req.fd], req.offset
        while True:
            self.identity.check(who)  # a revoked token reads no more
            changed = box.changed  # taken before looking: what comes after it sets it
            start, data = out.since(offset)
            for i in range(0, len(data), CHUNK):
                yield api_pb2.SandboxOutputChunk(data=data[i:i + CHUNK], offset=start + i)
            offset = start + len(data)
            if box.output_done():
                yield api_pb2.SandboxOutputChunk(offset=offset, eof=True)
                return
            await changed.wait()

    async def SandboxStdin(self, req, context, who):
        if len(req.data) > validate.MAX_EXEC_INPUT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"SandboxStdinRequest.data must be at most "
                                f"{validate.MAX_EXEC_INPUT} bytes (got {len(req.data)})")
        box = await self._sandbox(context, who, req.sandbox_id)
        if box.state == api_pb2.SandboxInfo.ENDED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, _sandbox_ended(box))
        if not box.argv:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"sandbox {box.sandbox_id} has no command to "
                                "read stdin: write to an exec's stdin instead (sb.exec(...).stdin)")
        if not self.sched.sandboxes.stdin(box, req.data, req.eof):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"sandbox {box.sandbox_id} is still starting and "
                                "holds as much stdin as it keeps for its command: drain() again once it runs")
        return EMPTY

    async def SandboxSnapshotFilesystem(self, req, context, who):
        validate.number("SandboxSnapshotRequest.timeout", req.timeout, above=True, high=3600)
        box = await self._sandbox(context, who, req.sandbox_id)
        try:
            return await self.sched.snapshots.take(box, req.timeout)
        except SnapshotFailed as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))

    # ------------------------------------------------------------------ apps and functions

    async def AppCreate(self, req, context, who):
        validate.app_create(req)
        app_id = self.apps.create_app(who.workspace, req.name or "unnamed", deployed=req.deployed)
        await self.store.durable()
        return api_pb2.AppCreateResponse(app_id=app_id, heartbeat_interval=self.heartbeat_interval,
                                         unisolated_workers=self.fleet.unisolated_workers())

    async def AppHeartbeat(self, req, context, who):
        validate.app_id(req)
        if self.apps.app(req.app_id, who.workspace) is None or not self.apps.heartbeat(req.app_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"app {req.app_id} is not running")
        return EMPTY

    async def _call(self, context, fn, *args, **kwargs):
        """Run a request's operation; answer once what it wrote is committed. A missing
        object (LookupError, or an ObjectError saying so) is NOT_FOUND; a bad request,
        INVALID_ARGUMENT; a right the caller lacks, PERMISSION_DENIED."""
        try:
            result = fn(*args, **kwargs)
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except ObjectError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND if e.not_found else grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Forbidden as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        await self.store.durable()
        return result

    async def _app_by_ref(self, context, who: Principal, app_id: str, name: str):
        if not name:
            return self.apps.app(app_id, who.workspace)
        try:
            return self.apps.current_app(who.workspace, name)
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))

    async def AppStop(self, req, context, who):
        validate.app_by_id_or_name(req)
        app = await self._app_by_ref(context, who, req.app_id, req.name)
        if app is not None and req.drain:
            self.apps.drain(app.app_id)
        elif app is not None:
            self.sched.stop_app(app.app_id, "it was stopped by name" if req.name else "its client stopped it")
        await self.store.durable()
        return EMPTY

    async def FunctionBind(self, req, context, who):
        validate.function_bind(req)
        fid = await self._call(context, self.apps.bind_function, req.function_id, req.params, who.workspace,
                               req.options if req.HasField("options") else None,
                               functools.partial(self._check_definition, who.workspace))
        return api_pb2.FunctionCreateResponse(function_id=fid)

    def _check_definition(self, workspace: str, d: api_pb2.FunctionDefinition):
        """A definition made of another and options: valid, and its secrets and volumes the workspace's own."""
        validate.function_definition(d)
        self._check_owned(workspace, d)

    async def FunctionGetStats(self, req, context, who):
        validate.function_ref(req)
        fn = await self._call(context, self.apps.function_for_call, req.function_id, who.workspace)
        live = [c for c in fn.containers.values() if not c.stopping]
        return api_pb2.FunctionStats(backlog=sum(1 for i in fn.pending if not i.done),
                                     num_running_inputs=sum(len(c.held) for c in live), num_total_runners=len(live))

    async def FunctionUpdateAutoscaler(self, req, context, who):
        validate.update_autoscaler(req)
        fn = await self._call(context, self.apps.update_autoscaler, req.function_id, who.workspace, req)
        self.sched.autoscaler.tick(fn, self.sched.clock())  # takes effect now: warm containers start, idle ones stop
        return EMPTY

    async def AppDeploy(self, req, context, who):
        validate.app_id(req)
        if self.apps.app(req.app_id, who.workspace) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"app {req.app_id} is not a running deployed app")
        return api_pb2.AppDeployResponse(version=await self._call(context, self.apps.deploy, req.app_id))

    async def AppList(self, req, context, who):
        apps = sorted(self.apps.listing(who.workspace), key=lambda a: (not a.deployed, a.name))
        return api_pb2.AppListResponse(apps=[api_pb2.AppInfo(
            app_id=a.app_id, name=a.name, deployed=a.deployed, version=a.version, num_functions=len(a.functions),
            state=api_pb2.APP_STATE_SUPERSEDED if a.superseded else api_pb2.APP_STATE_RUNNING,
            functions=a.function_ids(), dashboard_url=f"{self.routes.dashboard_url}/dashboard/apps/{a.app_id}")
            for a in apps if a.version or not a.deployed])

    async def AppHistory(self, req, context, who):
        validate.app_name(req)
        rows = self.store.app_history(who.workspace, req.name)
        if not rows:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no app named {req.name!r} was ever deployed")
        return api_pb2.AppListResponse(apps=[api_pb2.AppInfo(
            app_id=app_id, name=req.name, deployed=True, version=version, created_at=deployed_at or 0,
            state=api_pb2.AppState.Value(f"APP_STATE_{state.upper()}"),
            stopped_at=stopped_at or 0) for app_id, version, deployed_at, state, stopped_at in rows])

    async def FunctionLookup(self, req, context, who):
        validate.function_lookup(req)
        if req.function_id:
            fn = self.apps.function(req.function_id, who.workspace)
            if fn is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no function {req.function_id} in a running "
                                    "app of this workspace (`ember app list` shows the running apps)")
        else:
            fn = await self._call(context, self.apps.lookup_function, who.workspace, req.app_name, req.name)
        definition = None
        if req.with_definition:  # its options, not its code
            definition = api_pb2.FunctionDefinition()
            definition.CopyFrom(fn.definition)
            for code in ("pickled", "code_blob_id", "bound_params"):
                definition.ClearField(code)
        return api_pb2.FunctionLookupResponse(function_id=fn.function_id, is_generator=fn.definition.is_generator,
                                              is_class=fn.definition.is_class, methods=fn.definition.methods,
                                              name=fn.name, app_id=fn.app.app_id, definition=definition,
                                              **self._web_urls(fn))

    async def AppLogs(self, req, context, who):
        """The app's lines kept in the store (the history, filtered), then, unless asked to stop at
        the end (or until a time), those that come, as they come."""
        validate.app_logs(req)
        app_id, app = await self._logs_of(context, who, req)
        filters = {"since": req.since, "until": req.until, "function_name": req.function_name,
                   "container_id": req.container_id, "call_id": req.call_id, "search": req.search}
        after = req.after_seq
        if req.tail:
            first = self.store.logs(who.workspace, app_id, after_seq=after, tail=req.tail, limit=1, **filters)
            after = first[0][1] - 1 if first else after
        while True:
            end = app.log.seq if app is not None else 0  # all up to here is in the store: it is written at once
            rows = self.store.logs(who.workspace, app_id, after_seq=after, limit=LOG_PAGE, **filters)
            if rows:
                after = rows[-1][1]
                self.identity.check(who)
                yield api_pb2.LogBatch(entries=[_log_entry(r) for r in rows])
            if len(rows) < LOG_PAGE:
                after = max(after, end)
                break
        if app is None or req.stop_at_end or req.until:
            return
        filtered = req.function_name or req.container_id or req.call_id or req.search or req.since
        async for batch in app.log.follow(after, False):
            self.identity.check(who)  # a revoked token follows no more
            if not filtered:  # as it is: a follower of everything (`ember run`) costs one message a batch
                yield batch
                continue
            entries = [e for e in batch.entries if _log_matches(e, req)]
            if entries:
                yield api_pb2.LogBatch(entries=entries)

    async def _logs_of(self, context, who: Principal, req) -> tuple[str, object]:
        """(app_id, the running app or None) whose logs AppLogs reads: by id (even a stopped
        app's), or a deployed app's newest version by name; the workspace's own only."""
        if not req.app_id and not req.app_name and not req.container_id:  # a call's (validate.app_logs)
            call = self.store.call(req.call_id)
            fn = self.store.function(call[0]) if call is not None else None
            if fn is None or fn[1] != who.workspace:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no call {req.call_id} in this workspace "
                                    "(a call's results and logs are kept until it expires)")
            return fn[0], self.apps.app(fn[0], who.workspace)
        if not req.app_id and not req.app_name:  # a container's (validate.app_logs)
            c = self.fleet.container(req.container_id, who.workspace)
            app_id = c.function.app.app_id if c is not None else self.store.container_app(req.container_id)
            if app_id is None or self.store.app_workspace(app_id) != who.workspace:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no container {req.container_id} in this "
                                    "workspace, running or ended (`ember container list` shows the running ones)")
            return app_id, self.apps.app(app_id, who.workspace)
        if req.app_name:
            versions = self.store.app_history(who.workspace, req.app_name)
            if not versions:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no app named {req.app_name!r} was ever deployed "
                                    "(an ephemeral app's logs are found by its app id)")
            app_id = versions[0][0]
        else:
            app_id = req.app_id
        app = self.apps.app(app_id, who.workspace)
        if app is None and self.store.app_workspace(app_id) != who.workspace:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no app with id {app_id}")
        return app_id, app

    async def FunctionCreate(self, req, context, who):
        validate.function_create(req)
        if req.definition.HasField("image"):
            name_layers(req.definition.image, who.workspace)
        fid = await self._call(context, self._create_function, who.workspace, req.app_id, req.definition)
        return api_pb2.FunctionCreateResponse(function_id=fid, **self._web_urls(self.apps.function(fid)))

    def _create_function(self, workspace: str, app_id: str, d: api_pb2.FunctionDefinition) -> str:
        """The secrets and volumes a function names must be its workspace's own: given another's
        id, its containers would receive that workspace's values."""
        self._check_owned(workspace, d)
        return self.apps.create_function(app_id, d, workspace)

    def _check_owned(self, workspace: str, d: api_pb2.FunctionDefinition):
        for secret_id in d.secret_ids:
            self.secrets.owned(workspace, secret_id)
        for volume_id in d.volume_mounts.values():
            self.objects.owned(workspace, volume_id, "volume")
        for step in d.image.steps:
            for secret_id in step.secret_ids:
                self.secrets.owned(workspace, secret_id)
        self.rights.check_referable(workspace, [d.code_blob_id, d.pickled.blob_id, *(s.blob_id for s in d.image.steps)],
                                    f"function {d.name}")

    def _web_urls(self, fn) -> dict:
        """The web_url and method_web_urls fields of a function's responses."""
        urls = self.routes.urls(fn)
        return {"web_url": urls.pop("", ""), "method_web_urls": urls}

    async def ImageList(self, req, context, who):
        functions = [fn for app in self.apps.listing(who.workspace) for fn in app.functions.values()]
        return api_pb2.ImageListResponse(images=self.builds.listing(functions))

    async def ImageBuild(self, req, context, who):
        validate.image_build(req)
        name_layers(req.image, who.workspace)
        try:
            self.rights.check_referable(who.workspace, [s.blob_id for s in req.image.steps], "the image")
        except BlobNotGranted as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        try:  # the secrets a step names must be the workspace's own
            secret_env = {i: self.secrets.env_for(step.secret_ids, who.workspace)
                          for i, step in enumerate(req.image.steps) if step.secret_ids}
        except SecretGone as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        if refusal := self.sched.snapshots.check(req.image):
            yield api_pb2.ImageBuildEvent(done=True, error=refusal)
            return
        async for event in self.builds.follow(req.image, req.force, who.workspace, secret_env):
            if event.done:
                await self.store.durable()  # the layers it recorded
            yield event

    # ------------------------------------------------------------------ dicts, queues, volumes, secrets

    async def SecretCreate(self, req, context, who):
        return await self._call(context, self.secrets.create, who.workspace, req)

    async def SecretLookup(self, req, context, who):
        validate.secret_name(req)
        return await self._call(context, self.secrets.lookup, who.workspace, req)

    async def SecretList(self, req, context, who):
        return api_pb2.SecretListResponse(secrets=await self._call(context, self.secrets.listing, who.workspace))

    async def SecretDelete(self, req, context, who):
        validate.secret_name(req)
        await self._call(context, self.secrets.delete, who.workspace, req.name)
        return EMPTY

    async def ProxyTokenCreate(self, req, context, who):
        return await self._call(context, self.tokens.create, who.workspace)

    async def ProxyTokenList(self, req, context, who):
        return self.tokens.list(who.workspace)

    async def ProxyTokenDelete(self, req, context, who):
        validate.proxy_token(req)
        await self._call(context, self.tokens.delete, who.workspace, req.token_id)
        return EMPTY

    async def ObjectGet(self, req, context, who):
        return api_pb2.ObjectGetResponse(object_id=await self._call(context, self.objects.get, who.workspace, req))

    async def ObjectList(self, req, context, who):
        return api_pb2.ObjectListResponse(objects=await self._call(context, self.objects.listing, who.workspace,
                                                                   req.kind))

    async def ObjectDelete(self, req, context, who):
        validate.object_ref(req)
        await self._call(context, self.objects.delete, who.workspace, req)
        return EMPTY

    async def VolumeGet(self, req, context, who):
        validate.volume_ref(req)
        return await self._call(context, self.objects.volume_manifest, who.workspace, req.volume_id)

    async def VolumeCommit(self, req, context, who):
        validate.volume_commit(req)
        return await self._call(context, self._volume_commit, who.workspace, req)

    def _volume_commit(self, workspace: str, req: api_pb2.VolumeCommitRequest) -> api_pb2.VolumeManifest:
        # Workers fetch a volume's files to mount them: only the workspace's own blobs may go in.
        self.rights.check_referable(workspace, [f.blob_id for f in req.files], f"the commit of {req.volume_id}")
        return self.objects.volume_commit(workspace, req)

    async def TransportEndpoint(self, req, context, who):
        return self.frames_endpoint()

    def frames_endpoint(self) -> api_pb2.TransportEndpointResponse:
        return api_pb2.TransportEndpointResponse(port=self.transport_port, unix_path=self.transport_unix_path)

    async def ObjectStream(self, request_iterator, context, who):
        stream = Duplex(request_iterator)
        objects, store, workspace, identity = self.objects, self.store, who.workspace, self.identity

        def answer(tag, result=None, error=None):
            if isinstance(result, api_pb2.DictResponse):
                msg = api_pb2.ObjectOpResult(tag=tag, dict=result)
            elif isinstance(result, api_pb2.QueueResponse):
                msg = api_pb2.ObjectOpResult(tag=tag, queue=result)
            else:
                msg = api_pb2.ObjectOpResult(tag=tag, error=str(error), not_found=getattr(error, "not_found", False))
            store.on_durable(lambda: stream.send(msg), lambda e: stream.send(api_pb2.ObjectOpResult(
                tag=tag, error=str(e), disk_full=True)))

        waiting: set[asyncio.Task] = set()  # the gets that wait for an item: cancelled as the stream ends

        async def wait_for_item(op):
            try:
                rows = await objects.queue_wait(workspace, op.queue)
            except ObjectError as e:
                answer(op.tag, error=e)
                return
            msg = api_pb2.ObjectOpResult(tag=op.tag, queue=api_pb2.QueueResponse(values=[v for _, v in rows]))

            def deliver():
                # Its caller went while the take was committed (Ctrl-C, a broken connection):
                # the items go back to the queue rather than to nobody.
                if stream.gone():
                    objects.give_back(op.queue.queue_id, op.queue.partition, rows)
                else:
                    stream.send(msg)
            store.on_durable(deliver, lambda e: stream.send(api_pb2.ObjectOpResult(
                tag=op.tag, error=str(e), disk_full=True)))

        def handle(op):
            identity.check(who)  # a revoked token's stream takes no more operations
            try:
                validate.object_op(op)
                if op.WhichOneof("op") == "dict":
                    answer(op.tag, objects.dict_op(workspace, op.dict))
                    return
                # A get takes what is there now in this turn (one query); only one that finds
                # nothing and may wait for an item goes on in a task of its own.
                result = objects.queue_op_now(workspace, op.queue)
                if result.values or not objects.may_wait(op.queue):
                    answer(op.tag, result)
                else:
                    task = asyncio.get_running_loop().create_task(wait_for_item(op))
                    waiting.add(task)
                    task.add_done_callback(waiting.discard)
            except (ObjectError, validate.Invalid) as e:
                answer(op.tag, error=e)
            except DiskFull as e:
                stream.send(api_pb2.ObjectOpResult(tag=op.tag, error=str(e), disk_full=True))

        try:
            async with contextlib.aclosing(stream.run(handle)) as results:
                async for msg in results:
                    yield msg
        finally:
            for task in list(waiting):  # nobody is there to take what they would get
                task.cancel()

    # ------------------------------------------------------------------ calls

    async def CallStream(self, request_iterator, context, who):
        stream = Duplex(request_iterator)
        send = stream.send
        ledger, store, workspace, identity = self.ledger, self.store, who.workspace, self.identity

        def handle(req):
            identity.check(who)  # a revoked token's stream takes no more calls
            try:
                validate.call_request(req)
                call = ledger.create_call(workspace, req.function_id, req.call_id,
                                          [api_pb2.Input(idx=0, args=req.args)], True, maybe_exists=req.resend,
                                          hold=True)
            except (LookupError, validate.Invalid) as e:
                send(api_pb2.CallResponse(tag=req.tag, error=str(e)))
                return
            except DiskFull as e:
                send(api_pb2.CallResponse(tag=req.tag, error=str(e), disk_full=True))
                return

            def done(call, tag=req.tag):
                if call.unstored is not None:  # a full disk undid it after all (Ledger.create_call)
                    unstored(call.unstored, tag)
                else:  # once its output is durable (a held call's: the call itself too)
                    store.on_durable(lambda: send(api_pb2.CallResponse(tag=tag, output=ledger.last_output(call))),
                                     lambda e: unstored(e, tag))
            ledger.when_done(call, done)

        def unstored(e: Exception, tag: int):
            if isinstance(e, DiskFull):
                send(api_pb2.CallResponse(tag=tag, error=str(e), disk_full=True))
            else:  # undone otherwise (this control plane lost the lead): its client sends it again
                stream.end(*ending("CallStream", e))

        async with contextlib.aclosing(stream.run(handle)) as replies:
            async for resp in replies:
                yield resp

    async def FunctionCallCreate(self, req, context, who):
        return await _unary(self._create(who, req), context)

    async def FunctionCallPutInputs(self, req, context, who):
        return await _unary(self._put(who, req), context)

    async def FunctionCallGetOutputs(self, req, context, who):
        return await _unary(self._outputs(who, req), context)

    async def MapStream(self, request_iterator, context, who):
        stream = Duplex(request_iterator)
        send, identity = stream.send, self.identity
        ops = {"create": self._create, "put": self._put, "get": self._outputs}

        async def run(req):
            # Each op as its RPC runs it; its refusal is the RPC's status code and details. A
            # control plane that cannot write (StoreUnavailable, NotLeader) ends the stream
            # instead: the client sends what it had in flight again, there or to the leader.
            kind = req.WhichOneof("op")
            try:
                if kind is None:
                    raise validate.Invalid("MapRequest.op", "must be one of create, put or get")
                if kind == "get":  # its outputs filled into the answer: not copied into it afterwards
                    answer = api_pb2.MapResponse(tag=req.tag)
                    await self._outputs(who, req.get, answer.outputs)
                else:
                    await ops[kind](who, getattr(req, kind))
                    answer = api_pb2.MapResponse(tag=req.tag)
            except Ended as e:
                send(api_pb2.MapResponse(tag=req.tag, code=e.code.value[0], details=e.details))
            except validate.Invalid as e:
                send(api_pb2.MapResponse(tag=req.tag, code=grpc.StatusCode.INVALID_ARGUMENT.value[0], details=str(e)))
            except DiskFull as e:
                send(api_pb2.MapResponse(tag=req.tag, code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                                         details=str(e)))
            except (StoreUnavailable, NotLeader) as e:
                stream.end(*ending("MapStream", e))
            else:
                send(answer)

        tasks = set()

        def handle(req):
            identity.check(who)  # a revoked token's stream takes no more operations
            task = asyncio.get_running_loop().create_task(run(req))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            async with contextlib.aclosing(stream.run(handle)) as replies:
                async for resp in replies:
                    yield resp
        finally:
            for task in tasks:
                task.cancel()

    async def _create(self, who: Principal, req: api_pb2.FunctionCallCreateRequest):
        validate.function_call_create(req)
        try:
            call = self.ledger.create_call(who.workspace, req.function_id, req.call_id, req.inputs,
                                           req.inputs_complete)
        except LookupError as e:
            raise Ended(grpc.StatusCode.NOT_FOUND, f"cannot call function {req.function_id}: {e}") from None
        await self.store.durable()
        return api_pb2.FunctionCallCreateResponse(call_id=call.call_id)

    async def _put(self, who: Principal, req: api_pb2.PutInputsRequest):
        validate.put_inputs(req)
        try:
            self.ledger.put_inputs(who.workspace, req.call_id, req.inputs, req.inputs_complete)
        except LookupError as e:
            raise Ended(grpc.StatusCode.NOT_FOUND, f"cannot add inputs to {req.call_id}: {e}") from None
        await self.store.durable()
        return EMPTY

    async def _outputs(self, who: Principal, req: api_pb2.GetOutputsRequest,
                       resp: api_pb2.GetOutputsResponse | None = None) -> api_pb2.GetOutputsResponse:
        """The answer, filled into resp if given (a MapResponse's: a copy of up to 10,000 outputs less)."""
        validate.get_outputs(req)
        call = self.ledger.lookup_call(req.call_id, who.workspace)
        if call is None:
            raise Ended(grpc.StatusCode.NOT_FOUND, self._no_call(req.call_id))
        outs = await self.ledger.read_outputs(call, req.after_seq, req.max_outputs or 1000, req.timeout)
        if resp is None:
            resp = api_pb2.GetOutputsResponse()
        resp.outputs.extend(outs)
        resp.function_id = call.function.function_id
        resp.inputs_complete = call.num_inputs is not None
        resp.num_inputs = call.num_inputs or 0
        resp.num_done = call.num_done
        resp.is_generator = call.function.definition.is_generator
        resp.function_name = call.function.name
        return resp

    async def FunctionCallCancel(self, req, context, who):
        validate.call_ref(req)
        running = self.ledger.cancel_call(who.workspace, req.call_id)
        if req.terminate_containers:
            for c in running:
                self.fleet.terminate(c)
        await self.store.durable()
        return EMPTY

    # ------------------------------------------------------------------ dead letters

    async def AppFailures(self, req, context, who):
        validate.app_by_id_or_name(req)
        ref = req.app_id or req.name
        failures = self.sched.dead_letters.list(who.workspace, ref)
        if not failures and self.apps.app(ref, who.workspace) is None and not any(
                a.name == ref for a in self.apps.listing(who.workspace)) and not self.store.app_history(
                    who.workspace, ref):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no app {ref!r} (see `ember app list`)")
        return api_pb2.AppFailuresResponse(failures=failures)

    async def FunctionCallRetry(self, req, context, who):
        validate.call_retry(req)
        try:
            idxs, after_seq = self.sched.dead_letters.retry(who.workspace, req.call_id, list(req.idx))
        except LookupError:
            await context.abort(grpc.StatusCode.NOT_FOUND, self._no_call(req.call_id))
        except ValueError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        await self.store.durable()
        return api_pb2.FunctionCallRetryResponse(idx=idxs, after_seq=after_seq)

    def _no_call(self, call_id: str) -> str:
        """The one answer for a call that is not there, or is another workspace's."""
        return (f"there is no function call {call_id}: the id is wrong, or its outputs expired "
                f"(they are kept {self.ledger.retention / 3600:.0f} h after the call finishes)")


@authenticated(api_pb2_grpc.WorkerApiServicer, WORKER)
class WorkerService(BlobRpcs, api_pb2_grpc.WorkerApiServicer):
    """What workers call: one stream per worker, opened with a worker token."""

    def __init__(self, sched: Scheduler, blobs: BlobStore, frames_endpoint=api_pb2.TransportEndpointResponse):
        super().__init__(blobs, sched.identity, sched.blob_rights)
        self.fleet = sched.fleet
        self.builds = sched.builds
        self.frames_endpoint = frames_endpoint  # () -> where the frame transport listens (ClientService's)
        self.snapshots = sched.snapshots

    async def WorkerConnect(self, request_iterator, context, who):
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "register":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a worker must register first")
        validate.worker_register(first.register)
        try:
            self.fleet.admit(first.register, self.identity.tokens[who.token_id])
        except (Forbidden, ValueError) as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        stream = Duplex(request_iterator)
        # Right after registered, before any start: where its containers' streams go (worker/frames.py).
        stream.send(api_pb2.WorkerCommand(frames=self.frames_endpoint()))
        fleet, builds, snapshots = self.fleet, self.builds, self.snapshots
        worker = fleet.worker_connected(first.register, stream.send, who.token_id,
                                        end=functools.partial(stream.end, grpc.StatusCode.ABORTED))

        def handle(msg):
            self.identity.check(who)  # a revoked worker token ends its worker's stream
            fleet.worker_seen(worker)
            kind = msg.WhichOneof("msg")
            # A worker speaks only of its own containers and of the builds given to it.
            if kind == "container_exited":
                fleet.container_exited(msg.container_exited, worker)
            elif kind == "build_log":
                builds.on_log(msg.build_log, worker)
            elif kind == "layer_built":
                builds.on_layer(msg.layer_built, worker)
            elif kind == "build_done":
                builds.on_done(msg.build_done, worker)
            elif kind == "usage":
                fleet.container_usage(msg.usage, worker)
            elif kind == "exec_output":
                fleet.execs.output(msg.exec_output, worker)
            elif kind == "snapshot_done":
                snapshots.on_done(msg.snapshot_done, worker)

        try:
            async with contextlib.aclosing(stream.run(handle, first=api_pb2.WorkerCommand(registered=EMPTY))) as cmds:
                async for cmd in cmds:
                    yield cmd
        finally:
            builds.worker_lost(worker)
            fleet.worker_disconnected(worker)


@authenticated(api_pb2_grpc.ContainerApiServicer, CONTAINER)
class ContainerService(BlobRpcs, api_pb2_grpc.ContainerApiServicer):
    """What containers call: one stream per container, which only that container's credential opens."""

    def __init__(self, sched: Scheduler, blobs: BlobStore, secrets: Secrets,
                 frames_endpoint=api_pb2.TransportEndpointResponse):
        super().__init__(blobs, sched.identity, sched.blob_rights)
        self.fleet = sched.fleet
        self.dispatch = sched.dispatch
        self.secrets = secrets
        self.frames_endpoint = frames_endpoint  # () -> where the frame transport listens (ClientService's)

    async def TransportEndpoint(self, req, context, who):
        return self.frames_endpoint()

    async def ContainerConnect(self, request_iterator, context, who):
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "hello":
            raise Ended(grpc.StatusCode.INVALID_ARGUMENT, "a container must say hello first")
        validate.container_hello(first.hello)
        if first.hello.container_id != who.token_id:
            raise Ended(grpc.StatusCode.PERMISSION_DENIED,
                                f"this credential is container {who.token_id}'s, not {first.hello.container_id}'s")
        if self.fleet.is_connected(who.token_id):
            # Its earlier stream is still open: the control plane has not seen it end yet. It retries.
            raise Ended(grpc.StatusCode.UNAVAILABLE, f"container {who.token_id} is connected already")
        stream = Duplex(request_iterator)
        fleet, dispatch = self.fleet, self.dispatch
        c = fleet.container_connected(first.hello, stream.send, end=functools.partial(stream.end,
                                                                                     grpc.StatusCode.NOT_FOUND))
        if c is None and fleet.is_orphan(first.hello.container_id):
            # From before a restart; its worker has not registered again yet. It retries.
            raise Ended(grpc.StatusCode.UNAVAILABLE, "waiting for this container's worker to reconnect")
        if c is None:
            raise Ended(grpc.StatusCode.NOT_FOUND,
                                f"container {first.hello.container_id} is not known: it should exit")
        fn = c.function
        app = fn.app

        def handle(msg):
            kind = msg.WhichOneof("msg")
            if kind == "outputs":
                dispatch.container_outputs(c, msg.outputs, app.log.seq)
            elif kind == "logs":
                app.log.append(msg.logs.entries, c.container_id, fn.name, c.held)
            elif kind == "want_inputs":
                dispatch.container_wants(c, msg.want_inputs)
            elif kind == "heartbeat":
                fleet.heartbeat(c)
            elif kind == "init_failure":
                fleet.container_init_failed(c, msg.init_failure)

        try:
            secret_env = self.secrets.env_for(fn.definition.secret_ids, app.workspace)
        except SecretGone as e:
            fleet.container_cannot_start(c, str(e))
            raise Ended(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from None
        init = api_pb2.ContainerCommand(init=api_pb2.ContainerInit(
            function_id=fn.function_id, app_id=app.app_id, definition=fn.definition,
            app_function_ids=app.function_ids(), secret_env=secret_env))
        try:
            async with contextlib.aclosing(stream.run(handle, first=init)) as cmds:
                async for cmd in cmds:
                    yield cmd
        finally:
            fleet.container_disconnected(c, stream.send)


LOG_PAGE = 1000  # lines of the history per batch


def _log_entry(row) -> api_pb2.LogEntry:
    """A line kept in the store (Store.logs' row) as the RPC sends it."""
    _app_id, seq, created_at, _ws, _name, function_name, container_id, input_id, fd, data, call_id = row
    return api_pb2.LogEntry(seq=seq, timestamp=created_at, function_name=function_name, container_id=container_id,
                            input_id=input_id, fd=fd, data=data, call_id=call_id)


def _log_matches(e: api_pb2.LogEntry, req: api_pb2.AppLogsRequest) -> bool:
    """Whether a live line passes AppLogs' filters, as the store's history does."""
    return ((not req.function_name or e.function_name == req.function_name)
            and (not req.container_id or e.container_id == req.container_id)
            and (not req.call_id or e.call_id == req.call_id)
            and (not req.search or req.search in e.data) and e.timestamp >= req.since)


async def _unary(answer, context):
    """A unary RPC's answer, from the handler a stream (MapStream) shares with it: its Ended
    becomes the RPC's status."""
    try:
        return await answer
    except Ended as e:
        await context.abort(e.code, e.details)
