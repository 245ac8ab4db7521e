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


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """A line an app's container printed (app.logs, function.logs, call.logs)."""
    message: str
    timestamp: datetime.datetime
    source: str            # "stdout", "stderr" or "system" (Ember's events: a container started, ...)
    object_id: str         # the app, function or call whose logs were read
    context_ids: list[str]  # the call, input and container it was printed for, where known

    def __str__(self):
        return self.message


@dataclasses.dataclass(frozen=True)
class AppInfo:
    """What the control plane knows of a running app."""
    app_id: str
    description: str                # its name
    functions: dict[str, str]       # its functions' and classes' ids, by name
    servers: dict[str, str]         # always empty: Ember has no Modal Servers
    deployed: bool
    version: int                    # a deployed app's version; 0 for one run with app.run()


@dataclasses.dataclass(frozen=True)
class FunctionInfo:
    """A function's resources and options (Modal's FunctionInfo: the fields Ember has; volumes
    and secrets by id)."""

    @dataclasses.dataclass(frozen=True)
    class BatchingInfo:
        max_batch_size: int
        wait_ms: int

    @dataclasses.dataclass(frozen=True)
    class ConcurrencyInfo:
        max_inputs: int | None
        target_inputs: int | None

    cpu: float | tuple[float, float]           # cores reserved, or (reserved, limit)
    memory_mib: int | tuple[int, int]          # MiB reserved, or (reserved, limit)
    gpus: list[tuple[str, int]]                # (type, count): [] for none
    ephemeral_disk_mib: int | None
    timeout: float
    startup_timeout: float | None
    max_retries: int | None
    regions: list[str] | None
    batching_info: BatchingInfo | None
    concurrency_info: ConcurrencyInfo | None
    restrict_modal_access: bool
    block_network: bool
    single_use_containers: bool
    min_containers: int
    max_containers: int | None
    buffer_containers: int
    scaledown_window: float
    volumes: dict[str, str]                    # mount path -> volume id
    secrets: list[str]                         # secret ids
    web_url: str | None

    @classmethod
    def of(cls, d, web_url: str = "") -> "FunctionInfo":
        """From a FunctionDefinition (api.proto)."""
        r = d.resources
        gpu, _, count = r.gpu.partition(":")
        return cls(
            cpu=(r.cpu, r.cpu_limit) if r.cpu_limit else r.cpu,  # a plain cpu= has no limit
            memory_mib=(r.memory_mb, r.memory_limit_mb) if r.memory_limit_mb and r.memory_limit_mb != r.memory_mb
            else r.memory_mb,
            gpus=[(gpu, int(count or 1))] if gpu else [], ephemeral_disk_mib=r.ephemeral_disk_mb or None,
            timeout=d.timeout, startup_timeout=d.startup_timeout or None,
            max_retries=d.retries.max_retries if d.HasField("retries") else None, regions=list(d.regions) or None,
            batching_info=cls.BatchingInfo(d.batch_max_size, d.batch_wait_ms) if d.batch_max_size else None,
            concurrency_info=cls.ConcurrencyInfo(d.max_inputs, d.target_inputs or None) if d.max_inputs > 1
            else None,
            restrict_modal_access=d.restrict_access, block_network=d.block_network,
            single_use_containers=d.inputs_per_container == 1, min_containers=d.min_containers,
            max_containers=d.max_containers or None, buffer_containers=d.buffer_containers,
            scaledown_window=d.scaledown_window, volumes=dict(d.volume_mounts), secrets=list(d.secret_ids),
            web_url=web_url or None)


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


__all__ = ["AppInfo", "DictInfo", "FileEntry", "FileEntryType", "FunctionInfo", "LogEntry", "QueueInfo", "SecretInfo",
           "VolumeInfo"]
