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


class TimeoutError(Error, builtins.TimeoutError):
    """Waiting for a result took longer than the caller allowed."""


class FunctionTimeoutError(TimeoutError):
    """An input ran past its function's `timeout`."""


class InputCancellation(Error):
    """The input (or its whole call) was cancelled."""


class OutputExpiredError(TimeoutError):
    """The call's outputs are no longer kept by the control plane."""


class ConnectionError(Error, builtins.ConnectionError):
    """The control plane cannot be reached."""


class ResourceExhaustedError(Error):
    """The control plane cannot keep what was sent now: its disk is full (the message says where and
    how much is free). What it accepted before is kept, and it takes writes again once there is room."""


# ---------------------------------------------------------------- Modal's other names
# modal.exception's public names, each the nearest of Ember's errors or a subclass of it, so
# that `except modal.exception.X` catches what Ember raises in that case.

class AlreadyExistsError(InvalidError):
    """An object of that name exists already."""


class ConflictError(InvalidError):
    """The request conflicts with the object's current state."""


class PermissionDeniedError(AuthError):
    """The credential is valid but lacks the right to do this."""


class InternalError(ExecutionError):
    """The control plane failed to handle the request."""


class ServiceError(ExecutionError):
    """The control plane answered with an error that is none of the others."""


class UnimplementedError(ExecutionError):
    """The control plane does not implement this request (it may be older than the client)."""


class DataLossError(ExecutionError):
    """Data the request needed is gone."""


class RequestSizeError(InvalidError):
    """The request was too large."""


class VersionError(ExecutionError):
    """The client and the control plane do not speak the same version of the protocol."""


class InternalFailure(ExecutionError):
    """Ember failed in a way that is not the user's code; retried like any other failure."""


class ClientClosed(ConnectionError):
    """The client was closed."""


class LogsFetchError(ExecutionError):
    """The logs could not be fetched."""


class WorkspaceManagementError(AuthError):
    """A workspace could not be managed (Ember's workspaces are managed with `ember workspace`)."""


class MountUploadTimeoutError(TimeoutError):
    """Uploading local files took too long."""


class VolumeUploadTimeoutError(TimeoutError):
    """Uploading files to a volume took too long."""


class InteractiveTimeoutError(TimeoutError):
    """An interactive session timed out (Ember has no interactive sessions)."""


class DeprecationError(UserWarning):
    """A deprecated API was used."""


class ServerWarning(UserWarning):
    """A warning sent by the control plane."""


class AsyncUsageWarning(UserWarning):
    """A blocking interface was used from async code."""


class InternalAPIWarning(UserWarning):
    """An internal API was used."""


class ModuleNotMountable(Exception):
    """A module cannot be shipped to containers."""


# Sandboxes' errors: Ember has no sandboxes yet, so nothing raises these; they exist so that
# `except` clauses naming them work.

class SandboxTimeoutError(TimeoutError):
    """A sandbox ran past its timeout."""


class SandboxTerminatedError(Error):
    """A sandbox was terminated."""


class ExecTimeoutError(TimeoutError):
    """A command in a sandbox ran past its timeout."""


class SnapshotCreationError(Error):
    """A snapshot could not be made."""


class SandboxFilesystemError(Error):
    """A sandbox's filesystem operation failed."""


class SandboxFilesystemNotFoundError(SandboxFilesystemError, FileNotFoundError):
    pass


class SandboxFilesystemDirectoryNotEmptyError(SandboxFilesystemError, OSError):
    pass


class SandboxFilesystemIsADirectoryError(SandboxFilesystemError, IsADirectoryError):
    pass


class SandboxFilesystemNotADirectoryError(SandboxFilesystemError, NotADirectoryError):
    pass


class SandboxFilesystemPermissionError(SandboxFilesystemError, PermissionError):
    pass


class SandboxFilesystemFileTooLargeError(SandboxFilesystemError, OSError):
    pass


class SandboxFilesystemPathAlreadyExistsError(SandboxFilesystemError, FileExistsError):
    pass
