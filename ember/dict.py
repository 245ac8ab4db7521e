"""ember.Dict: a durable key-value store shared by the caller and the containers.

    d = ember.Dict.from_name("cache", create_if_missing=True)
    d["model"] = {"version": 3}
    d.get("model")          # {"version": 3}

Keys and values are any objects cloudpickle can serialize; keys are compared by their
serialized bytes (so use plain keys: strings, numbers, tuples of them).
"""

from . import exception, types
from ._client.serialization import deserialize, dumps
from ._object import NamedObject, operation
from .proto import api_pb2

Op = api_pb2.DictRequest
_MISSING = object()  # what get() returns for a missing key, to __getitem__


def _dumps(obj, what: str) -> bytes:
    """obj serialized (keys are compared by these bytes), with an error that names it."""
    try:
        return dumps(obj)
    except Exception as e:
        raise exception.SerializationError(f"{what} {obj!r:.80} cannot be pickled: {e}") from e


class Dict(NamedObject):
    _kind = "dict"
    _info = types.DictInfo

    async def _probe(self):
        await self.len.aio()

    def _request(self, op, keys=(), values=(), skip_if_exists: bool = False) -> api_pb2.ObjectOp:
        msg = api_pb2.ObjectOp()  # filled in place: half the cost of building a DictRequest to copy in
        req = msg.dict
        req.SetInParent()
        req.dict_id, req.op, req.skip_if_exists = self._object_id, op, skip_if_exists
        req.keys.extend(keys)
        req.values.extend(values)
        return msg

    @operation
    def get(self, key, default=None):
        resp = (yield self._request(Op.GET, [_dumps(key, "key")])).dict
        return deserialize(resp.values[0], "a Dict value") if resp.found else default

    @operation
    def put(self, key, value, *, skip_if_exists: bool = False) -> bool:
        """Set key to value; with skip_if_exists, only if the key is absent. True if written."""
        return (yield self._request(Op.PUT, [_dumps(key, "key")], [_dumps(value, "value")],
                                    skip_if_exists=skip_if_exists)).dict.found

    @operation
    def update(self, other=None, /, **kwargs):
        items = dict(other or {}, **kwargs)
        if items:
            yield self._request(Op.PUT, [_dumps(k, "key") for k in items], [_dumps(v, "value") for v in items.values()])

    @operation
    def pop(self, key):
        resp = (yield self._request(Op.POP, [_dumps(key, "key")])).dict
        if not resp.found:
            raise KeyError(key)
        return deserialize(resp.values[0], "a Dict value")

    @operation
    def contains(self, key) -> bool:
        return (yield self._request(Op.CONTAINS, [_dumps(key, "key")])).dict.found

    @operation
    def len(self) -> int:
        return (yield self._request(Op.LEN)).dict.count

    def _items(self):
        resp = (yield self._request(Op.ITEMS)).dict
        return [(deserialize(k, "a Dict key"), deserialize(v, "a Dict value")) for k, v in zip(resp.keys, resp.values)]

    @operation
    def items(self) -> list:
        return (yield from self._items())

    @operation
    def keys(self) -> list:
        return [k for k, _ in (yield from self._items())]

    @operation
    def values(self) -> list:
        return [v for _, v in (yield from self._items())]

    @operation
    def clear(self):
        yield self._request(Op.CLEAR)

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
