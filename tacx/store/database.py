"""The SQLite store: schema, migrations, connections and the one group-committing writer.

Every fact lives in one file (`tacx.db` in the home). Writes from the engine go through
`Store.write`, which queues a plain function and runs every function queued meanwhile in
one `BEGIN IMMEDIATE` transaction on aiosqlite's thread: one round trip and one commit
for many transitions. The CLI uses `connect()` and `transaction()` directly: its
commands are short and synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Callable, Iterator

import aiosqlite

from tacx.store.errors import StoreError, explain, folder_writable, home_is_file, is_environmental, wal_unreadable

T = TypeVar("T")
log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY,
    trace_id         TEXT NOT NULL,
    workflow         TEXT NOT NULL,
    workflow_path    TEXT NOT NULL,
    workflow_text    TEXT NOT NULL,
    workflow_hash    TEXT NOT NULL,
    title            TEXT NOT NULL,
    inputs           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    dedupe_key       TEXT,
    project_root     TEXT NOT NULL,
    workspace        TEXT,
    error            TEXT,
    wait_reason      TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    started_at       REAL,
    ended_at         REAL
);
CREATE INDEX tasks_queue ON tasks(status, priority DESC, id);
CREATE INDEX tasks_dedupe ON tasks(dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX tasks_cancel ON tasks(cancel_requested) WHERE cancel_requested = 1;
CREATE TABLE stages (
    id                 INTEGER PRIMARY KEY,
    task_id            INTEGER NOT NULL REFERENCES tasks(id),
    name               TEXT NOT NULL,
    position           INTEGER NOT NULL,
    status             TEXT NOT NULL DEFAULT 'pending',
    attempt            INTEGER NOT NULL DEFAULT 0,
    failures           INTEGER NOT NULL DEFAULT 0,
    loops              INTEGER NOT NULL DEFAULT 0,
    provider           TEXT,
    model              TEXT,
    exit_code          INTEGER,
    started_at         REAL,
    ended_at           REAL,
    error              TEXT,
    result             TEXT,
    wait_reason        TEXT,
    session_id         TEXT,
    log_path           TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0,
    UNIQUE (task_id, name)
);
CREATE TABLE daughters (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    stage_id    INTEGER NOT NULL REFERENCES stages(id),
    stage       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    create_time REAL NOT NULL,
    argv        TEXT NOT NULL,
    log_path    TEXT NOT NULL,
    status_path TEXT NOT NULL,
    started_at  REAL NOT NULL,
    ended_at    REAL,
    exit_code   INTEGER,
    signal      INTEGER,
    peak_rss    INTEGER,
    cpu_seconds REAL
);
CREATE INDEX daughters_open ON daughters(ended_at) WHERE ended_at IS NULL;
CREATE INDEX daughters_stage ON daughters(stage_id);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    task_id INTEGER,
    stage   TEXT,
    ts      REAL NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_task ON events(task_id, id);
CREATE TABLE usage (
    id                 INTEGER PRIMARY KEY,
    task_id            INTEGER NOT NULL,
    stage_id           INTEGER NOT NULL,
    ts                 REAL NOT NULL,
    message_id         TEXT,
    model              TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0
);
CREATE INDEX usage_stage ON usage(stage_id);
"""

# Agents: usage rows per attempt and message (a log parsed again after a crash counts
# nothing twice), what each agent said about itself, the task's git worktree, and what a
# task had spent when it was last retried (its budget counts from there).
_SCHEMA_V2 = """
ALTER TABLE usage ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX usage_message ON usage(stage_id, attempt, message_id);
CREATE INDEX usage_ts ON usage(ts);
ALTER TABLE stages ADD COLUMN turns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stages ADD COLUMN api_retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stages ADD COLUMN rate_limits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stages ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN branch TEXT;
ALTER TABLE tasks ADD COLUMN base_commit TEXT;
ALTER TABLE tasks ADD COLUMN budget_base_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN budget_base_tokens INTEGER NOT NULL DEFAULT 0;
CREATE INDEX usage_task ON usage(task_id, stage_id, attempt);
"""

# Forward migrations: MIGRATIONS[n] takes a database from user_version n to n + 1.
MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2]
SCHEMA_VERSION = len(MIGRATIONS)


def _configure(conn: sqlite3.Connection) -> None:
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
    version = _schema_version(conn)
    if version == SCHEMA_VERSION:
        return
    with transaction(conn):
        # Re-read inside the lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        name = conn.execute("PRAGMA database_list").fetchone()[2] or "the database"
        raise StoreError(
            f"{name} has schema version {version}, newer than this tacx understands ({SCHEMA_VERSION}): upgrade tacx"
        )
    return version


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
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=not any_thread
        )
        conn.row_factory = sqlite3.Row
        _configure(conn)
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
        if _schema_version(conn) != SCHEMA_VERSION:
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


WriteFn = Callable[[sqlite3.Connection], Any]


class Store:
    """The engine's one writer connection, with group commit.

    `write(fn)` queues `fn(conn)`; a single drain task hands everything queued so far to
    aiosqlite's thread as one batch inside one transaction. Each function runs in its own
    SAVEPOINT, so one failing write rolls back alone and raises in its caller. The
    returned future resolves after COMMIT: a transition is durable before anyone acts on
    it. FIFO order is kept, so callers may skip awaiting writes nothing depends on.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._queue: list[tuple[WriteFn, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.writes = 0
        self.failure: StoreError | None = None  # the first time the file or disk refused: the CLI ends with it
        # Called once with that failure: the engine's host stops the coordinator, which would
        # otherwise retry what the store keeps refusing (a corrupt page, a full disk).
        self.on_failure: Callable[[StoreError], None] | None = None

    async def open(self) -> Store:
        """Open and migrate. On any failure aiosqlite's thread is ended before the error
        leaves: a thread left running keeps the process from ever exiting."""
        if problem := home_is_file(self.path):
            raise problem
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = aiosqlite.connect(self.path, isolation_level=None)
            _as_daemon(db)
            self._db = db
            await db
            db.row_factory = sqlite3.Row
            await self._run(lambda conn: (_configure(conn), migrate(conn)))
        except BaseException as exc:
            await self._release()
            if isinstance(exc, OSError) or is_environmental(exc):
                raise self._failed(exc) from exc
            raise
        self._drainer = asyncio.create_task(self._drain(), name="tacx-store-writer")
        return self

    async def close(self) -> None:
        """Finish the queued writes, optimize, and end aiosqlite's thread on every path;
        a failing last step (PRAGMA optimize on a full disk) raises after that."""
        if self._db is None:
            return
        self._closing = True
        self._wake.set()
        try:
            if self._drainer is not None:
                await self._drainer
            await self._run(_optimize)
        except (sqlite3.Error, OSError) as exc:
            if not is_environmental(exc) and not isinstance(exc, OSError):
                raise
            raise self._failed(exc) from exc
        finally:
            await self._release()

    async def _release(self) -> None:
        """Close the connection and see aiosqlite's thread end. When connecting failed,
        aiosqlite only queued its stop: the thread then hands a result to this loop, which
        must still be running (else the thread dies printing 'Event loop is closed')."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            await db.close()  # stops the thread even when closing the connection fails
        except Exception as exc:  # noqa: BLE001 - the thread is stopped all the same
            log.warning("closing %s: %s", self.path, exc)
        thread = _thread_of(db)
        if thread is not None and thread.is_alive():
            await asyncio.sleep(0)  # let it hand over its last result
            thread.join(timeout=5)  # it has nothing left to run: this is at once

    def _failed(self, exc: BaseException) -> StoreError:
        """exc in words a user acts on; the first one is kept as `failure`."""
        error = explain(exc, self.path)
        if self.failure is None:
            self.failure = error
            if self.on_failure is not None:
                self.on_failure(error)
        return error

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(raw connection) on aiosqlite's thread (its public calls take one statement)."""
        db = self._db
        assert db is not None, "store is not open"
        return await db._execute(lambda: fn(db._conn))  # noqa: SLF001 - see module docstring

    def write(self, fn: WriteFn) -> asyncio.Future[Any]:
        """Queue a write; the future gives fn's result once its transaction committed."""
        if self._closing or self._db is None:
            raise StoreError("store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((fn, future))
        self._wake.set()
        return future

    def write_soon(self, fn: WriteFn) -> None:
        """Queue a write nobody waits for (FIFO keeps it before later writes); failures are logged."""
        self.write(fn).add_done_callback(_log_failure)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the writer's connection, after every write queued before it."""
        return await self.write(fn)

    async def flush(self) -> None:
        await self.write(lambda conn: None)

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                if self._closing:
                    return
                continue
            batch, self._queue = self._queue, []
            try:
                results = await self._run(lambda conn, batch=batch: _apply_batch(conn, batch))
            except BaseException as exc:  # the thread died, or COMMIT or the disk failed
                error = self._failed(exc) if is_environmental(exc) else StoreError(f"write failed: {exc!r}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.batches += 1
            self.writes += len(batch)
            for (_, future), (ok, value) in zip(batch, results):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(self._failed(value) if is_environmental(value) else value)


def _apply_batch(
    conn: sqlite3.Connection, batch: list[tuple[WriteFn, asyncio.Future[Any]]]
) -> list[tuple[bool, Any]]:
    results: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn, _ in batch:
            conn.execute("SAVEPOINT w")
            try:
                value = fn(conn)
            except Exception as exc:  # this write alone is undone
                if not conn.in_transaction:  # SQLite rolled back the whole batch (disk full, I/O error)
                    raise
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
                results.append((False, exc))
            else:
                conn.execute("RELEASE w")
                results.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _optimize(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA optimize")


def _as_daemon(db: aiosqlite.Connection) -> None:
    """A backstop: should a path still miss close(), the process ends anyway (as after a
    crash: SQLite keeps every committed transaction) instead of waiting on this thread."""
    thread = _thread_of(db)
    if thread is not None and not thread.is_alive():
        thread.daemon = True


def _thread_of(db: aiosqlite.Connection) -> threading.Thread | None:
    thread = db if isinstance(db, threading.Thread) else getattr(db, "_thread", None)  # aiosqlite < 0.22 / 0.22
    return thread if isinstance(thread, threading.Thread) else None


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("store write failed: %s", future.exception())

