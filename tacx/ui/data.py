"""What the dashboard shows, read from the store: plain queries, no Textual.

The app runs `DashboardData.snapshot` in a worker thread (its own read connection, used by
that thread only), so the UI's event loop never waits on SQLite. The tasks panel pages: a
snapshot holds one page of tasks, never the whole table.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tacx.agents.health import KIND_WORDS, ProviderHealth
from tacx.agents.prices import UNKNOWN_MODEL, Unpriced, is_unpriced, models
from tacx.agents.spending import Cooldowns
from tacx.settings import Settings
from tacx.store import records
from tacx.store.database import connect
from tacx.store.removal import USAGE_REMOVALS

PAGE_SIZE = 100
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")
SPARK_MINUTES = 30


@dataclass(frozen=True)
class TaskRow:
    id: int
    status: str
    workflow: str
    title: str
    priority: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    tokens: int
    cost_usd: float
    wait_reason: str | None
    error: str | None
    unpriced: tuple[str, ...] = ()  # models whose usage has no price: its cost is not $0 but unknown
    source_url: str | None = None  # the issue it came from


@dataclass(frozen=True)
class StageRow:
    name: str
    status: str
    attempt: int
    provider: str | None
    model: str | None
    started_at: float | None
    ended_at: float | None
    input: int
    output: int
    cache_read: int
    cache_write: int
    cost_usd: float
    wait_reason: str | None
    error: str | None
    log_path: str | None
    session_id: str | None
    unpriced: tuple[str, ...] = ()

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


@dataclass(frozen=True)
class TaskDetail:
    task: TaskRow
    stages: list[StageRow]
    budget: dict[str, float]  # {"usd": 3.0, "tokens": 100000}, as the task's workflow says
    per_minute: list[int]  # tokens per minute, the last SPARK_MINUTES minutes, oldest first
    budget_base: tuple[float, int]  # (USD, tokens) spent before the last retry: the budget counts from there
    trace_id: str
    workspace: str | None
    branch: str | None


@dataclass(frozen=True)
class Overview:
    counts: dict[str, int]
    tokens_today: int
    cost_today: float
    paused: bool
    unpriced_today: tuple[str, ...] = ()
    provider_alerts: tuple[str, ...] = ()  # "claude failing on auth since 14:02", "codex resting until 14:10"
    source_alerts: tuple[str, ...] = ()  # "github:o/r: gh is not logged in: run `gh auth login`"


@dataclass(frozen=True)
class Snapshot:
    overview: Overview
    tasks: list[TaskRow]
    matching: int  # tasks matching the filter and search, all pages
    offset: int
    detail: TaskDetail | None
    taken_at: float = field(default_factory=time.time)


def _task_row(r: sqlite3.Row) -> TaskRow:
    return TaskRow(
        id=r["id"], status=r["status"], workflow=r["workflow"], title=r["title"], priority=r["priority"],
        created_at=r["created_at"], started_at=r["started_at"], ended_at=r["ended_at"],
        tokens=int(r["tokens"] or 0), cost_usd=float(r["cost_usd"] or 0.0), wait_reason=r["wait_reason"],
        error=r["error"], source_url=r["source_url"],
    )


def _budget(workflow_text: str, default: dict[str, float] | None) -> dict[str, float]:
    """The task's budget as submitted (its stored workflow text), else tacx.yaml's."""
    budget = records.submitted_workflow(workflow_text).get("budget")
    if isinstance(budget, dict):
        return {k: float(v) for k, v in budget.items() if k in ("usd", "tokens") and isinstance(v, (int, float))}
    return dict(default or {})


def provider_alerts(conn: sqlite3.Connection, now: float) -> tuple[str, ...]:
    """Agents that cannot work as they should now, as the coordinator recorded it: resting
    after a rate limit (until when), failing on auth or out of reach of their API (since
    when). Not-logged-in agents are named where a stage waits for them."""
    resting = Cooldowns(Settings())
    resting.restore(conn)
    health = ProviderHealth()
    health.restore(conn)
    alerts = [f"{name} resting until {time.strftime('%H:%M', time.localtime(until))}"
              for name, (until, _) in sorted(resting.active().items())]
    for name in sorted(health.names()):
        trouble = health.trouble(name)
        if trouble is not None and name not in resting.active():
            alerts.append(f"{name} {KIND_WORDS[trouble.kind]} since {time.strftime('%H:%M', time.localtime(trouble.since))}")
    return tuple(alerts)


def source_alerts(conn: sqlite3.Connection, now: float) -> tuple[str, ...]:
    """Sources that cannot poll now (gh missing or logged out, GitHub unreachable, the rate
    limit spent), as the coordinator last recorded them."""
    alerts = []
    for key, value in conn.execute("SELECT key, value FROM meta WHERE key LIKE 'source:%' ORDER BY key"):
        try:
            state = json.loads(value)
        except ValueError:
            continue
        limited = isinstance(state.get("rate_limited_until"), (int, float)) and state["rate_limited_until"] > now
        if (state.get("failures") or limited) and state.get("last_error"):
            alerts.append(f"{key.removeprefix('source:')}: {str(state['last_error']).splitlines()[0][:120]}")
    return tuple(alerts)


def midnight(now: float) -> float:
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


class TodayUsage:
    """Today's tokens, cost and unpriced models, kept up to date from the usage rows added
    since the last snapshot. Usage rows are inserted (INSERT OR IGNORE, one writer: ids
    grow in commit order), so summing all of today's rows again at every refresh (twice a
    second, over tens of thousands of rows on a busy day) is not needed. They are deleted
    only by `tacx rm`/`prune`, which count their deletions in meta: a new count sums the
    day again (the deleted rows leave the totals, and ids they freed may be given again)."""

    def __init__(self) -> None:
        self.day: float | None = None
        self.removals: str | None = None
        self._start_day(None)

    def _start_day(self, day: float | None) -> None:
        self.day = day
        self.last_id = 0
        self.tokens = 0
        self.cost = 0.0
        # (stage id, attempt, model) -> [tokens, cost, model as shown]: unpriced is per group
        self._groups: dict[tuple[int, int, str | None], list[Any]] = {}

    def update(self, conn: sqlite3.Connection, now: float) -> None:
        day = midnight(now)
        last, removals = conn.execute(
            "SELECT COALESCE(MAX(id), 0), (SELECT value FROM meta WHERE key = ?) FROM usage", (USAGE_REMOVALS,)
        ).fetchone()
        if day != self.day or removals != self.removals:
            self._start_day(day)
            self.removals = removals
        if last <= self.last_id:
            return
        rows = conn.execute(
            "SELECT stage_id, attempt, model, input_tokens + output_tokens + cache_read_tokens + cache_write_tokens,"
            " cost_usd FROM usage WHERE id > ? AND id <= ? AND ts >= ?",
            (self.last_id, last, day),
        )
        for stage_id, attempt, model, tokens, cost in rows:
            self.tokens += tokens
            self.cost += cost
            group = self._groups.get((stage_id, attempt, model))
            if group is None:
                self._groups[(stage_id, attempt, model)] = [tokens, cost, model or UNKNOWN_MODEL]
            else:
                group[0] += tokens
                group[1] += cost
        self.last_id = last

    def unpriced(self) -> tuple[str, ...]:
        """The models of today's usage with tokens and no known cost (Unpriced.find's rule)."""
        return tuple(sorted({g[2] for g in self._groups.values() if is_unpriced(g[0], g[1])}))


class DashboardData:
    """Reads for the dashboard. One instance per thread: its connection is not shared."""

    def __init__(self, db_path: Path, default_budget: dict[str, float] | None = None) -> None:
        self.db_path = db_path
        self.default_budget = default_budget
        self._conn: sqlite3.Connection | None = None
        self._budgets: dict[int, dict[str, float]] = {}
        self._today = TodayUsage()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.db_path, any_thread=True)  # worker threads take turns
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def snapshot(
        self,
        *,
        status: str | None = None,
        search: str = "",
        offset: int = 0,
        limit: int = PAGE_SIZE,
        selected: int | None = None,
        now: float | None = None,
    ) -> Snapshot:
        conn = self._connection()
        now = time.time() if now is None else now
        conn.execute("BEGIN")  # one consistent view of the store for the whole snapshot
        try:
            overview = self._overview(conn, now)
            where, params = self._where(status, search)
            matching = conn.execute(f"SELECT COUNT(*) FROM tasks t{where}", params).fetchone()[0]
            offset = max(0, min(offset, max(matching - 1, 0) // limit * limit))
            rows = conn.execute(
                "SELECT t.id, t.status, t.workflow, t.title, t.priority, t.created_at, t.started_at, t.ended_at,"
                " t.wait_reason, t.error, t.source_url,"
                " (SELECT COALESCE(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)"
                "  FROM stages s WHERE s.task_id = t.id) AS tokens,"
                " (SELECT COALESCE(SUM(cost_usd), 0) FROM stages s WHERE s.task_id = t.id) AS cost_usd"
                f" FROM tasks t{where} ORDER BY t.id DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            tasks = [_task_row(r) for r in rows]
            found = Unpriced.of_tasks(conn, [t.id for t in tasks])
            if found:
                tasks = [replace(t, unpriced=tuple(models([u for u in found if u.task_id == t.id]))) for t in tasks]
            detail = self._detail(conn, selected, now) if selected is not None else None
        finally:
            conn.execute("COMMIT")
        return Snapshot(overview, tasks, matching, offset, detail, now)

    @staticmethod
    def _where(status: str | None, search: str) -> tuple[str, tuple[Any, ...]]:
        clauses, params = [], []
        if status:
            clauses.append("t.status = ?")
            params.append(status)
        if search:
            clauses.append("t.title LIKE ? ESCAPE '\\'")
            params.append("%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)

    def _overview(self, conn: sqlite3.Connection, now: float) -> Overview:
        counts = {s: 0 for s in STATUSES}
        for state, n in conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"):
            counts[state] = n
        today = self._today
        today.update(conn, now)
        return Overview(counts, int(today.tokens), float(today.cost), records.is_paused(conn), today.unpriced(),
                        provider_alerts(conn, now), source_alerts(conn, now))

    def _detail(self, conn: sqlite3.Connection, task_id: int, now: float) -> TaskDetail | None:
        row = conn.execute(
            "SELECT t.*, (SELECT COALESCE(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)"
            " FROM stages s WHERE s.task_id = t.id) AS tokens,"
            " (SELECT COALESCE(SUM(cost_usd), 0) FROM stages s WHERE s.task_id = t.id) AS cost_usd"
            " FROM tasks t WHERE t.id = ?",
            (task_id,),
        ).fetchone()
        if row is None:
            return None
        found = Unpriced.of_tasks(conn, [task_id])
        stages = [
            StageRow(
                name=s["name"], status=s["status"], attempt=s["attempt"], provider=s["provider"], model=s["model"],
                started_at=s["started_at"], ended_at=s["ended_at"], input=s["input_tokens"],
                output=s["output_tokens"], cache_read=s["cache_read_tokens"], cache_write=s["cache_write_tokens"],
                cost_usd=s["cost_usd"], wait_reason=s["wait_reason"], error=s["error"], log_path=s["log_path"],
                session_id=s["session_id"],
                unpriced=tuple(models([u for u in found if u.stage == s["name"]])),
            )
            for s in conn.execute("SELECT * FROM stages WHERE task_id = ? ORDER BY position", (task_id,))
        ]
        if task_id not in self._budgets:
            self._budgets[task_id] = _budget(row["workflow_text"], self.default_budget)
        start = (int(now) // 60 - SPARK_MINUTES + 1) * 60
        minutes = [0] * SPARK_MINUTES
        for minute, tokens in conn.execute(
            "SELECT CAST(ts / 60 AS INTEGER) * 60, SUM(input_tokens + output_tokens + cache_read_tokens"
            " + cache_write_tokens) FROM usage WHERE task_id = ? AND ts >= ? GROUP BY 1",
            (task_id, start),
        ):
            index = (int(minute) - start) // 60
            if 0 <= index < SPARK_MINUTES:
                minutes[index] = int(tokens)
        return TaskDetail(
            task=replace(_task_row(row), unpriced=tuple(models(found))), stages=stages, budget=self._budgets[task_id], per_minute=minutes,
            trace_id=row["trace_id"], workspace=row["workspace"], branch=row["branch"],
            budget_base=(float(row["budget_base_usd"]), int(row["budget_base_tokens"])),
        )
