"""The PostgreSQL store: durable state in a database the team already runs (psycopg 3).

It is the SQLite store's queries on another engine: one connection, used from the event loop's
thread, and the same group commit (see the package), each transaction sent in one message (_Db).
The queries SQLite and PostgreSQL both accept are the SQLite store's (their `?` placeholders
filled in here); the ones that differ (INSERT OR IGNORE / OR REPLACE, MAX of two values, row
counts) and the hot paths (inputs in, outputs out: one statement per batch, over a VALUES list)
are written here again.

Reads see the open transaction because they run in it, on the same connection, after its
writes. A transaction PostgreSQL refuses (a statement failed, the connection was lost) is undone
as a whole, and whoever waits for it gets the error; the next write opens a new one, on a new
connection if the old one was lost.
"""

import asyncio
import logging
import select
import time
from collections.abc import Callable

import psycopg

from . import NotLeader, StoreError, StoreUnavailable, describe_url
from .migrate import migrate
from .sqlite import SqliteStore

log = logging.getLogger("ember.server")


class _Db:
    """The connection, as the SQLite store's queries use it (`?` placeholders, `execute`,
    `executemany`), and as the migrations do (`engine`, `describe`, `execute_script`).

    While a transaction is open (`begin`), writes are not sent one by one: each is bound here
    (its parameters quoted by libpq, as literals) and kept, and they go together, in one message,
    with the read that needs them (it must see them) or with the COMMIT. A transaction is then
    one round trip to PostgreSQL, not one per statement; and its COMMIT is awaited by the event
    loop (`commit_async`), not blocking it: meanwhile, writes gather for the next transaction.
    Whatever uses the connection while a COMMIT is on its way waits for it first (`settle`)."""

    engine = "postgres"

    def __init__(self, url: str):
        self.url = url
        self.failed = None  # set by the store: undoes the transaction a failed statement aborted
        self.pending: list[bytes] | None = None  # the open transaction's writes not sent yet; None: none open
        self.begun = False  # whether its BEGIN was sent (with writes a read needed)
        self.inflight: _Commit | None = None  # a COMMIT sent, its answer not yet read
        self.conn = self._connect()
        self._queries: dict[str, str] = {}
        self._parts: dict[str, list[bytes]] = {}

    def _connect(self) -> psycopg.Connection:
        try:
            # autocommit: a read outside a write's transaction is its own, not one left open.
            conn = psycopg.connect(self.url, autocommit=True)
        except psycopg.OperationalError as e:  # it is not there, or not reachable now
            raise StoreUnavailable(f"cannot connect to the database {self.describe()}: {e}".strip()) from e
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to the database {self.describe()}: {e}".strip()) from e
        self._literal = psycopg.adapt.Transformer(conn).as_literal
        return conn

    def describe(self) -> str:
        """The URL without its password."""
        return describe_url(self.url)

    def _query(self, sql: str) -> str:
        query = self._queries.get(sql)
        if query is None:
            query = self._queries[sql] = sql.replace("%", "%%").replace("?", "%s")
        return query

    def bind(self, sql: str, params=()) -> bytes:
        """The statement with its `?` placeholders replaced by its parameters, quoted by libpq."""
        parts = self._parts.get(sql)
        if parts is None:
            parts = self._parts[sql] = [p.encode() for p in sql.split("?")]
        if len(params) != len(parts) - 1:
            raise ValueError(f"{len(parts) - 1} parameters expected, {len(params)} given: {sql}")
        literal = self._quoting()
        out = [parts[0]]
        for value, part in zip(params, parts[1:]):
            out += (literal(value), part)
        return b"".join(out)

    def values(self, rows) -> bytes:
        """Rows as a VALUES list: (a, b), (c, d), ..."""
        literal = self._quoting()
        return b", ".join(b"(" + b", ".join(map(literal, row)) + b")" for row in rows)

    # ---- statements

    def execute(self, sql: str, params=()) -> psycopg.Cursor | None:
        """Run a read now (after the writes it must see); keep a write of the open transaction for
        later (it returns None), or run it now if none is open."""
        if self.pending is not None and not _is_read(sql):
            self.pending.append(self.bind(sql, params))
            return None
        return self.run(sql, params)

    def write(self, statement: bytes):
        """A write bound already (bind, values): kept for the open transaction, or run now."""
        if self.pending is not None:
            self.pending.append(statement)
        else:
            self._checked(lambda: self._live().execute(statement))

    def executemany(self, sql: str, rows):
        if self.pending is not None:
            self.pending.extend(self.bind(sql, row) for row in rows)
            return
        def run():
            self._live().cursor().executemany(self._query(sql), rows)
        self._checked(run)

    def run(self, sql: str, params=()) -> psycopg.Cursor:
        """Run a statement now: a read, or a write whose result is needed. The writes kept go with
        it, in the same message (it sees them); its result is the cursor's."""
        if not self.pending:
            return self._checked(lambda: self._live().execute(self._query(sql), params))
        return self.run_bound(self.bind(sql, params))

    def run_bound(self, statement: bytes) -> psycopg.Cursor:
        """As run, a statement bound already."""
        script = statement if self.pending is None else self._script([statement])

        def run():
            cur = self._live().execute(script)
            while cur.nextset():  # to the last statement's result
                pass
            return cur
        return self._checked(run)

    def execute_script(self, script: str):
        """Several statements, no parameters (a migration)."""
        self._live().execute(script)

    # ---- the open transaction

    def begin(self):
        self.pending, self.begun = [], False

    def _script(self, then: list[bytes]) -> bytes:
        """The writes kept, then more, as one message (opening the transaction, the first time)."""
        statements = ([] if self.begun else [b"BEGIN"]) + self.pending + then
        self.pending, self.begun = [], True
        return b";\n".join(statements)

    def commit_async(self, done: Callable[[psycopg.Error | None], None], check: bytes | None = None):
        """Send what is kept, `check` (a statement that fails to undo it all), and COMMIT, in one
        message, and return; done(None) once PostgreSQL committed it, done(error) if it refused.
        The loop reads the answer (or `settle` does)."""
        if not self.pending and not self.begun:
            self.pending = None
            done(None)
            return
        script = self._script(([check] if check else []) + [b"COMMIT"])
        self.pending, self.begun = None, False
        def answered(error: psycopg.Error | None):
            self.inflight = None  # the connection is free again before anyone hears of it
            if error is not None:
                self._abandon()  # what ran of it before the error, and its aborted transaction
            done(error)

        try:
            conn = self._live()
            conn.pgconn.send_query(script)
        except psycopg.Error as e:
            done(e)
            return
        self.inflight = _Commit(conn, answered)
        self.inflight.start()

    def settle(self):
        """Wait for the COMMIT on its way, if any (the connection carries one query at a time)."""
        if self.inflight is not None:
            self.inflight.wait()

    def rollback(self):
        """Forget the open transaction: what was kept, and what PostgreSQL holds of it."""
        self.pending, self.begun = None, False
        self._abandon()

    def _abandon(self):
        """Roll back the transaction PostgreSQL holds open, if any."""
        if not self.conn.closed and self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                self.conn.execute("ROLLBACK")
            except psycopg.Error:
                log.exception("cannot roll back a failed transaction")

    def _live(self) -> psycopg.Connection:
        self.settle()
        return self._connected()

    def _connected(self) -> psycopg.Connection:
        # A connection is found lost by a statement that failed on it, whose transaction was
        # undone then (failed): none is open on it.
        if self.conn.closed:  # lost (PostgreSQL restarted, the network broke): a new one
            self.conn = self._connect()
        return self.conn

    def _quoting(self):
        """libpq's quoting of a literal for the connection (its encoding and string settings)."""
        self._connected()
        return self._literal

    def _checked(self, run):
        try:
            return run()
        except psycopg.Error as e:
            if self.failed is not None:
                self.failed(e)
            if isinstance(e, psycopg.OperationalError) and self.conn.closed:
                raise StoreUnavailable(f"the connection to the database {self.describe()} was lost: {e}") from e
            raise
        except StoreUnavailable as e:  # lost before, and no new connection now
            if self.failed is not None:
                self.failed(e)
            raise

    def close(self):
        self.settle()
        self.conn.close()


class _Commit:
    """A COMMIT sent on the connection (libpq's asynchronous API), whose answer the event loop
    reads when it comes, or `wait` reads now."""

    def __init__(self, conn: psycopg.Connection, done):
        self.pgconn = conn.pgconn
        self.encoding = conn.info.encoding
        self.fd = self.pgconn.socket
        self.done = done
        self.error: psycopg.Error | None = None
        self.finished = False
        self.loop = None

    def start(self):
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (closing): answered now
            self.wait()
            return
        if self.pgconn.flush():  # a large transaction: the rest goes out as the socket takes it
            self.loop.add_writer(self.fd, self._writable)
        self.loop.add_reader(self.fd, self._readable)

    def _writable(self):
        try:
            if not self.pgconn.flush():
                self.loop.remove_writer(self.fd)
        except psycopg.Error as e:
            self._finish(e)

    def _readable(self):
        try:
            self.pgconn.consume_input()
            self._collect()
        except psycopg.Error as e:
            self._finish(e)

    def _collect(self):
        """Read the results that have come; the last (None) finishes."""
        while not self.finished and not self.pgconn.is_busy():
            result = self.pgconn.get_result()
            if result is None:
                self._finish(None)
            elif result.status == psycopg.pq.ExecStatus.FATAL_ERROR and self.error is None:
                self.error = psycopg.errors.error_from_result(result, encoding=self.encoding)

    def wait(self):
        try:
            while not self.finished:
                writing = self.pgconn.flush()
                select.select([self.fd], [self.fd] if writing else [], [])
                self.pgconn.consume_input()
                self._collect()
        except psycopg.Error as e:
            self._finish(e)

    def _finish(self, error: psycopg.Error | None):
        if self.finished:
            return
        self.finished = True
        if self.loop is not None:
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
        self.done(error or self.error)


FENCED = "ember: the leader lease is in other hands"  # the fence check's error


def _is_read(sql: str) -> bool:
    return sql.lstrip()[:6].upper() in ("SELECT", "WITH")


def _wake(waiters: list[tuple], error: Exception | None):
    """Tell those waiting for a transaction that it committed (error None), or why not."""
    for on_success, on_failure in waiters:
        if isinstance(on_success, asyncio.Future):
            if not on_success.done():
                if error is None:
                    on_success.set_result(None)
                else:
                    on_success.set_exception(error)
        elif error is None:
            on_success()
        elif on_failure is not None:
            on_failure(error)


class PostgresStore(SqliteStore):
    """The whole Store on PostgreSQL (the queries SQLite's store shares with it are inherited)."""

    def __init__(self, url: str):
        self.directory = None  # no disk of the control plane's holds this store
        self.db = _Db(url)
        self.deferred_assignments: list[tuple[str | None, str]] = []  # hints (see SqliteStore)
        self.in_transaction = False
        self.commit_waiters: list[tuple] = []  # (on_success, on_failure) of the open transaction
        self.inflight_waiters: list[tuple] = []  # of the transaction whose COMMIT is on its way
        self.commit_started = 0.0  # when that COMMIT went (perf_counter), for on_commit
        # (holder, epoch) that every commit checks still holds the leader lease (fence), if any.
        self.fenced_by: tuple[str, int] | None = None
        self.on_fenced = None
        self.deposed = False  # a commit found the lease in other hands: every write is refused
        self._lease_conn: psycopg.Connection | None = None  # lease operations: their own transactions
        try:
            migrate(self.db)
        except BaseException:
            self.db.close()
            raise
        self.db.failed = self.failed

    # ---- group commit

    def _write(self):
        if self.deposed:
            raise NotLeader("this control plane no longer holds the leader lease: another one leads now")
        if not self.in_transaction:
            self.db.begin()
            self.in_transaction = True
            asyncio.get_running_loop().call_later(0, self.commit)

    def commit(self):
        """Send the open transaction's COMMIT; its waiters are woken when PostgreSQL answers. While
        the one before is on its way, this one waits for it (and gathers more writes)."""
        if not self.in_transaction or self.db.inflight is not None:
            return  # committed after the one on its way (_committed)
        try:
            self._flush_assignments()
        except (psycopg.Error, StoreUnavailable) as e:
            self.failed(e)  # its waiters are told (unless a failed statement told them already)
            return
        self.in_transaction = False
        self.inflight_waiters, self.commit_waiters = self.commit_waiters, []
        self.commit_started = time.perf_counter()
        self.db.commit_async(self._committed, self._fence_check())

    def _committed(self, error: psycopg.Error | None):
        waiters, self.inflight_waiters = self.inflight_waiters, []
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - self.commit_started)
        if isinstance(error, psycopg.errors.RaiseException) and FENCED in str(error):
            self._deposed(waiters)
            return
        if error is not None:
            log.error("the database refused a commit: %s", error)
            if self.on_undone is not None:
                self.on_undone(error)
        _wake(waiters, error)
        if self.in_transaction:  # writes gathered meanwhile: their turn
            asyncio.get_running_loop().call_soon(self.commit)

    def _flush_assignments(self):
        if not self.deferred_assignments:
            return
        latest = dict((input_id, container) for container, input_id in self.deferred_assignments)
        self.deferred_assignments = []
        # The first row names the type of a column that may be NULL throughout.
        self.db.write(b"UPDATE inputs i SET container_id=d.container_id FROM (VALUES ('', NULL::text), "
                      + self.db.values(latest.items()) + b") AS d(input_id, container_id) WHERE i.input_id=d.input_id")

    def failed(self, e: psycopg.Error) -> Exception:
        """A statement failed: PostgreSQL aborted the whole open transaction, so it is undone, and
        everyone waiting for it is told; the next write opens a fresh one."""
        if not self.in_transaction:
            return e
        self.db.rollback()
        self.in_transaction = False
        self.deferred_assignments = []
        waiters, self.commit_waiters = self.commit_waiters, []
        if self.on_undone is not None:
            self.on_undone(e)
        _wake(waiters, e)
        return e

    def on_durable(self, callback, on_failure=None):
        if self.in_transaction:
            self.commit_waiters.append((callback, on_failure))
        elif self.db.inflight is not None:
            self.inflight_waiters.append((callback, on_failure))
        else:
            callback()

    async def durable(self):
        if self.in_transaction or self.db.inflight is not None:
            fut = asyncio.get_running_loop().create_future()
            self.on_durable(fut, fut)
            try:
                await fut
            except psycopg.OperationalError as e:
                raise StoreUnavailable(f"a commit could not reach the database {self.db.describe()}: {e}") from e

    def close(self):
        self.db.settle()
        self.commit()
        self.db.close()
        if self._lease_conn is not None:
            self._lease_conn.close()

    # ---- the leader lease (see the Store)

    def _fence_check(self) -> bytes | None:
        """A statement that fails unless (holder, epoch) still holds the lease, reading its row FOR
        SHARE: a takeover (an UPDATE of that row) waits for this transaction, or this sees it."""
        if self.fenced_by is None:
            return None
        return self.db.bind(
            "DO $ember_fence$ BEGIN PERFORM 1 FROM leader_lease WHERE name='leader' AND holder=? AND epoch=? "
            f"FOR SHARE; IF NOT FOUND THEN RAISE EXCEPTION '{FENCED}'; END IF; END $ember_fence$", self.fenced_by)

    def _deposed(self, waiters: list[tuple]):
        self.deposed = True
        self.in_transaction = False
        self.db.rollback()  # what was gathered meanwhile goes too
        _, epoch = self.fenced_by
        log.error("the leader lease (epoch %d) is in other hands: this control plane's last writes were undone",
                  epoch)
        err = NotLeader(f"this control plane lost the leader lease (epoch {epoch}): another one leads now")
        waiters, self.commit_waiters = waiters + self.commit_waiters, []
        _wake(waiters, err)
        if self.on_fenced is not None:
            self.on_fenced()

    def fence(self, holder: str, epoch: int, on_fenced):
        self.fenced_by = (holder, epoch)
        self.on_fenced = on_fenced

    def _lease(self) -> psycopg.Connection:
        """The connection of lease operations: each commits at once, never in the group transaction.
        A COMMIT on its way is finished first: its fence check holds the lease row FOR SHARE until
        it commits, and the rest of a large one may be waiting for this loop to send it (an UPDATE
        of the row here, blocking the loop, would wait for it forever)."""
        self.db.settle()
        if self._lease_conn is None or self._lease_conn.closed:
            self._lease_conn = psycopg.connect(self.db.url, autocommit=True)
        return self._lease_conn

    def acquire_lease(self, holder: str, url: str, duration: float) -> int | None:
        now = time.time()
        conn = self._lease()
        with conn.transaction():
            conn.execute("INSERT INTO leader_lease (name, holder, url, epoch, expires_at) VALUES "
                         "('leader', %s, %s, 1, %s) ON CONFLICT (name) DO NOTHING", (holder, url, now + duration))
            conn.execute("UPDATE leader_lease SET epoch = CASE WHEN holder=%s THEN epoch ELSE epoch + 1 END, "
                         "holder=%s, url=%s, expires_at=%s WHERE name='leader' AND (holder=%s OR expires_at<%s)",
                         (holder, holder, url, now + duration, holder, now))
            row = conn.execute("SELECT holder, epoch FROM leader_lease WHERE name='leader'").fetchone()
        return row[1] if row[0] == holder else None

    def renew_lease(self, holder: str, epoch: int, duration: float) -> bool:
        return self._lease().execute("UPDATE leader_lease SET expires_at=%s WHERE name='leader' AND holder=%s "
                                     "AND epoch=%s", (time.time() + duration, holder, epoch)).rowcount == 1

    def release_lease(self, holder: str, epoch: int):
        self._lease().execute("UPDATE leader_lease SET expires_at=0 WHERE name='leader' AND holder=%s AND epoch=%s",
                              (holder, epoch))

    def lease_holder(self) -> tuple[str, str, int, float] | None:
        return self._lease().execute("SELECT holder, url, epoch, expires_at FROM leader_lease "
                                     "WHERE name='leader'").fetchone()



    # ---- the hot paths, one statement per batch

    def add_inputs(self, rows: list[tuple[str, str, int, bytes]]):
        self._write()
        if rows:
            # The arguments apart, as on SQLite (migration 0014: one schema for both).
            self.db.write(b"INSERT INTO inputs (input_id, call_id, idx, args) VALUES "
                          + self.db.values([(*r[:3], b"") for r in rows]) + b" ON CONFLICT DO NOTHING")
            self.db.write(b"INSERT INTO input_args (input_id, args) VALUES "
                          + self.db.values([(r[0], r[3]) for r in rows]) + b" ON CONFLICT DO NOTHING")

    def add_outputs(self, rows, finished_input_ids, calls_done):
        self._write()
        # One statement may not change a row twice: the last of each key counts, as in SQLite.
        outputs = list({(r[0], r[1]): r for r in rows}.values())
        db = self.db
        if outputs:
            db.write(b"INSERT INTO outputs (call_id, seq, output, created_at) VALUES " + db.values(outputs)
                     + b" ON CONFLICT (call_id, seq) DO UPDATE SET output=excluded.output, "
                       b"created_at=excluded.created_at")
        if finished_input_ids:
            db.write(b"DELETE FROM inputs WHERE input_id IN " + db.values([finished_input_ids]))
            db.write(b"DELETE FROM input_args WHERE input_id IN " + db.values([finished_input_ids]))
        done = {cid: (cid, n, seq) for cid, n, seq in calls_done}
        if done:
            db.write(db.bind("UPDATE calls c SET num_done=d.num_done, next_seq=d.next_seq, done_at=CASE WHEN "
                             "c.num_inputs IS NOT NULL AND d.num_done>=c.num_inputs THEN ? ELSE NULL END FROM ",
                             (time.time(),))
                     + b"(VALUES " + db.values(done.values()) + b") AS d(call_id, num_done, next_seq) "
                       b"WHERE c.call_id=d.call_id")

    def add_logs(self, rows: list[tuple]):
        self._write()
        if rows:
            self.db.write(f"INSERT INTO logs ({self.LOG_COLUMNS}) VALUES ".encode() + self.db.values(rows)
                          + b" ON CONFLICT DO NOTHING")

    # ---- what SQLite says another way

    CONTAINS = "strpos(data, ?)>0"
    SUM_INPUTS = "SUM(inputs)::bigint"  # SUM of a BIGINT is a NUMERIC in PostgreSQL

    def add_call_blobs(self, rows: list[tuple[str, str]]):
        self._write()
        self.db.executemany("INSERT INTO call_blobs (call_id, blob_id) VALUES (?, ?) ON CONFLICT DO NOTHING", rows)

    def add_layer(self, layer):
        self._write()
        now = time.time()
        self.db.execute("INSERT INTO layers (layer_id, blob_id, created_at, size, archive_size, used_at) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (layer_id) DO UPDATE SET blob_id=excluded.blob_id, "
                        "created_at=excluded.created_at, size=excluded.size, archive_size=excluded.archive_size, "
                        "used_at=excluded.used_at",
                        (layer.layer_id, layer.blob_id, now, layer.size, layer.archive_size, now))

    def layer_rows(self):
        return self.db.execute("SELECT layer_id, blob_id, size, archive_size, GREATEST(created_at, used_at) "
                               "FROM layers").fetchall()

    def secret_by_name(self, workspace, name):
        return self.db.execute("SELECT secret_id, ciphertext FROM secrets WHERE workspace=? AND name=? "
                               "AND ciphertext!=''::bytea", (workspace, name)).fetchone()

    def secret_ciphertext(self, secret_id):
        return self.db.execute("SELECT workspace, ciphertext FROM secrets WHERE secret_id=? "
                               "AND ciphertext!=''::bytea", (secret_id,)).fetchone()

    def deleted_secret(self, secret_id):
        return self.db.execute("SELECT workspace, name FROM secrets WHERE secret_id=? AND ciphertext=''::bytea",
                               (secret_id,)).fetchone()

    def list_secrets(self, workspace):
        return self.db.execute("SELECT name, created_at, num_keys FROM secrets WHERE workspace=? "
                               "AND name IS NOT NULL AND ciphertext!=''::bytea ORDER BY name",
                               (workspace,)).fetchall()

    def delete_secret(self, workspace, name) -> bool:
        self._write()
        # As SQLite's: the row stays, its values erased.
        return self.db.run("UPDATE secrets SET ciphertext=''::bytea, num_keys=0 WHERE workspace=? AND name=? "
                           "AND ciphertext!=''::bytea", (workspace, name)).rowcount > 0

    def add_usage(self, rows):
        self._write()
        self.db.executemany(
            "INSERT INTO usage AS u (workspace, app_name, function_name, hour, cpu_seconds, memory_gib_seconds, "
            "gpu_seconds, inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workspace, hour, app_name, "
            "function_name) DO UPDATE SET cpu_seconds = u.cpu_seconds + excluded.cpu_seconds, "
            "memory_gib_seconds = u.memory_gib_seconds + excluded.memory_gib_seconds, "
            "gpu_seconds = u.gpu_seconds + excluded.gpu_seconds, inputs = u.inputs + excluded.inputs", rows)

    def usage(self, workspace, since_hour):
        where, args = ("workspace = ? AND hour >= ?", (workspace, since_hour)) if workspace is not None else (
            "hour >= ?", (since_hour,))
        # SUM of a BIGINT is a NUMERIC in PostgreSQL: back to an integer.
        return self.db.execute(
            "SELECT workspace, app_name, function_name, SUM(cpu_seconds), SUM(memory_gib_seconds), SUM(gpu_seconds), "
            f"SUM(inputs)::bigint FROM usage WHERE {where} GROUP BY workspace, app_name, function_name "
            "ORDER BY workspace, app_name, function_name", args).fetchall()

    def set_schedule_run(self, workspace, app_name, function_name, when):
        self._write()
        self.db.execute("INSERT INTO schedule_runs (workspace, app_name, function_name, last_run) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (workspace, app_name, function_name) DO UPDATE SET last_run=excluded.last_run",
                        (workspace, app_name, function_name, when))

    def dict_put(self, dict_id, items, skip_if_exists) -> bool:
        self._write()
        latest = dict(items)  # one statement may not change a key twice: the last value counts
        if not latest:
            return False
        action = b"NOTHING" if skip_if_exists else b"UPDATE SET value=excluded.value"
        return self.db.run_bound(
            b"INSERT INTO dict_entries (dict_id, key, value) VALUES "
            + self.db.values((dict_id, k, v) for k, v in latest.items())
            + b" ON CONFLICT (dict_id, key) DO " + action).rowcount > 0

    def volume_commit(self, volume_id, files, deleted) -> int:
        self._write()
        old = self.db.execute("SELECT version FROM volume_versions WHERE volume_id=?", (volume_id,)).fetchone()
        keep = "INSERT INTO volume_old_blobs (volume_id, version, blob_id) SELECT volume_id, ?, blob_id " \
               "FROM volume_files WHERE volume_id=? AND {} ON CONFLICT DO NOTHING"
        under = "(path=? OR substr(path, 1, ?)=?)"
        for path in deleted:  # a path, or a directory and everything under it
            prefix = path.rstrip("/") + "/"
            if old:
                self.db.execute(keep.format(under), (old[0], volume_id, path, len(prefix), prefix))
            self.db.execute(f"DELETE FROM volume_files WHERE volume_id=? AND {under}",
                            (volume_id, path, len(prefix), prefix))
        latest = list({f[0]: f for f in files}.values())
        if old and latest:
            self.db.executemany(keep.format("path=? AND blob_id!=?"), [(old[0], volume_id, f[0], f[1])
                                                                       for f in latest])
        if latest:
            self.db.executemany(
                "INSERT INTO volume_files (volume_id, path, blob_id, size, mode, mtime) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (volume_id, path) DO UPDATE SET blob_id=excluded.blob_id, size=excluded.size, "
                "mode=excluded.mode, mtime=excluded.mtime", [(volume_id, *f) for f in latest])
        return self.db.run("INSERT INTO volume_versions AS v (volume_id, version) VALUES (?, 1) "
                           "ON CONFLICT (volume_id) DO UPDATE SET version=v.version+1 RETURNING version",
                           (volume_id,)).fetchone()[0]
