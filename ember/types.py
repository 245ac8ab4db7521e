"""The data types Ember's objects return, named as Modal names them (`modal.types`).

    ember.Dict.from_name("cache").info()    # DictInfo(name='cache', created_at=datetime(...), created_by=None)
"""

import dataclasses
import datetime
import enum

from . import exception


class FileEntryType(enum.IntEnum):
    FILE = 1
    DIRECTORY = 2


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """A file or directory of a Volume."""
    path: str
    type: FileEntryType
    mtime: float
    size: int


@dataclasses.dataclass(frozen=True)
class _ObjectInfo:
    name: str | None
    created_at: datetime.datetime | None  # None for an ephemeral object: only named ones are listed
    created_by: str | None = None         # Ember does not record who created an object


class DictInfo(_ObjectInfo):
    """What the control plane knows of a Dict."""


class QueueInfo(_ObjectInfo):
    """What the control plane knows of a Queue."""


class VolumeInfo(_ObjectInfo):
    """What the control plane knows of a Volume."""


@dataclasses.dataclass(frozen=True)
class SecretInfo:
    """What the control plane knows of a Secret (never its values)."""
    name: str | None
    environment_name: str  # always "": Ember has workspaces, not environments
    created_at: datetime.datetime | None
    created_by: str | None
    last_used: datetime.datetime | None  # not recorded by Ember: None


def timestamp(seconds: float) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).astimezone() if seconds else None


def created_before(value, what: str) -> float | None:
    """Modal's `created_before=`: a datetime or an ISO date string, as unix seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise exception.InvalidError(f"{what}: created_before={value!r} is not an ISO date such as "
                                         "'2025-01-31' or '2025-01-31T12:00'") from None
    if not isinstance(value, datetime.datetime):
        raise exception.InvalidError(f"{what}: created_before={value!r}: pass a datetime or an ISO date string")
    if value.tzinfo is None:
        value = value.astimezone()
    return value.timestamp()


__all__ = ["DictInfo", "FileEntry", "FileEntryType", "QueueInfo", "SecretInfo", "VolumeInfo"]
