"""Ember's own errors. Each message names the cause and, where there is one, the fix.

Exceptions raised by user code inside a container are re-raised in the caller as their own
type (when they can be unpickled there), with the remote traceback attached as a note.
"""

import builtins


class Error(Exception):
    """Base class of all of Ember's errors."""


class InvalidError(Error):
    """An argument or a declaration is not valid."""


class AuthError(Error):
    """The control plane refused the caller's credential: none, an invalid, expired or revoked
    token, or one without the right to do this."""


class NotFoundError(Error):
    """A named object (app, function, call) does not exist."""


class ExecutionError(Error):
    """Something went wrong running the app, not inside user code."""


class SerializationError(Error):
    """An argument or a result could not be pickled."""


class DeserializationError(Error):
    """A payload could not be unpickled on this side."""


class RemoteError(Error):
    """User code failed remotely and its exception could not be rebuilt here."""


class ContainerExitedError(RemoteError):
    """The container died while it ran the input (crash, os._exit, signal)."""


class OutOfMemoryError(ContainerExitedError):
    """The container was killed for using more memory than its function's `memory=` limit."""


class ImageBuildError(Error):
    """A step of an image failed to build; the message names the step and ends with its output."""


class InitError(RemoteError):
    """The container could not load the function (import error, missing name)."""


class FunctionTimeoutError(Error, builtins.TimeoutError):
    """An input ran past its function's `timeout`."""


class TimeoutError(Error, builtins.TimeoutError):
    """Waiting for a result took longer than the caller allowed."""


class InputCancellation(Error):
    """The input (or its whole call) was cancelled."""


class OutputExpiredError(Error):
    """The call's outputs are no longer kept by the control plane."""


class ConnectionError(Error, builtins.ConnectionError):
    """The control plane cannot be reached."""


class ResourceExhaustedError(Error):
    """The control plane cannot keep what was sent now: its disk is full (the message says where and
    how much is free). What it accepted before is kept, and it takes writes again once there is room."""
