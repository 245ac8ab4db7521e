"""ember.Dict: a durable key-value store shared by the caller and the containers.

    d = ember.Dict.from_name("cache", create_if_missing=True)
    d["model"] = {"version": 3}
    d.get("model")          # {"version": 3}

Keys and values are any objects cloudpickle can serialize; keys are compared by their
serialized bytes (so use plain keys: strings, numbers, tuples of them).
"""

from . import exception
from ._object import NamedObject, with_aio
from ._client.serialization import deserialize
from .proto import api_pb2

import cloudpickle

Op = api_pb2.DictRequest


def _dumps(obj, what: str) -> bytes:
    try:
        return cloudpickle.dumps(obj)
    except Exception as e:
        raise exception.SerializationError(f"{what} {obj!r:.80} cannot be pickled: {e}") from e


class Dict(NamedObject):
    _kind = "dict"

    def _op(self, op, keys=(), values=(), **kw) -> api_pb2.DictResponse:
        request = api_pb2.DictRequest(dict_id=self._id(), op=op, keys=keys, values=values, **kw)
        return self._send(api_pb2.ObjectOp(dict=request)).dict

    @with_aio
    def get(self, key, default=None):
        resp = self._op(Op.GET, [_dumps(key, "key")])
        return deserialize(resp.values[0], "a Dict value") if resp.found else default

    @with_aio
    def put(self, key, value, *, skip_if_exists: bool = False) -> bool:
        """Set key to value; with skip_if_exists, only if the key is absent. True if written."""
        return self._op(Op.PUT, [_dumps(key, "key")], [_dumps(value, "value")], skip_if_exists=skip_if_exists).found

    @with_aio
    def update(self, other=None, /, **kwargs):
        items = dict(other or {}, **kwargs)
        if items:
            self._op(Op.PUT, [_dumps(k, "key") for k in items], [_dumps(v, "value") for v in items.values()])

    @with_aio
    def pop(self, key):
        resp = self._op(Op.POP, [_dumps(key, "key")])
        if not resp.found:
            raise KeyError(key)
        return deserialize(resp.values[0], "a Dict value")

    @with_aio
    def contains(self, key) -> bool:
        return self._op(Op.CONTAINS, [_dumps(key, "key")]).found

    @with_aio
    def len(self) -> int:
        return self._op(Op.LEN).count

    @with_aio
    def items(self) -> list:
        resp = self._op(Op.ITEMS)
        return [(deserialize(k, "a Dict key"), deserialize(v, "a Dict value")) for k, v in zip(resp.keys, resp.values)]

    @with_aio
    def keys(self) -> list:
        return [k for k, _ in self.items()]

    @with_aio
    def values(self) -> list:
        return [v for _, v in self.items()]

    @with_aio
    def clear(self):
        self._op(Op.CLEAR)

    def __getitem__(self, key):
        resp = self._op(Op.GET, [_dumps(key, "key")])
        if not resp.found:
            raise KeyError(key)
        return deserialize(resp.values[0], "a Dict value")

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
