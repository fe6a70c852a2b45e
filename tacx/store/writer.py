"""The engine's one writer connection to the store, with group commit.

Writes go through `Store.write`, which queues a plain function and runs every function
queued meanwhile in one `BEGIN IMMEDIATE` transaction on aiosqlite's thread: one round trip
and one commit for many transitions.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Callable

import aiosqlite

from tacx.store.database import configure, migrate
from tacx.store.errors import StoreError, explain, home_is_file, is_environmental
from tacx.home import make_home_dir

T = TypeVar("T")
log = logging.getLogger(__name__)

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
            make_home_dir(self.path.parent)
            db = aiosqlite.connect(self.path, isolation_level=None)
            _as_daemon(db)
            self._db = db
            await db
            db.row_factory = sqlite3.Row
            await self._run(lambda conn: (configure(conn), migrate(conn)))
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
