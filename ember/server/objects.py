"""Dicts and queues: named, durable objects in the store, used by clients and containers alike.

Each belongs to a workspace: every operation names the caller's workspace, and an object of
another is not found, as if it did not exist (its id alone opens nothing).

Every operation runs whole on the control plane's event loop, so concurrent users never see
half an operation: a queue item is taken by exactly one getter. Writes are committed before
the caller is answered (the API awaits the store). A getter waiting on an empty queue
partition is woken by the next put to it; one whose caller went away while it waited takes
nothing (its stream cancels it), and what it took as its caller went gives back (give_back).
"""

import asyncio
import collections

from .._ids import new_id
from ..proto import api_pb2

KINDS = {api_pb2.OBJECT_KIND_DICT: "dict", api_pb2.OBJECT_KIND_QUEUE: "queue", api_pb2.OBJECT_KIND_VOLUME: "volume"}
ID_PREFIX = {"dict": "di", "queue": "qu", "volume": "vo"}
MAX_PARTITION = 64  # characters in a partition key
DictOp = api_pb2.DictRequest
QueueOp = api_pb2.QueueRequest


class ObjectError(Exception):
    """A request about a missing object (not_found) or a bad one: dicts, queues, volumes, secrets."""

    def __init__(self, message: str, not_found: bool = True):
        super().__init__(message)
        self.not_found = not_found


class Objects:
    def __init__(self, store):
        self.store = store
        self.next_seq: dict[str, int] = {}  # per queue, loaded on first use
        # (workspace, kind) of the objects found so far: an object's never changes, and only this
        # process deletes them while it leads (a deposed leader writes no more), so every dict or
        # queue operation after the first is spared a query.
        self.owners: dict[str, tuple[str, str]] = {}
        self.waiters: dict[tuple[str, str], list[asyncio.Future]] = collections.defaultdict(list)

    # ------------------------------------------------------------------ naming

    def get(self, workspace: str, req: api_pb2.ObjectGetRequest) -> str:
        kind = _kind(req.kind)
        if req.ephemeral:
            object_id = new_id(ID_PREFIX[kind])
            self.store.create_object(object_id, workspace, kind, None)
            return object_id
        if not req.name:
            raise ObjectError(f"a {kind} needs a name", not_found=False)
        object_id = self.store.find_object(workspace, kind, req.name)
        if object_id is None:
            if not req.create_if_missing:
                names = [row[0] for row in self.store.list_objects(workspace, kind)]
                raise ObjectError(f"there is no {kind} named {req.name!r} (there are: {', '.join(names) or 'none'}); "
                                  f"pass create_if_missing=True to create it")
            object_id = new_id(ID_PREFIX[kind])
            self.store.create_object(object_id, workspace, kind, req.name)
        return object_id

    def listing(self, workspace: str, kind: str) -> list[api_pb2.ObjectInfo]:
        return [api_pb2.ObjectInfo(name=name, object_id=oid, created_at=created, size=size)
                for name, oid, created, size in self.store.list_objects(workspace, _kind(kind))]

    def delete(self, workspace: str, ref: api_pb2.ObjectRef):
        kind = _kind(ref.kind)
        object_id = ref.object_id or self.store.find_object(workspace, kind, ref.name)
        if object_id is None or self._owner(object_id) != (workspace, kind):
            raise ObjectError(f"there is no {kind} named {ref.name or ref.object_id!r}")
        self.owners.pop(object_id, None)
        self.store.delete_object(object_id)
        self.next_seq.pop(object_id, None)

    def owned(self, workspace: str, object_id: str, kind: str):
        """The object exists, is of this kind and belongs to the workspace; else not found."""
        if self._owner(object_id) != (workspace, kind):
            raise ObjectError(f"the {kind} {object_id} does not exist (it was deleted)")

    def _owner(self, object_id: str) -> tuple[str, str] | None:
        owner = self.owners.get(object_id)
        if owner is None:
            owner = self.store.object_owner(object_id)
            if owner is not None:
                self.owners[object_id] = owner = tuple(owner)
        return owner

    # ------------------------------------------------------------------ volumes

    def volume_manifest(self, workspace: str, volume_id: str) -> api_pb2.VolumeManifest:
        self.owned(workspace, volume_id, "volume")
        return volume_manifest(self.store, volume_id)

    def volume_commit(self, workspace: str, req: api_pb2.VolumeCommitRequest) -> api_pb2.VolumeManifest:
        self.owned(workspace, req.volume_id, "volume")
        for path in [f.path for f in req.files] + list(req.deleted):
            if path.startswith("/") or ".." in path.split("/") or not path:
                raise ObjectError(f"{path!r} is not a path inside a volume", not_found=False)
        version = self.store.volume_commit(req.volume_id, [(f.path, f.blob_id, f.size, f.mode, f.mtime)
                                                           for f in req.files], list(req.deleted))
        return api_pb2.VolumeManifest(volume_id=req.volume_id, version=version)

    # ------------------------------------------------------------------ dicts

    def dict_op(self, workspace: str, req: api_pb2.DictRequest) -> api_pb2.DictResponse:
        self.owned(workspace, req.dict_id, "dict")
        d = req.dict_id
        if req.op == DictOp.GET:
            value = self.store.dict_get(d, req.keys[0])
            return api_pb2.DictResponse(found=value is not None, values=[value] if value is not None else [])
        if req.op == DictOp.PUT:
            if len(req.keys) != len(req.values):
                raise ObjectError("a dict put needs as many values as keys", not_found=False)
            written = self.store.dict_put(d, list(zip(req.keys, req.values)), req.skip_if_exists)
            return api_pb2.DictResponse(found=written)
        if req.op == DictOp.POP:
            value = self.store.dict_get(d, req.keys[0])
            if value is not None:
                self.store.dict_delete(d, req.keys[0])
            return api_pb2.DictResponse(found=value is not None, values=[value] if value is not None else [])
        if req.op == DictOp.CONTAINS:
            return api_pb2.DictResponse(found=self.store.dict_get(d, req.keys[0]) is not None)
        if req.op == DictOp.LEN:
            return api_pb2.DictResponse(count=self.store.dict_len(d))
        if req.op == DictOp.ITEMS:
            items = self.store.dict_items(d)
            return api_pb2.DictResponse(keys=[k for k, _ in items], values=[v for _, v in items], count=len(items))
        if req.op == DictOp.CLEAR:
            self.store.dict_clear(d)
            return api_pb2.DictResponse()
        raise ObjectError(f"unknown dict operation {req.op}", not_found=False)

    # ------------------------------------------------------------------ queues

    @staticmethod
    def may_wait(req: api_pb2.QueueRequest) -> bool:
        """A get that waits for an item if it finds none now (then it needs a task of its own)."""
        return req.op == QueueOp.GET and req.timeout > 0

    async def queue_wait(self, workspace: str, req: api_pb2.QueueRequest) -> list[tuple[int, bytes]]:
        """A get that waits up to its timeout for an item: what it took, as (seq, value) rows (what
        give_back needs, should its caller be gone by the time they are committed)."""
        self.owned(workspace, req.queue_id, "queue")
        return await self._take(req.queue_id, req.partition, max(1, req.n), req.timeout)

    def give_back(self, q: str, part: str, rows: list[tuple[int, bytes]]):
        """Put items a getter took back where they were (the front of their partition, in their
        order), for the next getter: its caller went away before it could be answered."""
        if self.owners.get(q) is None:
            return  # deleted meanwhile
        for seq, value in rows:
            self.store.queue_put(q, part, seq, [value])
        self._wake(q, part)

    def queue_op_now(self, workspace: str, req: api_pb2.QueueRequest) -> api_pb2.QueueResponse:
        """Any queue operation that does not wait."""
        self.owned(workspace, req.queue_id, "queue")
        q, part = req.queue_id, req.partition
        if len(part) > MAX_PARTITION:
            raise ObjectError(f"partition keys are at most {MAX_PARTITION} characters", not_found=False)
        if req.op == QueueOp.PUT:
            if q not in self.next_seq:
                self.next_seq[q] = self.store.queue_last_seq(q) + 1
            self.store.queue_put(q, part, self.next_seq[q], list(req.values))
            self.next_seq[q] += len(req.values)
            self._wake(q, part)
            return api_pb2.QueueResponse()
        if req.op == QueueOp.GET:
            return api_pb2.QueueResponse(values=self.store.queue_take(q, part, max(1, req.n)))
        if req.op == QueueOp.LEN:
            return api_pb2.QueueResponse(count=self.store.queue_len(q, None if req.total else part))
        if req.op == QueueOp.CLEAR:
            self.store.queue_clear(q, None if req.all else part)
            return api_pb2.QueueResponse()
        if req.op == QueueOp.PEEK:
            rows = self.store.queue_peek(q, part, req.after_seq, max(1, req.n))
            return api_pb2.QueueResponse(values=[v for _, v in rows], last_seq=rows[-1][0] if rows else req.after_seq)
        raise ObjectError(f"unknown queue operation {req.op}", not_found=False)

    def _wake(self, q: str, part: str):
        for fut in self.waiters.pop((q, part), ()):
            if not fut.done():
                fut.set_result(None)

    async def _take(self, q: str, part: str, n: int, timeout: float) -> list[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            rows = self._take_rows(q, part, n)
            left = deadline - loop.time()
            if rows or left <= 0:
                return rows
            fut = loop.create_future()
            self.waiters[(q, part)].append(fut)
            try:
                await asyncio.wait_for(fut, left)
            except TimeoutError:
                return self._take_rows(q, part, n)
            finally:
                waiting = self.waiters.get((q, part))
                if waiting and fut in waiting:
                    waiting.remove(fut)

    def _take_rows(self, q: str, part: str, n: int) -> list[tuple[int, bytes]]:
        """Take up to n items, with their seq (in this turn: the two statements see the same rows)."""
        rows = self.store.queue_peek(q, part, 0, n)
        if rows:
            self.store.queue_take(q, part, len(rows))
        return rows


def volume_manifest(store, volume_id: str) -> api_pb2.VolumeManifest:
    """The volume's latest version: every file, with its content's blob id."""
    version, files = store.volume_manifest(volume_id)
    return api_pb2.VolumeManifest(volume_id=volume_id, version=version, files=[
        api_pb2.VolumeFile(path=p, blob_id=b, size=s, mode=m, mtime=t) for p, b, s, m, t in files])


def _kind(kind: int) -> str:
    """The store's name of a kind of object ("dict", "queue", "volume")."""
    name = KINDS.get(kind)
    if name is None:
        raise ObjectError(f"unknown kind of object {kind}", not_found=False)
    return name
