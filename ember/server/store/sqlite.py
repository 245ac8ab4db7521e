"""The SQLite store (WAL): the embedded default, one file next to the control plane.

One connection, used from the event loop's thread. Group commit (see the package): `_write`
opens a transaction on the first write and schedules its commit for when the loop has run
what is already queued; later writes join it.
"""

import asyncio
import fcntl
import json
import logging
import os
import sqlite3
import time

from ...proto import api_pb2
from ..disk import DiskFull, is_disk_full
from . import NotLeader, Store
from .migrate import migrate

log = logging.getLogger("ember.server")

TOKEN_COLUMNS = ("token_id, secret_hash, role, workspace, name, created_at, expires_at, revoked_at, max_cpu, "
                 "max_memory_mb")


class _Db(sqlite3.Connection):
    """A connection whose writes that meet a full disk raise DiskFull (see `_Connection.failed`)."""

    failed = None  # set by _Connection: turns such an error into DiskFull, undoing the transaction

    def execute(self, *args):
        return self._checked(super().execute, args)

    def executemany(self, *args):
        return self._checked(super().executemany, args)

    def _checked(self, run, args):
        try:
            return run(*args)
        except sqlite3.Error as e:
            err = self.failed(e)
            if err is e:
                raise
            raise err from e


class _Connection:
    """The database, and the group commit every write joins."""

    def __init__(self, path: str):
        self.directory = os.path.dirname(os.path.abspath(path))
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=_Db)
        self.db.failed = self.failed
        # Which container holds which input is a hint for recovery after a restart: it rides
        # along with the next transaction instead of paying for a commit of its own. If it is
        # lost in a crash, the input runs again elsewhere (at least once, never lost).
        self.deferred_assignments: list[tuple[str | None, str]] = []  # (container id, input id)
        self.in_transaction = False
        # (on_success, on_failure) of whoever waits for the open transaction; a Future for both.
        self.commit_waiters: list[tuple] = []
        # (holder, epoch) that every commit checks still holds the leader lease (fence), if any.
        self.fenced_by: tuple[str, int] | None = None
        self.on_fenced = None
        self.deposed = False  # a commit found the lease in other hands: every write is refused
        self.db.execute("PRAGMA journal_mode=WAL")
        # Another control plane on this file (a standby) may hold the write lock for a moment.
        self.db.execute("PRAGMA busy_timeout=2000")
        # NORMAL in WAL mode: a commit survives the process being killed (the WAL is written
        # before the call returns); only an OS crash can lose the last transactions.
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Debian builds SQLite to overwrite what is deleted with zeros, page by page: a finished
        # input's arguments (up to 2 MiB inline) were written once more, as zeros, into the WAL,
        # and a batch of them grew it by all of theirs. FAST zeroes what lies on the pages a
        # delete writes anyway, and frees the others as they are.
        self.db.execute("PRAGMA secure_delete=FAST")
        try:
            # Control planes that start at once on one new database (several, one leading) would
            # each apply the same migrations: one at a time, the later ones find nothing to do.
            with open(f"{path}.migrating", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                migrate(self.db)
        except BaseException:
            self.db.close()
            raise

    # ---- group commit

    def _write(self):
        """Join the open transaction, or open one and schedule its commit."""
        if self.deposed:
            raise NotLeader("this control plane no longer holds the leader lease: another one leads now")
        if not self.in_transaction:
            # IMMEDIATE: take the write lock now (waiting for another process's, if any), so that
            # a write after a read in this transaction cannot find its snapshot stale.
            self.db.execute("BEGIN IMMEDIATE")
            self.in_transaction = True
            # call_later(0): after the callbacks already queued in this loop iteration.
            asyncio.get_running_loop().call_later(0, self.commit)

    def commit(self):
        if not self.in_transaction:
            return
        try:
            if self.deferred_assignments:
                # One statement per container (its inputs' ids as a JSON array), not one per
                # input; an input's last assignment counts.
                by_container: dict[str | None, list[str]] = {}
                for input_id, container_id in {i: c for c, i in self.deferred_assignments}.items():
                    by_container.setdefault(container_id, []).append(input_id)
                for container_id, input_ids in by_container.items():
                    self.db.execute("UPDATE inputs SET container_id=? WHERE input_id IN "
                                    "(SELECT value FROM json_each(?))", (container_id, json.dumps(input_ids)))
                self.deferred_assignments = []
            if self.fenced_by is not None and not self._still_leading():
                self._deposed()
                return
            started = time.perf_counter()
            self.db.execute("COMMIT")
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started)
        except DiskFull as e:
            log.error("%s", e)  # its waiters were told (failed)
            return
        self.in_transaction = False
        waiters, self.commit_waiters = self.commit_waiters, []
        for on_success, _ in waiters:
            if isinstance(on_success, asyncio.Future):
                if not on_success.done():
                    on_success.set_result(None)
            else:
                on_success()

    def failed(self, e: sqlite3.Error) -> Exception:
        """What a failed statement raises. A full disk undoes the whole open transaction (SQLite
        may have done so already) and fails everyone waiting for it with DiskFull; the next
        write opens a fresh one, so the store goes on once there is room. Other errors pass."""
        if not is_disk_full(e, self.directory):
            return e
        err = DiskFull(self.directory, "the database (ember.db)")
        if self.db.in_transaction:
            try:
                sqlite3.Connection.execute(self.db, "ROLLBACK")
            except sqlite3.Error:
                log.exception("cannot roll back after a full disk")
        self._undone(err)
        return err

    def _undone(self, err: Exception):
        """The open transaction was rolled back: fail whoever waits for it with err."""
        self.in_transaction = False
        self.deferred_assignments = []  # hints only (above)
        waiters, self.commit_waiters = self.commit_waiters, []
        for on_success, on_failure in waiters:
            if isinstance(on_success, asyncio.Future):
                if not on_success.done():
                    on_success.set_exception(err)
            elif on_failure is not None:
                on_failure(err)

    # ---- the leader lease (see the Store): plain statements, each committed at once

    def _still_leading(self) -> bool:
        """Inside the open transaction, which holds the write lock: no one can take the lease
        between this check and the COMMIT."""
        row = self.db.execute("SELECT holder, epoch FROM leader_lease WHERE name='leader'").fetchone()
        return row is not None and tuple(row) == self.fenced_by

    def _deposed(self):
        sqlite3.Connection.execute(self.db, "ROLLBACK")
        self.deposed = True
        holder, epoch = self.fenced_by
        log.error("the leader lease (epoch %d) is in other hands: this control plane's last writes were undone",
                  epoch)
        self._undone(NotLeader(f"this control plane lost the leader lease (epoch {epoch}): another one leads now"))
        if self.on_fenced is not None:
            self.on_fenced()

    def fence(self, holder: str, epoch: int, on_fenced):
        self.fenced_by = (holder, epoch)
        self.on_fenced = on_fenced

    def acquire_lease(self, holder: str, url: str, duration: float) -> int | None:
        self.commit()
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT INTO leader_lease (name, holder, url, epoch, expires_at) VALUES "
                            "('leader', ?, ?, 1, ?) ON CONFLICT (name) DO NOTHING", (holder, url, now + duration))
            self.db.execute("UPDATE leader_lease SET epoch = CASE WHEN holder=? THEN epoch ELSE epoch + 1 END, "
                            "holder=?, url=?, expires_at=? WHERE name='leader' AND (holder=? OR expires_at<?)",
                            (holder, holder, url, now + duration, holder, now))
            row = self.db.execute("SELECT holder, epoch FROM leader_lease WHERE name='leader'").fetchone()
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                sqlite3.Connection.execute(self.db, "ROLLBACK")
            raise
        return row[1] if row[0] == holder else None

    def renew_lease(self, holder: str, epoch: int, duration: float) -> bool:
        self.commit()
        cur = self.db.execute("UPDATE leader_lease SET expires_at=? WHERE name='leader' AND holder=? AND epoch=?",
                              (time.time() + duration, holder, epoch))
        return cur.rowcount == 1

    def release_lease(self, holder: str, epoch: int):
        self.commit()
        self.db.execute("UPDATE leader_lease SET expires_at=0 WHERE name='leader' AND holder=? AND epoch=?",
                        (holder, epoch))

    def lease_holder(self) -> tuple[str, str, int, float] | None:
        row = self.db.execute("SELECT holder, url, epoch, expires_at FROM leader_lease WHERE name='leader'").fetchone()
        return None if row is None else tuple(row)

    def on_durable(self, callback, on_failure=None):
        if self.in_transaction:
            self.commit_waiters.append((callback, on_failure))
        else:
            callback()

    async def durable(self):
        if self.in_transaction:
            fut = asyncio.get_running_loop().create_future()
            self.commit_waiters.append((fut, fut))
            await fut

    def close(self):
        self.commit()
        self.db.close()


class _Runs(_Connection):
    """What runs: apps, functions, calls with their inputs and outputs, workers and containers."""

    # ---- apps and functions

    def create_app(self, app_id: str, workspace: str, name: str, deployed: bool = False):
        self._write()
        self.db.execute(
            "INSERT INTO apps (app_id, workspace, name, state, created_at, deployed) VALUES (?, ?, ?, 'running', ?, ?)",
            (app_id, workspace, name, time.time(), int(deployed)),
        )

    def deploy_app(self, app_id: str, version: int, superseded: str | None):
        self._write()
        self.db.execute("UPDATE apps SET version=?, deployed_at=? WHERE app_id=?", (version, time.time(), app_id))
        if superseded:
            self.db.execute("UPDATE apps SET state='superseded' WHERE app_id=?", (superseded,))

    def last_version(self, workspace: str, name: str) -> int:
        return self.db.execute("SELECT COALESCE(MAX(version), 0) FROM apps WHERE workspace=? AND name=? "
                               "AND deployed=1", (workspace, name)).fetchone()[0]

    def deployed_at(self, app_id: str) -> float:
        row = self.db.execute("SELECT deployed_at FROM apps WHERE app_id=?", (app_id,)).fetchone()
        return (row[0] if row else None) or time.time()

    def app_history(self, workspace: str, name: str):
        return self.db.execute(
            "SELECT app_id, version, deployed_at, state, stopped_at FROM apps WHERE workspace=? AND name=? "
            "AND deployed=1 AND version>0 ORDER BY version DESC", (workspace, name)).fetchall()

    def stop_app(self, app_id: str):
        self._write()
        self.db.execute(
            "UPDATE apps SET state='stopped', stopped_at=? WHERE app_id=?", (time.time(), app_id)
        )

    def running_apps(self) -> list[tuple[str, str, str, int, int, str]]:
        return self.db.execute("SELECT app_id, workspace, name, deployed, version, state FROM apps "
                               "WHERE state IN ('running', 'superseded')").fetchall()

    def create_function(self, function_id: str, app_id: str, definition: api_pb2.FunctionDefinition):
        self._write()
        self.db.execute(
            "INSERT INTO functions (function_id, app_id, definition, created_at) VALUES (?, ?, ?, ?)",
            (function_id, app_id, definition.SerializeToString(), time.time()),
        )

    def update_function(self, function_id: str, definition: api_pb2.FunctionDefinition):
        self._write()
        self.db.execute("UPDATE functions SET definition=? WHERE function_id=?",
                        (definition.SerializeToString(), function_id))

    def functions_of_running_apps(self):
        rows = self.db.execute(
            "SELECT f.function_id, f.app_id, f.definition FROM functions f "
            "JOIN apps a ON a.app_id = f.app_id WHERE a.state IN ('running', 'superseded')"
        ).fetchall()
        return [(fid, aid, api_pb2.FunctionDefinition.FromString(d)) for fid, aid, d in rows]

    def function_origin(self, function_id: str) -> tuple[str, str, str] | None:
        row = self.db.execute("SELECT a.workspace, a.name, f.definition FROM functions f "
                              "JOIN apps a ON a.app_id=f.app_id WHERE f.function_id=? AND a.deployed=1",
                              (function_id,)).fetchone()
        return None if row is None else (row[0], row[1], api_pb2.FunctionDefinition.FromString(row[2]).name)

    def function(self, function_id: str):
        row = self.db.execute(
            "SELECT f.app_id, a.workspace, f.definition FROM functions f JOIN apps a ON a.app_id=f.app_id "
            "WHERE f.function_id=?", (function_id,)).fetchone()
        return None if row is None else (row[0], row[1], api_pb2.FunctionDefinition.FromString(row[2]))

    # ---- calls, inputs and outputs

    def create_call(self, call_id: str, function_id: str, num_inputs: int | None, num_done: int = 0,
                    next_seq: int = 1):
        self._write()
        now = time.time()
        done_at = now if num_inputs is not None and num_done >= num_inputs else None
        self.db.execute(
            "INSERT INTO calls (call_id, function_id, num_inputs, num_done, next_seq, created_at, done_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (call_id, function_id, num_inputs, num_done, next_seq, now, done_at),
        )

    def close_call(self, call_id: str, num_inputs: int):
        self._write()
        self.db.execute("UPDATE calls SET num_inputs=? WHERE call_id=?", (num_inputs, call_id))

    def cancel_call(self, call_id: str):
        self._write()
        self.db.execute("UPDATE calls SET cancelled=1 WHERE call_id=?", (call_id,))

    def add_inputs(self, rows: list[tuple[str, str, int, bytes]]):
        self._write()
        # The arguments apart (migration 0014): a lease updates the inputs row, and SQLite would
        # write them again with it.
        self.db.executemany(
            "INSERT OR IGNORE INTO inputs (input_id, call_id, idx, args) VALUES (?, ?, ?, X'')",
            [r[:3] for r in rows])
        self.db.executemany("INSERT OR IGNORE INTO input_args (input_id, args) VALUES (?, ?)",
                            [(r[0], r[3]) for r in rows])

    def assign_inputs(self, container_id: str | None, input_ids: list[str]):
        self.deferred_assignments.extend((container_id, i) for i in input_ids)

    def requeue_input(self, input_id: str, attempts: int, lost: int, available_at: float):
        self._write()
        self.db.execute(
            "UPDATE inputs SET container_id=NULL, attempts=?, lost=?, available_at=? WHERE input_id=?",
            (attempts, lost, available_at, input_id),
        )

    def add_outputs(self, rows: list[tuple[str, int, bytes, float]], finished_input_ids: list[str],
                    calls_done: list[tuple[str, int, int]]):
        self._write()
        self.db.executemany(
            "INSERT OR REPLACE INTO outputs (call_id, seq, output, created_at) VALUES (?, ?, ?, ?)", rows
        )
        if finished_input_ids:
            # One statement for the batch (its ids as a JSON array), not one per row: half the cost.
            finished = json.dumps(finished_input_ids)
            self.db.execute("DELETE FROM inputs WHERE input_id IN (SELECT value FROM json_each(?))", (finished,))
            self.db.execute("DELETE FROM input_args WHERE input_id IN (SELECT value FROM json_each(?))", (finished,))
        now = time.time()
        self.db.executemany(
            "UPDATE calls SET num_done=?, next_seq=?, "
            "done_at=CASE WHEN num_inputs IS NOT NULL AND ?>=num_inputs THEN ? ELSE NULL END "
            "WHERE call_id=?",
            [(done, seq, done, now, cid) for cid, done, seq in calls_done],
        )

    def add_call_blobs(self, rows: list[tuple[str, str]]):
        self._write()
        self.db.executemany("INSERT OR IGNORE INTO call_blobs (call_id, blob_id) VALUES (?, ?)", rows)

    def payload_blobs(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT DISTINCT blob_id FROM call_blobs")}

    def reopen_call(self, call_id: str, function_id: str, num_done: int):
        self._write()
        self.db.execute("UPDATE calls SET function_id=?, num_done=?, done_at=NULL WHERE call_id=?",
                        (function_id, num_done, call_id))

    def app_outputs(self, workspace: str, app: str):
        return self.db.execute(
            "SELECT o.call_id, c.function_id, o.output, o.created_at FROM outputs o "
            "JOIN calls c ON c.call_id=o.call_id JOIN functions f ON f.function_id=c.function_id "
            "JOIN apps a ON a.app_id=f.app_id WHERE a.workspace=? AND (a.app_id=? OR a.name=?) "
            "ORDER BY o.call_id, o.seq", (workspace, app, app)).fetchall()

    def call(self, call_id: str):
        return self.db.execute(
            "SELECT function_id, num_inputs, num_done, next_seq, cancelled FROM calls WHERE call_id=?",
            (call_id,),
        ).fetchone()

    def open_calls(self):
        return self.db.execute(
            "SELECT c.call_id, c.function_id, c.num_inputs, c.num_done, c.next_seq, c.cancelled "
            "FROM calls c JOIN functions f ON f.function_id=c.function_id "
            "JOIN apps a ON a.app_id=f.app_id "
            "WHERE c.done_at IS NULL AND a.state IN ('running', 'superseded')"
        ).fetchall()

    def open_inputs(self, call_id: str):
        return self.db.execute(
            "SELECT i.input_id, idx, COALESCE(a.args, i.args), attempts, lost, container_id, available_at "
            "FROM inputs i LEFT JOIN input_args a ON a.input_id=i.input_id WHERE call_id=? ORDER BY idx",
            (call_id,),
        ).fetchall()

    def outputs(self, call_id: str, after_seq: int, limit: int) -> list[api_pb2.CallOutput]:
        rows = self.db.execute(
            "SELECT seq, output FROM outputs WHERE call_id=? AND seq>? ORDER BY seq LIMIT ?",
            (call_id, after_seq, limit),
        ).fetchall()
        return [api_pb2.CallOutput(seq=s, output=api_pb2.Output.FromString(o)) for s, o in rows]

    def expire(self, older_than: float):
        self._write()
        for table in ("outputs", "call_blobs"):
            self.db.execute(f"DELETE FROM {table} WHERE call_id IN (SELECT call_id FROM calls WHERE done_at<?)",
                            (older_than,))
        self.db.execute("DELETE FROM calls WHERE done_at<?", (older_than,))

    # ---- workers and containers

    def upsert_worker(self, r: api_pb2.WorkerRegister, token_id: str):
        self._write()
        self.db.execute(
            "INSERT INTO workers (worker_id, boot_id, name, cpu, memory_mb, last_seen, token_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(worker_id) DO UPDATE SET boot_id=excluded.boot_id, "
            "name=excluded.name, cpu=excluded.cpu, memory_mb=excluded.memory_mb, last_seen=excluded.last_seen, "
            "token_id=excluded.token_id",
            (r.worker_id, r.boot_id, r.name, r.cpu, r.memory_mb, time.time(), token_id),
        )

    def worker_token(self, worker_id: str) -> str | None:
        row = self.db.execute("SELECT token_id FROM workers WHERE worker_id=?", (worker_id,)).fetchone()
        return row[0] if row else None

    def create_container(self, container_id: str, function_id: str, worker_id: str, boot_id: str,
                         credential_hash: str):
        self._write()
        self.db.execute(
            "INSERT INTO containers (container_id, function_id, worker_id, boot_id, state, created_at, "
            "credential_hash) VALUES (?, ?, ?, ?, 'starting', ?, ?)",
            (container_id, function_id, worker_id, boot_id, time.time(), credential_hash),
        )

    def container_exited(self, container_id: str, reason: str):
        self._write()
        self.db.execute(
            "UPDATE containers SET state='exited', exit_reason=?, ended_at=? WHERE container_id=?",
            (reason, time.time(), container_id),
        )

    def ended_containers(self, workspace, limit):
        where, args = ("a.workspace = ?", (workspace,)) if workspace is not None else ("1=1", ())
        return self.db.execute(
            "SELECT c.container_id, a.workspace, a.app_id, a.name, c.function_id, COALESCE(w.name, c.worker_id), "
            "c.created_at, c.ended_at, COALESCE(c.exit_reason, '') FROM containers c "
            "JOIN functions f ON f.function_id=c.function_id JOIN apps a ON a.app_id=f.app_id "
            f"LEFT JOIN workers w ON w.worker_id=c.worker_id WHERE c.state='exited' AND {where} "
            "ORDER BY c.ended_at DESC LIMIT ?", (*args, limit)).fetchall()

    def live_containers(self):
        return self.db.execute(
            "SELECT container_id, function_id, worker_id, boot_id, credential_hash FROM containers "
            "WHERE state!='exited'"
        ).fetchall()

    def container_app(self, container_id: str) -> str | None:
        row = self.db.execute("SELECT f.app_id FROM containers c JOIN functions f ON f.function_id=c.function_id "
                              "WHERE c.container_id=?", (container_id,)).fetchone()
        return row[0] if row else None


class SqliteStore(_Runs, Store):
    """The whole Store: what runs (above), and what lasts beyond runs: image layers, secrets,
    proxy tokens, schedules, and the objects users name (dicts, queues, volumes)."""

    # ---- image layers

    def add_layer(self, layer: api_pb2.Layer):
        self._write()
        now = time.time()
        self.db.execute("INSERT OR REPLACE INTO layers (layer_id, blob_id, created_at, size, archive_size, used_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (layer.layer_id, layer.blob_id, now, layer.size, layer.archive_size, now))

    def layers(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT layer_id, blob_id FROM layers"))

    def layer_rows(self) -> list[tuple[str, str, int, int, float]]:
        return self.db.execute("SELECT layer_id, blob_id, size, archive_size, MAX(created_at, used_at) "
                               "FROM layers").fetchall()

    def use_layers(self, layer_ids: list[str]):
        self._write()
        now = time.time()
        self.db.executemany("UPDATE layers SET used_at=? WHERE layer_id=?", [(now, i) for i in layer_ids])

    def delete_layers(self, layer_ids: list[str]):
        self._write()
        self.db.executemany("DELETE FROM layers WHERE layer_id=?", [(i,) for i in layer_ids])

    # ---- blob grants

    def grant_blob(self, workspace: str, blob_id: str):
        self._write()
        self.db.execute("INSERT INTO blob_grants (workspace, blob_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        (workspace, blob_id))

    def blob_granted(self, workspace: str, blob_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM blob_grants WHERE workspace=? AND blob_id=?",
                               (workspace, blob_id)).fetchone() is not None

    def forget_blob_grants(self, blob_ids: list[str]):
        self._write()
        self.db.executemany("DELETE FROM blob_grants WHERE blob_id=?", [(b,) for b in blob_ids])

    # ---- secrets

    def put_secret(self, secret_id: str, workspace: str, name: str | None, ciphertext: bytes, num_keys: int):
        self._write()
        if name is not None:
            self.db.execute("DELETE FROM secrets WHERE workspace=? AND name=?", (workspace, name))
        self.db.execute("INSERT INTO secrets (secret_id, workspace, name, ciphertext, num_keys, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (secret_id, workspace, name, ciphertext, num_keys, time.time()))

    def secret_by_name(self, workspace: str, name: str) -> tuple[str, bytes] | None:
        return self.db.execute("SELECT secret_id, ciphertext FROM secrets WHERE workspace=? AND name=? "
                               "AND ciphertext!=x''", (workspace, name)).fetchone()

    def secret_id_for_name(self, workspace: str, name: str) -> str | None:
        row = self.db.execute("SELECT secret_id FROM secrets WHERE workspace=? AND name=?",
                              (workspace, name)).fetchone()
        return row[0] if row else None

    def secret_ciphertext(self, secret_id: str) -> tuple[str, bytes] | None:
        return self.db.execute("SELECT workspace, ciphertext FROM secrets WHERE secret_id=? AND ciphertext!=x''",
                               (secret_id,)).fetchone()

    def deleted_secret(self, secret_id: str) -> tuple[str, str] | None:
        return self.db.execute("SELECT workspace, name FROM secrets WHERE secret_id=? AND ciphertext=x''",
                               (secret_id,)).fetchone()

    def list_secrets(self, workspace: str):
        return self.db.execute("SELECT name, created_at, num_keys FROM secrets WHERE workspace=? "
                               "AND name IS NOT NULL AND ciphertext!=x'' ORDER BY name", (workspace,)).fetchall()

    def delete_secret(self, workspace: str, name: str) -> bool:
        self._write()
        before = self.db.total_changes
        # Its row stays, its values erased: an empty ciphertext (a real one is at least 28 bytes)
        # marks a deleted secret (see the Store).
        self.db.execute("UPDATE secrets SET ciphertext=x'', num_keys=0 WHERE workspace=? AND name=? "
                        "AND ciphertext!=x''", (workspace, name))
        return self.db.total_changes > before

    # ---- workspaces and tokens

    def workspaces(self):
        return self.db.execute("SELECT name, created_at, max_containers, max_cpu, max_memory_mb, max_gpus "
                               "FROM workspaces ORDER BY name").fetchall()

    def create_workspace(self, name: str):
        self._write()
        self.db.execute("INSERT INTO workspaces (name, created_at) VALUES (?, ?)", (name, time.time()))

    def set_workspace_limits(self, name: str, max_containers, max_cpu, max_memory_mb, max_gpus):
        self._write()
        self.db.execute("UPDATE workspaces SET max_containers=?, max_cpu=?, max_memory_mb=?, max_gpus=? WHERE name=?",
                        (max_containers, max_cpu, max_memory_mb, max_gpus, name))

    def tokens(self):
        return self.db.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at").fetchall()

    def add_token(self, row: tuple):
        self._write()
        self.db.execute(f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)

    def revoke_token(self, token_id: str, when: float):
        self._write()
        self.db.execute("UPDATE tokens SET revoked_at=? WHERE token_id=?", (when, token_id))

    # ---- proxy tokens

    def proxy_tokens(self) -> list[tuple[str, str, str, float]]:
        return self.db.execute("SELECT token_id, workspace, secret_hash, created_at FROM proxy_tokens "
                               "ORDER BY created_at").fetchall()

    def add_proxy_token(self, token_id: str, workspace: str, secret_hash: str, created_at: float):
        self._write()
        self.db.execute("INSERT INTO proxy_tokens (token_id, workspace, secret_hash, created_at) VALUES (?, ?, ?, ?)",
                        (token_id, workspace, secret_hash, created_at))

    def delete_proxy_token(self, token_id: str):
        self._write()
        self.db.execute("DELETE FROM proxy_tokens WHERE token_id=?", (token_id,))

    # ---- logs

    LOG_COLUMNS = ("app_id, seq, created_at, workspace, app_name, function_name, container_id, input_id, fd, "
                   "data, call_id")

    def add_logs(self, rows: list[tuple]):
        self._write()
        self.db.executemany(f"INSERT OR IGNORE INTO logs ({self.LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            rows)

    def last_log_seq(self, app_id: str) -> int:
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE app_id=?", (app_id,)).fetchone()[0]

    def app_workspace(self, app_id: str) -> str | None:
        row = self.db.execute("SELECT workspace FROM apps WHERE app_id=?", (app_id,)).fetchone()
        return row[0] if row else None

    def logs(self, workspace, app_id, *, after_seq=0, since=0, until=0, function_name="", container_id="",
             call_id="", search="", tail=0, limit=1000):
        where, params = ["workspace=?", "app_id=?", "seq>?"], [workspace, app_id, after_seq]
        for clause, value in (("created_at>=?", since), ("created_at<=?", until),
                              ("function_name=?", function_name), ("container_id=?", container_id),
                              ("call_id=?", call_id)):
            if value:
                where.append(clause)
                params.append(value)
        if search:
            # instr, not LIKE: the text as it is, its % and _ included.
            where.append(self.CONTAINS)
            params.append(search)
        sql = f"SELECT {self.LOG_COLUMNS} FROM logs WHERE {' AND '.join(where)}"
        if tail:
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?) AS t"
            params.append(tail)
        rows = self.db.execute(f"{sql} ORDER BY seq LIMIT ?", (*params, limit)).fetchall()
        return rows

    CONTAINS = "instr(data, ?)>0"

    def expire_logs(self, older_than: float):
        self._write()
        self.db.execute("DELETE FROM logs WHERE created_at<?", (older_than,))

    # ---- schedules

    def add_usage(self, rows):
        self._write()
        self.db.executemany(
            "INSERT INTO usage (workspace, app_name, function_name, hour, cpu_seconds, memory_gib_seconds, "
            "gpu_seconds, inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workspace, hour, app_name, "
            "function_name) DO UPDATE SET cpu_seconds = cpu_seconds + excluded.cpu_seconds, "
            "memory_gib_seconds = memory_gib_seconds + excluded.memory_gib_seconds, "
            "gpu_seconds = gpu_seconds + excluded.gpu_seconds, inputs = inputs + excluded.inputs", rows)

    def usage(self, workspace, since_hour):
        where, args = ("workspace = ? AND hour >= ?", (workspace, since_hour)) if workspace is not None else (
            "hour >= ?", (since_hour,))
        return self.db.execute(
            "SELECT workspace, app_name, function_name, SUM(cpu_seconds), SUM(memory_gib_seconds), SUM(gpu_seconds), "
            f"SUM(inputs) FROM usage WHERE {where} GROUP BY workspace, app_name, function_name "
            "ORDER BY workspace, app_name, function_name", args).fetchall()

    def usage_hours(self, workspace, since_hour):
        where, args = ("workspace = ? AND hour >= ?", (workspace, since_hour)) if workspace is not None else (
            "hour >= ?", (since_hour,))
        return self.db.execute(
            f"SELECT workspace, hour, SUM(cpu_seconds), SUM(memory_gib_seconds), SUM(gpu_seconds), {self.SUM_INPUTS} "
            f"FROM usage WHERE {where} GROUP BY workspace, hour ORDER BY workspace, hour", args).fetchall()

    SUM_INPUTS = "SUM(inputs)"

    def schedule_runs(self) -> dict[tuple[str, str, str], float]:
        return {(w, a, f): t for w, a, f, t in self.db.execute(
            "SELECT workspace, app_name, function_name, last_run FROM schedule_runs")}

    def set_schedule_run(self, workspace: str, app_name: str, function_name: str, when: float):
        self._write()
        self.db.execute("INSERT OR REPLACE INTO schedule_runs (workspace, app_name, function_name, last_run) "
                        "VALUES (?, ?, ?, ?)", (workspace, app_name, function_name, when))

    # ---- objects

    def create_object(self, object_id: str, workspace: str, kind: str, name: str | None):
        self._write()
        self.db.execute("INSERT INTO objects (object_id, workspace, kind, name, created_at) VALUES (?, ?, ?, ?, ?)",
                        (object_id, workspace, kind, name, time.time()))

    def find_object(self, workspace: str, kind: str, name: str) -> str | None:
        row = self.db.execute("SELECT object_id FROM objects WHERE workspace=? AND kind=? AND name=?",
                              (workspace, kind, name)).fetchone()
        return row[0] if row else None

    def object_owner(self, object_id: str) -> tuple[str, str] | None:
        return self.db.execute("SELECT workspace, kind FROM objects WHERE object_id=?", (object_id,)).fetchone()

    def list_objects(self, workspace: str, kind: str):
        table, col = {"dict": ("dict_entries", "dict_id"), "queue": ("queue_items", "queue_id"),
                      "volume": ("volume_files", "volume_id")}[kind]
        return self.db.execute(
            f"SELECT name, object_id, created_at, (SELECT COUNT(*) FROM {table} WHERE {col}=object_id) "
            "FROM objects WHERE workspace=? AND kind=? AND name IS NOT NULL ORDER BY name",
            (workspace, kind)).fetchall()

    def delete_object(self, object_id: str):
        self._write()
        self.db.execute("DELETE FROM objects WHERE object_id=?", (object_id,))
        self.db.execute("DELETE FROM dict_entries WHERE dict_id=?", (object_id,))
        self.db.execute("DELETE FROM queue_items WHERE queue_id=?", (object_id,))
        self.db.execute("DELETE FROM volume_files WHERE volume_id=?", (object_id,))
        self.db.execute("DELETE FROM volume_versions WHERE volume_id=?", (object_id,))
        self.db.execute("DELETE FROM volume_old_blobs WHERE volume_id=?", (object_id,))

    # ---- dicts

    def dict_get(self, dict_id: str, key: bytes) -> bytes | None:
        row = self.db.execute("SELECT value FROM dict_entries WHERE dict_id=? AND key=?", (dict_id, key)).fetchone()
        return row[0] if row else None

    def dict_put(self, dict_id: str, items: list[tuple[bytes, bytes]], skip_if_exists: bool) -> bool:
        self._write()
        verb = "INSERT OR IGNORE" if skip_if_exists else "INSERT OR REPLACE"
        before = self.db.total_changes
        self.db.executemany(f"{verb} INTO dict_entries (dict_id, key, value) VALUES (?, ?, ?)",
                            [(dict_id, k, v) for k, v in items])
        return self.db.total_changes > before

    def dict_delete(self, dict_id: str, key: bytes):
        self._write()
        self.db.execute("DELETE FROM dict_entries WHERE dict_id=? AND key=?", (dict_id, key))

    def dict_len(self, dict_id: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM dict_entries WHERE dict_id=?", (dict_id,)).fetchone()[0]

    def dict_items(self, dict_id: str) -> list[tuple[bytes, bytes]]:
        return self.db.execute("SELECT key, value FROM dict_entries WHERE dict_id=?", (dict_id,)).fetchall()

    def dict_clear(self, dict_id: str):
        self._write()
        self.db.execute("DELETE FROM dict_entries WHERE dict_id=?", (dict_id,))

    # ---- queues

    def queue_last_seq(self, queue_id: str) -> int:
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM queue_items WHERE queue_id=?",
                               (queue_id,)).fetchone()[0]

    def queue_put(self, queue_id: str, partition: str, first_seq: int, values: list[bytes]):
        self._write()
        self.db.executemany("INSERT INTO queue_items (queue_id, partition, seq, value) VALUES (?, ?, ?, ?)",
                            [(queue_id, partition, first_seq + i, v) for i, v in enumerate(values)])

    def queue_take(self, queue_id: str, partition: str, n: int) -> list[bytes]:
        rows = self.db.execute("SELECT seq, value FROM queue_items WHERE queue_id=? AND partition=? "
                               "ORDER BY seq LIMIT ?", (queue_id, partition, n)).fetchall()
        if rows:
            self._write()
            self.db.execute("DELETE FROM queue_items WHERE queue_id=? AND partition=? AND seq<=?",
                            (queue_id, partition, rows[-1][0]))
        return [v for _, v in rows]

    def queue_peek(self, queue_id: str, partition: str, after_seq: int, n: int) -> list[tuple[int, bytes]]:
        return self.db.execute("SELECT seq, value FROM queue_items WHERE queue_id=? AND partition=? AND seq>? "
                               "ORDER BY seq LIMIT ?", (queue_id, partition, after_seq, n)).fetchall()

    def queue_len(self, queue_id: str, partition: str | None) -> int:
        if partition is None:
            return self.db.execute("SELECT COUNT(*) FROM queue_items WHERE queue_id=?", (queue_id,)).fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM queue_items WHERE queue_id=? AND partition=?",
                               (queue_id, partition)).fetchone()[0]

    def queue_clear(self, queue_id: str, partition: str | None):
        self._write()
        if partition is None:
            self.db.execute("DELETE FROM queue_items WHERE queue_id=?", (queue_id,))
        else:
            self.db.execute("DELETE FROM queue_items WHERE queue_id=? AND partition=?", (queue_id, partition))

    # ---- volumes

    def volume_manifest(self, volume_id: str) -> tuple[int, list[tuple]]:
        row = self.db.execute("SELECT version FROM volume_versions WHERE volume_id=?", (volume_id,)).fetchone()
        files = self.db.execute("SELECT path, blob_id, size, mode, mtime FROM volume_files WHERE volume_id=? "
                                "ORDER BY path", (volume_id,)).fetchall()
        return (row[0] if row else 0), files

    def volume_commit(self, volume_id: str, files: list[tuple], deleted: list[str]) -> int:
        self._write()
        # What this commit deletes or replaces stays referenced by the version it was last in.
        old = self.db.execute("SELECT version FROM volume_versions WHERE volume_id=?", (volume_id,)).fetchone()
        keep = "INSERT OR IGNORE INTO volume_old_blobs (volume_id, version, blob_id) SELECT volume_id, ?, blob_id " \
               "FROM volume_files WHERE volume_id=? AND "
        for path in deleted:  # a path, or a directory and everything under it
            prefix = path.rstrip("/") + "/"
            if old:
                self.db.execute(keep + "(path=? OR substr(path, 1, ?)=?)", (old[0], volume_id, path, len(prefix),
                                                                            prefix))
            self.db.execute("DELETE FROM volume_files WHERE volume_id=? AND (path=? OR substr(path, 1, ?)=?)",
                            (volume_id, path, len(prefix), prefix))
        if old:
            self.db.executemany(keep + "path=? AND blob_id!=?", [(old[0], volume_id, f[0], f[1]) for f in files])
        self.db.executemany("INSERT OR REPLACE INTO volume_files (volume_id, path, blob_id, size, mode, mtime) "
                            "VALUES (?, ?, ?, ?, ?, ?)", [(volume_id, *f) for f in files])
        self.db.execute("INSERT INTO volume_versions (volume_id, version) VALUES (?, 1) "
                        "ON CONFLICT(volume_id) DO UPDATE SET version=version+1", (volume_id,))
        return self.db.execute("SELECT version FROM volume_versions WHERE volume_id=?", (volume_id,)).fetchone()[0]

    def volume_blobs(self, keep_versions: int) -> set[str]:
        self._write()
        # Content of versions older than the newest keep_versions is no longer kept.
        self.db.execute("DELETE FROM volume_old_blobs WHERE version <= (SELECT v.version - ? FROM volume_versions v "
                        "WHERE v.volume_id=volume_old_blobs.volume_id)", (keep_versions,))
        return {row[0] for row in self.db.execute(
            "SELECT blob_id FROM volume_files UNION SELECT blob_id FROM volume_old_blobs")}
