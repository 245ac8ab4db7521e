"""Dispatch: each function's queue of inputs, and their leases to the containers that run them.

Every way of starting work enters through `submit`: a call's new inputs (.remote, .spawn, .map,
a scheduled run) once the ledger has written them, a web request (never written), and an input
that runs again (a retry after its backoff, or one whose lease was lost). Queued inputs are
handed to containers that said they want work (no polling: each event, an input arriving or a
container asking for more, runs `dispatch`); when work is left over, the autoscaler is asked
for containers.

Leases: an input handed to a container is held by that container until its output arrives.
If the container exits, the worker reports why and the input it was running is retried (a
failed attempt, retries.py); if the container or its worker vanishes without a report, the
fleet gives up on it once the lease timeout has passed, and its inputs return to the queue (a
lost lease, which does not use up a retry). Which container holds an input reaches the store
with the next write: a hint for recovery after a restart.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..proto import api_pb2
from . import dead_letters, retries, validate
from .apps import FunctionState
from .ledger import InputState, Ledger
from .retries import FINAL_FAILURES
from .store import Store

if TYPE_CHECKING:
    from .autoscaler import Autoscaler
    from .fleet import ContainerState
    from .shares import Shares
    from .usage import Usage

log = logging.getLogger("ember.server")

Output = api_pb2.Output
KNOWN_STATUSES = frozenset(Output.Status.values())  # what validate.output accepts, checked here without a call


def _varint(n: int) -> bytes:
    """n as a protobuf varint."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]
# The tags of Input's fields, and of ContainerCommand.inputs and InputBatch.inputs: each a field
# number and a wire type (0 a varint, 2 a length and bytes).
_TAG = {name: _varint(f.number << 3 | (0 if f.type in (f.TYPE_UINT32, f.TYPE_UINT64) else 2))
        for name, f in api_pb2.Input.DESCRIPTOR.fields_by_name.items()}
_ID_TAG, _CALL_TAG, _IDX_TAG, _ARGS_TAG, _ATTEMPT_TAG = (_TAG[f] for f in ("input_id", "call_id", "idx", "args",
                                                                             "attempt"))
_BATCH_TAG = _varint(api_pb2.InputBatch.DESCRIPTOR.fields_by_name["inputs"].number << 3 | 2)
_COMMAND_TAG = _varint(api_pb2.ContainerCommand.DESCRIPTOR.fields_by_name["inputs"].number << 3 | 2)


def encoded_input(inp: InputState) -> bytes:
    """An input of a call for its container, as a serialized Input: its arguments are the stored
    Payload's bytes as they are (a Payload parsed and built again for each input costs more
    than the rest of its dispatch), and what does not change between attempts is kept."""
    if inp.wire is None:
        input_id, call_id, args = inp.input_id.encode(), inp.call.call_id.encode(), inp.args
        inp.wire = b"".join((_ID_TAG, _varint(len(input_id)), input_id, _CALL_TAG, _varint(len(call_id)), call_id,
                             _IDX_TAG, _varint(inp.idx), _ARGS_TAG, _varint(len(args)), args, _ATTEMPT_TAG))
    return inp.wire + _varint(inp.attempts)


def input_batch(encoded: list[bytes]) -> api_pb2.ContainerCommand:
    """A ContainerCommand of the inputs, from their encodings (parsed once, in protobuf's C code)."""
    batch = b"".join(b for e in encoded for b in (_BATCH_TAG, _varint(len(e)), e))
    return api_pb2.ContainerCommand.FromString(_COMMAND_TAG + _varint(len(batch)) + batch)


def call_later(delay: float, callback):
    asyncio.get_running_loop().call_later(delay, callback)


class Dispatch:
    def __init__(self, store: Store, ledger: Ledger, *, clock=time.monotonic, later=call_later):
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self.later = later  # later(delay, callback): a retry's backoff
        self.autoscaler: Autoscaler  # asked for containers when a queue has work left; set by the Scheduler
        self.shares: Shares  # whether an idle container gives its room to another workspace; set by the Scheduler
        self.usage: Usage  # counts the inputs run; set by the Scheduler
        # Whether this control plane may hand out inputs now: one that is losing its leader
        # lease must not (leader.py); the only control plane on its database always may.
        self.acting = lambda: True
        self.dispatched = 0  # inputs handed to containers, and the seconds they waited in queues
        self.waited = 0.0

    def submit(self, fn: FunctionState, inputs: list[InputState], *, again=False, delay=0.0, soon=False):
        """Queue inputs of a function, and hand what it can to its containers.

        New inputs join the back of the queue. An input that runs `again` (a retry, a lost
        lease) goes to the front, after `delay` seconds (its backoff), if it is still open and
        its app still runs. `soon` dispatches at the end of this loop iteration, with whatever
        else arrives in it: web requests that arrive together go to containers together, in
        one message rather than one each.
        """
        if delay > 0:
            self.later(delay, functools.partial(self.submit, fn, inputs, again=again, soon=soon))
            return
        now = self.clock()
        for inp in inputs:
            inp.queued_at = now
        if again:
            inputs = [inp for inp in inputs if not inp.done] if fn.app.running else []
            if not inputs:
                return
            fn.pending.extendleft(reversed(inputs))
        else:
            fn.pending.extend(inputs)
        if not soon:
            self.dispatch(fn)
        elif not fn.dispatch_soon:
            fn.dispatch_soon = True
            asyncio.get_running_loop().call_soon(self._dispatch_soon, fn)

    def _dispatch_soon(self, fn: FunctionState):
        fn.dispatch_soon = False
        if fn.app.running:
            self.dispatch(fn)

    def restore(self, inp: InputState):
        """An input loaded after a restart, back in its queue: it goes out once its function
        has containers (none is connected yet)."""
        inp.queued_at = self.clock()
        inp.call.function.pending.append(inp)

    def dispatch(self, fn: FunctionState):
        """Hand queued inputs to containers that want them; start containers if needed."""
        pending = fn.pending
        if not pending or not self.acting():
            return
        if fn.init_failure is not None:
            self.fail_init(fn)
            return
        ready = []
        for cid, c in list(fn.wanting.items()):
            if c.want <= 0 or fn.containers.get(cid) is not c:
                del fn.wanting[cid]  # it has what it asked for, or its stream closed, or it ended
            elif c.send is not None and not c.stopping:
                ready.append(c)
        if ready:
            ready.sort(key=lambda c: (len(c.held), c.seq))  # the least busy first, then the oldest
            with_events = []
            # @ember.concurrent(target_inputs=T): each takes up to T first, and only then up to
            # max_inputs, so that inputs spread over the containers there are.
            target = fn.definition.target_inputs
            for cap in (target, math.inf) if 0 < target < fn.definition.max_inputs else (math.inf,):
                for c in ready:
                    if not c.held and self.shares.yield_if_over(c):
                        continue  # it stops: another workspace waits for its room (shares.py)
                    batch, stored = [], []  # the inputs given to c (each an encoded Input), the stored ones' ids
                    now = self.clock()
                    if not c.held:
                        c.since = now
                    held, waited, given = c.held, 0.0, 0
                    while c.want > 0 and pending and not c.stopping and len(held) < cap:
                        inp = pending.popleft()
                        if inp.done or inp.container is not None:
                            continue  # cancelled (or its client left) while queued, or claimed by a container's hello
                        inp.attempts += 1  # an attempt is charged here (retries.py)
                        waited += now - inp.queued_at
                        given += 1
                        inp.container = c
                        held[inp.input_id] = inp
                        c.want -= 1
                        self._count_given(c)
                        if inp.web is not None:
                            batch.append(inp.web.encoded(inp.input_id))
                            if inp.web.outbox:
                                with_events.append(inp)
                            continue
                        batch.append(encoded_input(inp))
                        if not inp.call.held:  # (a held call's rows are written with who holds them)
                            stored.append(inp.input_id)
                    self.waited += waited  # dispatch latency (metrics.py)
                    self.dispatched += given
                    if batch:
                        if stored:
                            self.store.assign_inputs(c.container_id, stored)
                        c.send(input_batch(batch))
                    for inp in with_events:  # what came of a request while it waited for a container
                        events, inp.web.outbox = inp.web.outbox, []
                        self.web_events(inp, events)
                    with_events.clear()
                    if not pending:
                        return
        self.autoscaler.backlog(fn)

    # ---- containers that retire after so many inputs (max_inputs=, single_use_containers=)

    def _count_given(self, c: ContainerState):
        """One more input for c: at its function's inputs_per_container it takes no more (and is no
        longer counted as one that will, so that the autoscaler starts its successor now)."""
        c.inputs_given += 1
        if c.inputs_given >= c.function.definition.inputs_per_container > 0:
            c.stopping = True

    def _retire_if_done(self, c: ContainerState):
        """A container that had its last input and finished it is told to stop (its exit hooks run)."""
        limit = c.function.definition.inputs_per_container
        if limit and c.inputs_given >= limit and not c.held:
            log.info("container %s of %s ran its %d inputs: it stops", c.container_id, c.function.name, limit)
            self.autoscaler.fleet.stop(c, f"retired: it ran its {limit} inputs", retiring=True)

    # ---- what containers say

    def container_wants(self, c: ContainerState, n: int):
        c.want += n
        if c.want > 0:
            c.function.wanting[c.container_id] = c
        c.last_seen = self.clock()
        self.dispatch(c.function)

    def container_outputs(self, c: ContainerState, batch: api_pb2.OutputBatch, log_seq: int):
        c.last_seen = now = self.clock()
        fn = c.function
        for ev in batch.http:
            inp = c.held.get(ev.input_id)
            if inp is not None and inp.web is not None:
                inp.web.deliver(ev)
        results = []
        finals = sum(1 for o in batch.outputs if o.status != Output.GENERATOR_ITEM)
        if finals:
            per_input = (now - c.since) / finals
            fn.exec_ewma = per_input if fn.exec_ewma is None else 0.7 * fn.exec_ewma + 0.3 * per_input
            fn.durations.append(per_input)
        ran = 0
        for out in batch.outputs:
            inp = c.held.get(out.input_id)
            if inp is None and c.resending:
                inp = self._claim_resent(c, out.input_id)
            if inp is None:
                continue  # not ours any more (cancelled, or another container's after a lost lease)
            status = out.status
            if status not in KNOWN_STATUSES:
                try:
                    validate.output(out)
                except validate.Invalid as e:
                    log.warning("container %s sent an output for input %s that is dropped: %s", c.container_id,
                                out.input_id, e)
                    continue
            # The input's place in its call is the control plane's to say (map orders outputs by it),
            # and so is what a dead letter keeps.
            out.idx = inp.idx
            if out.HasField("args"):
                out.ClearField("args")
            if out.attempts:
                del out.attempts[:]
            ran += status != Output.GENERATOR_ITEM
            if status == Output.TIMEOUT:  # its runtime ends the container after this: it cannot stop the code
                c.stop_why = c.stop_why or (f"input timeout: input {out.input_id} ran longer than "
                                            f"timeout={fn.definition.timeout:g}s")
            if status in FINAL_FAILURES and self.retry(inp, out):
                continue
            results.append((inp, out))
        self.ledger.record_outputs(results, log_seq)
        self.usage.inputs_run(fn, ran)
        c.since = now  # idle from now on, or running its next held input from now on
        if c.resending:
            c.resending -= 1
            if not c.resending:
                self.settle(c)
        self._retire_if_done(c)
        if batch.want_inputs:
            self.container_wants(c, batch.want_inputs)

    # ---- after a reconnect

    def _claim_resent(self, c: ContainerState, input_id: str) -> InputState | None:
        """An output a container sends again after a reconnect, for an input queued here (a
        restart lost the hint of who held it): it finished there, so it is the container's."""
        inp = self.ledger.open_input(input_id)
        if inp is None or inp.container is not None or inp.call.function is not c.function:
            return None  # done already, or another container's: refused
        inp.container = c
        c.held[input_id] = inp
        return inp

    def settle(self, c: ContainerState):
        """A reconnected container's outputs sent again are in: the inputs it held here that
        its hello did not name ran out with it (or never reached it), and go back to the queue."""
        for inp in list(c.held.values()):
            if inp.input_id not in c.reported:
                self.requeue(inp, lost=True)
        c.reported = set()

    # ---- failures and lost leases

    def retry(self, inp: InputState, out: api_pb2.Output) -> bool:
        """An attempt failed: note it (dead_letters.py), and schedule another if the policy allows;
        True if it will run."""
        if inp.web is None:
            dead_letters.attempt_failed(inp, out)
        delay = retries.retry_delay(inp, out)
        if delay is None:
            return False
        policy = inp.call.function.definition.retries
        log.info("input %s failed (%s): attempt %d of %d in %.1fs", inp.input_id,
                 out.error or Output.Status.Name(out.status), inp.attempts + 1, policy.max_retries + 1, delay)
        # The caller sees each failed attempt as it happens, with its traceback (as Modal shows
        # it), not only the last: in its app's log, which its terminal follows.
        fn = inp.call.function
        traceback = "\n" + out.traceback.removesuffix("\n") if out.traceback else ""
        fn.app.log.event(
            f"{fn.name} input {inp.input_id} failed (attempt {inp.attempts} of {policy.max_retries + 1}): "
            f"{out.error or Output.Status.Name(out.status)}; retrying in {delay:.1f}s{traceback}",
            fn.name, inp.container.container_id if inp.container is not None else "", inp.input_id, inp.call.call_id,
            caller=True)
        inp.release()
        self.ledger.write_held(inp.call)
        self.store.requeue_input(inp.input_id, inp.attempts, inp.lost, time.time() + delay)
        self.submit(inp.call.function, [inp], again=True, delay=delay)
        return True

    def fail(self, inp: InputState, out: api_pb2.Output):
        """An attempt failed: it runs again if the policy allows, else this is its output."""
        if not self.retry(inp, out):
            self.ledger.record_outputs([(inp, out)])

    def requeue(self, inp: InputState, lost: bool):
        """Put an input back without charging an attempt: it never ran, or its container
        vanished without a word (lost: counted, and capped at MAX_LOST)."""
        if inp.web is not None:  # it may have answered in part: it ends here
            self.ledger.record_outputs([(inp, Output(input_id=inp.input_id, status=Output.CONTAINER_EXITED,
                                                     error="its container was lost while it ran"))])
            return
        if not retries.give_back(inp, lost):
            out = Output(input_id=inp.input_id, idx=inp.idx, status=Output.CONTAINER_EXITED,
                         error=f"its container was lost {inp.lost} times (worker or network failures)")
            dead_letters.attempt_failed(inp, out)
            inp.release()
            self.ledger.record_outputs([(inp, out)])
            return
        inp.release()
        self.ledger.write_held(inp.call)
        self.store.requeue_input(inp.input_id, inp.attempts, inp.lost, 0)
        self.submit(inp.call.function, [inp], again=True)

    def fail_init(self, fn: FunctionState, held: Sequence[InputState] = (),
                  failure: api_pb2.ContainerInitFailure | None = None):
        """Its containers cannot load it (failure, or else fn.init_failure): every queued input
        fails with why, after those its container held."""
        failure = failure or fn.init_failure
        inputs, fn.pending = [*held, *fn.pending], collections.deque()
        # An exception from a class's enter hook is the user's own: the calls fail with it as is.
        status = Output.FAILURE if failure.in_enter else Output.INIT_FAILURE
        self.ledger.record_outputs([(inp, Output(
            input_id=inp.input_id, idx=inp.idx, status=status, error=failure.error,
            traceback=failure.traceback, data=failure.exception)) for inp in inputs])

    # ---- cancellation

    def cancel(self, fn: FunctionState, inputs: list[InputState], reason: str):
        """End open inputs as cancelled: a container running one is told, queued ones leave the queue."""
        for inp in inputs:
            if inp.container is not None and inp.container.send is not None:
                inp.container.send(api_pb2.ContainerCommand(cancel_input_id=inp.input_id))
        self.ledger.record_outputs([(inp, Output(input_id=inp.input_id, idx=inp.idx, status=Output.CANCELLED,
                                                 error=reason)) for inp in inputs])
        if fn.pending:
            fn.pending = collections.deque(i for i in fn.pending if not i.done)

    def cancel_web(self, fn: FunctionState, reason: str):
        """End a function's open web requests as cancelled (its app stopped)."""
        if fn.serves_web:
            self.cancel(fn, [i for i in fn.pending if i.web is not None and not i.done] + [
                i for c in fn.containers.values() for i in c.held.values() if i.web is not None], reason)

    def busy(self, fn: FunctionState) -> bool:
        """Whether a function has inputs queued or running."""
        return any(not i.done for i in fn.pending) or any(c.held for c in fn.containers.values())

    # ---- the rest of a web request

    def web_events(self, inp: InputState, events: list[api_pb2.HttpEvent]):
        """More of a request (body, disconnect, WebSocket messages): now, or once it has a container."""
        c = inp.container
        if c is not None and c.send is not None:
            c.send(api_pb2.ContainerCommand(http=api_pb2.HttpEvents(events=events)))
        else:
            inp.web.outbox.extend(events)

    def abandon(self, inp: InputState):
        """A web request's client went away: a queued request is dropped, a running one is told."""
        if inp.done:
            return
        if inp.container is None:
            inp.done = True  # dispatch skips it
        elif inp.container.send is not None:
            inp.container.send(api_pb2.ContainerCommand(cancel_input_id=inp.input_id))
