"""What Dict, Queue and Volume share: a name (or an ephemeral id), looked up on first use."""

import contextlib

from . import config, exception
from ._client.bridge import twin
from ._client.client import Client
from .proto import api_pb2


class NamedObject:
    _kind = ""  # "dict", "queue" or "volume"

    def __init__(self, name: str | None, create_if_missing: bool = False, object_id: str | None = None):
        self.name = name
        self._create = create_if_missing
        self._object_id = object_id

    @classmethod
    def _kind_proto(cls) -> int:
        return api_pb2.ObjectKind.Value(f"OBJECT_KIND_{cls._kind.upper()}")

    def __repr__(self):
        return f"<ember.{type(self).__name__} {self.name or self._object_id or '(ephemeral)'}>"

    @classmethod
    def from_name(cls, name: str, *, create_if_missing: bool = False, environment_name: str | None = None):
        """The named object; looked up (or created) when first used."""
        config.check_environment(environment_name, f"{cls.__name__}.from_name({name!r})")
        if not isinstance(name, str) or not name or len(name) > 64 or not name.replace("-", "").replace(
                "_", "").replace(".", "").isalnum():
            raise exception.InvalidError(f"{cls.__name__}.from_name({name!r}): names are 1 to 64 letters, digits, "
                                         "'-', '_' or '.'")
        return cls(name, create_if_missing)

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
        return type(self), (self.name, self._create, self._object_id)

    def _loop(self):
        return Client.from_env().bridge

    @property
    def object_id(self) -> str | None:
        return self._object_id

    async def _id(self) -> str:
        if self._object_id is None:
            resp = await Client.from_env().rpc("ObjectGet", api_pb2.ObjectGetRequest(
                kind=self._kind_proto(), name=self.name, create_if_missing=self._create))
            self._object_id = resp.object_id
        return self._object_id

    @twin
    async def hydrate(self):
        """Look the object up now (and create it, with create_if_missing); it is otherwise looked
        up when first used."""
        await self._id()
        return self

    async def _send(self, op: api_pb2.ObjectOp) -> api_pb2.ObjectOpResult:
        """One dict or queue operation, over the client's object stream."""
        result = await Client.from_env().objects.call(op)
        if result.error:
            what = f"{self._kind} {self.name or self._object_id}"
            if result.not_found:
                raise exception.NotFoundError(f"{what}: {result.error}")
            if result.disk_full:
                raise exception.ResourceExhaustedError(f"{what}: {result.error}")
            raise exception.InvalidError(f"{what}: {result.error}")
        return result
