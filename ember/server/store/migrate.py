"""Numbered schema migrations of the store (SQLite or PostgreSQL), applied when it opens.

`migrations/NNNN_what.sql` holds one change of the schema. Where PostgreSQL needs other SQL (its
types BYTEA, DOUBLE PRECISION and BIGINT; its ALTER TABLE), `NNNN_what.postgres.sql` beside it is
PostgreSQL's instead; a file both engines read alike serves both. A change of stored data that SQL
cannot express (rewriting protobuf messages) is `NNNN_what.py` with a `migrate(db)`, on either engine
(`db.execute` and `db.executemany` with `?` placeholders). The `schema_version` table records each
version applied (one row each); a migration and its row are committed in one transaction, so a
crash leaves the database at one version or the next, never between. Numbers are handed out ahead
to changes made side by side, so one may be missing for a while: every migration not applied yet is
applied, in number order (changes made side by side do not depend on each other). A database with
a version this code does not know is refused rather than used: a newer Ember wrote it, and its
shape may mean things this code does not know.
"""

import importlib.util
import pathlib
import sqlite3
import time

from . import StoreError

MIGRATIONS = pathlib.Path(__file__).with_name("migrations")
VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                 "applied_at DOUBLE PRECISION NOT NULL)")
POSTGRES_SUFFIX = ".postgres.sql"
MIGRATION_LOCK = 0x656D626572  # "ember": the advisory lock PostgreSQL's migrations are made under

# Columns that the code before numbered migrations added to `apps` by hand when they were
# missing. A database from then is adopted by adding them, after which 0001 applies to it.
LEGACY_APPS_COLUMNS = [("deployed", "INTEGER NOT NULL DEFAULT 0"), ("version", "INTEGER NOT NULL DEFAULT 0"),
                       ("deployed_at", "REAL")]


def migrate(db, migrations: pathlib.Path = MIGRATIONS) -> int:
    """Bring the database up to the latest version in `migrations`, and return that version.

    db: an sqlite3.Connection, or the PostgreSQL store's connection (postgres.py), whose engine
    is "postgres"; on PostgreSQL, control planes that start together migrate one after another."""
    engine = _engine(db)
    if engine == "postgres":
        db.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
        try:
            return _migrate(db, engine, migrations)
        finally:
            db.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))
    return _migrate(db, engine, migrations)


def _migrate(db, engine: str, migrations: pathlib.Path) -> int:
    scripts = _scripts(migrations, engine)
    numbers = [v for v, _ in scripts]
    if len(set(numbers)) != len(numbers) or (numbers and numbers[0] != 1):
        raise StoreError(f"migrations in {migrations} must be numbered from 1, each number once (per engine): "
                         f"{[p.name for _, p in scripts]}")
    latest = numbers[-1] if numbers else 0
    applied = applied_versions(db)
    unknown = sorted(applied - set(numbers))
    if unknown:
        raise StoreError(f"the database {_describe(db)} has schema version {unknown[-1]}, but this Ember knows "
                         f"versions {', '.join(map(str, numbers))} only: a newer Ember wrote it; upgrade Ember to use "
                         "it, or give this one a database of its own")
    if engine == "sqlite" and not applied and _has_table(db, "apps"):
        _adopt(db)
    for number, script in scripts:
        if number in applied:
            continue
        record = f"INSERT INTO schema_version (version, applied_at) VALUES ({number}, {time.time()!r});"
        if script.suffix == ".py":
            _run_python(db, script, record)
        else:
            _run(db, f"{script.read_text()}\n;\n{record}")
    return latest


def _scripts(migrations: pathlib.Path, engine: str) -> list[tuple[int, pathlib.Path]]:
    """The migrations for an engine by number: on PostgreSQL, NNNN_name.postgres.sql where there
    is one, else the shared file; on SQLite, every file but those."""
    shared, postgres = {}, {}
    for p in migrations.glob("[0-9]*_*.*"):
        if p.suffix not in (".sql", ".py"):
            continue
        number = int(p.name.split("_", 1)[0])
        if p.name.endswith(POSTGRES_SUFFIX):
            postgres.setdefault(number, []).append(p)
        else:
            shared.setdefault(number, []).append(p)
    chosen = dict(shared)
    if engine == "postgres":
        chosen.update(postgres)
    return sorted((number, p) for number, paths in chosen.items() for p in paths)


def schema_version(db) -> int:
    """The schema version of the database: 0 for an empty one, or one made before migrations."""
    if not _has_table(db, "schema_version"):
        return 0
    return db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]


def applied_versions(db) -> set[int]:
    """The versions of the migrations applied to the database."""
    if not _has_table(db, "schema_version"):
        return set()
    return {row[0] for row in db.execute("SELECT version FROM schema_version")}


def _engine(db) -> str:
    return "sqlite" if isinstance(db, sqlite3.Connection) else db.engine


def _describe(db) -> str:
    if _engine(db) == "sqlite":
        return db.execute("PRAGMA database_list").fetchone()[2]
    return db.describe()


def _adopt(db: sqlite3.Connection):
    """Bring the `apps` table of a database from before migrations to the shape 0001 expects."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(apps)")}
    missing = [f"ALTER TABLE apps ADD COLUMN {column} {decl};" for column, decl in LEGACY_APPS_COLUMNS
               if column not in columns]
    if missing:
        _run(db, "\n".join(missing))


def _has_table(db, name: str) -> bool:
    if _engine(db) == "postgres":
        return db.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _run_python(db, path: pathlib.Path, record: str):
    """Run a Python migration's `migrate(db)` and record it, in one transaction."""
    spec = importlib.util.spec_from_file_location(f"ember_migration_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    db.execute("BEGIN")
    try:
        db.execute(VERSION_TABLE)
        module.migrate(db)
        db.execute(record)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _run(db, script: str):
    """Run a script in one transaction (with the version table in place): all of it, or none."""
    if _engine(db) == "postgres":
        try:
            db.execute_script(f"BEGIN;\n{VERSION_TABLE};\n{script}\nCOMMIT;")
        except BaseException:
            db.execute_script("ROLLBACK")  # a statement failed: the rest, COMMIT too, was skipped
            raise
        return
    try:
        db.executescript(f"BEGIN;\n{VERSION_TABLE};\n{script}\nCOMMIT;")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
