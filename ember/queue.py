"""ember.Queue: a durable FIFO queue shared by the caller and the containers, with partitions.

    q = ember.Queue.from_name("jobs", create_if_missing=True)
    q.put_many([1, 2, 3])
    q.get()                  # 1; waits for an item when the queue is empty
    q.get(block=False)       # 2, or None when empty

Each partition (a string key) is its own FIFO queue; the default partition is unnamed.
"""

import asyncio
import queue as std_queue
import time

from . import exception, types
from ._client.bridge import twin
from ._client.serialization import deserialize
from ._object import NamedObject, operation
from .dict import _dumps
from .proto import api_pb2

Op = api_pb2.QueueRequest
WAIT_CHUNK = 50.0  # seconds per server-side wait of a blocking get
PEEK_BATCH = 1000


def _partition(partition) -> str:
    if partition is None:
        return ""
    if not isinstance(partition, str) or not partition or len(partition) > 64:
        raise exception.InvalidError(f"partition={partition!r}: pass a non-empty string of at most 64 characters")
    return partition


class Queue(NamedObject):
    _kind = "queue"
    _info = types.QueueInfo

    @staticmethod
    def validate_partition_key(partition: str | None) -> bytes:
        """The partition key as the control plane stores it; an error if it is not 1 to 64 characters."""
        return _partition(partition).encode()

    async def _probe(self):
        await self.len.aio()

    def _request(self, op, partition: str = "", values=(), **kw) -> api_pb2.ObjectOp:
        msg = api_pb2.ObjectOp()  # filled in place (as Dict's): cheaper than a QueueRequest copied in
        req = msg.queue
        req.SetInParent()
        req.queue_id, req.op, req.partition = self._object_id, op, partition
        req.values.extend(values)
        for name, value in kw.items():
            setattr(req, name, value)
        return msg

    @operation
    def put(self, v, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
            partition_ttl: int = 24 * 3600):
        """Add v at the end. (Queues have no size limit here: `block` and `timeout` never wait.)"""
        yield self._request(Op.PUT, partition=_partition(partition), values=[_dumps(v, "value")])

    @operation
    def put_many(self, vs, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
                 partition_ttl: int = 24 * 3600):
        values = [_dumps(v, "value") for v in vs]
        if values:
            yield self._request(Op.PUT, partition=_partition(partition), values=values)

    @operation
    def get(self, block: bool = True, timeout: float | None = None, *, partition: str | None = None):
        """Remove and return the first item. Blocking, wait for one (up to timeout, then
        raise queue.Empty); not blocking, return None at once if there is none."""
        items = yield from self._get(1, block, timeout, partition)
        if items:
            return items[0]
        if block:
            raise std_queue.Empty(f"no item arrived in {self.name or 'the queue'} within {timeout}s")
        return None

    @operation
    def get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                 partition: str | None = None) -> list:
        """Remove and return up to n_values items: as many as there are once there is one
        (waiting up to timeout for the first when blocking); [] if none came."""
        if not isinstance(n_values, int) or n_values < 1:
            raise exception.InvalidError(f"n_values={n_values!r}: pass a positive integer")
        return (yield from self._get(n_values, block, timeout, partition))

    def _get(self, n: int, block: bool, timeout: float | None, partition):
        part = _partition(partition)
        if timeout is not None and timeout < 0:
            raise exception.InvalidError(f"timeout={timeout!r}: pass seconds, 0 or more, or None")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # The control plane waits for an item (up to WAIT_CHUNK at a time) and answers at once when one comes.
            wait = 0.0 if not block else WAIT_CHUNK if deadline is None else max(0.0, deadline - time.monotonic())
            resp = (yield self._request(Op.GET, partition=part, n=n, timeout=min(wait, WAIT_CHUNK))).queue
            if resp.values or not block or (deadline is not None and time.monotonic() >= deadline):
                return [deserialize(v, "a Queue item") for v in resp.values]

    @operation
    def len(self, *, partition: str | None = None, total: bool = False) -> int:
        return (yield self._request(Op.LEN, partition=_partition(partition), total=total)).queue.count

    @operation
    def clear(self, *, partition: str | None = None, all: bool = False):
        yield self._request(Op.CLEAR, partition=_partition(partition), all=all)

    @twin
    async def iterate(self, *, partition: str | None = None, item_poll_timeout: float = 0.0):
        """The items, oldest first, without removing them; with item_poll_timeout, keep
        waiting that long for more after the last one."""
        part = _partition(partition)
        await self._id()
        after = 0
        idle_since = time.monotonic()
        while True:
            resp = (await self._send(self._request(Op.PEEK, partition=part, n=PEEK_BATCH, after_seq=after))).queue
            for v in resp.values:
                yield deserialize(v, "a Queue item")
            if resp.values:
                after = resp.last_seq
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= item_poll_timeout:
                return
            else:
                await asyncio.sleep(min(0.05, item_poll_timeout))
