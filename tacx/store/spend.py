"""Spending per day, week, month, workflow, provider, model or task (`tacx report cost`),
read from the usage rollup (schema 5, tacx/store/schema.py) and, at a window's edges that
cut a quarter hour, from the usage rows themselves.

Spending is attributed to the time of each usage row (`usage.ts`, when tacx read that
message of the agent's output), so a task that runs past midnight splits across two days;
a provider's spending is that of the attempts it ran. This is exact: a stage's token and
cost columns are written only as the sums of its usage rows (agents/spending.py), and the
rollup sums the same rows, so the rows add up to the tasks' own totals (the `tokens` and
`cost_usd` of `tacx ls --json`). `since`/`until` pick usage rows with ``since <= ts <
until``: without them the rows add up to every task's totals; with them, to what was spent
in the window (a task's whole total when all of its spending lies inside).
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

GROUPS = ("day", "week", "month", "workflow", "provider", "model", "task")
TIME_GROUPS = ("day", "week", "month")
UNKNOWN_MODEL = "(model unknown)"  # as agents/prices.py names usage that arrived with no model
UNKNOWN_PROVIDER = "(provider unknown)"
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
BUCKET = 900  # the rollup's quarter hours, in seconds
_SUMS = "SUM(r.input_tokens), SUM(r.output_tokens), SUM(r.cache_read_tokens), SUM(r.cache_write_tokens), SUM(r.cost_usd)"
# The rollup's column naming each group that is not a time; a covering index on each
# gives its rows in that order (SQLite sums them without sorting 400,000 rows).
_COLUMNS = {"workflow": "r.workflow", "provider": "r.provider", "model": "r.model", "task": "r.task_id"}


class Window:
    """``[since, until)`` as whole rollup buckets (``[first, stop)``), and the pieces at its
    edges that cut a bucket, read from usage rows."""

    def __init__(self, since: float | None, until: float | None) -> None:
        first = None if since is None else math.ceil(since / BUCKET)
        stop = None if until is None else math.floor(until / BUCKET)
        self.edges: list[tuple[float, float]] = []
        if first is not None and stop is not None and first > stop:  # both in one bucket
            self.first, self.stop, self.edges = first, first, [(since or 0.0, until or 0.0)]
            return
        self.first, self.stop = first, stop
        if since is not None and first is not None and since < first * BUCKET:
            self.edges.append((since, first * BUCKET))
        if until is not None and stop is not None and stop * BUCKET < until:
            self.edges.append((stop * BUCKET, until))

    def buckets(self, column: str = "r.bucket") -> tuple[str, list[int]]:
        where, params = ["1"], []
        if self.first is not None:
            where.append(f"{column} >= ?")
            params.append(self.first)
        if self.stop is not None:
            where.append(f"{column} < ?")
            params.append(self.stop)
        return " AND ".join(where), params


def cost_rows(conn: sqlite3.Connection, by: str, *, since: float | None = None,
              until: float | None = None) -> list[dict[str, Any]]:
    """Spending per ``by`` group (one of GROUPS): key, the four token kinds, cost_usd, tasks
    (distinct tasks that spent in it), unpriced (models whose usage there has no price), and
    for tasks their title. Time groups ascending, the others by cost, highest first."""
    if by not in GROUPS:
        raise ValueError(f"unknown group {by!r}: one of {', '.join(GROUPS)}")
    window = Window(since, until)
    edges = _edge_rows(conn, window)
    if by in TIME_GROUPS:
        found = _time_groups(conn, by, window, [e["ts"] for e in edges])
    else:
        found = _named_groups(conn, by, window)
    _add_edges(conn, by, window, found, edges)
    unpriced = _unpriced(conn, by, window, edges)
    rows = list(found.values())
    for row in rows:
        row["cost_usd"] = round(row["cost_usd"], 6)
        models = unpriced.get(row["key"])
        row["unpriced"] = sorted(models) if models else []
    if by == "task":  # a task met only at the window's edges
        missing = [r for r in rows if "title" not in r]
        titles = _titles(conn, [int(r["key"]) for r in missing])
        for row in missing:
            row["title"] = titles.get(int(row["key"]), "")
    if by in TIME_GROUPS:
        rows.sort(key=lambda r: r["key"])  # 2026-11-30, 2026-W49 and 2026-11 sort as they follow
    else:
        natural = (lambda key: int(key)) if by == "task" else (lambda key: key)
        rows.sort(key=lambda r: (-r["cost_usd"], -r["input"] - r["output"] - r["cache_read"] - r["cache_write"],
                                 natural(r["key"])))
    return rows


def _row(key: str, sums: Any, tasks: int) -> dict[str, Any]:
    return {"key": key, "input": int(sums[0] or 0), "output": int(sums[1] or 0), "cache_read": int(sums[2] or 0),
            "cache_write": int(sums[3] or 0), "cost_usd": float(sums[4] or 0.0), "tasks": int(tasks or 0)}


def _time_groups(conn: sqlite3.Connection, by: str, window: Window, edge_times: list[float]) -> dict[str, dict[str, Any]]:
    """Each local day, ISO week or month is a range of buckets (its boundaries computed here,
    in the local time zone, daylight saving included), summed by a range scan of the
    rollup's primary key, one query each: a join with a table of periods sorted every row
    (2.4x slower at 100,000 tasks)."""
    where, params = window.buckets()
    low, high = conn.execute(f"SELECT MIN(r.bucket), MAX(r.bucket) FROM usage_rollup r WHERE {where}", params).fetchone()
    times = [*edge_times, *(b * BUCKET for b in (low, high) if b is not None)]
    if not times:
        return {}
    first, stop = window.first, window.stop
    found: dict[str, dict[str, Any]] = {}
    sql = f"SELECT {_SUMS}, COUNT(DISTINCT r.task_id) FROM usage_rollup r WHERE r.bucket >= ? AND r.bucket < ?"
    for key, start, end in periods_between(by, min(times), max(times)):
        lo, hi = int(start // BUCKET), int(end // BUCKET)
        lo, hi = max(lo, first) if first is not None else lo, min(hi, stop) if stop is not None else hi
        if lo >= hi:
            continue
        sums = conn.execute(sql, (lo, hi)).fetchone()
        if sums[5]:
            found[key] = _row(key, sums[:5], sums[5])
    return found


def periods_between(by: str, first: float, last: float) -> Iterator[tuple[str, float, float]]:
    """(key, start, end) of each local day, ISO week or month from the one holding ``first``
    to the one holding ``last``."""
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


def _named_groups(conn: sqlite3.Connection, by: str, window: Window) -> dict[str, dict[str, Any]]:
    where, params = window.buckets()
    title = ", (SELECT title FROM tasks WHERE id = r.task_id)" if by == "task" else ""
    tasks = "1" if by == "task" else "COUNT(DISTINCT r.task_id)"  # a task's row: one task (no b-tree per row)
    sql = f"SELECT {_COLUMNS[by]}, {_SUMS}, {tasks}{title} FROM usage_rollup r WHERE {where} GROUP BY 1"
    found: dict[str, dict[str, Any]] = {}
    for r in conn.execute(sql, params):
        key = str(r[0]) if by == "task" else _key(by, 0.0, r[0], r[0], r[0], r[0])  # None, "": "(... unknown)"
        found[key] = _row(key, r[1:6], r[6])
        if title:
            found[key]["title"] = r[7] or ""
    return found


# -- the window's edges ------------------------------------------------------------------------


def _edge_rows(conn: sqlite3.Connection, window: Window) -> list[dict[str, Any]]:
    """The usage rows in the window's cut buckets, each with its rollup row's workflow and
    provider (the attempt's, as the rollup recorded them)."""
    rows: list[dict[str, Any]] = []
    for start, end in window.edges:
        for r in conn.execute(
            "SELECT u.ts, u.task_id, u.stage_id, u.attempt, COALESCE(u.model, ''), r.workflow, r.provider,"
            " u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, u.cost_usd FROM usage u"
            " LEFT JOIN usage_rollup r ON r.bucket = CAST(u.ts / 900 AS INTEGER) AND r.stage_id = u.stage_id"
            " AND r.attempt = u.attempt AND r.model = COALESCE(u.model, '') WHERE u.ts >= ? AND u.ts < ?",
            (start, end),
        ):
            rows.append({"ts": r[0], "task_id": r[1], "group": (r[2], r[3], r[4]), "workflow": r[5],
                         "provider": r[6], "sums": r[7:12]})
    return rows


def _key(by: str, ts: float, task_id: int, model: str, workflow: str | None, provider: str | None) -> str:
    if by in TIME_GROUPS:
        return period_key(by, dt.date.fromtimestamp(ts))
    return {
        "workflow": str(workflow),
        "provider": provider or UNKNOWN_PROVIDER,
        "model": model or UNKNOWN_MODEL,
        "task": str(task_id),
    }[by]


def _edge_key(by: str, e: dict[str, Any]) -> str:
    return _key(by, e["ts"], e["task_id"], e["group"][2], e["workflow"], e["provider"])


def _add_edges(conn: sqlite3.Connection, by: str, window: Window, found: dict[str, dict[str, Any]],
               edges: list[dict[str, Any]]) -> None:
    """The edges' usage added to its groups; a task counted once per group, also when the
    rollup part of the window already counted it there."""
    seen: set[tuple[str, int]] = set()
    where, params = window.buckets()
    for e in edges:
        key = _edge_key(by, e)
        row = found.setdefault(key, _row(key, (0, 0, 0, 0, 0.0), 0))
        for kind, value in zip(TOKEN_KINDS, e["sums"][:4]):
            row[kind] += int(value)
        row["cost_usd"] += float(e["sums"][4])
        if (key, e["task_id"]) in seen:
            continue
        seen.add((key, e["task_id"]))
        counted = any(
            _key(by, bucket * BUCKET, e["task_id"], model, workflow, provider) == key
            for bucket, model, workflow, provider in conn.execute(
                f"SELECT r.bucket, r.model, r.workflow, r.provider FROM usage_rollup r WHERE r.task_id = ? AND {where}",
                [e["task_id"], *params],
            )
        )
        if not counted:
            row["tasks"] += 1


# -- unpriced ----------------------------------------------------------------------------------


def _unpriced(conn: sqlite3.Connection, by: str, window: Window, edges: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Which groups hold unpriced usage, and of which models: as `tacx ls` says it
    (agents/prices.py `_UNPRICED_SQL`), a stage attempt's usage of one model with tokens and
    no cost, here within the window. Costs are never negative, so that is an attempt's
    usage of a model with tokens and no row of a cost but 0: the rollup's partial index
    holds the rows of cost 0, and its group index says whether a priced row is beside them."""
    if not edges:
        return _unpriced_whole_buckets(conn, by, window)
    where, params = window.buckets("f.bucket")
    priced_where, priced_params = window.buckets("p.bucket")
    free = [
        (bucket, (stage_id, attempt, model), task_id, workflow, provider, tokens)
        for bucket, stage_id, attempt, model, task_id, workflow, provider, tokens in conn.execute(
            "SELECT f.bucket, f.stage_id, f.attempt, f.model, f.task_id, f.workflow, f.provider, f.input_tokens"
            " + f.output_tokens + f.cache_read_tokens + f.cache_write_tokens FROM usage_rollup f"
            f" WHERE f.cost_usd = 0 AND {where} AND NOT EXISTS (SELECT 1 FROM usage_rollup p"
            " WHERE p.stage_id = f.stage_id AND p.attempt = f.attempt AND p.model = f.model AND p.cost_usd != 0"
            f" AND {priced_where})", [*params, *priced_params],
        )
    ]
    priced = {e["group"] for e in edges if e["sums"][4] != 0}
    tokens: dict[tuple[int, int, str], int] = {}
    keys: dict[tuple[int, int, str], set[str]] = {}
    period_of: dict[int, str] = {}  # bucket -> its period's key, each worked out once
    for bucket, group, task_id, workflow, provider, spent in free:
        if by in TIME_GROUPS:
            key = period_of.get(bucket) or period_of.setdefault(bucket, _key(by, bucket * BUCKET, 0, "", None, None))
        else:
            key = _key(by, 0.0, task_id, group[2], workflow, provider)
        tokens[group] = tokens.get(group, 0) + spent
        keys.setdefault(group, set()).add(key)
    for e in edges:
        if e["sums"][4] == 0:
            if e["group"] not in tokens and conn.execute(  # a priced row in the window's whole buckets?
                f"SELECT 1 FROM usage_rollup p WHERE p.stage_id = ? AND p.attempt = ? AND p.model = ?"
                f" AND p.cost_usd != 0 AND {priced_where} LIMIT 1", [*e["group"], *priced_params],
            ).fetchone():
                priced.add(e["group"])
            tokens[e["group"]] = tokens.get(e["group"], 0) + sum(e["sums"][:4])
            keys.setdefault(e["group"], set()).add(_edge_key(by, e))
    found: dict[str, set[str]] = {}
    for group, spent in tokens.items():
        if spent > 0 and group not in priced:
            for key in keys[group]:
                found.setdefault(key, set()).add(group[2] or UNKNOWN_MODEL)
    return found


_TOKENS_OF = "{t}.input_tokens + {t}.output_tokens + {t}.cache_read_tokens + {t}.cache_write_tokens"
_KEY_OF_FREE = {"workflow": "f.workflow", "provider": "f.provider", "model": "f.model", "task": "f.task_id"}


def _unpriced_whole_buckets(conn: sqlite3.Connection, by: str, window: Window) -> dict[str, set[str]]:
    """``_unpriced`` for a window of whole buckets (no edge rows), all in SQL: each group's
    key (a bucket for a time group) and model, once, where the usage rows of cost 0 beside
    no priced row have tokens (that row's, or, rarely, another's of its attempt and model)."""
    where, params = window.buckets("f.bucket")
    priced_where, priced_params = window.buckets("p.bucket")
    tokens_where, tokens_params = window.buckets("g.bucket")
    key = "f.bucket" if by in TIME_GROUPS else _KEY_OF_FREE[by]
    sql = (
        f"SELECT DISTINCT {key}, f.model FROM usage_rollup f WHERE f.cost_usd = 0 AND {where}"
        " AND NOT EXISTS (SELECT 1 FROM usage_rollup p WHERE p.stage_id = f.stage_id AND p.attempt = f.attempt"
        f" AND p.model = f.model AND p.cost_usd != 0 AND {priced_where})"
        f" AND ({_TOKENS_OF.format(t='f')} > 0 OR EXISTS (SELECT 1 FROM usage_rollup g WHERE g.stage_id = f.stage_id"
        f" AND g.attempt = f.attempt AND g.model = f.model AND g.cost_usd = 0 AND {_TOKENS_OF.format(t='g')} > 0"
        f" AND {tokens_where}))"
    )
    found: dict[str, set[str]] = {}
    period_of: dict[int, str] = {}
    for value, model in conn.execute(sql, [*params, *priced_params, *tokens_params]):
        if by in TIME_GROUPS:
            name = period_of.get(value) or period_of.setdefault(value, _key(by, value * BUCKET, 0, "", None, None))
        else:
            name = _key(by, 0.0, value, value, value, value)
        found.setdefault(name, set()).add(model or UNKNOWN_MODEL)
    return found


def _titles(conn: sqlite3.Connection, ids: list[int]) -> dict[int, str]:
    titles: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        titles.update(conn.execute(f"SELECT id, title FROM tasks WHERE id IN ({marks})", chunk).fetchall())
    return titles
