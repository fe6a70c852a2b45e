"""Deleting ended tasks from the store (`tacx rm`, `tacx prune`): every row that names them.

Safe beside a running coordinator: a task is deleted only while it is still ended, checked
in the deleting transaction itself, so one retried meanwhile from another terminal stays.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tacx.store.records import TASK_ID_FLOOR, TERMINAL_TASK_STATES

# Every table with a task_id column besides tasks itself (tests/test_cli_commands.py checks
# the schema has no other), children first.
TASK_TABLES = ("usage_rollup", "usage", "daughters", "events", "stages")

_COLUMNS = "id, status, title, ended_at, workspace, branch, base_commit, project_root, workflow_text, source, source_told"


_SLICE = 10_000

USAGE_REMOVALS = "usage_removals"  # meta: how many times rm/prune deleted rows (usage among them)


def _marks(values: Any) -> str:
    return ", ".join("?" for _ in values)


def tasks_by_id(conn: sqlite3.Connection, ids: list[int]) -> dict[int, sqlite3.Row]:
    """The rows of the tasks that exist among `ids` (asked in slices: SQLite takes at most
    32,766 parameters in one statement, and `tacx rm $(seq 1 40000)` is a fair request)."""
    found: dict[int, sqlite3.Row] = {}
    for start in range(0, len(ids), _SLICE):
        part = ids[start:start + _SLICE]
        for r in conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id IN ({_marks(part)})", part):
            found[int(r["id"])] = r
    return found


def ended_before(conn: sqlite3.Connection, when: float) -> list[sqlite3.Row]:
    """The tasks that ended before `when`, oldest first."""
    return conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE status IN ({_marks(TERMINAL_TASK_STATES)}) AND ended_at < ?"
        " ORDER BY id", (*TERMINAL_TASK_STATES, when),
    ).fetchall()


def delete_ended(conn: sqlite3.Connection, ids: list[int]) -> list[int]:
    """Delete the tasks among `ids` that are still ended, with all their rows; the caller holds
    the transaction. Returns the ids deleted."""
    if not ids:
        return []
    gone = [int(r[0]) for r in conn.execute(
        f"SELECT id FROM tasks WHERE id IN ({_marks(ids)}) AND status IN ({_marks(TERMINAL_TASK_STATES)})",
        (*ids, *TERMINAL_TASK_STATES),
    )]
    if gone:
        for table in TASK_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE task_id IN ({_marks(gone)})", gone)
        conn.execute(f"DELETE FROM tasks WHERE id IN ({_marks(gone)})", gone)
        conn.execute(  # ids are never given again (records.insert_task reads this)
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
            " SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            (TASK_ID_FLOOR, max(gone)),
        )
        # Usage rows went too: a reader summing them incrementally (the dashboard's today)
        # starts again (and usage ids, no AUTOINCREMENT, may now be given again).
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE"
            " SET value = CAST(value AS INTEGER) + 1", (USAGE_REMOVALS,),
        )
    return gone
