"""Each app's log: what its containers print (each line with the input, and its call, that printed
it), and what the control plane says about it (a container started or exited and why, a retry, a
scheduled run, inputs waiting), numbered in order and timestamped. Every batch is kept in the
store (one statement in the group commit, so a line costs no commit of its own) for
--log-retention hours: the history, across restarts. A buffer in memory serves the live path:
followers (the client of `ember run`, `ember app logs -f`) are woken by each batch."""

import asyncio
import collections
import itertools
import time

from ..proto import api_pb2

LOG_BUFFER = 20_000  # entries kept in memory per app
STDOUT, STDERR, EVENT = 1, 2, 3  # LogEntry.fd


class AppLog:
    __slots__ = ("app_id", "app_name", "closed", "entries", "followers", "seq", "store", "workspace")

    def __init__(self, store, app_id: str, workspace: str, app_name: str, seq: int = 0):
        self.store = store
        self.app_id, self.workspace = app_id, workspace
        self.app_name = app_name  # a deployed app's name, '' for an ephemeral one
        self.entries: collections.deque[api_pb2.LogEntry] = collections.deque(maxlen=LOG_BUFFER)
        self.seq = seq  # of the last entry (the store's, after a restart): the buffer's end here
        self.followers: list[asyncio.Future] = []  # woken by the next entry
        self.closed = False  # its app stopped: followers end once they have read it all

    def append(self, entries, container_id: str, function_name: str, held=None):
        """Lines of a container (held: the inputs it holds, by id) or of the control plane. A line's
        input is one its container holds, and its call that input's: a container cannot put its
        lines among another call's."""
        now = time.time()
        rows = []
        seq, app_id, workspace, app_name = self.seq, self.app_id, self.workspace, self.app_name
        for e in _lines(entries):
            input_id, call_id, fd = e.input_id, e.call_id, e.fd
            if held is not None:  # a container's: what it says of its lines is checked
                if fd != 1 and fd != STDERR:
                    fd = e.fd = STDERR
                inp = held.get(input_id) if input_id else None
                if inp is None and input_id:
                    input_id = e.input_id = ""
                call_id = inp.call.call_id if inp is not None and inp.call is not None else ""  # web: none
                e.call_id = call_id
            seq += 1
            e.seq = seq
            e.container_id = container_id
            e.function_name = function_name
            e.timestamp = now
            self.entries.append(e)
            # PostgreSQL's text holds no NUL: a program that prints one loses it in the history.
            rows.append((app_id, seq, now, workspace, app_name, function_name, container_id, input_id, fd,
                         e.data.replace("\x00", ""), call_id))
        self.seq = seq
        if rows:
            self.store.add_logs(rows)
        self._wake()

    def event(self, text: str, function_name: str, container_id: str = "", input_id: str = "", call_id: str = "",
              caller: bool = False):
        """A line of the control plane's own about the app, "ember: TEXT": an event (EVENT: a container
        started or exited, a scheduled run), or with caller, words for the terminal of the caller
        (on stderr: a retry, inputs that wait)."""
        self.append([api_pb2.LogEntry(fd=STDERR if caller else EVENT, data=f"ember: {text}\n", input_id=input_id,
                                      call_id=call_id)], container_id, function_name)

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
            # The newest entries, taken from the buffer's end: a follower keeping up wants a few of
            # its thousands (walking it from its start cost more than all else a line costs).
            new = min(len(self.entries), self.seq - after_seq)
            entries = list(itertools.islice(reversed(self.entries), new))[::-1] if new > 0 else []
            if entries:
                after_seq = entries[-1].seq
                yield api_pb2.LogBatch(entries=entries)
                continue
            if self.closed or stop_at_end:
                return
            fut = asyncio.get_running_loop().create_future()
            self.followers.append(fut)
            await fut


def _lines(entries):
    """A container's entries one line each (what it printed comes in chunks of any size): what
    --tail counts and --search matches. A line the program wrote in pieces stays in pieces."""
    for e in entries:
        if "\n" not in e.data[:-1]:  # one line already, or a piece of one
            yield e
            continue
        *lines, rest = e.data.split("\n")
        for line in lines:
            yield api_pb2.LogEntry(fd=e.fd, data=line + "\n", input_id=e.input_id, call_id=e.call_id)
        if rest:
            yield api_pb2.LogEntry(fd=e.fd, data=rest, input_id=e.input_id, call_id=e.call_id)
