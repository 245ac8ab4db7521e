"""ember.Dict: a durable key-value store shared by the caller and the containers.

    d = ember.Dict.from_name("cache", create_if_missing=True)
    d["model"] = {"version": 3}
    d.get("model")          # {"version": 3}

Keys and values are any objects cloudpickle can serialize; keys are compared by their
serialized bytes (so use plain keys: strings, numbers, tuples of them).
"""

import cloudpickle

from . import exception, types
from ._client.bridge import twin
from ._client.serialization import deserialize
from ._object import NamedObject
from .proto import api_pb2

Op = api_pb2.DictRequest
_MISSING = object()  # what get() returns for a missing key, to __getitem__


def _dumps(obj, what: str) -> bytes:
    try:
        return cloudpickle.dumps(obj)
    except Exception as e:
        raise exception.SerializationError(f"{what} {obj!r:.80} cannot be pickled: {e}") from e


class Dict(NamedObject):
    _kind = "dict"
    _info = types.DictInfo

    async def _probe(self):
        await self._op(Op.LEN)

    async def _op(self, op, keys=(), values=(), **kw) -> api_pb2.DictResponse:
        request = api_pb2.DictRequest(dict_id=await self._id(), op=op, keys=keys, values=values, **kw)
        return (await self._send(api_pb2.ObjectOp(dict=request))).dict

    @twin
    async def get(self, key, default=None):
        resp = await self._op(Op.GET, [_dumps(key, "key")])
        return deserialize(resp.values[0], "a Dict value") if resp.found else default

    @twin
    async def put(self, key, value, *, skip_if_exists: bool = False) -> bool:
        """Set key to value; with skip_if_exists, only if the key is absent. True if written."""
        return (await self._op(Op.PUT, [_dumps(key, "key")], [_dumps(value, "value")],
                               skip_if_exists=skip_if_exists)).found

    @twin
    async def update(self, other=None, /, **kwargs):
        items = dict(other or {}, **kwargs)
        if items:
            await self._op(Op.PUT, [_dumps(k, "key") for k in items], [_dumps(v, "value") for v in items.values()])

    @twin
    async def pop(self, key):
        resp = await self._op(Op.POP, [_dumps(key, "key")])
        if not resp.found:
            raise KeyError(key)
        return deserialize(resp.values[0], "a Dict value")

    @twin
    async def contains(self, key) -> bool:
        return (await self._op(Op.CONTAINS, [_dumps(key, "key")])).found

    @twin
    async def len(self) -> int:
        return (await self._op(Op.LEN)).count

    async def _items(self) -> list:
        resp = await self._op(Op.ITEMS)
        return [(deserialize(k, "a Dict key"), deserialize(v, "a Dict value")) for k, v in zip(resp.keys, resp.values)]

    @twin
    async def items(self) -> list:
        return await self._items()

    @twin
    async def keys(self) -> list:
        return [k for k, _ in await self._items()]

    @twin
    async def values(self) -> list:
        return [v for _, v in await self._items()]

    @twin
    async def clear(self):
        await self._op(Op.CLEAR)

    def __getitem__(self, key):
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        self.put(key, value)

    def __delitem__(self, key):
        self.pop(key)

    def __contains__(self, key) -> bool:
        return self.contains(key)

    def __len__(self) -> int:
        return self.len()

    def __iter__(self):
        return iter(self.keys())
