"""What the reports screen shows, read from the store with tacx.store.reports (the queries
`tacx report` prints): no Textual. The screen calls `read_report` in a worker thread, on a
connection opened and closed there, so its event loop never waits on SQLite."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from tacx.store.database import connect_reader
from tacx.store.reports import cost_rows, workflow_outcomes

PERIODS: tuple[int | None, ...] = (7, 30, 90, None)  # days; None: all the store holds
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
DayCost = tuple[str, float, tuple[str, ...]]  # "YYYY-MM-DD", USD, the models of its usage with no price


def period_words(days: int | None) -> str:
    return f"the last {days} days" if days else "all time"


@dataclass(frozen=True)
class Report:
    """One period's figures: cost per day (every day of the period, oldest first), cost
    per workflow (costliest first), outcomes per workflow, and their totals."""

    days: int | None
    today: str  # "YYYY-MM-DD", local time
    per_day: list[DayCost]
    per_workflow: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]

    @property
    def cost(self) -> float:
        return sum(row["cost_usd"] for row in self.per_workflow)

    @property
    def tokens(self) -> int:
        return sum(row[kind] for row in self.per_workflow for kind in TOKEN_KINDS)

    @property
    def unpriced(self) -> tuple[str, ...]:
        """Models used in the period whose usage has no known price (its cost is unknown, not 0)."""
        return tuple(sorted({model for row in self.per_workflow for model in row.get("unpriced", ())}))

    @property
    def tasks(self) -> int:
        return sum(row["tasks"] for row in self.outcomes)

    @property
    def succeeded(self) -> int:
        return sum(row["succeeded"] for row in self.outcomes)

    @property
    def ended(self) -> int:
        return sum(row["succeeded"] + row["failed"] + row["cancelled"] + row["timed_out"] for row in self.outcomes)

    @property
    def empty(self) -> bool:
        """Nothing ran and nothing was spent in the period."""
        return not self.tasks and not self.cost and not self.tokens


def period_start(now: float, days: int) -> float:
    """Local midnight ``days - 1`` days before ``now``'s day: the period ends today."""
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday - (days - 1), 0, 0, 0, 0, 0, -1))


def every_day(rows: dict[str, dict[str, Any]], first: date, last: date) -> list[DayCost]:
    """Each day from ``first`` to ``last`` with its cost (of cost_rows by day), 0 where
    nothing was spent."""
    days = []
    for n in range((last - first).days + 1):
        key = (first + timedelta(days=n)).isoformat()
        row = rows.get(key)
        days.append((key, float(row["cost_usd"]), tuple(row.get("unpriced", ()))) if row else (key, 0.0, ()))
    return days


def read_report(conn: sqlite3.Connection, days: int | None, now: float) -> Report:
    """The period's figures in one read transaction (the three queries agree)."""
    since = period_start(now, days) if days else None
    conn.execute("BEGIN")
    try:
        per_day = cost_rows(conn, "day", since=since)
        per_workflow = cost_rows(conn, "workflow", since=since)
        outcomes = workflow_outcomes(conn, since=since)
    finally:
        conn.execute("COMMIT")
    today = date.fromtimestamp(now)
    by_key = {str(row["key"]): row for row in per_day}
    keys = [date.fromisoformat(key) for key in by_key]
    first = today - timedelta(days=days - 1) if days else min(keys, default=today)
    last = max([today, *keys])  # a clock set back leaves later days in the store: they are shown
    return Report(days, today.isoformat(), every_day(by_key, min(first, *keys) if keys else first, last),
                  per_workflow, outcomes)


def read_home(db_path: Path, days: int | None, now: float) -> Report:
    """`read_report` on a connection of its own, closed before it returns; an empty
    report for a home with no store yet."""
    conn = connect_reader(db_path)
    if conn is None:
        return Report(days, date.fromtimestamp(now).isoformat(), [], [], [])
    try:
        return read_report(conn, days, now)
    finally:
        conn.close()
