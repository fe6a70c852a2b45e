"""Deleting ended tasks: `tacx rm ID...` and `tacx prune --older-than AGE`. A task goes with
its rows, its logs and its workspace; never with unsaved work (uncommitted changes, commits
on no remote) unless --force, and never while it is queued or running.

A task a source made (a GitHub issue) whose source has not yet been told how it ended is
kept too unless --force: deleting it would leave the issue marked as being worked on. A
deleted source task that the issue still asks for (labelled again) is made again."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from tacx.cli.common import EXIT_OK, exit_for_refusals, known_tasks, writer
from tacx.home import Home
from tacx.store import records, removal
from tacx.store.database import transaction
from tacx.text import printable


def cmd_rm(home: Home, args: argparse.Namespace) -> int:
    """Exit 0 when every task was deleted (or would be, with --dry-run); 1 when some were
    kept (each says why); 2 when an id names no task (nothing deleted) or every one was kept."""
    conn = writer(home)
    try:
        results = _remove(home, conn, known_tasks(conn, args.ids, "nothing was deleted"), args)
    finally:
        conn.close()
    _report(results, args)
    kept = sum(1 for r in results if not (r["deleted"] or r.get("would_delete")))
    return exit_for_refusals(kept, len(results))


def cmd_prune(home: Home, args: argparse.Namespace) -> int:
    """Exit 0: the tasks kept (unsaved work, an untold source) are listed with the reason."""
    if not home.db_path.exists():
        print("[]" if args.json else "nothing to prune: no tasks here yet")
        return EXIT_OK
    conn = writer(home)
    try:
        results = _remove(home, conn, removal.ended_before(conn, time.time() - args.older_than), args)
    finally:
        conn.close()
    if not results and not args.json:
        print("nothing to prune: no task ended that long ago")
    _report(results, args)
    return EXIT_OK


def _remove(home: Home, conn: sqlite3.Connection, rows: list[sqlite3.Row], args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for row in rows:
        entry: dict[str, Any] = {"id": row["id"], "status": row["status"], "title": row["title"],
                                 "deleted": False, "workspace": row["workspace"], "reason": ""}
        entry["reason"] = _refusal(row, args.force) or ""
        if not entry["reason"]:
            entry.update(_plan(home, row) if args.dry_run else _delete(home, conn, row, args.force))
        results.append(entry)
    return results


def _refusal(row: sqlite3.Row, force: bool) -> str | None:
    """Why the task cannot be deleted at all, or (without force) not yet."""
    if row["status"] not in records.TERMINAL_TASK_STATES:
        return f"it is {row['status']}: only ended tasks are deleted (`tacx cancel {row['id']}` first)"
    if row["source"] and row["source_told"] is None and not force:
        return (f"{row['source']} has not been told how it ended yet (a running coordinator tells it);"
                " --force deletes it anyway")
    return None


def _plan(home: Home, row: sqlite3.Row) -> dict[str, Any]:
    parts = ["its records", f"logs {home.logs / str(row['id'])}"]
    if row["workspace"] and row["branch"]:
        parts.append(f"worktree {row['workspace']} and branch {row['branch']}, if they hold no unsaved work")
    elif row["workspace"] and row["workspace"] != row["project_root"]:
        parts.append(f"workspace {row['workspace']}")
    return {"would_delete": True, "reason": "would delete " + ", ".join(parts)}


# Another `tacx rm` or `prune` deleted the task between our look and our delete: it is gone,
# as asked (not "kept", nor "queued again").
_GONE = {"deleted": True, "reason": "already deleted (by another tacx rm or prune meanwhile)"}
_REQUEUED = {"reason": "it was queued again meanwhile (tacx retry); kept"}


def _delete(home: Home, conn: sqlite3.Connection, row: sqlite3.Row, force: bool) -> dict[str, Any]:
    """Workspace first (it may refuse), then the rows in one transaction, then the logs. A
    task with a workspace of its own is marked first, so no retry queues it meanwhile."""
    if not (row["workspace"] and Path(row["workspace"]).resolve().is_relative_to(home.trees.resolve())):
        return _delete_marked(home, conn, row, force)  # nothing to lose to a retry
    mark = records.deleting_key(row["id"])
    with transaction(conn):  # no retry from here on (records.retry_task reads the mark)
        if records.task_status(conn, row["id"]) not in records.TERMINAL_TASK_STATES:
            return _GONE if records.task_status(conn, row["id"]) is None else _REQUEUED
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (mark, str(os.getpid())))
    try:
        return _delete_marked(home, conn, row, force)
    finally:
        with transaction(conn):
            conn.execute("DELETE FROM meta WHERE key = ?", (mark,))


def _delete_marked(home: Home, conn: sqlite3.Connection, row: sqlite3.Row, force: bool) -> dict[str, Any]:
    from tacx.workspace import cleanup

    done = []
    workspace = cleanup.remove_workspace(home, row, force)
    if workspace is not None:
        if not workspace["removed"] or workspace["unsaved"]:
            if records.task_status(conn, row["id"]) is None:
                return _GONE
            hint = "; --force deletes it anyway" if workspace["unsaved"] else ""
            return {"reason": f"kept: {workspace['reason']}{hint}"}
        done.append(workspace["reason"])
    with transaction(conn):
        deleted = removal.delete_ended(conn, [row["id"]])
    if not deleted:
        if records.task_status(conn, row["id"]) is None:
            return _GONE
        return _REQUEUED
    logs = home.logs / str(row["id"])
    if logs.is_dir() and not logs.is_symlink():
        shutil.rmtree(logs, ignore_errors=True)
        done.append(f"deleted logs {logs}")
    return {"deleted": True, "reason": "; ".join(["deleted its records", *done])}


def _report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(results))
        return
    for entry in results:
        line = f"task {entry['id']}: {entry['reason']}"
        if entry["deleted"] or entry.get("would_delete"):
            print(printable(line))
        else:
            print(printable(f"tacx: {line}"), file=sys.stderr)
