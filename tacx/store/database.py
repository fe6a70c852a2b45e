"""Connections to the SQLite store: configured, migrated, and explicit transactions.

Every fact lives in one file (`tacx.db` in the home). The CLI uses `connect()` and
`transaction()` directly: its commands are short and synchronous; the engine writes through
the one group-committing `Store` (tacx.store.writer).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tacx.store.errors import StoreError, explain, folder_writable, home_is_file, is_environmental, wal_unreadable
from tacx.store.schema import MIGRATIONS, SCHEMA_VERSION, schema_version
from tacx.home import make_home_dir

BUSY_TIMEOUT_MS = 10_000


def configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Switching a new file to WAL takes a lock no busy handler waits for: two processes
    # opening a fresh home at once (a coordinator starting, a submit) retry here.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION; refuse a database from a newer tacx."""
    version = schema_version(conn)
    if version == SCHEMA_VERSION:
        return
    with transaction(conn):
        # Re-read inside the lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version, SCHEMA_VERSION):
            for statement in statements(MIGRATIONS[step]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def statements(script: str) -> Iterator[str]:
    """A script's statements, one by one (a trigger's body holds semicolons of its own)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def connect(path: Path, *, create: bool = True, any_thread: bool = False) -> sqlite3.Connection:
    """A configured, migrated connection in autocommit mode (transactions are explicit).
    ``any_thread``: used from one thread at a time, not always the same one. Whatever
    goes wrong is a StoreError that says what to do (store_errors.explain)."""
    if problem := home_is_file(path):
        raise problem
    if not create and not path.exists():
        raise FileNotFoundError(path)
    conn: sqlite3.Connection | None = None
    try:
        make_home_dir(path.parent)
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=not any_thread
        )
        conn.row_factory = sqlite3.Row
        configure(conn)
        migrate(conn)
        return conn
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, OSError) or is_environmental(exc):
            raise explain(exc, path) from exc
        raise


def connect_reader(path: Path) -> sqlite3.Connection | None:
    """A connection for commands that only read; None when there is no database yet.

    In a read-only folder SQLite cannot create the -shm file WAL needs. A database
    closed cleanly there has no -wal file: all of it is in tacx.db, which nobody can
    change, so it is read as an immutable file. With a -wal left beside it, its latest
    changes cannot be read: that is said, never shown stale."""
    try:
        return connect(path, create=False)
    except FileNotFoundError:
        return None
    except StoreError as refused:
        wal = Path(f"{path}-wal")
        if not path.is_file() or folder_writable(path.parent):
            raise
        if wal.exists() and wal.stat().st_size > 0:
            raise wal_unreadable(path) from None
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)
        except sqlite3.Error:
            raise refused from None
    conn.row_factory = sqlite3.Row
    try:
        if schema_version(conn) != SCHEMA_VERSION:
            raise StoreError(f"{path} needs upgrading to this tacx's schema, but it is read-only: make it writable")
    except BaseException as exc:
        conn.close()
        if is_environmental(exc):
            raise explain(exc, path) from exc
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front so no upgrade can deadlock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite itself rolls back after some errors (disk full)
            conn.execute("ROLLBACK")
        raise
