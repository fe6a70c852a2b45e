"""Changing tasks, also from another terminal: `tacx cancel`, `tacx retry`, `tacx pause` and
`tacx resume`. With no coordinator running, cancel ends the task's daughters itself."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from typing import Any

from tacx.cli.common import EXIT_OK, UsageError, project_settings
from tacx.engine.local import cgroups
from tacx.engine.local.processes import end_processes, scan_marked
from tacx.home import CoordinatorLock, Home, LockHeld, coordinator_running
from tacx.store import records
from tacx.store.database import connect, transaction


def _writer(home: Home) -> sqlite3.Connection:
    try:
        return connect(home.db_path, create=False)
    except FileNotFoundError:
        raise UsageError(f"no tasks in {home.root}") from None


def cmd_cancel(home: Home, args: argparse.Namespace) -> int:
    conn = _writer(home)
    try:
        lock = CoordinatorLock(home)
        try:
            lock.acquire()
        except LockHeld:
            with transaction(conn):
                status = _checked(records.request_cancel, conn, args.id)
            if status == "cancelled":
                print(f"task {args.id} cancelled")
            else:
                print(f"task {args.id}: cancel requested; the running coordinator stops it within a second")
            return EXIT_OK
        try:
            return _cancel_without_coordinator(home, conn, args.id)
        finally:
            lock.release()
    finally:
        conn.close()


def _cancel_without_coordinator(home: Home, conn: sqlite3.Connection, task_id: int) -> int:
    """No coordinator watches this home: end the task's daughters here and record it."""
    with transaction(conn):
        status = _checked(records.request_cancel, conn, task_id)
    if status == "cancelled":
        print(f"task {task_id} cancelled")
        return EXIT_OK
    prefix = f"{home.marker_prefix}{task_id}/"
    grace = project_settings(home).kill_grace
    ended = end_processes(scan_marked(lambda m: m.startswith(prefix)), grace)
    cgroups.end_task(home.root, task_id, grace)  # escapees that dropped the marker, where cgroups are in use
    with transaction(conn):
        records.mark_cancelled(conn, task_id, "running", {"ended_pids": ended, "coordinator": False})
        conn.execute("UPDATE daughters SET ended_at = ? WHERE task_id = ? AND ended_at IS NULL", (time.time(), task_id))
    print(f"task {task_id} cancelled" + (f"; ended pids {ended}" if ended else ""))
    return EXIT_OK


def _checked(fn: Any, conn: sqlite3.Connection, task_id: int) -> Any:
    try:
        return fn(conn, task_id)
    except (LookupError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def cmd_retry(home: Home, args: argparse.Namespace) -> int:
    conn = _writer(home)
    try:
        with transaction(conn):
            _checked(records.retry_task, conn, args.id)
    finally:
        conn.close()
    print(f"task {args.id} queued again; stages that succeeded are kept")
    if not coordinator_running(home):
        print("tacx: no coordinator is running here: `tacx --no-ui` runs the queue", file=sys.stderr)
    return EXIT_OK


def set_paused(home: Home, paused: bool) -> int:
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            records.set_paused(conn, paused)
    finally:
        conn.close()
    print("paused: running stages go on, no new ones start" if paused else "resumed")
    return EXIT_OK
