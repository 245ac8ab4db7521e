"""Where code runs: on the caller's machine, or in a container while it serves an input.

    if ember.is_local(): ...            # True here, False in a function's container
    ember.current_input_id()            # in a container during an input: its id; else None
    ember.current_function_call_id()    # and its call's (one .remote, .spawn or .map)

The container's runtime sets the input around each call of the user's function, in a context
variable: each input thread and each async input (a task copies its context) sees its own.
"""

import contextlib
import contextvars
import os
import typing



class _Input(typing.NamedTuple):
    input_id: str
    call_id: str


# In a function's container: the id of its app (set by the runtime before the function's code
# loads), which Sandbox.create() there uses when given no running app.
app_id: str | None = None

_current: contextvars.ContextVar[_Input | None] = contextvars.ContextVar("ember_current_input", default=None)


def is_local() -> bool:
    """True on the caller's machine; False inside one of Ember's containers (and in the
    processes its code starts there)."""
    return not os.environ.get("EMBER_CONTAINER_ID")


def current_input_id() -> str | None:
    """The id of the input this container is running now, or None outside one."""
    inp = _current.get()
    return inp.input_id if inp else None


def current_function_call_id() -> str | None:
    """The id of the call (FunctionCall) the current input belongs to, or None outside one."""
    inp = _current.get()
    return inp.call_id if inp else None


class running_input:
    """For the container's runtime: `with running_input(input_id, call_id):` the input the code in
    the block serves. A class, not a @contextmanager generator: it is entered for every input."""

    __slots__ = ("input", "token")

    def __init__(self, input_id: str, call_id: str):
        self.input = _Input(input_id, call_id)

    def __enter__(self):
        self.token = _current.set(self.input)

    def __exit__(self, *exc):
        _current.reset(self.token)


def input_context(input_id: str, call_id: str) -> contextvars.Context:
    """For the container's runtime: a copy of this context that serves the input, for a task of
    its own (a web request's): cheaper than running_input's block around the task's body."""
    ctx = contextvars.copy_context()
    ctx.run(_current.set, _Input(input_id, call_id))
    return ctx


@contextlib.contextmanager
def enable_output(show_progress: bool = True):
    """Accepted as Modal has it. Ember always shows its output while an app runs here (build
    logs, what containers print, web endpoint URLs), so the block changes nothing."""
    yield
