"""What Dict, Queue and Volume share: a name (or an ephemeral id), looked up on first use, and
`Cls.objects`, the workspace's named objects of the kind (Modal's object managers)."""

import asyncio
import builtins
import contextlib
import functools
import re

from . import config, exception, types
from ._client.bridge import trim, twin
from ._client.client import Client
from .proto import api_pb2


ID_PREFIX = {"dict": "di", "queue": "qu", "volume": "vo"}  # as the control plane makes them


def check_name(cls_name: str, name) -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or not name.replace("-", "").replace(
            "_", "").replace(".", "").isalnum():
        raise exception.InvalidError(f"{cls_name}.from_name({name!r}): names are 1 to 64 letters, digits, "
                                     "'-', '_' or '.'")
    return name


async def _listing(kind: int) -> list[api_pb2.ObjectInfo]:
    resp = await Client.from_env().rpc("ObjectList", api_pb2.ObjectListRequest(kind=kind))
    return list(resp.objects)


class ObjectManager:
    """`Dict.objects`, `Queue.objects`, `Volume.objects`: the workspace's named objects of the
    kind, as Modal's managers have them."""

    def __set_name__(self, owner, name):
        self._cls = owner

    def __get__(self, obj, owner):
        if owner is not getattr(self, "_cls", owner):  # a subclass: a manager of its own kind
            bound = ObjectManager()
            bound._cls = owner
            return bound
        return self

    def _loop(self):
        return Client.from_env().bridge

    def __repr__(self):
        return f"<ember.{self._cls.__name__}.objects>"

    @twin
    async def create(self, name: str, *, allow_existing: bool = False, environment_name: str | None = None,
                     client=None, **options) -> None:
        """Create a named object; an error if it exists, unless allow_existing. (Returns None: use
        from_name to use it.)"""
        cls = self._cls
        what = f"{cls.__name__}.objects.create({name!r})"
        config.check_environment(environment_name, what)
        _check_client(client, what)
        cls._check_create_options(options, what)
        check_name(cls.__name__, name)
        # Two RPCs, so two creates racing for one name may both succeed (the object is one).
        if not allow_existing and any(o.name == name for o in await _listing(cls._kind_proto())):
            raise exception.AlreadyExistsError(f"{what}: a {cls._kind} named {name!r} exists already "
                                               "(pass allow_existing=True to accept it)")
        await Client.from_env().rpc("ObjectGet", api_pb2.ObjectGetRequest(
            kind=cls._kind_proto(), name=name, create_if_missing=True), what=what)

    @twin
    async def list(self, *, max_objects: int | None = None, created_before=None, environment_name: str = "",
                   client=None) -> builtins.list:
        """The named objects, newest first (at most max_objects; only those created before
        created_before, a datetime or an ISO date)."""
        cls = self._cls
        what = f"{cls.__name__}.objects.list()"
        config.check_environment(environment_name, what)
        _check_client(client, what)
        if max_objects is not None and (not isinstance(max_objects, int) or max_objects < 0):
            raise exception.InvalidError(f"{what}: max_objects={max_objects!r}: pass a count, 0 or more")
        before = types.created_before(created_before, what)
        found = sorted(await _listing(cls._kind_proto()), key=lambda o: -o.created_at)
        objs = [cls(o.name, object_id=o.object_id) for o in found if before is None or o.created_at < before]
        return objs[:max_objects] if max_objects is not None else objs

    @twin
    async def delete(self, name: str, *, allow_missing: bool = False, environment_name: str | None = None,
                     client=None):
        """Delete the named object and everything in it; an error if there is none, unless
        allow_missing."""
        cls = self._cls
        what = f"{cls.__name__}.objects.delete({name!r})"
        config.check_environment(environment_name, what)
        _check_client(client, what)
        try:
            await Client.from_env().rpc("ObjectDelete", api_pb2.ObjectRef(kind=cls._kind_proto(), name=name),
                                        what=what)
        except exception.NotFoundError:
            if not allow_missing:
                raise


def _check_client(client, what: str):
    if client is not None:
        raise exception.InvalidError(f"{what}: client= is not supported: Ember's client comes from "
                                     "EMBER_SERVER_URL and the token (environment or `ember profile`)")


class NamedObject:
    _kind = ""  # "dict", "queue" or "volume"
    _info: type = types.DictInfo  # what info() returns
    objects = ObjectManager()

    def __init__(self, name: str | None, create_if_missing: bool = False, object_id: str | None = None):
        self._name = name
        self._create = create_if_missing
        self._object_id = object_id
        self._lookup: asyncio.Future | None = None  # the lookup by name under way (see _id)

    @classmethod
    def _check_create_options(cls, options: dict, what: str):
        """Options of objects.create() that only some kinds have (Volume's version=)."""
        if options:
            raise exception.InvalidError(f"{what}: unexpected argument {', '.join(options)}")

    @property
    def name(self) -> str | None:
        """The object's name; None for an ephemeral one (or one made with from_id)."""
        return self._name

    @classmethod
    def _kind_proto(cls) -> int:
        return api_pb2.ObjectKind.Value(f"OBJECT_KIND_{cls._kind.upper()}")

    def __repr__(self):
        return f"<ember.{type(self).__name__} {self._name or self._object_id or '(ephemeral)'}>"

    @classmethod
    def from_name(cls, name: str, *, create_if_missing: bool = False, environment_name: str | None = None):
        """The named object; looked up (or created) when first used."""
        config.check_environment(environment_name, f"{cls.__name__}.from_name({name!r})")
        return cls(check_name(cls.__name__, name), create_if_missing)

    @classmethod
    def from_id(cls, object_id: str):
        """The object with this id (`obj.object_id`), of this workspace; checked when first used."""
        prefix = ID_PREFIX[cls._kind]
        if not isinstance(object_id, str) or not re.fullmatch(rf"{prefix}-[0-9a-f]{{1,64}}", object_id):
            raise exception.InvalidError(f"{cls.__name__}.from_id({object_id!r}): a {cls._kind}'s id looks like "
                                         f"'{prefix}-' and hex digits (see its object_id)")
        return cls(None, object_id=object_id)

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls):
        """An anonymous object that exists for the duration of the block."""
        client = Client.from_env()
        resp = client.run(client.rpc("ObjectGet", api_pb2.ObjectGetRequest(kind=cls._kind_proto(), ephemeral=True)))
        obj = cls(None, object_id=resp.object_id)
        try:
            yield obj
        finally:
            try:
                ref = api_pb2.ObjectRef(kind=cls._kind_proto(), object_id=resp.object_id)
                client.run(client.rpc("ObjectDelete", ref))
            except exception.Error:
                pass

    @classmethod
    def delete(cls, name: str):
        client = Client.from_env()
        client.run(client.rpc("ObjectDelete", api_pb2.ObjectRef(kind=cls._kind_proto(), name=name),
                              what=f"deleting {name}"))

    @classmethod
    def _from_id(cls, object_id: str, name: str | None):
        return cls(name, object_id=object_id)

    def __reduce__(self):
        # Passed to a function or stored in another object: the same object over there (looked
        # up there by its name if it has not been here yet).
        return type(self), (self._name, self._create, self._object_id)

    def _loop(self):
        return Client.from_env().bridge

    @property
    def object_id(self) -> str | None:
        return self._object_id

    async def _id(self) -> str:
        if self._object_id is None:
            # One lookup for every operation started before it answers, which then go on in the
            # order they started (a future wakes its waiters in order): each with a lookup of its
            # own would go on in the order their answers came, and puts could overtake one another.
            lookup = self._lookup
            if lookup is None or lookup.get_loop() is not asyncio.get_running_loop():
                request = api_pb2.ObjectGetRequest(kind=self._kind_proto(), name=self.name,
                                                   create_if_missing=self._create)
                lookup = self._lookup = asyncio.ensure_future(Client.from_env().rpc("ObjectGet", request))
            try:
                resp = await asyncio.shield(lookup)  # a caller cancelled: the others still wait for it
            except BaseException:
                if lookup.done() and self._lookup is lookup:
                    self._lookup = None  # failed: the next operation looks it up again
                raise
            self._object_id = resp.object_id
        return self._object_id

    @twin
    async def info(self):
        """Its name and when it was created (Modal's DictInfo, QueueInfo or VolumeInfo)."""
        object_id = await self._id()
        for o in await _listing(self._kind_proto()):
            if o.object_id == object_id:
                return self._info(name=o.name, created_at=types.timestamp(o.created_at))
        # Not listed: ephemeral (only named objects are listed), or gone (then this raises NotFoundError).
        await self._probe()
        return self._info(name=self._name, created_at=None)

    async def _probe(self):
        """One cheap operation on the object: NotFoundError if it is not (or no longer) there."""
        raise NotImplementedError

    @twin
    async def hydrate(self):
        """Look the object up now (and create it, with create_if_missing); it is otherwise looked
        up when first used."""
        await self._id()
        return self

    async def _send(self, op: api_pb2.ObjectOp) -> api_pb2.ObjectOpResult:
        """One dict or queue operation, over the client's object stream (on its loop)."""
        return self._checked(await Client.from_env().objects.call(op))

    def _checked(self, result: api_pb2.ObjectOpResult) -> api_pb2.ObjectOpResult:
        """The result of a dict or queue operation, or the error it says."""
        if result.error:
            what = f"{self._kind} {self._name or self._object_id}"
            if result.not_found:
                raise exception.NotFoundError(f"{what}: {result.error}")
            if result.disk_full:
                raise exception.ResourceExhaustedError(f"{what}: {result.error}")
            raise exception.InvalidError(f"{what}: {result.error}")
        return result


class operation:
    """A Dict's or Queue's operation on the object stream, written once as a generator: it
    yields each ObjectOp to send (the object's id is known then: self._object_id) and is sent
    back its result; what it returns is the operation's. `obj.op(...)` runs it in the caller's
    thread, on that thread's own connection where it has one (client.py's DirectObjects: no hop
    to the client's loop and back); `await obj.op.aio(...)` runs it on the client's loop, over
    its object stream."""

    def __init__(self, plan):
        self.plan = plan
        functools.update_wrapper(self, plan)

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return _Operation(self.plan, obj)


class _Operation:
    """`obj.op`: call it to block, or await `obj.op.aio(...)`."""

    __slots__ = ("obj", "plan")

    def __init__(self, plan, obj: NamedObject):
        self.plan = plan
        self.obj = obj

    def __repr__(self):
        return f"<{self.plan.__qualname__} of {self.obj!r}>"

    def __call__(self, *args, **kwargs):
        obj = self.obj
        try:
            client = Client.from_env()
            if obj._object_id is None:
                client.run(obj._id())  # once: a lookup by name is an RPC on the loop
            plan = self.plan(obj, *args, **kwargs)
            try:
                op = next(plan)
                while True:
                    op = plan.send(obj._checked(client.direct.call(op)))
            except StopIteration as end:
                return end.value
        except BaseException as e:
            trim(e)
            raise

    async def aio(self, *args, **kwargs):
        try:
            return await self.obj._loop().run_async(self._on_loop(args, kwargs))
        except BaseException as e:
            trim(e)
            raise

    async def _on_loop(self, args, kwargs):
        obj = self.obj
        await obj._id()
        plan = self.plan(obj, *args, **kwargs)
        try:
            op = next(plan)
            while True:
                op = plan.send(await obj._send(op))
        except StopIteration as end:
            return end.value
