"""`app.logs`, `function.logs` and `call.logs`: what an app's containers printed, read from Python
as `ember app logs` reads it (Modal's logs managers: fetch, tail, stream).

    for entry in ember.Function.from_name("my-app", "train").logs.tail(20):
        print(entry.message, end="")
"""

import asyncio
import datetime
import time

import grpc

from . import exception
from ._client.bridge import twin
from ._client.client import translate
from .proto import api_pb2
from .types import LogEntry

SOURCES = {"stdout": 1, "stderr": 2, "system": 3}  # LogEntry.fd of each of Modal's sources


def _unix(value: datetime.datetime, what: str) -> float:
    if not isinstance(value, datetime.datetime):
        raise exception.InvalidError(f"{what}={value!r}: pass a datetime")
    return value.timestamp()  # a naive one is local time, as Modal takes it


def _fd(source: str | None) -> int:
    if source is not None and source not in SOURCES:
        raise exception.InvalidError(f"source={source!r}: pass 'stdout', 'stderr' or 'system'")
    return SOURCES.get(source, 0)


class LogsManager:
    """The lines of an app, of one of its functions, or of one call. `target` is an async
    function giving the client and the AppLogsRequest (app and filters) that selects them."""

    def __init__(self, owner, target, object_id: str):
        self._owner = owner
        self._target = target
        self._object_id = object_id

    def __repr__(self):
        return f"<ember logs of {self._object_id}>"

    def _loop(self):
        return self._owner._loop()

    async def _entries(self, fd: int, timeout: float | None = None, **fields):
        client, req = await self._target()
        req.MergeFrom(api_pb2.AppLogsRequest(**fields))
        call = client.stub.AppLogs(req)
        stream = call.__aiter__()
        try:
            while True:
                try:
                    batch = await asyncio.wait_for(anext(stream), timeout)
                except (StopAsyncIteration, TimeoutError):
                    return
                for e in batch.entries:
                    if not fd or e.fd == fd:
                        yield LogEntry(message=e.data, source={v: k for k, v in SOURCES.items()}.get(e.fd, "stderr"),
                                       timestamp=datetime.datetime.fromtimestamp(e.timestamp, datetime.timezone.utc),
                                       object_id=self._object_id,
                                       context_ids=[i for i in (e.call_id, e.input_id, e.container_id) if i])
        except grpc.aio.AioRpcError as e:
            raise translate(e, f"the logs of {self._object_id}") from None
        finally:
            call.cancel()  # a stream that follows ends here

    @twin
    async def fetch(self, *, since: datetime.datetime, until: datetime.datetime | None = None,
                    source: str | None = None, search_text: str = ""):
        """The lines printed from `since` until `until` (now if None), in order."""
        fd = _fd(source)
        end = _unix(until, "until") if until is not None else time.time()
        async for entry in self._entries(fd, since=_unix(since, "since"), until=end, search=search_text):
            yield entry

    @twin
    async def tail(self, entries: int = 100, *, source: str | None = None):
        """The last `entries` lines printed, in order."""
        if not isinstance(entries, int) or isinstance(entries, bool) or entries < 1:
            raise exception.InvalidError(f"tail({entries!r}): pass how many lines, 1 or more")
        fd = _fd(source)
        async for entry in self._entries(fd, tail=entries, stop_at_end=True):
            yield entry

    @twin
    async def stream(self, timeout: float | None = None):
        """The lines printed from now on, as they come; it ends when none came for `timeout`
        seconds (None: when the app stops)."""
        async for entry in self._entries(0, timeout, since=time.time()):
            yield entry


__all__ = ["LogsManager"]
