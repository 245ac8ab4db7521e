"""Several control planes on one database: one leads through a lease held there, the others
stand by and take over once it expires.

The leader renews its lease (Store.acquire_lease/renew_lease) every third of it. It acts only
while its own clock says the last renewal is recent (two thirds of the lease: a margin before
the lease could expire and be taken): past that, or once a renewal finds the lease in other
hands, it stops at once (`lost` is set; main.py drops its streams and goes back to standing by).
Every commit is fenced by the lease's epoch too (Store.fence): a leader frozen past its lease
that wakes up and writes has that write undone, whatever it believes. A leader whose transaction
the database undid (cut off from it) steps down at once: what it holds in memory is no longer
what the database holds, so it may neither act on it nor show it.

A standby answers every request with UNAVAILABLE, "standing by; the leader is at URL", and the
leader's URL in the `ember-leader` trailer: clients and workers retry elsewhere (they are given
several addresses) and follow the hint if it is one of theirs.
"""

import asyncio
import contextlib
import logging
import time

import grpc

from .._client.servers import LEADER_TRAILER
from .._ids import new_id
from ..proto import api_pb2
from .store import Store

log = logging.getLogger("ember.server")

class Leadership:
    def __init__(self, store: Store, url: str, lease: float, clock=time.monotonic):
        self.store = store
        self.url = url  # where clients and workers reach this control plane
        self.lease = lease
        self.renew_every = lease / 3
        self.holder = new_id("cp")
        self.clock = clock
        self.epoch: int | None = None
        self.valid_until = 0.0  # by self.clock: acting stops here unless renewed
        self.lost = asyncio.Event()

    def acting(self) -> bool:
        """Whether this control plane may dispatch and write now."""
        return self.epoch is not None and not self.lost.is_set() and self.clock() < self.valid_until

    def leader_url(self) -> str | None:
        """Where the leader is, as far as the database says (None: no one leads now)."""
        held = self.store.lease_holder()
        if held is None or held[3] < time.time() or held[0] == self.holder:
            return None
        return held[1]

    async def wait_to_lead(self):
        """Stand by until this control plane holds the lease; then its commits are fenced by it."""
        said = None
        while True:
            start = self.clock()
            held = self.store.lease_holder()
            if held is None or held[3] < time.time():
                try:
                    epoch = self.store.acquire_lease(self.holder, self.url, self.lease)
                except Exception as e:  # the database is busy or away: try again shortly
                    log.warning("cannot take the leader lease now: %s", e)
                    epoch = None
                if epoch is not None:
                    self.epoch = epoch
                    self.valid_until = start + self.lease * 2 / 3
                    self.store.fence(self.holder, epoch, lambda: self.step_down("its lease is in other hands"))
                    # Its state in memory is what it committed, and a transaction the database undid
                    # (cut off from it) makes it wrong: only a control plane that loads it anew may act.
                    self.store.on_undone = lambda e: self.step_down(f"the database undid a transaction: {e}")
                    log.info("leading (lease epoch %d, %.1fs, renewed every %.1fs)", epoch, self.lease,
                             self.renew_every)
                    return
            elif held[1] != said:
                said = held[1]
                log.info("standing by: the leader is at %s (lease epoch %d)", held[1], held[2])
            # Look again when the lease would expire (unless renewed), or sooner: every second
            # of the leader's death that passes unnoticed is a second of failover.
            expires_in = held[3] - time.time() if held else 0.0
            await asyncio.sleep(min(self.renew_every / 2, max(0.02, expires_in + 0.01)))

    async def keep(self):
        """Renew the lease while leading; step down once it cannot be renewed in time."""
        try:
            await self._keep()
        except Exception as e:
            self.step_down(f"renewing its lease failed: {e!r}")
            raise

    async def _keep(self):
        while not self.lost.is_set():
            await asyncio.sleep(max(0.0, min(self.renew_every, self.valid_until - self.clock())))
            start = self.clock()
            if start >= self.valid_until:
                self.step_down(f"its lease was not renewed for {self.lease * 2 / 3:.1f}s")
                return
            try:
                renewed = self.store.renew_lease(self.holder, self.epoch, self.lease)
            except Exception as e:
                log.warning("cannot renew the leader lease now: %s", e)
                continue
            if not renewed:
                self.step_down("its lease is in other hands")
                return
            self.valid_until = start + self.lease * 2 / 3

    def step_down(self, why: str):
        if not self.lost.is_set():
            log.error("stepping down: this control plane no longer leads (%s)", why)
            self.lost.set()

    def release(self):
        """A clean stop: let the lease go, so that a standby takes over at once."""
        if self.epoch is not None and not self.lost.is_set():
            with contextlib.suppress(Exception):
                self.store.release_lease(self.holder, self.epoch)


class Standby(grpc.GenericRpcHandler):
    """Every method of the three services, answered UNAVAILABLE with where the leader is."""

    def __init__(self, leadership: Leadership):
        self.leadership = leadership
        self.methods = {f"/{s.full_name}/{m.name}": (m.client_streaming, m.server_streaming)
                        for s in api_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods}

    def service(self, handler_call_details):
        kind = self.methods.get(handler_call_details.method)
        if kind is None:
            return None
        client_streaming, server_streaming = kind

        async def refuse(request, context):
            if client_streaming:
                # A stream refused before its first message was read may end INTERNAL instead
                # (as in api.py): its first message is taken first.
                with contextlib.suppress(grpc.RpcError, StopAsyncIteration):
                    await anext(aiter(request))
            url = self.leadership.leader_url()
            if url:
                context.set_trailing_metadata(((LEADER_TRAILER, url),))
            where = f"the leader is at {url}" if url else "no control plane leads right now (one takes over shortly)"
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"this control plane ({self.leadership.url}) stands by: {where}")

        if server_streaming:
            async def refuse_stream(request, context):
                await refuse(request, context)
                yield  # never reached: makes this an async generator, as gRPC expects here

            behavior = refuse_stream
        else:
            behavior = refuse
        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[kind]
        return make(behavior)
