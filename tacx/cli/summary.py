"""The summary a headless run ends with: the tasks it touched (started, resumed or ended
while it ran) by state, their tokens and cost as `tacx ls` counts them, and the run's wall
time. For people one line; for machines (`--json`) a last event of kind `summary`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from tacx.agents.prices import Unpriced, cost_text, models
from tacx.cli.colour import Palette

_CHUNK = 500  # ids per query: SQLite bounds the variables of one statement
_STATE_ORDER = ("succeeded", "failed", "timed_out", "cancelled", "running", "queued")


def run_summary(conn: sqlite3.Connection, task_ids: Iterable[int], wall_seconds: float) -> dict[str, Any]:
    """The figures of a run, read from the store (the `data` of the JSON summary)."""
    ids = sorted(set(task_ids))
    states: dict[str, int] = {}
    totals = [0, 0, 0, 0, 0.0]
    unpriced: list[Unpriced] = []
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        for status, n in conn.execute(f"SELECT status, COUNT(*) FROM tasks WHERE id IN ({marks}) GROUP BY status", chunk):
            states[status] = states.get(status, 0) + n
        row = conn.execute(
            "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cache_read_tokens), 0),"
            f" COALESCE(SUM(cache_write_tokens), 0), COALESCE(SUM(cost_usd), 0) FROM stages WHERE task_id IN ({marks})",
            chunk,
        ).fetchone()
        totals = [a + b for a, b in zip(totals, row)]
        unpriced += Unpriced.of_tasks(conn, chunk)
    order = {state: i for i, state in enumerate(_STATE_ORDER)}
    return {
        "tasks": sum(states.values()),
        "states": dict(sorted(states.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))),
        "tokens": {"input": int(totals[0]), "output": int(totals[1]), "cache_read": int(totals[2]),
                   "cache_write": int(totals[3])},
        "cost_usd": round(float(totals[4]), 10),
        "unpriced": models(unpriced),
        "wall_seconds": round(wall_seconds, 3),
        "task_ids": ids,
    }


def summary_text(figures: dict[str, Any], palette: Palette) -> str:
    """One line for people: `summary: 4 tasks: 3 succeeded, 1 failed · tokens in 12.3k,
    out 4.5k · $0.0123 · 41.2s`; a cost with no price known says "unpriced", never $0."""
    n = figures["tasks"]
    if not n:
        return f"summary: no task ran · {_wall(figures['wall_seconds'])}"
    states = ", ".join(f"{count} {palette.state(state, state.replace('_', ' '))}"
                       for state, count in figures["states"].items())
    parts = [f"summary: {n} task{'s' if n != 1 else ''}: {states}"]
    tokens = figures["tokens"]
    if any(tokens.values()):
        said = f"tokens in {token_count(tokens['input'])}, out {token_count(tokens['output'])}"
        if tokens["cache_read"] or tokens["cache_write"]:
            said += f", cache read {token_count(tokens['cache_read'])}, write {token_count(tokens['cache_write'])}"
        parts.append(said)
    if figures["cost_usd"] or figures["unpriced"]:
        cost = cost_text(figures["cost_usd"], figures["unpriced"])
        parts.append(palette.paint(cost, "yellow") if figures["unpriced"] else cost)
    parts.append(_wall(figures["wall_seconds"]))
    return " · ".join(parts)


def token_count(n: int) -> str:
    """Tokens for the headless output: 37, 71.9k, 1.25M."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _wall(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
