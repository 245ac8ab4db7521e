"""Durable state of the control plane: the `Store` interface, and `open_store` to pick one.

Only what must survive a crash is written here: apps, functions, calls, inputs (with the
container that holds them and their attempt count), outputs, workers and containers, layers,
secrets, proxy tokens, schedule runs, and the objects users name (dicts, queues, volumes). The
scheduler keeps its working copy in memory and writes through this interface; on start it loads
everything that was still open. Protobuf messages are stored as their serialized bytes, and rows
come back as plain tuples in the order each method documents.

Group commit: every write joins one open transaction, committed once the event loop has run
what is already queued (a message to a container or a client goes out first; a commit costs
tens of microseconds). Whoever acknowledges a write to a client awaits `durable()` first.
All writes made in one callback land in the same transaction, so they are atomic. Writes
therefore need a running event loop; reads do not, and see the writes not yet committed.

A full disk: the write that meets it raises DiskFull (server/disk.py), the transaction open
then is undone as a whole, and whoever waits for it (`durable`, `on_durable`) gets DiskFull;
the next write opens a new transaction, so the store is usable again once there is room.

Implementations: SQLite (`sqlite.py`, the embedded default) and PostgreSQL (`postgres.py`, for
a database the team runs). Every implementation passes the one conformance suite, tests/test_store.py.
"""

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable

from ...proto import api_pb2


class StoreError(Exception):
    """The store cannot be opened as asked: an unknown URL, or a database this code cannot use."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (the network to it broke, it restarts): what needed it
    fails, and is tried again (a request answered UNAVAILABLE: its client retries, here or at
    another control plane)."""


class NotLeader(Exception):
    """A write of a control plane that no longer holds the leader lease: another leads now.
    Its transaction was undone; the control plane steps down (leader.py)."""


def open_store(url_or_path: str | os.PathLike) -> "Store":
    """The store at a path or `sqlite://PATH` (SQLite; `sqlite:///abs/path.db`), or at
    `postgresql://USER:PASSWORD@HOST/DATABASE` (PostgreSQL), migrated to this code's schema."""
    target = os.fspath(url_or_path)
    scheme, sep, rest = target.partition("://")
    # Imported here: each implementation brings its own driver.
    if not sep or scheme == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(rest if sep else target)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ModuleNotFoundError as e:
            if e.name != "psycopg":
                raise
            raise StoreError("a PostgreSQL store needs psycopg: pip install 'ember[postgres]'") from None

        return PostgresStore(target)
    raise StoreError(f"cannot open {target}: unknown store {scheme!r}; give a path to an SQLite database "
                     "(or sqlite:///path/to/ember.db), or a postgresql://USER:PASSWORD@HOST/DATABASE URL")


def describe_url(url: str) -> str:
    """A store's URL as logs and messages show it: without its password."""
    url = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


class Store(ABC):
    """Durable state of the control plane. Method groups follow the aggregates below."""

    # observe(seconds) for each commit, from its COMMIT sent to its answer (metrics.py), if set.
    on_commit: Callable[[float], object] | None = None
    # on_undone(error) when a transaction is undone by the database (a statement or its COMMIT
    # failed: the connection was lost, say), if set: what the caller keeps in memory of that
    # transaction is no longer what the store holds (leader.py steps down on it).
    on_undone: Callable[[Exception], object] | None = None

    # ---- group commit

    @abstractmethod
    def commit(self):
        """Commit the open transaction now, if there is one, and wake whoever waits for it.

        Normally called by the store itself once the loop has run what was queued."""

    @abstractmethod
    def on_durable(self, callback: Callable[[], object], on_failure: Callable[[Exception], object] | None = None):
        """Run callback once everything written so far is committed (now, if it is), or
        on_failure(DiskFull) if that transaction cannot be (a full disk undid it)."""

    @abstractmethod
    async def durable(self):
        """Wait until everything written so far is committed: await it before acknowledging a write.
        Raises DiskFull (server/disk.py) if a full disk undid it."""

    @abstractmethod
    def close(self):
        """Commit what is open, then release the database."""

    # ---- the leader lease: several control planes on one database, one leading (leader.py)
    # One row: (holder, url, epoch, expires_at). Lease operations commit at once, on their own,
    # never in the group transaction. expires_at is unix time from the caller's clock: the
    # control planes' clocks must agree to well within a lease (NTP).

    @abstractmethod
    def acquire_lease(self, holder: str, url: str, duration: float) -> int | None:
        """Take the lease for `duration` seconds if no one holds it or its lease has expired (the
        epoch goes up by one when it changes hands), or extend it if `holder` holds it already.
        The epoch now held, or None if another holds it."""

    @abstractmethod
    def renew_lease(self, holder: str, epoch: int, duration: float) -> bool:
        """Extend the lease to `duration` seconds from now; False if (holder, epoch) no longer holds it."""

    @abstractmethod
    def release_lease(self, holder: str, epoch: int):
        """Let the lease go now (a clean stop), so that a standby takes over without waiting."""

    @abstractmethod
    def lease_holder(self) -> tuple[str, str, int, float] | None:
        """(holder, url, epoch, expires_at) of the lease, None if no one ever held it."""

    @abstractmethod
    def fence(self, holder: str, epoch: int, on_fenced: Callable[[], object]):
        """From now on every commit checks, in its own transaction, that (holder, epoch) still holds
        the lease. One that does not is undone: its waiters get NotLeader, on_fenced() is called,
        and every later write raises NotLeader. The check must exclude a takeover between it and
        the commit: SQLite's write lock does; on PostgreSQL, read the row FOR SHARE (an
        acquire_lease that UPDATEs it then waits for this commit, or this check sees it)."""

    # ---- apps and functions
    # An app is an ephemeral run, or a deployed app: one row per version, published by
    # deploy_app with the next version number of its name. state is running, superseded (an
    # older deployed version, draining its calls) or stopped.

    @abstractmethod
    def create_app(self, app_id: str, workspace: str, name: str, deployed: bool = False):
        """A new running app of a workspace (for a deployed one, not published until deploy_app)."""

    @abstractmethod
    def deploy_app(self, app_id: str, version: int, superseded: str | None):
        """Publish app_id as `version` of its name, now; the app it replaces, if any, is superseded."""

    @abstractmethod
    def last_version(self, workspace: str, name: str) -> int:
        """The highest version published under a deployed app's name in a workspace, 0 if none."""

    @abstractmethod
    def deployed_at(self, app_id: str) -> float:
        """When the app was published; now, if it is not (yet) or is unknown."""

    @abstractmethod
    def app_history(self, workspace: str, name: str) -> list[tuple[str, int, float, str, float | None]]:
        """Published versions of a deployed app, newest first:
        (app_id, version, deployed_at, state, stopped_at)."""

    @abstractmethod
    def stop_app(self, app_id: str):
        """The app is stopped, now."""

    @abstractmethod
    def running_apps(self) -> list[tuple[str, str, str, int, int, str]]:
        """Apps running or superseded: (app_id, workspace, name, deployed 0/1, version, state)."""

    @abstractmethod
    def create_function(self, function_id: str, app_id: str, definition: api_pb2.FunctionDefinition):
        """A function of an app, with its definition."""

    @abstractmethod
    def update_function(self, function_id: str, definition: api_pb2.FunctionDefinition):
        """A function's definition changed in place (Function.update_autoscaler)."""

    @abstractmethod
    def functions_of_running_apps(self) -> list[tuple[str, str, api_pb2.FunctionDefinition]]:
        """Functions of apps running or superseded: (function_id, app_id, definition)."""

    @abstractmethod
    def function_origin(self, function_id: str) -> tuple[str, str, str] | None:
        """(workspace, app name, function name) of a function of a deployed app, even a stopped one."""

    @abstractmethod
    def function(self, function_id: str) -> tuple[str, str, api_pb2.FunctionDefinition] | None:
        """(app_id, workspace, definition) of any function, None if unknown."""

    # ---- calls, inputs and outputs
    # A call has inputs numbered by idx, and outputs numbered by seq in the order they came.
    # An input is deleted once its output is recorded; a call is done once num_done reaches
    # num_inputs (known when the call is closed), and forgotten with its outputs by expire.

    @abstractmethod
    def create_call(self, call_id: str, function_id: str, num_inputs: int | None, num_done: int = 0,
                    next_seq: int = 1):
        """A new call; num_inputs is None while more inputs may come (a map being fed). A call
        written once it is done (a held `.remote()`, ledger.py) says so in the same statement."""

    @abstractmethod
    def close_call(self, call_id: str, num_inputs: int):
        """No more inputs will come: the call has num_inputs in all."""

    @abstractmethod
    def cancel_call(self, call_id: str):
        """Mark the call cancelled."""

    @abstractmethod
    def add_inputs(self, rows: list[tuple[str, str, int, bytes]]):
        """Queue inputs: rows of (input_id, call_id, idx, serialized Payload). An input_id that is
        already there is left as it is, so a retried request adds nothing twice."""

    @abstractmethod
    def assign_inputs(self, container_id: str | None, input_ids: list[str]):
        """Record which container holds these inputs (None: queued again). A hint for recovery that
        rides along with the next transaction and opens none: it does not make anything durable."""

    @abstractmethod
    def requeue_input(self, input_id: str, attempts: int, lost: int, available_at: float):
        """Queue an input again, held by no container, not to be run before available_at."""

    @abstractmethod
    def add_outputs(self, rows: list[tuple[str, int, bytes, float]], finished_input_ids: list[str],
                    calls_done: list[tuple[str, int, int]]):
        """Record outputs, drop the inputs they finish, and advance their calls' counters.

        rows: (call_id, seq, serialized Output, time); calls_done: (call_id, num_done, next_seq).
        A call whose num_done reaches its num_inputs is done, now."""

    @abstractmethod
    def add_call_blobs(self, rows: list[tuple[str, str]]):
        """Record that calls' payloads (arguments, results) are in blobs: rows of (call_id, blob_id).
        They are forgotten with the call's outputs, by expire."""

    @abstractmethod
    def payload_blobs(self) -> set[str]:
        """The blob ids of every payload of a call not yet expired."""

    @abstractmethod
    def reopen_call(self, call_id: str, function_id: str, num_done: int):
        """A done call takes some of its inputs again (a retry of its failed ones): it is not done,
        has num_done, and belongs to function_id (the current version of its function) from now on."""

    @abstractmethod
    def app_outputs(self, workspace: str, app: str) -> list[tuple[str, str, bytes, float]]:
        """The outputs kept of the calls of a workspace's app, given by id or by name (every app of
        that name, each version of a deployed one): (call_id, function_id, serialized Output, time),
        by call and then seq."""

    @abstractmethod
    def call(self, call_id: str) -> tuple[str, int | None, int, int, int] | None:
        """(function_id, num_inputs, num_done, next_seq, cancelled 0/1), None if unknown or expired."""

    @abstractmethod
    def open_calls(self) -> list[tuple[str, str, int | None, int, int, int]]:
        """Calls not done, of apps running or superseded (an older version finishes its calls):
        (call_id, function_id, num_inputs, num_done, next_seq, cancelled)."""

    @abstractmethod
    def open_inputs(self, call_id: str) -> list[tuple[str, int, bytes, int, int, str | None, float]]:
        """A call's unfinished inputs by idx: (input_id, idx, args, attempts, lost, container_id, available_at)."""

    @abstractmethod
    def outputs(self, call_id: str, after_seq: int, limit: int) -> list[api_pb2.CallOutput]:
        """Up to limit outputs of a call with seq above after_seq, in seq order."""

    @abstractmethod
    def expire(self, older_than: float):
        """Forget calls done before older_than, their outputs and their payloads' blob ids."""

    # ---- workers and containers

    @abstractmethod
    def upsert_worker(self, r: api_pb2.WorkerRegister, token_id: str):
        """A worker registered (again: its boot, name and resources replace the old ones) with a
        worker token, seen now."""

    @abstractmethod
    def worker_token(self, worker_id: str) -> str | None:
        """The id of the token the worker last registered with; None for a worker never seen."""

    @abstractmethod
    def create_container(self, container_id: str, function_id: str, worker_id: str, boot_id: str,
                         credential_hash: str):
        """A container is starting for a function on a worker (in that worker's boot), with the
        hash of its credential."""

    @abstractmethod
    def container_exited(self, container_id: str, reason: str):
        """The container is gone, now, for reason."""

    @abstractmethod
    def ended_containers(self, workspace: str | None, limit: int) -> list[tuple]:
        """The latest containers to end, of one workspace's apps (None: every one's), newest first:
        (container_id, workspace, app_id, app_name, function_id, worker name, created_at, ended_at,
        exit_reason)."""

    @abstractmethod
    def live_containers(self) -> list[tuple[str, str, str, str, str]]:
        """Containers not exited: (container_id, function_id, worker_id, boot_id, credential_hash)."""

    @abstractmethod
    def container_app(self, container_id: str) -> str | None:
        """The id of the app whose function a container ran (live or exited); None if unknown."""

    # ---- image layers

    @abstractmethod
    def add_layer(self, layer: api_pb2.Layer):
        """A built layer, its archive's blob id ('' for an empty layer) and sizes, used now; a rebuild
        replaces it."""

    @abstractmethod
    def layers(self) -> dict[str, str]:
        """Every layer: layer_id -> blob_id."""

    @abstractmethod
    def layer_rows(self) -> list[tuple[str, str, int, int, float]]:
        """Every layer: (layer_id, blob_id, size, archive_size, when it was last built or used)."""

    @abstractmethod
    def use_layers(self, layer_ids: list[str]):
        """A build used these layers, now."""

    @abstractmethod
    def delete_layers(self, layer_ids: list[str]):
        """Forget layers (their archives are collected)."""

    # ---- blob grants: which workspaces may read a blob (those whose callers put its bytes)

    @abstractmethod
    def grant_blob(self, workspace: str, blob_id: str):
        """The workspace may read the blob from now on (granting it twice is granting it once)."""

    @abstractmethod
    def blob_granted(self, workspace: str, blob_id: str) -> bool:
        """Whether the workspace may read the blob."""

    @abstractmethod
    def forget_blob_grants(self, blob_ids: list[str]):
        """The blobs are gone: nobody's grants to them are kept."""

    # ---- workspaces and tokens (a token is kept as the hash of its secret)

    @abstractmethod
    def workspaces(self) -> list[tuple[str, float, int | None, float | None, int | None, int | None]]:
        """Every workspace by name: (name, created_at, max_containers, max_cpu, max_memory_mb, max_gpus)."""

    @abstractmethod
    def create_workspace(self, name: str):
        """A new workspace, without quotas."""

    @abstractmethod
    def set_workspace_limits(self, name: str, max_containers: int | None, max_cpu: float | None,
                             max_memory_mb: int | None, max_gpus: int | None):
        """A workspace's quotas (None: no limit)."""

    @abstractmethod
    def tokens(self) -> list[tuple]:
        """Every token, oldest first: (token_id, secret_hash, role, workspace, name, created_at,
        expires_at, revoked_at, max_cpu, max_memory_mb)."""

    @abstractmethod
    def add_token(self, row: tuple):
        """A new token, as a row in the order tokens() gives."""

    @abstractmethod
    def revoke_token(self, token_id: str, when: float):
        """The token is refused from `when` on."""

    # ---- usage: what a workspace's containers used, per (app name, function name), by the hour

    @abstractmethod
    def add_usage(self, rows: list[tuple[str, str, str, float, float, float, float, int]]):
        """Add to the hourly totals: rows of (workspace, app_name, function_name, hour (unix seconds of
        its start), cpu_seconds, memory_gib_seconds, gpu_seconds, inputs)."""

    @abstractmethod
    def usage(self, workspace: str | None, since_hour: float) -> list[tuple[str, str, str, float, float, float, int]]:
        """Totals from the hour since_hour on, of one workspace (None: every one), per function:
        (workspace, app_name, function_name, cpu_seconds, memory_gib_seconds, gpu_seconds, inputs),
        ordered by workspace, app and function."""

    @abstractmethod
    def usage_hours(self, workspace: str | None, since_hour: float) -> list[tuple[str, float, float, float, float,
                                                                                    int]]:
        """Totals from the hour since_hour on, of one workspace (None: every one), per workspace and
        hour: (workspace, hour, cpu_seconds, memory_gib_seconds, gpu_seconds, inputs), in that order."""

    # ---- secrets (the store holds only ciphertext), named uniquely per workspace
    # A named secret keeps its id while it exists and after it is deleted (its row stays, its
    # ciphertext erased), so that functions refer to it by id across updates, and one made
    # again under its name is the same secret to them.

    @abstractmethod
    def put_secret(self, secret_id: str, workspace: str, name: str | None, ciphertext: bytes, num_keys: int):
        """A secret; a named one replaces any other of that name, deleted or not. name is None for an anonymous one."""

    @abstractmethod
    def secret_by_name(self, workspace: str, name: str) -> tuple[str, bytes] | None:
        """(secret_id, ciphertext) of the secret named name (not a deleted one)."""

    @abstractmethod
    def secret_id_for_name(self, workspace: str, name: str) -> str | None:
        """The id of the secret named name, whether it exists now or was deleted."""

    @abstractmethod
    def secret_ciphertext(self, secret_id: str) -> tuple[str, bytes] | None:
        """(workspace, ciphertext) of any secret, named or not (not a deleted one)."""

    @abstractmethod
    def deleted_secret(self, secret_id: str) -> tuple[str, str] | None:
        """(workspace, name) of the named secret of that id, if it was deleted."""

    @abstractmethod
    def list_secrets(self, workspace: str) -> list[tuple[str, float, int]]:
        """Named secrets by name (not the deleted ones): (name, created_at, num_keys)."""

    @abstractmethod
    def delete_secret(self, workspace: str, name: str) -> bool:
        """Delete the secret named name (erasing its values); whether there was one."""

    # ---- proxy tokens (of web endpoints that require them)

    @abstractmethod
    def proxy_tokens(self) -> list[tuple[str, str, str, float]]:
        """Every token, oldest first: (token_id, workspace, secret_hash, created_at)."""

    @abstractmethod
    def add_proxy_token(self, token_id: str, workspace: str, secret_hash: str, created_at: float):
        """A new token of a workspace, kept as the hash of its secret."""

    @abstractmethod
    def delete_proxy_token(self, token_id: str):
        """Forget a token (nothing if there is none)."""

    # ---- logs: what apps' containers printed and what the control plane said about them, numbered
    # per app by seq, kept until expire_logs. A line is a tuple (app_id, seq, created_at, workspace,
    # app_name, function_name, container_id, input_id, fd, data, call_id); app_name is '' for an
    # ephemeral app; input_id and call_id are those of the input that printed it, '' for none.

    @abstractmethod
    def add_logs(self, rows: list[tuple]):
        """Keep lines (one batch: a single statement, in the open transaction)."""

    @abstractmethod
    def last_log_seq(self, app_id: str) -> int:
        """The highest seq kept of an app's lines, 0 if none."""

    @abstractmethod
    def app_workspace(self, app_id: str) -> str | None:
        """The workspace of any app, even a stopped one; None if unknown."""

    @abstractmethod
    def logs(self, workspace: str, app_id: str, *, after_seq: int = 0, since: float = 0, until: float = 0,
             function_name: str = "", container_id: str = "", call_id: str = "", search: str = "",
             tail: int = 0, limit: int = 1000) -> list[tuple]:
        """A workspace's app's lines with seq above after_seq, oldest first, up to limit: those from
        `since` and until `until` (unix times; 0: no bound), of one function, container or call, containing
        `search` (as it is: no patterns), and with tail only the last `tail` of those."""

    @abstractmethod
    def expire_logs(self, older_than: float):
        """Forget lines received before older_than."""

    # ---- schedules: the last tick that made a call, per function of a deployed app's name

    @abstractmethod
    def schedule_runs(self) -> dict[tuple[str, str, str], float]:
        """(workspace, app name, function name) -> unix time of its last scheduled run."""

    @abstractmethod
    def set_schedule_run(self, workspace: str, app_name: str, function_name: str, when: float):
        """The function's schedule last ran at `when`."""

    # ---- objects: dicts, queues and volumes of a workspace, named (unique per kind in it) or
    # ephemeral (name None)

    @abstractmethod
    def create_object(self, object_id: str, workspace: str, kind: str, name: str | None):
        """A new object of kind dict, queue or volume."""

    @abstractmethod
    def find_object(self, workspace: str, kind: str, name: str) -> str | None:
        """The object_id of the object of that kind and name."""

    @abstractmethod
    def object_owner(self, object_id: str) -> tuple[str, str] | None:
        """(workspace, kind) of an object, None if unknown."""

    @abstractmethod
    def list_objects(self, workspace: str, kind: str) -> list[tuple[str, str, float, int]]:
        """Named objects of a kind by name: (name, object_id, created_at, size), size being its
        number of entries, items or files."""

    @abstractmethod
    def delete_object(self, object_id: str):
        """Delete an object and everything in it."""

    # ---- dicts: keys and values are opaque bytes (keys compared as bytes)

    @abstractmethod
    def dict_get(self, dict_id: str, key: bytes) -> bytes | None:
        """The value of key, None if absent."""

    @abstractmethod
    def dict_put(self, dict_id: str, items: list[tuple[bytes, bytes]], skip_if_exists: bool) -> bool:
        """Set (key, value) items, or with skip_if_exists only the keys absent; whether anything was written."""

    @abstractmethod
    def dict_delete(self, dict_id: str, key: bytes):
        """Remove key (nothing if absent)."""

    @abstractmethod
    def dict_len(self, dict_id: str) -> int:
        """Number of keys."""

    @abstractmethod
    def dict_items(self, dict_id: str) -> list[tuple[bytes, bytes]]:
        """Every (key, value)."""

    @abstractmethod
    def dict_clear(self, dict_id: str):
        """Remove every key."""

    # ---- queues: items in partitions, FIFO by a seq that increases per queue (the caller picks it)

    @abstractmethod
    def queue_last_seq(self, queue_id: str) -> int:
        """The highest seq held by any partition of the queue, 0 if empty."""

    @abstractmethod
    def queue_put(self, queue_id: str, partition: str, first_seq: int, values: list[bytes]):
        """Append values to a partition, numbered first_seq, first_seq+1, ..."""

    @abstractmethod
    def queue_take(self, queue_id: str, partition: str, n: int) -> list[bytes]:
        """Remove and return up to n values from the front of a partition."""

    @abstractmethod
    def queue_peek(self, queue_id: str, partition: str, after_seq: int, n: int) -> list[tuple[int, bytes]]:
        """Up to n (seq, value) of a partition with seq above after_seq, in order, leaving them there."""

    @abstractmethod
    def queue_len(self, queue_id: str, partition: str | None) -> int:
        """Number of items in a partition, or in the whole queue for None."""

    @abstractmethod
    def queue_clear(self, queue_id: str, partition: str | None):
        """Remove every item of a partition, or of the whole queue for None."""

    # ---- volumes: a manifest of files (their content in the blob store) and a version

    @abstractmethod
    def volume_manifest(self, volume_id: str) -> tuple[int, list[tuple[str, str, int, int, float]]]:
        """(version, files by path), each file (path, blob_id, size, mode, mtime); version 0 before any commit."""

    @abstractmethod
    def volume_commit(self, volume_id: str, files: list[tuple], deleted: list[str]) -> int:
        """Delete paths (a directory: everything under it), then add or replace files given as
        (path, blob_id, size, mode, mtime), as one new version; returns it. The content it deletes
        or replaces stays referenced by the version it was last in (see volume_blobs)."""

    @abstractmethod
    def volume_blobs(self, keep_versions: int) -> set[str]:
        """The blob ids of every volume's files in its newest keep_versions versions (older
        versions are forgotten)."""
