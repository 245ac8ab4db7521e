"""The control planes a process is given: one address, or several (`EMBER_SERVER_URL=a,b`,
`ember worker --server a,b`) of control planes on one database of which one leads
(server/leader.py). Clients, workers and containers alike use the current one and move on when
it is unavailable: to the leader a standby names, if it is one of theirs (nothing from the
network chooses where they go beyond the addresses they were given), else to the next.

With one address a caller waits for it to come back (wait_for_ready: it may be restarting);
with several it must not, or it would wait for a dead one while another leads.
"""

import grpc

from .. import exception
from ..config import grpc_target, open_channel
from .stream import MAX_DELAY

LEADER_TRAILER = "ember-leader"  # the leader's URL, in a standby's refusals
# The longest wait between attempts with several addresses (one of them leads soon after another
# dies): trying a standby costs it little, and waiting a whole second adds to every failover.
SEVERAL_MAX_DELAY = 0.25
# With several, a control plane that stops answering (frozen, or cut off: its connections stay
# open) is given up within three seconds, not GRPC_OPTIONS' thirty: it stops leading by then.
# Control planes with a leader lease accept pings this often (server/leader.py).
SEVERAL_KEEPALIVE = [("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_timeout_ms", 2000),
                     ("grpc.http2.ping_timeout_ms", 2000)]  # (the keepalive's own timeout alone is not kept to)


def split(urls: str) -> list[str]:
    """The addresses in a comma-separated list; InvalidError if there is none."""
    found = [u.strip() for u in urls.split(",") if u.strip()]
    if not found:
        raise exception.InvalidError(f"no control plane address in {urls!r}: give HOST:PORT, or several "
                                     "separated by commas (control planes on one database)")
    return found


def leader_hint(error: grpc.aio.AioRpcError | None) -> str | None:
    """The leader's URL a standby named in its refusal, if it did."""
    if error is None:
        return None
    for key, value in error.trailing_metadata() or ():
        if key == LEADER_TRAILER:
            return value
    return None


class Servers:
    """Which of the addresses to use now, and a channel and stub for each (stub_for(channel)
    makes the stub), made when first used."""

    def __init__(self, urls: str, stub_for):
        self.urls = split(urls)
        self.stub_for = stub_for
        self.index = 0
        self.opened: dict[str, tuple] = {}

    @property
    def url(self) -> str:
        return self.urls[self.index]

    @property
    def several(self) -> bool:
        return len(self.urls) > 1

    @property
    def wait_for_ready(self) -> bool:
        return not self.several

    @property
    def max_delay(self) -> float:
        """The longest wait between attempts (Backoff)."""
        return SEVERAL_MAX_DELAY if self.several else MAX_DELAY

    def channel(self, url: str | None = None) -> grpc.aio.Channel:
        return self._opened(url or self.url)[0]

    def stub(self):
        return self._opened(self.url)[1]

    def stub_at(self, url: str):
        return self._opened(url)[1]

    def _opened(self, url: str):
        if url not in self.opened:
            channel = open_channel(url, SEVERAL_KEEPALIVE if self.several else ())
            self.opened[url] = (channel, self.stub_for(channel))
        return self.opened[url]

    def use(self, url: str):
        self.index = self.urls.index(url)

    def failed(self, url: str, error: grpc.aio.AioRpcError | None):
        """The control plane at url was unavailable: move on, unless another caller already did."""
        if not self.several or url != self.url:
            return
        hint = leader_hint(error)
        targets = [grpc_target(u) for u in self.urls]
        if hint and grpc_target(hint) in targets and grpc_target(hint) != grpc_target(url):
            self.index = targets.index(grpc_target(hint))
        else:
            self.index = (self.index + 1) % len(self.urls)

    async def close(self):
        for channel, _ in self.opened.values():
            await channel.close()
        self.opened.clear()
