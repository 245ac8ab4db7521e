"""Dead letters: inputs that ended failed, their retries spent, kept for a look and another try.

Each failed attempt of an input (its error, traceback, container and worker) is noted as it
happens (Dispatch.retry). The failed output that ends the input carries those attempts and the
input's arguments, and is kept as long as any output (--output-retention): a dead letter is
nothing but that output, so it needs no storage or expiry of its own. An input is a dead letter
while its newest final output is a failure.

Retrying one (`ember call retry`) reopens its call with it, on the current version of the
call's function (a deployed app's newest, or the same running app): one more attempt of the
same input, numbered after its last. Its new output follows the old ones in the call, so
FunctionCall.get() (which takes the newest) returns it. Attempts noted before a control-plane
restart are not carried past it; the count of attempts is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..proto import api_pb2
from .retries import FINAL_FAILURES

if TYPE_CHECKING:
    from .apps import Apps
    from .ledger import InputState, Ledger
    from .store import Store

Output = api_pb2.Output
# The ends of an input that make it a dead letter (a cancelled input is not one: it was asked for).
DEAD = (*FINAL_FAILURES, Output.INIT_FAILURE)


def attempt_failed(inp: InputState, out: api_pb2.Output):
    """Note a failed attempt of a call's input, with the container (and worker) that ran it."""
    c = inp.container
    inp.failures.append(api_pb2.FailedAttempt(
        attempt=inp.attempts, status=out.status, error=out.error, traceback=out.traceback,
        container_id=c.container_id if c is not None else "", worker=c.worker.name if c is not None else "",
        at=time.time()))


def keep(inp: InputState, out: api_pb2.Output):
    """What a failed final output keeps of its input: its failed attempts and its arguments."""
    del out.attempts[:]
    out.attempts.extend(inp.failures)
    out.args.ParseFromString(inp.args)


def failed_inputs(outputs: Iterable[api_pb2.Output]) -> dict[int, list[api_pb2.Output]]:
    """The failed inputs among one call's outputs (in seq order): idx -> its failed final outputs,
    oldest first, for each input whose newest final output is a failure."""
    ends: dict[int, list[api_pb2.Output]] = {}
    for out in outputs:
        if out.status == Output.GENERATOR_ITEM:
            continue
        if out.status in DEAD:
            ends.setdefault(out.idx, []).append(out)
        else:
            ends.pop(out.idx, None)  # it succeeded (or was cancelled) since: no longer a dead letter
    return ends


def history(failed: list[api_pb2.Output]) -> list[api_pb2.FailedAttempt]:
    """Every attempt noted across an input's failed ends (a retried one ends more than once)."""
    return [a for out in failed for a in out.attempts]


class DeadLetters:
    def __init__(self, store: Store, apps: Apps, ledger: Ledger):
        self.store = store
        self.apps = apps
        self.ledger = ledger

    def list(self, workspace: str, app: str) -> list[api_pb2.DeadLetter]:
        """The dead letters of a workspace's app (by id or name), oldest first."""
        by_call: dict[str, tuple[str, list[api_pb2.Output]]] = {}
        when: dict[tuple[str, int], float] = {}  # when each input last ended
        for call_id, function_id, data, created_at in self.store.app_outputs(workspace, app):
            out = Output.FromString(data)
            by_call.setdefault(call_id, (function_id, []))[1].append(out)
            when[call_id, out.idx] = created_at
        letters = []
        for call_id, (function_id, outs) in by_call.items():
            name = self._function_name(function_id)
            for idx, failed in failed_inputs(outs).items():
                past = history(failed)
                last = failed[-1]
                letters.append(api_pb2.DeadLetter(
                    call_id=call_id, idx=idx, function_name=name, attempts=max((a.attempt for a in past), default=0),
                    error=last.error, status=last.status, failed_at=when[call_id, idx], history=past))
        return sorted(letters, key=lambda d: (d.failed_at, d.call_id, d.idx))

    def _function_name(self, function_id: str) -> str:
        fn = self.apps.function(function_id)
        if fn is not None:
            return fn.name
        stored = self.store.function(function_id)
        return stored[2].name if stored else function_id

    def retry(self, workspace: str, call_id: str, idxs: list[int]) -> tuple[list[int], int]:
        """Run a done call's failed inputs (all, or those of idxs) again; returns which, and the seq
        their new outputs come after. LookupError: no such call in the workspace; ValueError: the
        call cannot be retried now (it still runs, nothing failed, its app stopped), and why."""
        call = self.ledger.lookup_call(call_id, workspace)
        if call is None:
            raise LookupError(call_id)
        if not call.done():
            raise ValueError(f"call {call_id} still runs: retry its failed inputs once it has ended "
                             "(`ember app failures` lists them)")
        failed = failed_inputs(o.output for o in self.ledger.outputs_after(call, 0, call.next_seq))
        wanted = sorted(set(idxs)) or sorted(failed)
        if not wanted:
            raise ValueError(f"call {call_id} has no failed input to retry: every input succeeded or was cancelled")
        for idx in wanted:
            if idx not in failed:
                raise ValueError(f"input {idx} of call {call_id} did not fail (it has "
                                 f"{call.num_inputs} inputs; the failed ones: {sorted(failed) or 'none'})")
        try:
            fn = self.apps.function_for_call(call.function.function_id, workspace)
        except LookupError as e:
            raise ValueError(f"call {call_id} of {call.function.name}() cannot run again: {e}") from None
        after_seq = call.next_seq - 1
        self.ledger.reopen(call, fn, [(idx, failed[idx][-1].args.SerializeToString(),
                                       max((a.attempt for a in history(failed[idx])), default=0))
                                      for idx in wanted])
        return wanted, after_seq
