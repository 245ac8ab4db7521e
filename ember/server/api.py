"""The control plane's gRPC services (one per kind of caller): requests become calls of the
scheduler's parts (scheduler.py)."""

import asyncio
import contextlib

import grpc

from .._client.stream import Outbox
from ..proto import api_pb2, api_pb2_grpc
from . import validate
from .blobs import BlobNotFound, BlobStore
from .objects import ObjectError, Objects
from .scheduler import Scheduler
from .secrets import Secrets
from .tokens import ProxyTokens

EMPTY = api_pb2.Empty()


class Duplex:
    """One side of a bidirectional stream: what is put with `send` goes to the peer, and
    `run(handle)` calls handle(message) for each message from the peer while yielding the
    outgoing ones. It ends when the peer stops sending."""

    def __init__(self, requests):
        self.requests = requests
        self.outbox = Outbox()
        self.send = self.outbox.put

    async def run(self, handle, first=None):
        async def read():
            async for msg in self.requests:
                handle(msg)

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: self.outbox.close())
        try:
            if first is not None:
                yield first
            async for msg in self.outbox.messages():
                yield msg
        finally:
            reader.cancel()
        # What ended the reading (a frame that did not parse, a failing handle) ends the stream
        # with an error, instead of a quiet end the peer would take for success.
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()


class BlobRpcs:
    """The blob RPCs, the same in each of the three services."""

    def __init__(self, blobs: BlobStore):
        self.blobs = blobs

    async def BlobPut(self, request_iterator, context):
        blob_id = await self.blobs.put(chunk.data async for chunk in request_iterator)
        return api_pb2.BlobRef(blob_id=blob_id)

    async def BlobGet(self, req, context):
        async with contextlib.aclosing(self.blobs.get(req.blob_id)) as chunks:
            try:
                async for data in chunks:
                    yield api_pb2.BlobChunk(data=data)
            except BlobNotFound:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no blob {req.blob_id}")

    async def BlobExists(self, req, context):
        return api_pb2.BlobExistsResponse(exists=await self.blobs.exists(req.blob_id))


class ClientService(BlobRpcs, api_pb2_grpc.ClientApiServicer):
    """What clients (the SDK, the CLI, and containers' own code) call."""

    def __init__(self, sched: Scheduler, blobs: BlobStore, secrets: Secrets, tokens: ProxyTokens,
                 heartbeat_interval: float):
        super().__init__(blobs)
        self.sched = sched
        self.store = sched.store
        self.apps = sched.apps
        self.ledger = sched.ledger
        self.fleet = sched.fleet
        self.routes = sched.routes
        self.builds = sched.builds
        self.heartbeat_interval = heartbeat_interval
        self.objects = Objects(sched.store)
        self.secrets = secrets
        self.tokens = tokens

    # ------------------------------------------------------------------ apps and functions

    async def AppCreate(self, req, context):
        validate.app_create(req)
        app_id = self.apps.create_app(req.name, deployed=req.deployed)
        await self.store.durable()
        return api_pb2.AppCreateResponse(app_id=app_id, heartbeat_interval=self.heartbeat_interval,
                                         unisolated_workers=self.fleet.unisolated_workers())

    async def AppHeartbeat(self, req, context):
        validate.app_id(req)
        if not self.apps.heartbeat(req.app_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"app {req.app_id} is not running")
        return EMPTY

    async def _call(self, context, fn, *args):
        """Run a request's operation; answer once what it wrote is committed. A missing
        object (LookupError, or an ObjectError saying so) is NOT_FOUND; a bad request,
        INVALID_ARGUMENT."""
        try:
            result = fn(*args)
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except ObjectError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND if e.not_found else grpc.StatusCode.INVALID_ARGUMENT, str(e))
        await self.store.durable()
        return result

    async def _app_by_ref(self, context, app_id: str, name: str):
        if not name:
            return self.apps.app(app_id)
        try:
            return self.apps.current_app(name)
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))

    async def AppStop(self, req, context):
        validate.app_by_id_or_name(req)
        app = await self._app_by_ref(context, req.app_id, req.name)
        if app is not None and req.drain:
            self.apps.drain(app.app_id)
        elif app is not None:
            self.sched.stop_app(app.app_id, "it was stopped by name" if req.name else "its client stopped it")
        await self.store.durable()
        return EMPTY

    async def FunctionBind(self, req, context):
        validate.function_bind(req)
        fid = await self._call(context, self.apps.bind_function, req.function_id, req.params)
        return api_pb2.FunctionCreateResponse(function_id=fid)

    async def AppDeploy(self, req, context):
        validate.app_id(req)
        return api_pb2.AppDeployResponse(version=await self._call(context, self.apps.deploy, req.app_id))

    async def AppList(self, req, context):
        apps = sorted(self.apps.listing(), key=lambda a: (not a.deployed, a.name))
        return api_pb2.AppListResponse(apps=[api_pb2.AppInfo(
            app_id=a.app_id, name=a.name, deployed=a.deployed, version=a.version, num_functions=len(a.functions),
            state=api_pb2.APP_STATE_SUPERSEDED if a.superseded else api_pb2.APP_STATE_RUNNING)
            for a in apps if a.version or not a.deployed])

    async def AppHistory(self, req, context):
        validate.app_name(req)
        rows = self.store.app_history(req.name)
        if not rows:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no app named {req.name!r} was ever deployed")
        return api_pb2.AppListResponse(apps=[api_pb2.AppInfo(
            app_id=app_id, name=req.name, deployed=True, version=version, created_at=deployed_at or 0,
            state=api_pb2.AppState.Value(f"APP_STATE_{state.upper()}"),
            stopped_at=stopped_at or 0) for app_id, version, deployed_at, state, stopped_at in rows])

    async def FunctionLookup(self, req, context):
        validate.function_lookup(req)
        fn = await self._call(context, self.apps.lookup_function, req.app_name, req.name)
        return api_pb2.FunctionLookupResponse(function_id=fn.function_id, is_generator=fn.definition.is_generator,
                                              is_class=fn.definition.is_class, methods=fn.definition.methods,
                                              **self._web_urls(fn))

    async def AppLogs(self, req, context):
        validate.app_by_id_or_name(req)
        app = await self._app_by_ref(context, req.app_id, req.app_name)
        if app is None:
            return
        async for batch in app.log.follow(req.after_seq, req.stop_at_end):
            yield batch

    async def FunctionCreate(self, req, context):
        validate.function_create(req)
        fid = await self._call(context, self.apps.create_function, req.app_id, req.definition)
        return api_pb2.FunctionCreateResponse(function_id=fid, **self._web_urls(self.apps.function(fid)))

    def _web_urls(self, fn) -> dict:
        """The web_url and method_web_urls fields of a function's responses."""
        urls = self.routes.urls(fn)
        return {"web_url": urls.pop("", ""), "method_web_urls": urls}

    async def ImageBuild(self, req, context):
        validate.image_build(req)
        async for event in self.builds.follow(req.image, req.force):
            if event.done:
                await self.store.durable()  # the layers it recorded
            yield event

    # ------------------------------------------------------------------ dicts, queues, volumes, secrets

    async def SecretCreate(self, req, context):
        return await self._call(context, self.secrets.create, req)

    async def SecretLookup(self, req, context):
        validate.secret_name(req)
        return await self._call(context, self.secrets.lookup, req)

    async def SecretList(self, req, context):
        return api_pb2.SecretListResponse(secrets=await self._call(context, self.secrets.listing))

    async def SecretDelete(self, req, context):
        validate.secret_name(req)
        await self._call(context, self.secrets.delete, req.name)
        return EMPTY

    async def ProxyTokenCreate(self, req, context):
        return await self._call(context, self.tokens.create)

    async def ProxyTokenList(self, req, context):
        return self.tokens.list()

    async def ProxyTokenDelete(self, req, context):
        validate.proxy_token(req)
        await self._call(context, self.tokens.delete, req.token_id)
        return EMPTY

    async def ObjectGet(self, req, context):
        return api_pb2.ObjectGetResponse(object_id=await self._call(context, self.objects.get, req))

    async def ObjectList(self, req, context):
        return api_pb2.ObjectListResponse(objects=await self._call(context, self.objects.listing, req.kind))

    async def ObjectDelete(self, req, context):
        validate.object_ref(req)
        await self._call(context, self.objects.delete, req)
        return EMPTY

    async def VolumeGet(self, req, context):
        validate.volume_ref(req)
        return await self._call(context, self.objects.volume_manifest, req.volume_id)

    async def VolumeCommit(self, req, context):
        validate.volume_commit(req)
        return await self._call(context, self.objects.volume_commit, req)

    async def ObjectStream(self, request_iterator, context):
        stream = Duplex(request_iterator)
        objects, store = self.objects, self.store

        def answer(tag, result=None, error=None):
            if isinstance(result, api_pb2.DictResponse):
                msg = api_pb2.ObjectOpResult(tag=tag, dict=result)
            elif isinstance(result, api_pb2.QueueResponse):
                msg = api_pb2.ObjectOpResult(tag=tag, queue=result)
            else:
                msg = api_pb2.ObjectOpResult(tag=tag, error=str(error), not_found=getattr(error, "not_found", False))
            store.on_durable(lambda: stream.send(msg))

        async def wait_for_item(op):
            try:
                answer(op.tag, await objects.queue_op(op.queue))
            except ObjectError as e:
                answer(op.tag, error=e)

        def handle(op):
            try:
                validate.object_op(op)
                if op.WhichOneof("op") == "dict":
                    answer(op.tag, objects.dict_op(op.dict))
                elif objects.may_wait(op.queue):
                    asyncio.get_running_loop().create_task(wait_for_item(op))
                else:
                    answer(op.tag, objects.queue_op_now(op.queue))
            except (ObjectError, validate.Invalid) as e:
                answer(op.tag, error=e)

        async with contextlib.aclosing(stream.run(handle)) as results:
            async for msg in results:
                yield msg

    # ------------------------------------------------------------------ calls

    async def CallStream(self, request_iterator, context):
        stream = Duplex(request_iterator)
        send = stream.send
        ledger = self.ledger

        def handle(req):
            try:
                validate.call_request(req)
                call = ledger.create_call(req.function_id, req.call_id,
                                          [api_pb2.Input(idx=0, args=req.args)], True, maybe_exists=req.resend)
            except (LookupError, validate.Invalid) as e:
                send(api_pb2.CallResponse(tag=req.tag, error=str(e)))
                return
            ledger.when_done(call, lambda call, tag=req.tag: send(
                api_pb2.CallResponse(tag=tag, output=ledger.last_output(call))))

        async with contextlib.aclosing(stream.run(handle)) as replies:
            async for resp in replies:
                yield resp

    async def FunctionCallCreate(self, req, context):
        validate.function_call_create(req)
        try:
            call = self.ledger.create_call(req.function_id, req.call_id, list(req.inputs), req.inputs_complete)
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"cannot call function {req.function_id}: {e}")
        await self.store.durable()
        return api_pb2.FunctionCallCreateResponse(call_id=call.call_id)

    async def FunctionCallPutInputs(self, req, context):
        validate.put_inputs(req)
        try:
            self.ledger.put_inputs(req.call_id, list(req.inputs), req.inputs_complete)
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"cannot add inputs to {req.call_id}: {e}")
        await self.store.durable()
        return EMPTY

    async def FunctionCallGetOutputs(self, req, context):
        validate.get_outputs(req)
        call = self.ledger.lookup_call(req.call_id)
        if call is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"there is no function call {req.call_id}: the id is wrong, or its outputs expired "
                f"(they are kept {self.ledger.retention / 3600:.0f} h after the call finishes)")
        outs = await self.ledger.read_outputs(call, req.after_seq, req.max_outputs or 1000, req.timeout)
        return api_pb2.GetOutputsResponse(
            outputs=outs, function_id=call.function.function_id,
            inputs_complete=call.num_inputs is not None, num_inputs=call.num_inputs or 0,
            num_done=call.num_done, is_generator=call.function.definition.is_generator,
            function_name=call.function.name)

    async def FunctionCallCancel(self, req, context):
        validate.call_ref(req)
        self.ledger.cancel_call(req.call_id)
        await self.store.durable()
        return EMPTY


class WorkerService(BlobRpcs, api_pb2_grpc.WorkerApiServicer):
    """What workers call: one stream per worker."""

    def __init__(self, sched: Scheduler, blobs: BlobStore):
        super().__init__(blobs)
        self.fleet = sched.fleet
        self.builds = sched.builds

    async def WorkerConnect(self, request_iterator, context):
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "register":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a worker must register first")
        validate.worker_register(first.register)
        stream = Duplex(request_iterator)
        fleet, builds = self.fleet, self.builds
        worker = fleet.worker_connected(first.register, stream.send)

        def handle(msg):
            fleet.worker_seen(worker)
            kind = msg.WhichOneof("msg")
            if kind == "container_exited":
                fleet.container_exited(msg.container_exited, worker)
            elif kind == "build_log":
                builds.on_log(msg.build_log, worker)
            elif kind == "layer_built":
                builds.on_layer(msg.layer_built)
            elif kind == "build_done":
                builds.on_done(msg.build_done, worker)

        try:
            async with contextlib.aclosing(stream.run(handle, first=api_pb2.WorkerCommand(registered=EMPTY))) as cmds:
                async for cmd in cmds:
                    yield cmd
        finally:
            builds.worker_lost(worker)
            fleet.worker_disconnected(worker)


class ContainerService(BlobRpcs, api_pb2_grpc.ContainerApiServicer):
    """What containers call: one stream per container."""

    def __init__(self, sched: Scheduler, blobs: BlobStore, secrets: Secrets):
        super().__init__(blobs)
        self.fleet = sched.fleet
        self.dispatch = sched.dispatch
        self.secrets = secrets

    async def ContainerConnect(self, request_iterator, context):
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a container must say hello first")
        validate.container_hello(first.hello)
        stream = Duplex(request_iterator)
        fleet, dispatch = self.fleet, self.dispatch
        c = fleet.container_connected(first.hello, stream.send)
        if c is None and fleet.is_orphan(first.hello.container_id):
            # From before a restart; its worker has not registered again yet. It retries.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "waiting for this container's worker to reconnect")
        if c is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"container {first.hello.container_id} is not known: it should exit")
        fn = c.function
        app = fn.app

        def handle(msg):
            kind = msg.WhichOneof("msg")
            if kind == "outputs":
                dispatch.container_outputs(c, msg.outputs, app.log.seq)
            elif kind == "logs":
                app.log.append(msg.logs.entries, c.container_id, fn.name)
            elif kind == "want_inputs":
                dispatch.container_wants(c, msg.want_inputs)
            elif kind == "heartbeat":
                fleet.heartbeat(c)
            elif kind == "init_failure":
                fleet.container_init_failed(c, msg.init_failure)

        init = api_pb2.ContainerCommand(init=api_pb2.ContainerInit(
            function_id=fn.function_id, app_id=app.app_id, definition=fn.definition,
            app_function_ids=app.function_ids(), secret_env=self.secrets.env_for(fn.definition.secret_ids)))
        try:
            async with contextlib.aclosing(stream.run(handle, first=init)) as cmds:
                async for cmd in cmds:
                    yield cmd
        finally:
            fleet.container_disconnected(c, stream.send)
