"""Whether and when a failed input runs again, and what counts as an attempt.

An attempt is charged when an input is handed to a container. An attempt that fails on its
own account (the function raised or timed out, or its container exited or ran out of memory
while running it) is used up: the function's retry policy says whether another follows, and
after what backoff. An input whose container never ran it, or vanished without a word (a lost
lease), gets its attempt back and runs again at once, up to MAX_LOST losses. A web request is
answered once, by whoever ran it: it is never retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..proto import api_pb2

if TYPE_CHECKING:
    from .ledger import InputState

Output = api_pb2.Output
# The failures of an attempt that the retry policy covers.
FINAL_FAILURES = (Output.FAILURE, Output.TIMEOUT, Output.CONTAINER_EXITED, Output.OUT_OF_MEMORY)
# A lease lost this many times (container or worker vanished each time) fails the input.
MAX_LOST = 5


def retry_delay(inp: InputState, out: api_pb2.Output) -> float | None:
    """Seconds until the next attempt of an input whose attempt failed with `out`, or None if
    there is none: a web request, no retries left, a generator that already yielded items (they
    went out), or a cancelled call."""
    if inp.web is not None:
        return None
    policy = inp.call.function.definition.retries
    generator_started = any(o.output.status == Output.GENERATOR_ITEM and o.output.input_id == inp.input_id
                            for o in inp.call.outputs[-64:])
    if inp.attempts > policy.max_retries or generator_started or inp.call.cancelled:
        return None
    return min(policy.initial_delay * (policy.backoff_coefficient ** (inp.attempts - 1)), policy.max_delay)


def give_back(inp: InputState, lost: bool) -> bool:
    """An attempt that does not count (it never ran, or its lease was lost): returned, and a
    loss counted. False once the input was lost more than MAX_LOST times: it fails."""
    inp.attempts = max(0, inp.attempts - 1)
    inp.lost += lost
    return inp.lost <= MAX_LOST
