"""@ember.batched: a function called with lists of inputs, as Modal has it.

    @app.function()
    @ember.batched(max_batch_size=64, wait_ms=100)
    def embed(texts: list[str]) -> list[list[float]]:
        return model.encode(texts)

    embed.remote("hello")          # one input; it runs in a batch with others that came with it

Each caller passes one input and gets its own result; the container gathers the inputs that
arrive within wait_ms of the first, up to max_batch_size, calls the function once with a list
per argument, and gives the i-th item of the list it returns to the i-th input (see
container/runtime.py). An exception the function raises reaches every input of its batch.
"""

import inspect

from . import exception
from .function import Function, check_batching


def batched(*, max_batch_size: int, wait_ms: int):
    """Call the function (or method) with lists of up to max_batch_size inputs, gathered for at
    most wait_ms after the first; it returns a list with one result per input."""
    check_batching(max_batch_size, wait_ms)

    def wrap(target):
        if isinstance(target, Function):
            raise exception.InvalidError("@ember.batched() goes below @app.function(), not above it")
        if not callable(target) or inspect.isclass(target):
            raise exception.InvalidError(f"@ember.batched() decorates functions and methods, not {target!r}")
        if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
            raise exception.InvalidError(f"@ember.batched() cannot batch {target.__name__}(), a generator function: "
                                         "it must return a list of results")
        params = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
        if not params or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            raise exception.InvalidError(f"@ember.batched() {target.__name__}() must take named parameters (each "
                                         "gets a list), not none, *args or **kwargs")
        if getattr(target, "_ember_max_inputs", 0) > 1:
            raise exception.InvalidError(f"{target.__name__}(): a function is @ember.batched() or "
                                         "@ember.concurrent(), not both")
        target._ember_batched = (max_batch_size, wait_ms)
        target._ember_method = True  # on a class, a batched method is one of its methods (as in Modal)
        return target

    return wrap
