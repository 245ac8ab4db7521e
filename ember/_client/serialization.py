"""cloudpickle for arguments, results and exceptions, with errors that name the culprit.

Used on both sides: by the client (arguments out, results in) and by the container runtime
(arguments in, results out).
"""

import pickle
import traceback

import cloudpickle

from .. import exception
from ..proto import api_pb2

REMOTE_TRACEBACK = "Remote traceback"  # how the note with a container's traceback begins


_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
_SMALL = 16  # items of a tuple, list or dict looked through for _plain (a longer one goes to cloudpickle)


def _plain(obj, depth: int = 3) -> bool:
    """Whether obj is only builtin scalars in small tuples, lists and dicts (a map's usual argument
    or result): pickle's own C pickler writes those byte for byte as cloudpickle does, without
    setting up cloudpickle's Pickler (most of the cost of pickling one small value)."""
    t = type(obj)
    if t in _SCALARS:
        return True
    if depth == 0 or t not in (tuple, list, dict) or len(obj) > _SMALL:
        return False
    # Loops, not all(...) over a generator: this is on every input's path, and must cost far
    # less than the pickling it saves.
    if t is dict:
        for k, v in obj.items():
            if type(k) not in _SCALARS or type(v) not in _SCALARS and not _plain(v, depth - 1):
                return False
        return True
    for x in obj:
        if type(x) not in _SCALARS and not _plain(x, depth - 1):
            return False
    return True


def dumps(obj) -> bytes:
    """obj pickled, the bytes cloudpickle gives (a Dict's keys are compared by them)."""
    if _plain(obj):
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def serialize_args(function_name: str, args: tuple, kwargs: dict) -> bytes:
    try:
        return dumps((args, kwargs))
    except Exception as e:  # noqa: BLE001 - pickling raises anything
        culprit = _find_unpicklable(args, kwargs)
        raise exception.SerializationError(
            f"{culprit} of {function_name}() cannot be pickled ({type(e).__name__}: {e}). "
            "Arguments travel to the container with cloudpickle: pass plain data "
            "(numbers, strings, containers, arrays, dataclasses) and create locks, sockets, "
            "files and clients inside the function instead."
        ) from None


def _find_unpicklable(args: tuple, kwargs: dict) -> str:
    for i, a in enumerate(args):
        try:
            dumps(a)
        except Exception:  # noqa: BLE001
            return f"Argument {i} ({type(a).__name__})"
    for k, v in kwargs.items():
        try:
            dumps(v)
        except Exception:  # noqa: BLE001
            return f"Argument {k!r} ({type(v).__name__})"
    return "An argument"


def deserialize(data: bytes, what: str):
    try:
        return cloudpickle.loads(data)
    except Exception as e:
        raise exception.DeserializationError(
            f"Could not unpickle {what} ({type(e).__name__}: {e}). The same packages, at "
            "compatible versions, must be importable on both sides."
        ) from e


def serialize_result(function_name: str, value) -> tuple[bytes | None, str]:
    """Returns (data, error): the pickled value, or None and a message naming the problem."""
    try:
        return dumps(value), ""
    except Exception as e:  # noqa: BLE001 - pickling raises anything
        return None, (
            f"The result of {function_name}() ({type(value).__name__}) cannot be pickled "
            f"({type(e).__name__}: {e}). Return plain data that cloudpickle can serialize."
        )


def serialize_exception(exc: BaseException) -> tuple[bytes, str, str]:
    """Returns (pickled exception or b"", one-line description, formatted traceback)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    line = f"{type(exc).__name__}: {exc}"
    try:
        data = dumps(exc)
        # An exception that pickles but cannot be rebuilt (custom __init__) is no use remotely.
        pickle.loads(data)
    except Exception:  # noqa: BLE001 - and so does unpickling
        data = b""
    return data, line, tb


def exception_from_output(output: api_pb2.Output, data: bytes, function_name: str) -> BaseException:
    """Rebuild the error an output describes, as the exception to raise in the caller."""
    S = api_pb2.Output
    where = f"{function_name}()"
    if output.status == S.TIMEOUT:
        return exception.FunctionTimeoutError(f"{where} {output.error}")
    if output.status == S.CANCELLED:
        return exception.InputCancellation(f"{where}: {output.error or 'the call was cancelled'}")
    if output.status == S.OUT_OF_MEMORY:
        return exception.OutOfMemoryError(f"{where}: {output.error}")
    if output.status == S.CONTAINER_EXITED:
        return exception.ContainerExitedError(f"{where}: {output.error}")
    if output.status == S.INIT_FAILURE:
        err = exception.InitError(f"{where} could not be loaded in its container: {output.error}")
        if output.traceback:
            err.add_note(f"{REMOTE_TRACEBACK}:\n{output.traceback.rstrip()}")
        return err
    exc = None
    if data:
        try:
            exc = pickle.loads(data)
        except Exception:  # noqa: BLE001 - a class missing here, a custom __init__: not rebuilt
            exc = None
    if not isinstance(exc, BaseException):
        exc = exception.RemoteError(f"{where} raised {output.error}")
    if output.traceback:
        exc.add_note(f"{REMOTE_TRACEBACK} (from {where}):\n{output.traceback.rstrip()}")
    return exc


def is_remote(exc: BaseException) -> bool:
    """Whether exc was rebuilt here from a container's output (its traceback is the remote one)."""
    return any(note.startswith(REMOTE_TRACEBACK) for note in getattr(exc, "__notes__", ()))

