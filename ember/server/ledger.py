"""The call ledger: calls, their inputs and their outputs, made durable through the Store.

A call (one .remote, .spawn or .map, or a scheduled run) has inputs, each ended by one final
output (a generator's items come before it). Outputs are numbered per call (seq) and written
before anyone is told; then whoever waits on the call is woken. Open calls and their inputs
are loaded back after a restart. A finished call stays in memory a while for its callers, and
older ones are read back from the store until their outputs expire.

A call's new inputs go to dispatch (`Dispatch.submit`) once they are written. A `.remote()`
(CallStream's one inline input) is held back instead (`hold=True`): dispatched at once, its call
and input are written only if it is still open HOLD seconds later; when its output comes first,
the call is written already finished, with that output, in one transaction: one commit and a
third of the statements instead of two commits. Its caller hears the output once that is
durable. Until then the store does not have it: after a crash within HOLD its client, which
still waits for the answer, sends it again (CallStream's resend), so it runs at least once, as
any input. A web request is
an input too, with no call: never stored, its end goes to the gateway. An input that ends failed
keeps its arguments and failed attempts in that output (a dead letter, dead_letters.py), and a
done call may be reopened to run such inputs again.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from typing import TYPE_CHECKING

from ..proto import api_pb2
from . import dead_letters
from .apps import Apps, AppState, FunctionState
from .disk import DiskFull
from .store import NotLeader, Store
from .validate import Invalid

if TYPE_CHECKING:
    from .dispatch import Dispatch
    from .fleet import ContainerState
    from .gateway import WebRequest

log = logging.getLogger("ember.server")

Output = api_pb2.Output
FORGET_EVERY = 5.0  # seconds between looks for finished calls to forget
# Seconds a `.remote()`'s call and input wait unwritten for its output (see above): longer than
# a warm round trip, short enough that few calls are open unwritten at any time.
HOLD = 0.05


class CallState:
    __slots__ = ("call_id", "cancelled", "created_at", "done_at", "fetched", "finished_at", "finished_below",
                 "finished_idx", "function", "held", "inputs", "listeners", "next_seq", "num_done", "num_inputs",
                 "outputs", "sent_up_to", "unstored")

    def __init__(self, call_id, function, num_inputs=None, num_done=0, next_seq=1, cancelled=False):
        self.call_id = call_id
        self.function: FunctionState = function
        self.num_inputs: int | None = num_inputs
        self.num_done = num_done
        self.next_seq = next_seq
        self.cancelled = cancelled
        # Outputs accepted since this call was loaded; outputs[0] has seq first_seq.
        self.outputs: list[api_pb2.CallOutput] = []
        self.inputs: dict[str, InputState] = {}   # open inputs, by id
        # The indexes of its inputs that finished since it was loaded: a batch of inputs sent again
        # (its client did not hear the answer) adds none of them a second time.
        self.finished_idx: set[int] = set()
        # Loaded from the store (a restart, a failover): each index below this that is not open
        # finished before (see Ledger.recover); a batch sent again adds none of those either.
        self.finished_below = 0
        # The highest index of its inputs so far, + 1: what an empty last batch (inputs_complete
        # alone) makes its number of inputs, whichever of them are still open.
        self.sent_up_to = 0
        self.listeners: list = []                 # callables, run once on the next output
        self.done_at: float | None = None
        # Unix seconds, for the dashboard: when it was made (or loaded here) and when it finished.
        self.created_at = time.time()
        self.finished_at: float | None = None
        self.fetched = False
        self.unstored: Exception | None = None  # why its inputs could not be kept (DiskFull): it was cancelled
        self.held = False  # neither it nor its inputs are in the store yet (Ledger.create_call's hold)

    def done(self) -> bool:
        return self.num_inputs is not None and self.num_done >= self.num_inputs


class InputState:
    __slots__ = ("args", "attempts", "call", "container", "done", "failures", "idx", "input_id", "lost", "queued_at",
                 "web", "wire")

    def __init__(self, input_id, call, idx, args, attempts=0, lost=0, web=None):
        self.input_id = input_id
        self.call: CallState | None = call  # None for a web request
        self.idx = idx
        self.args: bytes = args   # serialized Payload, passed through untouched
        self.attempts = attempts
        self.lost = lost
        self.container: ContainerState | None = None  # holds its lease
        self.failures: list[api_pb2.FailedAttempt] = []  # its failed attempts so far (dead_letters.py)
        self.done = False  # ended: its final output is recorded, or (a web request) its client left
        self.queued_at = 0.0  # by the dispatcher's clock: when it last joined its function's queue
        # A web request: the gateway's side of it (see gateway.WebRequest); never stored.
        self.web: WebRequest | None = web
        self.wire: bytes | None = None  # what its Input to a container starts with (dispatch.encoded_input)

    def release(self):
        """Its container no longer holds it (its output came, or it goes back to the queue)."""
        if self.container is not None:
            self.container.held.pop(self.input_id, None)
            self.container = None


_web_ids = itertools.count(1)


def web_input(web: WebRequest) -> InputState:
    """A web request as an input of its function: no call, never stored, never retried."""
    return InputState(f"web-{next(_web_ids)}", None, 0, b"", web=web)


class Ledger:
    def __init__(self, store: Store, apps: Apps, *, retention: float, log_retention: float = 24 * 3600,
                 clock=time.monotonic):
        self.store = store
        self.apps = apps
        self.retention = retention  # seconds a finished call's outputs are kept
        self.log_retention = log_retention  # seconds apps' log lines are kept
        self.clock = clock
        self.dispatch: Dispatch  # where new inputs go; set by the Scheduler
        self._calls: dict[str, CallState] = {}
        self._forgot_at = -math.inf  # when forget_finished last looked

    def recover(self) -> list[tuple[InputState, str | None]]:
        """Load the calls that were open, with their open inputs: each with the container the
        store says holds it (None: it was queued)."""
        inputs = []
        for call_id, fid, num_inputs, num_done, next_seq, cancelled in self.store.open_calls():
            fn = self.apps.function(fid)
            if fn is None:
                continue
            call = CallState(call_id, fn, num_inputs, num_done, next_seq, bool(cancelled))
            self._calls[call_id] = call
            for input_id, idx, args, attempts, lost, container_id, _avail in self.store.open_inputs(call_id):
                inp = InputState(input_id, call, idx, args, attempts, lost)
                call.inputs[input_id] = inp
                inputs.append((inp, container_id))
            # Its finished inputs are not in the store: a client numbers its inputs from 0 on, so
            # those done and those open are all there were.
            call.sent_up_to = max([i.idx + 1 for i in call.inputs.values()] + [num_done + len(call.inputs)])
            # A client sends a call's batches one after another, each committed whole: every index
            # below sent_up_to reached the store, and those no longer open finished.
            call.finished_below = call.sent_up_to
        log.info("recovered %d open calls, %d open inputs", len(self._calls), len(inputs))
        return inputs

    # ---- calls and inputs

    def create_call(self, workspace: str, function_id: str, call_id: str, inputs, complete: bool,
                    maybe_exists: bool = True, hold: bool = False) -> CallState:
        """Create a call of a workspace's function with a first batch of inputs. Resending the
        same call id is a no-op; a call id taken by another workspace is refused.

        maybe_exists=False skips looking in the store for a call this id already made (the
        hot path of a first send, whose id the client just drew at random). hold=True: a
        `.remote()`, whose caller waits for its answer and sends it again if the control plane
        goes: written only if it is open HOLD seconds from now, or with its output (see above).
        """
        existing = self._calls.get(call_id) or (self.lookup_call(call_id) if maybe_exists else None)
        if existing is not None:
            if existing.function.app.workspace != workspace:
                raise LookupError(f"the call id {call_id} is taken: draw another")
            return existing
        fn = self.apps.function_for_call(function_id, workspace)
        call = CallState(call_id, fn, len(inputs) if complete else None)
        # Only a single inline input: a blob's argument is kept (blob_gc.py) by the call's rows.
        if hold and complete and len(inputs) == 1 and not inputs[0].args.blob_id:
            call.held = True
            new = [InputState(f"{call_id}:{inputs[0].idx}", call, inputs[0].idx, inputs[0].args.SerializeToString())]
            call.inputs[new[0].input_id] = new[0]
            call.sent_up_to = new[0].idx + 1
            self.dispatch.later(HOLD, functools.partial(self._held_too_long, call))
        else:
            # The store first: a write that meets a full disk raises DiskFull here, before the
            # call exists anywhere else.
            self.store.create_call(call_id, function_id, call.num_inputs)
            new = self._add_inputs(call, inputs)
        self._calls[call_id] = call
        self.dispatch.submit(fn, new)
        return call

    def write_held(self, call: CallState):
        """Write a held call and its open inputs now (and who holds them), if they are not yet:
        before anything else about them is written (a retry, a lost lease, a cancel)."""
        if not call.held:
            return
        call.held = False
        self.store.create_call(call.call_id, call.function.function_id, call.num_inputs)
        inputs = list(call.inputs.values())
        self.store.add_inputs([(i.input_id, call.call_id, i.idx, i.args) for i in inputs])
        self.store.on_durable(lambda: None, lambda e: self._unstored(call, e))
        for inp in inputs:
            if inp.container is not None:
                self.store.assign_inputs(inp.container.container_id, [inp.input_id])

    def _held_too_long(self, call: CallState):
        if call.held and not call.done():
            try:
                self.write_held(call)
            except DiskFull as e:
                self._unstored(call, e)
            except NotLeader:
                pass  # its client sends it to the leader

    def put_inputs(self, workspace: str, call_id: str, inputs, complete: bool):
        call = self._calls.get(call_id)
        if call is None or call.function.app.workspace != workspace:
            raise LookupError(f"there is no open call {call_id}")
        self.write_held(call)
        if not call.function.app.running:
            raise LookupError("its app is not running")
        if call.num_inputs is not None:
            # Its inputs are complete: what is sent again is a resend, and nothing lies beyond its end.
            for i, inp in enumerate(inputs):
                if inp.idx >= call.num_inputs:
                    raise Invalid(f"PutInputsRequest.inputs[{i}].idx", f"must be < the call's {call.num_inputs} "
                                  f"inputs, which are complete (got {inp.idx})")
        new = self._add_inputs(call, inputs)
        if complete:
            # The number of inputs is the highest index sent + 1: resent batches add nothing.
            n = max([i.idx + 1 for i in inputs] + [call.num_inputs or 0, self._max_idx(call)])
            call.num_inputs = n
            self.store.close_call(call_id, n)
        if call.done():
            self._call_finished(call)
            # Its outputs may all have come before it was closed: who waits for more, or for
            # its end, hears of it now, not when a long poll times out.
            self._wake_listeners(call)
        self.dispatch.submit(call.function, new)

    def _add_inputs(self, call: CallState, inputs) -> list[InputState]:
        rows, new, payload_blobs = [], [], []
        call_id, open_inputs, finished_idx, finished_below = call.call_id, call.inputs, call.finished_idx, \
            call.finished_below
        top = -1
        for inp in inputs:
            idx = inp.idx
            input_id = f"{call_id}:{idx}"
            if input_id in open_inputs or idx < finished_below or idx in finished_idx:
                continue
            payload = inp.args
            args = payload.SerializeToString()
            rows.append((input_id, call_id, idx, args))
            if payload.blob_id:  # kept as long as the call's outputs (blob_gc.py)
                payload_blobs.append((call_id, payload.blob_id))
            new.append(InputState(input_id, call, idx, args))
            if idx > top:
                top = idx
        call.sent_up_to = max(call.sent_up_to, top + 1)
        self.store.add_inputs(rows)  # before they are the call's: it may raise DiskFull
        if payload_blobs:
            self.store.add_call_blobs(payload_blobs)
        call.inputs.update((i.input_id, i) for i in new)
        # A full disk may yet undo the transaction they are in (its commit fails): then the
        # caller hears of it (DiskFull from durable()) and the call ends, cancelled.
        self.store.on_durable(lambda: None, lambda e: self._unstored(call, e))
        return new

    def reopen(self, call: CallState, fn: FunctionState, inputs: list[tuple[int, bytes, int]]):
        """Run some inputs of a done call again, on fn (the current version of its function):
        inputs as (idx, serialized Payload, attempts it had). Their new outputs follow the old."""
        new = [InputState(f"{call.call_id}:{idx}", call, idx, args, attempts) for idx, args, attempts in inputs]
        # Written before the call changes: the store may raise DiskFull.
        self.store.reopen_call(call.call_id, fn.function_id, call.num_done - len(new))
        self.store.add_inputs([(inp.input_id, call.call_id, inp.idx, inp.args) for inp in new])
        for inp in new:
            self.store.requeue_input(inp.input_id, inp.attempts, 0, 0)
        call.function = fn
        call.num_done -= len(new)
        call.done_at = None
        call.fetched = False
        self._calls[call.call_id] = call
        call.inputs.update((inp.input_id, inp) for inp in new)
        self.dispatch.submit(fn, new)

    def open_input(self, input_id: str) -> InputState | None:
        """An open input of a call, by its id ("<call id>:<idx>"); None if done or unknown."""
        call = self._calls.get(input_id.rpartition(":")[0])
        return call.inputs.get(input_id) if call is not None else None

    def _unstored(self, call: CallState, e: Exception):
        if call.unstored is None and not call.done():
            log.warning("call %s is cancelled: %s", call.call_id, e)
            call.unstored = e
            self._cancel(call, str(e))

    def _max_idx(self, call: CallState) -> int:
        """The highest index of its inputs, + 1: of all it was given, not only of those still open
        (the last ones may have finished before the client said it sent them all)."""
        return call.sent_up_to

    def cancel_call(self, workspace: str, call_id: str) -> list:
        """Cancel a call; the containers that were running its inputs (ContainerState)."""
        call = self._calls.get(call_id)
        if call is None or call.done() or call.function.app.workspace != workspace:
            return []
        running = list({id(i.container): i.container for i in call.inputs.values()
                        if i.container is not None and not i.done}.values())
        self.write_held(call)
        call.cancelled = True
        self.store.cancel_call(call_id)
        self._cancel(call, "the call was cancelled")
        return running

    def cancel_calls(self, fn: FunctionState, reason: str):
        """End every open call of a function (its app stopped)."""
        for call in [c for c in self._calls.values() if c.function is fn]:
            self._cancel(call, reason)

    def _cancel(self, call: CallState, reason: str):
        """Take no more inputs, and finish every open one as cancelled."""
        if call.num_inputs is None:
            call.num_inputs = max(self._max_idx(call), call.num_done)
            self.store.close_call(call.call_id, call.num_inputs)
        self.dispatch.cancel(call.function, list(call.inputs.values()), reason)

    # ---- outputs

    def record_outputs(self, results: list[tuple[InputState, api_pb2.Output]], log_seq: int = 0):
        """Append outputs to their calls, durably, and wake who waits on them; final ones end
        their inputs (and their leases).

        results: (input, output); an output that is not a GENERATOR_ITEM is final.
        """
        if not results:
            return
        rows, finished, touched, payload_blobs = [], [], {}, []
        born = []  # held calls written here, finished, with their one output
        now = time.time()
        CallOutput, GENERATOR_ITEM, SUCCESS, DEAD = api_pb2.CallOutput, Output.GENERATOR_ITEM, Output.SUCCESS, \
            dead_letters.DEAD
        for inp, out in results:
            if inp.done:
                continue  # already finished (a duplicate after a reconnect, or a cancel race)
            status = out.status
            if inp.web is not None:  # a web request's end: for the gateway, nothing to store
                if status != GENERATOR_ITEM:
                    inp.done = True
                    inp.release()
                    inp.web.finish(out)
                continue
            call = inp.call
            unwritten = False  # its input's rows are not in the store (a held call's)
            if call.held:
                if status == GENERATOR_ITEM or call.num_inputs != 1:
                    self.write_held(call)
                else:  # its one output came first: the call is written done with it, and no input rows
                    call.held = False
                    unwritten = True
                    born.append(call)
            if status in DEAD:
                dead_letters.keep(inp, out)
            seq = call.next_seq
            call.next_seq = seq + 1
            rows.append((call.call_id, seq, out.SerializeToString(), now))
            data = out.data
            if data.blob_id:
                payload_blobs.append((call.call_id, data.blob_id))
            call.outputs.append(CallOutput(seq=seq, output=out, log_seq=log_seq))
            if status != GENERATOR_ITEM:
                input_id = inp.input_id
                del call.inputs[input_id]
                call.finished_idx.add(inp.idx)
                inp.done = True
                container = inp.container
                if container is not None:  # inp.release(), without a call for each output
                    container.held.pop(input_id, None)
                    inp.container = None
                if not unwritten:
                    finished.append(input_id)
                call.num_done += 1
                if status == SUCCESS:
                    call.function.completed += 1
                else:
                    call.function.failed += 1
            if not unwritten:
                touched[call.call_id] = call
        if not rows:
            return  # nothing to store (only web requests ended, or only duplicates came)
        for call in born:
            self.store.create_call(call.call_id, call.function.function_id, call.num_inputs, call.num_done,
                                   call.next_seq)
        self.store.add_outputs(rows, finished, [(c.call_id, c.num_done, c.next_seq) for c in touched.values()])
        if payload_blobs:
            self.store.add_call_blobs(payload_blobs)
        for call in [*touched.values(), *born]:
            if call.done():
                self._call_finished(call)
            self._wake_listeners(call)

    def _wake_listeners(self, call: CallState):
        listeners, call.listeners = call.listeners, []
        for fn in listeners:
            fn(call)

    def _call_finished(self, call: CallState):
        if call.done_at is None:
            call.done_at = self.clock()
            call.finished_at = time.time()

    def when_done(self, call: CallState, callback):
        """Run callback(call) once the call is done: now, if it is."""
        if call.done():
            callback(call)
            return

        def on_output(call):
            if call.done():
                callback(call)
            else:
                call.listeners.append(on_output)

        call.listeners.append(on_output)

    async def read_outputs(self, call: CallState, after_seq: int, limit: int, timeout: float):
        """The call's outputs after after_seq, at most limit; if there are none yet and it is
        not done, the next ones, waiting up to timeout (at most 60 s) for them. Once a caller
        has read a finished call's last output, the call leaves memory sooner."""
        outs = self.outputs_after(call, after_seq, limit)
        if not outs and not call.done() and timeout > 0:
            fut = asyncio.get_running_loop().create_future()

            def wake(_call):
                if not fut.done():
                    fut.set_result(None)

            call.listeners.append(wake)
            try:
                async with asyncio.timeout(min(timeout, 60.0)):
                    await fut
            except TimeoutError:
                pass
            finally:
                if wake in call.listeners:
                    call.listeners.remove(wake)
            outs = self.outputs_after(call, after_seq, limit)
        if outs:
            # Only what is durable is shown. An output shown, then lost (its commit undone: this
            # control plane died, or was cut off from its database) runs again under the next one
            # and is numbered again, at sequence numbers its reader has passed.
            await self.store.durable()
            if not self.dispatch.acting():  # it stepped down meanwhile: these may be undone
                raise NotLeader("this control plane no longer leads: ask the one that does")
        if call.done() and (outs[-1].seq if outs else after_seq) >= call.next_seq - 1:
            call.fetched = True
        return outs

    def outputs_after(self, call: CallState, after_seq: int, limit: int) -> list[api_pb2.CallOutput]:
        first_seq = call.next_seq - len(call.outputs)
        if after_seq + 1 >= first_seq:
            start = after_seq + 1 - first_seq
            return call.outputs[start:start + limit]
        return self.store.outputs(call.call_id, after_seq, limit)

    def last_output(self, call: CallState) -> api_pb2.CallOutput:
        """A finished single-input call's result."""
        return self.outputs_after(call, call.next_seq - 2, 1)[0]

    def lookup_call(self, call_id: str, workspace: str | None = None) -> CallState | None:
        """An open or recently finished call (given a workspace, only one of its own); older ones
        are read back from the store."""
        call = self._calls.get(call_id)
        if call is not None:
            return call if workspace in (None, call.function.app.workspace) else None
        row = self.store.call(call_id)
        if row is None:
            return None
        function_id, num_inputs, num_done, next_seq, cancelled = row
        fn = self.apps.function(function_id) or self.apps.stopped_function(function_id)
        call = CallState(call_id, fn, num_inputs, num_done, next_seq, bool(cancelled))
        if num_inputs is None or num_done < num_inputs:
            # Its app stopped before it finished: it never will.
            call.num_inputs = num_done
        call.done_at = self.clock()
        self._calls[call_id] = call
        return call if workspace in (None, fn.app.workspace) else None

    def calls_of(self, app: AppState, n: int, among: int = 10_000) -> list[CallState]:
        """The app's newest calls in memory (open ones, and those finished in the last minutes),
        at most n, among the latest `among` calls made (or read back from the store): a look that
        costs the same however many calls are in memory."""
        latest = itertools.islice(reversed(self._calls.values()), among)
        return list(itertools.islice((c for c in latest if c.function.app is app), n))

    def busy(self, app: AppState) -> bool:
        """Whether a call of the app's functions may still take inputs or has open ones."""
        return any(call.function.app is app and (call.num_inputs is None or call.inputs)
                   for call in self._calls.values())

    # ---- retention

    def payload_blobs(self) -> set[str]:
        """Blob ids of the results of calls still in memory: their callers may read them, even
        after the store expired them (blob_gc.py keeps them)."""
        return {co.output.data.blob_id for call in self._calls.values() for co in call.outputs
                if co.output.data.blob_id}

    def forget_finished(self, now: float):
        """Finished calls leave memory a minute after their caller read them, else after ten,
        or once their outputs expire if that is sooner; the store keeps their outputs for the
        retention period. Looked at every FORGET_EVERY seconds: a look goes over every call in
        memory (thousands, after many .remote()s)."""
        if now - self._forgot_at < FORGET_EVERY:
            return
        self._forgot_at = now
        read, unread = min(60, self.retention), min(600, self.retention)
        for call_id, call in list(self._calls.items()):
            if call.done_at is not None and not call.listeners and (
                    call.fetched and now - call.done_at > read or now - call.done_at > unread):
                del self._calls[call_id]

    def expire(self):
        """Forget the outputs of calls that finished more than the retention period ago, and log
        lines older than theirs."""
        now = time.time()
        self.store.expire(now - self.retention)
        self.store.expire_logs(now - self.log_retention)
