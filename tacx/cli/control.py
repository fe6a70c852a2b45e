"""Changing tasks, also from another terminal: `tacx cancel`, `tacx retry`, `tacx priority`,
`tacx pause` and `tacx resume`. With no coordinator running, cancel ends the task's daughters itself."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from tacx.cli.common import EXIT_OK, EXIT_USAGE, UsageError, exit_for_refusals, known_tasks, project_settings, writer
from tacx.engine.local import cgroups
from tacx.engine.ray.config import RaySettings
from tacx.engine.local.processes import end_processes, scan_marked
from tacx.home import CoordinatorLock, Home, LockHeld, coordinator_running
from tacx.store import records
from tacx.store.database import connect, transaction


def cmd_cancel(home: Home, args: argparse.Namespace) -> int:
    """Cancel each task: a queued one at once; a running one through the coordinator that
    runs it, or, with none running, by ending its daughters here."""
    conn = writer(home)
    try:
        ids = _known(conn, args.ids)
        lock = CoordinatorLock(home)
        try:
            lock.acquire()
        except LockHeld:
            return _each(ids, lambda task_id: _cancel_through_coordinator(conn, task_id))
        try:
            return _each(ids, lambda task_id: _cancel_without_coordinator(home, conn, task_id))
        finally:
            lock.release()
    finally:
        conn.close()


def _cancel_through_coordinator(conn: sqlite3.Connection, task_id: int) -> str:
    with transaction(conn):
        status = records.request_cancel(conn, task_id)
    if status == "cancelled":
        return f"task {task_id} cancelled"
    return f"task {task_id}: cancel requested; the running coordinator stops it within a second"


def _cancel_without_coordinator(home: Home, conn: sqlite3.Connection, task_id: int) -> str:
    """No coordinator watches this home: end the task's daughters here and record it."""
    with transaction(conn):
        status = records.request_cancel(conn, task_id)
    if status == "cancelled":
        return f"task {task_id} cancelled"
    prefix = f"{home.marker_prefix}{task_id}/"
    settings = project_settings(home)
    stopped = _stop_ray_jobs(home, settings.executors.ray, conn, task_id)
    ended = end_processes(scan_marked(lambda m: m.startswith(prefix)), settings.kill_grace)
    cgroups.end_task(home.root, task_id, settings.kill_grace)  # escapees that dropped the marker, where cgroups are in use
    with transaction(conn):
        records.mark_cancelled(conn, task_id, "running", {"ended_pids": ended, "coordinator": False})
        conn.execute("UPDATE daughters SET ended_at = ? WHERE task_id = ? AND ended_at IS NULL", (time.time(), task_id))
    return f"task {task_id} cancelled" + (f"; ended pids {ended}" if ended else "") + stopped


def _stop_ray_jobs(home: Home, ray_settings: RaySettings | None, conn: sqlite3.Connection, task_id: int) -> str:
    """The task's daughters running as Ray jobs: asked to stop (their runners end the trees).
    With a cluster configured, so is each running stage's attempt that has no daughter row:
    tacx died right after submitting it, and nothing else would stop it before tacx starts."""
    rows = conn.execute(
        "SELECT stage, attempt FROM daughters WHERE task_id = ? AND ended_at IS NULL AND executor = 'ray'", (task_id,)
    ).fetchall()
    unrecorded = conn.execute(
        "SELECT s.name, s.attempt FROM stages s WHERE s.task_id = ? AND s.status = 'running' AND NOT EXISTS"
        " (SELECT 1 FROM daughters d WHERE d.stage_id = s.id AND d.attempt = s.attempt)", (task_id,)
    ).fetchall() if ray_settings is not None else []
    if not rows and not unrecorded:
        return ""
    from tacx.engine.ray.ids import submission_id
    from tacx.engine.ray.jobs import JobServer, RayUnreachable
    from tacx.engine.state import marker

    server = JobServer((ray_settings or RaySettings()).job_server())
    ids = [submission_id(marker(home.marker_prefix, task_id, stage, attempt)) for stage, attempt in rows]
    maybe = [submission_id(marker(home.marker_prefix, task_id, stage, attempt)) for stage, attempt in unrecorded]
    try:
        for sid in ids:
            server.stop(sid)
        ids += [sid for sid in maybe if server.stop(sid)]  # a local stage's has no job: nothing stopped
    except RayUnreachable as exc:
        return f"; could not stop its Ray jobs ({', '.join(ids + maybe)}): {exc}"
    return f"; stopped Ray jobs {', '.join(ids)}" if ids else ""


def _known(conn: sqlite3.Connection, ids: list[int]) -> list[int]:
    return [row["id"] for row in known_tasks(conn, ids, "nothing was changed")]


def _each(ids: list[int], act: Callable[[int], str]) -> int:
    """Act on each task, a line for each. A task refused (retry of a running one, cancel of an
    ended one) is said on stderr while the others go on: exit 2 when every one was refused
    (nothing changed), 1 when some were, 0 when none."""
    refused = 0
    for task_id in ids:
        try:
            print(act(task_id), flush=True)
        except (LookupError, ValueError) as exc:
            print(f"tacx: {exc}", file=sys.stderr, flush=True)
            refused += 1
    return exit_for_refusals(refused, len(ids))


def cmd_retry(home: Home, args: argparse.Namespace) -> int:
    conn = writer(home)
    try:
        ids = _known(conn, args.ids)
        code = _each(ids, lambda task_id: _retry(conn, task_id))
    finally:
        conn.close()
    if code != EXIT_USAGE and not coordinator_running(home):
        print("tacx: no coordinator is running here: `tacx --no-ui` runs the queue", file=sys.stderr)
    return code


def _retry(conn: sqlite3.Connection, task_id: int) -> str:
    with transaction(conn):
        records.retry_task(conn, task_id)
    return f"task {task_id} queued again; stages that succeeded are kept"


def cmd_priority(home: Home, args: argparse.Namespace) -> int:
    """A queued task's new priority; a coordinator running elsewhere reads its queue again when
    the store changes (PRAGMA data_version), so the new order holds for its next pick."""
    conn = writer(home)
    try:
        with transaction(conn):
            was = _checked(records.set_priority, conn, args.id, args.priority)
    finally:
        conn.close()
    print(f"task {args.id}: priority {was} -> {args.priority}")
    return EXIT_OK


def _checked(fn: Any, conn: sqlite3.Connection, *args: Any) -> Any:
    try:
        return fn(conn, *args)
    except (LookupError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def cmd_pause(home: Home, args: argparse.Namespace) -> int:
    return set_paused(home, True)


def cmd_resume(home: Home, args: argparse.Namespace) -> int:
    return set_paused(home, False)


def set_paused(home: Home, paused: bool) -> int:
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            records.set_paused(conn, paused)
    finally:
        conn.close()
    print("paused: running stages go on, no new ones start" if paused else "resumed")
    return EXIT_OK
