"""Each app's log buffer: what its containers print, and what the control plane says about it
(a scheduled run), numbered in order, kept for readers who come late, and followed live (the
client of `ember run`, `ember app logs`)."""

import asyncio
import collections
import itertools

from ..proto import api_pb2

LOG_BUFFER = 20_000  # entries kept per app


class AppLog:
    __slots__ = ("closed", "entries", "followers", "seq")

    def __init__(self):
        self.entries: collections.deque[api_pb2.LogEntry] = collections.deque(maxlen=LOG_BUFFER)
        self.seq = 0  # of the last entry: the buffer's are consecutive, ending here
        self.followers: list[asyncio.Future] = []  # woken by the next entry
        self.closed = False  # its app stopped: followers end once they have read it all

    def append(self, entries, container_id: str, function_name: str):
        for e in entries:
            self.seq += 1
            e.seq = self.seq
            e.container_id = container_id
            e.function_name = function_name
            self.entries.append(e)
        self._wake()

    def close(self):
        self.closed = True
        self._wake()

    def _wake(self):
        followers, self.followers = self.followers, []
        for fut in followers:
            if not fut.done():
                fut.set_result(None)

    async def follow(self, after_seq: int, stop_at_end: bool):
        """Batches of the entries after after_seq as they come, until the app stops (with
        stop_at_end: until the end of what there is now)."""
        while True:
            first = self.seq - len(self.entries) + 1
            entries = list(itertools.islice(self.entries, max(0, after_seq + 1 - first), None))
            if entries:
                after_seq = entries[-1].seq
                yield api_pb2.LogBatch(entries=entries)
                continue
            if self.closed or stop_at_end:
                return
            fut = asyncio.get_running_loop().create_future()
            self.followers.append(fut)
            await fut
