"""What was spent and how work went, read from the store: `tacx report` and the dashboard's
reports screen. Pure functions over a sqlite3 connection (no asyncio, no printing).

Spending is attributed to the time of each usage row (`usage.ts`, when tacx read that
message of the agent's output), so a task that runs past midnight splits across two days.
This is exact: a stage's token and cost columns are written only as the sums of its usage
rows (agents/spending.py), so the rows of `cost_rows` add up to the tasks' own totals (the
`tokens` and `cost_usd` of `tacx ls --json`). `since`/`until` pick usage rows with
``since <= ts < until``; without them the rows add up to every task's totals, with them to
what was spent in the window (a task's whole total when all of its spending lies inside).

Outcomes, stage statistics and comparisons are about tasks: their window picks the tasks
created in ``[since, until)``, and a task's cost there is its whole total.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

GROUPS = ("day", "week", "month", "workflow", "provider", "model", "task")
TIME_GROUPS = ("day", "week", "month")
UNKNOWN_MODEL = "(model unknown)"  # as agents/prices.py names usage that arrived with no model
UNKNOWN_PROVIDER = "(provider unknown)"
_TOKENS = ("input", "output", "cache_read", "cache_write")
_SUMS = (
    "SUM(u.input_tokens), SUM(u.output_tokens), SUM(u.cache_read_tokens), SUM(u.cache_write_tokens),"
    " SUM(u.cost_usd), COUNT(DISTINCT u.task_id)"
)


# -- cost --------------------------------------------------------------------------------------


def cost_rows(conn: sqlite3.Connection, by: str, *, since: float | None = None,
              until: float | None = None) -> list[dict[str, Any]]:
    """Spending per ``by`` group (one of GROUPS): key, the four token kinds, cost_usd, tasks
    (distinct tasks that spent in it), unpriced (models whose usage there has no price), and
    for tasks their title. Time groups ascending, the others by cost, highest first."""
    if by not in GROUPS:
        raise ValueError(f"unknown group {by!r}: one of {', '.join(GROUPS)}")
    window, params = _usage_window(since, until)
    if by in TIME_GROUPS:
        rows = _time_rows(conn, by, window, params, since, until)
    else:
        rows = _named_rows(conn, by, window, params)
    unpriced = _unpriced_keys(conn, by, window, params)
    for row in rows:
        row["unpriced"] = sorted(unpriced.get(row["key"], ()))
    return rows


def _usage_window(since: float | None, until: float | None) -> tuple[str, list[float]]:
    where, params = ["1"], []
    if since is not None:
        where.append("u.ts >= ?")
        params.append(since)
    if until is not None:
        where.append("u.ts < ?")
        params.append(until)
    return " AND ".join(where), params


def _row(key: str, sums: tuple[Any, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"key": key}
    row.update({kind: int(value or 0) for kind, value in zip(_TOKENS, sums[:4])})
    row["cost_usd"] = round(float(sums[4] or 0.0), 6)
    row["tasks"] = int(sums[5] or 0)
    return row


def _time_rows(conn: sqlite3.Connection, by: str, window: str, params: list[float],
               since: float | None, until: float | None) -> list[dict[str, Any]]:
    """Each local day, ISO week or month as a range of `usage.ts` (its boundaries computed
    here, in the local time zone, daylight saving included), summed by a range scan of the
    index on ts: no per-row date arithmetic in SQL."""
    first, last = conn.execute(f"SELECT MIN(u.ts), MAX(u.ts) FROM usage u WHERE {window}", params).fetchone()
    if first is None:
        return []
    periods = list(_periods(by, first, last))
    values = ", ".join("(?, ?, ?)" for _ in periods)
    sql = (
        f"WITH periods(key, lo, hi) AS (VALUES {values})"
        f" SELECT p.key, {_SUMS} FROM periods p JOIN usage u ON u.ts >= p.lo AND u.ts < p.hi"
        f" WHERE {window} GROUP BY p.key ORDER BY MIN(p.lo)"
    )
    flat = [v for period in periods for v in period]
    return [_row(r[0], r[1:]) for r in conn.execute(sql, [*flat, *params])]


def _periods(by: str, first: float, last: float) -> Iterator[tuple[str, float, float]]:
    """(key, start, end) of each local period from the one holding ``first`` to the one
    holding ``last``."""
    day = dt.date.fromtimestamp(first)
    if by == "week":
        day -= dt.timedelta(days=day.weekday())
    elif by == "month":
        day = day.replace(day=1)
    end_day = dt.date.fromtimestamp(last)
    while day <= end_day:
        if by == "day":
            following = day + dt.timedelta(days=1)
        elif by == "week":
            following = day + dt.timedelta(days=7)
        else:
            following = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        yield period_key(by, day), _midnight(day), _midnight(following)
        day = following


def _midnight(day: dt.date) -> float:
    return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))


def period_key(by: str, day: dt.date) -> str:
    """The key of the day, ISO week or month holding ``day``: 2026-11-30, 2026-W49, 2026-11."""
    if by == "day":
        return day.isoformat()
    if by == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


# The column naming each non-time group, and the join it needs.
_NAMED: dict[str, tuple[str, str]] = {
    "workflow": ("t.workflow", "JOIN tasks t ON t.id = u.task_id"),
    "provider": (f"COALESCE(s.provider, '{UNKNOWN_PROVIDER}')", "JOIN stages s ON s.id = u.stage_id"),
    "model": (f"COALESCE(u.model, '{UNKNOWN_MODEL}')", ""),
    "task": ("u.task_id", ""),
}


def _named_rows(conn: sqlite3.Connection, by: str, window: str, params: list[float]) -> list[dict[str, Any]]:
    column, join = _NAMED[by]
    sql = f"SELECT {column}, {_SUMS} FROM usage u {join} WHERE {window} GROUP BY 1"
    rows = [_row(str(r[0]), r[1:]) for r in conn.execute(sql, params)]
    if by == "task" and rows:
        titles = _titles(conn, [int(r["key"]) for r in rows])
        for row in rows:
            row["title"] = titles.get(int(row["key"]), "")
    rows.sort(key=lambda r: (-r["cost_usd"], -sum(r[k] for k in _TOKENS), _natural(r["key"])))
    return rows


def _natural(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (0, key)


def _titles(conn: sqlite3.Connection, ids: list[int]) -> dict[int, str]:
    titles: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        titles.update(conn.execute(f"SELECT id, title FROM tasks WHERE id IN ({marks})", chunk).fetchall())
    return titles


def _unpriced_keys(conn: sqlite3.Connection, by: str, window: str, params: list[float]) -> dict[str, set[str]]:
    """Which groups hold unpriced usage, and of which models: as `tacx ls` says it
    (agents/prices.py `_UNPRICED_SQL`), a stage attempt's usage of one model with tokens and
    no cost. Only groups with a row of cost 0 can be unpriced: a partial index finds them."""
    sql = (
        "WITH candidates AS (SELECT DISTINCT u.stage_id, u.attempt, u.model FROM usage u"
        f" WHERE u.cost_usd = 0 AND {window}),"
        " unpriced AS (SELECT u.stage_id, u.attempt, u.model FROM usage u JOIN candidates c"
        " ON c.stage_id = u.stage_id AND c.attempt = u.attempt AND c.model IS u.model"
        f" WHERE {window} GROUP BY u.stage_id, u.attempt, u.model"
        " HAVING SUM(u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens) > 0"
        " AND ABS(SUM(u.cost_usd)) < 1e-12)"
        " SELECT u.ts, u.task_id, u.model, s.provider, t.workflow FROM usage u"
        " JOIN unpriced p ON p.stage_id = u.stage_id AND p.attempt = u.attempt AND p.model IS u.model"
        " JOIN stages s ON s.id = u.stage_id JOIN tasks t ON t.id = u.task_id"
        f" WHERE {window}"
    )
    keys: dict[str, set[str]] = {}
    key_of = _key_of(by)
    for ts, task_id, model, provider, workflow in conn.execute(sql, [*params, *params, *params]):
        key = key_of(ts, task_id, model, provider, workflow)
        keys.setdefault(key, set()).add(model or UNKNOWN_MODEL)
    return keys


def _key_of(by: str) -> Callable[[float, int, str | None, str | None, str], str]:
    if by in TIME_GROUPS:
        return lambda ts, *_: period_key(by, dt.date.fromtimestamp(ts))
    return {
        "workflow": lambda ts, task, model, provider, workflow: workflow,
        "provider": lambda ts, task, model, provider, workflow: provider or UNKNOWN_PROVIDER,
        "model": lambda ts, task, model, provider, workflow: model or UNKNOWN_MODEL,
        "task": lambda ts, task, model, provider, workflow: str(task),
    }[by]


# -- outcomes ----------------------------------------------------------------------------------


def _task_window(since: float | None, until: float | None, alias: str = "t") -> tuple[str, list[float]]:
    where, params = ["1"], []
    if since is not None:
        where.append(f"{alias}.created_at >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{alias}.created_at < ?")
        params.append(until)
    return " AND ".join(where), params


def success_rate(succeeded: int, ended: int) -> float | None:
    """Succeeded of those that ended, 0..1 to four places; None when none ended."""
    return round(succeeded / ended, 4) if ended else None


def workflow_outcomes(conn: sqlite3.Connection, *, since: float | None = None,
                      until: float | None = None) -> list[dict[str, Any]]:
    """Per workflow, of the tasks created in the window: how many, in each state, the
    success rate (succeeded of the tasks that ended) and their cost. Most tasks first."""
    window, params = _task_window(since, until)
    states = ("succeeded", "failed", "cancelled", "timed_out", "running", "queued")
    counts = ", ".join(f"SUM(t.status = '{state}')" for state in states)
    rows = []
    for workflow, tasks, *numbers in conn.execute(
        f"SELECT t.workflow, COUNT(*), {counts} FROM tasks t WHERE {window} GROUP BY t.workflow", params
    ):
        row: dict[str, Any] = {"workflow": workflow, "tasks": int(tasks)}
        row.update({state: int(n or 0) for state, n in zip(states, numbers)})
        ended = row["succeeded"] + row["failed"] + row["cancelled"] + row["timed_out"]
        row["success_rate"] = success_rate(row["succeeded"], ended)
        rows.append(row)
    costs = dict(conn.execute(
        f"SELECT t.workflow, SUM(s.cost_usd) FROM tasks t JOIN stages s ON s.task_id = t.id WHERE {window}"
        " GROUP BY t.workflow", params
    ).fetchall())
    for row in rows:
        row["cost_usd"] = round(float(costs.get(row["workflow"]) or 0.0), 6)
    rows.sort(key=lambda r: (-r["tasks"], r["workflow"]))
    return rows
