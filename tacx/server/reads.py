"""The API's reads of the store, on a thread of the server's own with its own connection.

The engine's `Store.read` runs on its one writer thread: a burst of API reads there would
queue behind (and ahead of) the engine's transitions. Here a single reader thread holds a
connection of its own (WAL lets it read while the writer writes), each read is one read
transaction (a consistent view: `show` reads several tables), and the loop only awaits."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tacx.store.database import connect

T = TypeVar("T")


class StoreReader:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tacx-api-read")
        self._conn: sqlite3.Connection | None = None

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn)

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = connect(self.db_path, create=False)
        conn = self._conn
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)
