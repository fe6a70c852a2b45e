"""Reads and writes of tasks, stages, daughters and events.

Plain functions over a sqlite3 connection, shared by the engine (run inside
`Store.write`, which wraps them in a transaction) and the CLI (inside `transaction()`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from typing import TYPE_CHECKING, Any

import yaml

from tacx.states import TASK_STATES  # noqa: F401 - with the states' colours: the parser reads it there

if TYPE_CHECKING:  # only named here: reading tasks (`tacx ls`) does not build the workflow model
    from tacx.workflow.model import Workflow

TERMINAL_TASK_STATES = ("succeeded", "failed", "cancelled", "timed_out")
STAGE_STATES = ("pending", "running", "succeeded", "failed", "skipped", "cancelled", "timed_out")
FINISHED_STAGE_STATES = ("succeeded", "failed", "skipped", "cancelled", "timed_out")
# A task deduplicated against an earlier one is only a duplicate while that one can still succeed.
_DEDUPE_LIVE = ("queued", "running", "succeeded")


# A new task's id: after every id ever given, also those of tasks deleted since (`tacx rm`
# records the highest it deleted), so an id always names one task, its logs and its workspace.
TASK_ID_FLOOR = "task_id_floor"
_NEXT_TASK_ID = (
    "(SELECT MAX(COALESCE((SELECT MAX(id) FROM tasks), 0),"
    f" COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{TASK_ID_FLOOR}'), 0)) + 1)"
)


def add_event(
    conn: sqlite3.Connection, task_id: int | None, stage: str | None, kind: str, data: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT INTO events (task_id, stage, ts, kind, data) VALUES (?, ?, ?, ?, ?)",
        (task_id, stage, time.time(), kind, json.dumps(data, default=str)),
    )


def insert_task(
    conn: sqlite3.Connection,
    *,
    workflow: Workflow,
    workflow_path: str,
    workflow_text: str,
    title: str,
    inputs: dict[str, str],
    priority: int,
    dedupe_key: str | None,
    project_root: str,
    dedupe_any: bool = False,
    source: str | None = None,
    source_url: str | None = None,
) -> tuple[int, bool]:
    """Queue a task and its pending stages. Returns (id, created); a live duplicate wins
    (with `dedupe_any`, any task of that key, ended or not: a source's item runs once)."""
    if dedupe_key:
        states = TASK_STATES if dedupe_any else _DEDUPE_LIVE
        row = conn.execute(
            f"SELECT id FROM tasks WHERE dedupe_key = ? AND status IN ({_marks(states)})"
            " ORDER BY id LIMIT 1",
            (dedupe_key, *states),
        ).fetchone()
        if row is not None:
            return int(row[0]), False
    now = time.time()
    trace_id = uuid.uuid4().hex
    cur = conn.execute(
        "INSERT INTO tasks (id, trace_id, workflow, workflow_path, workflow_text, workflow_hash, title,"
        " inputs, priority, status, dedupe_key, project_root, created_at, source, source_url)"
        f" VALUES ({_NEXT_TASK_ID}, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
        (
            trace_id,
            workflow.name,
            workflow_path,
            workflow_text,
            text_hash(workflow_text),
            title,
            json.dumps(inputs),
            priority,
            dedupe_key,
            project_root,
            now,
            source,
            source_url,
        ),
    )
    task_id = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO stages (task_id, name, position) VALUES (?, ?, ?)",
        [(task_id, stage.name, i) for i, stage in enumerate(workflow.stages)],
    )
    add_event(conn, task_id, None, "task.queued", {"trace_id": trace_id, "priority": priority})
    return task_id, True


def queue_workflow(
    conn: sqlite3.Connection,
    workflow: Workflow,
    *,
    path: str,
    text: str,
    project_root: str,
    inputs: list[dict[str, str]],
    titles: list[str] | None = None,
    priority: int = 0,
) -> list[int]:
    """Queue one task per inputs dict (the caller holds the transaction). For tests and
    benchmarks that need many tasks of one workflow without going through the CLI."""
    return [
        insert_task(
            conn,
            workflow=workflow,
            workflow_path=path,
            workflow_text=text,
            title=titles[i] if titles else workflow.name,
            inputs=values,
            priority=priority,
            dedupe_key=None,
            project_root=project_root,
        )[0]
        for i, values in enumerate(inputs)
    ]


def open_tasks_keyed(conn: sqlite3.Connection, prefix: str) -> list[tuple[int, str]]:
    """(id, dedupe key) of the queued and running tasks whose dedupe key starts with
    `prefix`: a source's tasks that have not ended yet."""
    rows = conn.execute(
        "SELECT id, dedupe_key FROM tasks WHERE status IN ('queued', 'running')"
        " AND substr(dedupe_key, 1, ?) = ? ORDER BY id",
        (len(prefix), prefix),
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def request_cancel(conn: sqlite3.Connection, task_id: int) -> str:
    """Cancel a queued task at once; ask the coordinator to stop a running one.

    Returns the task's status afterwards ('cancelled', or 'running' with the request set).
    Raises LookupError / ValueError for a missing or finished task.
    """
    row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise LookupError(f"no task {task_id}")
    status = row[0]
    if status in TERMINAL_TASK_STATES:
        raise ValueError(f"task {task_id} is already {status}")
    if status == "queued":
        cancel_queued(conn, task_id)
        return "cancelled"
    conn.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?", (task_id,))
    add_event(conn, task_id, None, "task.cancel_requested", {})
    return "running"


def task_status(conn: sqlite3.Connection, task_id: int) -> str | None:
    """The task's status; None when there is no such task (`tacx rm` may delete an ended
    task while a coordinator, `tacx run` or `tacx logs -f` still looks at it)."""
    row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else str(row[0])


def cancel_queued(conn: sqlite3.Connection, task_id: int) -> bool:
    """Cancel a task that is queued (never started, or interrupted). False if it is not queued."""
    return mark_cancelled(conn, task_id, "queued", {"while": "queued"})


def mark_cancelled(conn: sqlite3.Connection, task_id: int, status: str, event: dict[str, Any]) -> bool:
    """Record a task in `status` as cancelled, with its unfinished stages (its daughters, if
    any, are the caller's to end). False if the task is not in that status."""
    now = time.time()
    cur = conn.execute(
        "UPDATE tasks SET status = 'cancelled', ended_at = ?, wait_reason = NULL, cancel_requested = 0,"
        " error = 'cancelled by request' WHERE id = ? AND status = ?",
        (now, task_id, status),
    )
    if cur.rowcount != 1:
        return False
    conn.execute(
        "UPDATE stages SET status = 'cancelled', wait_reason = NULL, ended_at = ?, error = NULL"
        " WHERE task_id = ? AND status IN ('pending', 'running')",
        (now, task_id),
    )
    add_event(conn, task_id, None, "task.cancelled", event)
    return True


def deleting_key(task_id: int) -> str:
    """meta's mark that `tacx rm`/`prune` is removing the task's workspace: a retry meanwhile
    would queue it again with its workspace half gone. Its value is the pid of that tacx."""
    return f"deleting:{task_id}"


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def retry_task(conn: sqlite3.Connection, task_id: int) -> None:
    """Queue a finished, unsuccessful task again; stages that succeeded are kept."""
    row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise LookupError(f"no task {task_id}")
    status = row[0]
    if status not in ("failed", "cancelled", "timed_out"):
        raise ValueError(f"task {task_id} is {status}: only failed, cancelled or timed-out tasks can be retried")
    mark = conn.execute("SELECT value FROM meta WHERE key = ?", (deleting_key(task_id),)).fetchone()
    if mark is not None and _alive(mark[0]):  # an rm killed midway leaves a mark of a dead pid
        raise ValueError(f"task {task_id} is being deleted (tacx rm or prune): its workspace is going")
    # Its budget counts from here: what it spent before the retry is spent.
    conn.execute(
        "UPDATE tasks SET status = 'queued', error = NULL, ended_at = NULL, wait_reason = NULL, source_told = NULL,"
        " cancel_requested = 0, (budget_base_usd, budget_base_tokens) = (SELECT COALESCE(SUM(cost_usd), 0),"
        " COALESCE(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)"
        " FROM stages WHERE task_id = ?) WHERE id = ?",
        (task_id, task_id),
    )
    conn.execute(
        "UPDATE stages SET status = 'pending', error = NULL, wait_reason = NULL, ended_at = NULL,"
        " exit_code = NULL, failures = 0 WHERE task_id = ? AND status != 'succeeded'",
        (task_id,),
    )
    add_event(conn, task_id, None, "task.retried", {"was": status})


def set_priority(conn: sqlite3.Connection, task_id: int, priority: int) -> int:
    """Change a queued task's priority; returns the old one. LookupError / ValueError for a
    missing task or one that is not queued (a running task already has its worker)."""
    row = conn.execute("SELECT status, priority FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise LookupError(f"no task {task_id}")
    if row[0] != "queued":
        now = "it is running" if row[0] == "running" else f"it has ended: {row[0].replace('_', ' ')}"
        raise ValueError(f"task {task_id} is not queued ({now}): only a queued task's priority can change")
    conn.execute("UPDATE tasks SET priority = ? WHERE id = ? AND status = 'queued'", (priority, task_id))
    add_event(conn, task_id, None, "task.priority", {"was": row[1], "now": priority})
    return int(row[1])


def set_paused(conn: sqlite3.Connection, paused: bool) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('paused', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        ("1" if paused else "0",),
    )
    add_event(conn, None, None, "coordinator.paused" if paused else "coordinator.resumed", {})


def is_paused(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT value FROM meta WHERE key = 'paused'").fetchone()
    return bool(row and row[0] == "1")


# -- JSON views (the shapes of `ls --json` and `show --json`) --------------------------

_TASK_SUMMARY_SQL = """
SELECT t.*,
       COALESCE(SUM(s.input_tokens), 0) AS input_tokens,
       COALESCE(SUM(s.output_tokens), 0) AS output_tokens,
       COALESCE(SUM(s.cache_read_tokens), 0) AS cache_read_tokens,
       COALESCE(SUM(s.cache_write_tokens), 0) AS cache_write_tokens,
       COALESCE(SUM(s.cost_usd), 0) AS cost_usd
FROM tasks t LEFT JOIN stages s ON s.task_id = t.id
"""


def _tokens(row: sqlite3.Row) -> dict[str, int]:
    return {
        "input": int(row["input_tokens"]),
        "output": int(row["output_tokens"]),
        "cache_read": int(row["cache_read_tokens"]),
        "cache_write": int(row["cache_write_tokens"]),
    }


def _summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "workflow": row["workflow"],
        "title": row["title"],
        "priority": row["priority"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "tokens": _tokens(row),
        "cost_usd": round(float(row["cost_usd"]), 10),
        "wait_reason": row["wait_reason"],
        "error": row["error"],
        "source": {"name": row["source"], "url": row["source_url"]} if row["source"] else None,
    }


def list_tasks(
    conn: sqlite3.Connection,
    *,
    status: str | None = None,
    workflow: str | None = None,
    limit: int | None = None,
    source: str | None = None,
    since: float | None = None,
    newest_first: bool = False,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Tasks with their totals; ``limit`` keeps the newest when ``newest_first``, after
    skipping ``offset`` of them (pages of the HTTP API)."""
    where, params = [], []
    if since is not None:
        where.append("t.created_at >= ?")
        params.append(since)
    if source:  # a source's name, or "any" for every task a source made
        where.append("t.source IS NOT NULL" if source == "any" else "t.source = ?")
        params += [] if source == "any" else [source]
    if status:
        where.append("t.status = ?")
        params.append(status)
    if workflow:
        where.append("t.workflow = ?")
        params.append(workflow)
    sql = _TASK_SUMMARY_SQL
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " GROUP BY t.id ORDER BY t.id" + (" DESC" if newest_first else "")
    if limit or offset:
        sql += f" LIMIT {int(limit) if limit else -1} OFFSET {int(offset)}"
    return [_summary(row) for row in conn.execute(sql, params)]


def show_task(conn: sqlite3.Connection, task_id: int, *, events_limit: int = 500) -> dict[str, Any] | None:
    row = conn.execute(_TASK_SUMMARY_SQL + " WHERE t.id = ? GROUP BY t.id", (task_id,)).fetchone()
    if row is None:
        return None
    task = _summary(row)
    task["inputs"] = json.loads(row["inputs"])
    task["trace_id"] = row["trace_id"]
    task["workspace"] = row["workspace"]
    task["branch"] = row["branch"]
    task["cancel_requested"] = bool(row["cancel_requested"])
    daughters: dict[int, list[dict[str, Any]]] = {}
    for d in conn.execute("SELECT * FROM daughters WHERE task_id = ? ORDER BY id", (task_id,)):
        daughters.setdefault(d["stage_id"], []).append(
            {
                "pid": d["pid"],
                "argv": json.loads(d["argv"]),
                "attempt": d["attempt"],
                "exit_code": d["exit_code"],
                "signal": d["signal"],
                "started_at": d["started_at"],
                "ended_at": d["ended_at"],
                "peak_rss": d["peak_rss"],
                "cpu_seconds": d["cpu_seconds"],
                "log_path": d["log_path"],
                "executor": d["executor"],
                "node": d["node"],
            }
        )
    task["stages"] = [
        {
            "name": s["name"],
            "status": s["status"],
            "attempt": s["attempt"],
            "provider": s["provider"],
            "model": s["model"],
            "exit_code": s["exit_code"],
            "started_at": s["started_at"],
            "ended_at": s["ended_at"],
            "error": s["error"],
            "wait_reason": s["wait_reason"],
            "result": s["result"],
            "tokens": _tokens(s),
            "cost_usd": round(float(s["cost_usd"]), 10),
            "session_id": s["session_id"],
            "turns": s["turns"],
            "api_retries": s["api_retries"],
            "rate_limits": s["rate_limits"],
            "log_path": s["log_path"],
            "daughters": daughters.get(s["id"], []),
        }
        for s in conn.execute("SELECT * FROM stages WHERE task_id = ? ORDER BY position", (task_id,))
    ]
    task["events"] = [
        {"ts": e["ts"], "kind": e["kind"], "stage": e["stage"], "data": json.loads(e["data"])}
        for e in conn.execute(
            "SELECT * FROM (SELECT * FROM events WHERE task_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (task_id, events_limit),
        )
    ]
    return task


def submitted_workflow(workflow_text: str) -> dict[str, Any]:
    """A task's workflow as it was submitted (its stored text, not today's file), as plain
    data; {} when it cannot be read."""
    try:
        data = yaml.safe_load(workflow_text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)
