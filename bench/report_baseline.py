"""The reports as first written for schema 4 (tacx/store/reports.py at its first version):
tasks joined to their stages and events for every figure, durations sorted in Python. The
baseline bench/report.py measures schema 5's reports against, on a copy of the store without
schema 5's rollup and indexes; it also checks that both give the same figures."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from tacx.store.reports import failure_reason, success_rate  # not queries: the same on both sides

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


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


# -- stages ------------------------------------------------------------------------------------

# A stage "ran" when an attempt of it started, or it was skipped; a task's stage is one run
# however many attempts it took. Its duration is its last attempt's (started_at..ended_at).
_RAN = "(s.attempt > 0 OR s.status = 'skipped')"
_ENDED = "s.status IN ('succeeded', 'failed', 'timed_out') AND s.started_at IS NOT NULL AND s.ended_at IS NOT NULL"
_STAGE_STATES = ("succeeded", "failed", "timed_out", "cancelled", "skipped", "running")
# Attempts that ended badly, as the engine records them (engine/outcome.py end_stage): read
# from the events themselves (schema 5 copies them into attempt_ends).
_BAD_ENDS = "e.kind IN ('stage.failed', 'stage.timed_out', 'stage.cancelled')"


def _stage_where(since: float | None, until: float | None, workflow: str | None) -> tuple[str, list[Any]]:
    where, params = _task_window(since, until)
    if workflow is not None:
        where += " AND t.workflow = ?"
        params = [*params, workflow]
    return where, params


def _figures(conn: sqlite3.Connection, group: list[str], where: str, params: list[Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per group of stage runs (``group``: SQL columns over ``stages s`` and ``tasks t``):
    counts by state, success rate, p50/p95 duration, retries, tokens and cost."""
    columns = ", ".join(group)
    counts = ", ".join(f"SUM(s.status = '{state}')" for state in _STAGE_STATES)
    sql = (
        f"SELECT {columns}, COUNT(*), {counts}, SUM(MAX(s.attempt - 1, 0)), SUM(s.input_tokens),"
        " SUM(s.output_tokens), SUM(s.cache_read_tokens), SUM(s.cache_write_tokens), SUM(s.cost_usd), MIN(s.position)"
        f" FROM stages s JOIN tasks t ON t.id = s.task_id WHERE {where} AND {_RAN} GROUP BY {columns}"
    )
    width = len(group)
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in conn.execute(sql, params):
        key, (runs, *rest) = tuple(r[:width]), r[width:]
        states, (retries, *spent), position = rest[:len(_STAGE_STATES)], rest[len(_STAGE_STATES):-1], rest[-1]
        row: dict[str, Any] = {"runs": int(runs)}
        row.update({state: int(n or 0) for state, n in zip(_STAGE_STATES, states)})
        ended = row["succeeded"] + row["failed"] + row["timed_out"] + row["cancelled"]
        row["success_rate"] = success_rate(row["succeeded"], ended)
        row["p50_seconds"] = row["p95_seconds"] = None
        row["retries"] = int(retries or 0)
        row["tokens"] = {kind: int(n or 0) for kind, n in zip(TOKEN_KINDS, spent[:4])}
        row["cost_usd"] = round(float(spent[4] or 0.0), 6)
        row["cost_per_run"] = round(row["cost_usd"] / row["runs"], 6) if row["runs"] else None
        row["position"] = position
        found[key] = row
    for key, p50, p95 in _percentiles(conn, group, where, params):
        if key in found:
            found[key]["p50_seconds"], found[key]["p95_seconds"] = p50, p95
    return found


def _percentiles(conn: sqlite3.Connection, group: list[str], where: str,
                 params: list[Any]) -> Iterator[tuple[tuple[Any, ...], float, float]]:
    """p50 and p95 of the ended runs' durations per group, by nearest rank (the value at
    rank ceil(p * n) of the n sorted). Sorted here: SQL's window functions took 3x longer."""
    durations: dict[tuple[Any, ...], list[float]] = {}
    width = len(group)
    for r in conn.execute(
        f"SELECT {', '.join(group)}, s.ended_at - s.started_at FROM stages s JOIN tasks t ON t.id = s.task_id"
        f" WHERE {where} AND {_ENDED}", params
    ):
        durations.setdefault(tuple(r[:width]), []).append(r[width])
    for key, values in durations.items():
        values.sort()
        yield key, round(nearest_rank(values, 50), 3), round(nearest_rank(values, 95), 3)


def nearest_rank(ordered: list[float], percent: int) -> float:
    """The value at rank ceil(percent / 100 * n) of n sorted values (1-based)."""
    return ordered[max((percent * len(ordered) + 99) // 100, 1) - 1]


def stage_stats(conn: sqlite3.Connection, *, since: float | None = None, until: float | None = None,
                workflow: str | None = None) -> list[dict[str, Any]]:
    """Per workflow and stage, of the tasks created in the window: runs (a task's stage
    that started or was skipped), their final states, success rate (succeeded of those
    that ended, skipped aside), p50/p95 of the last attempt's duration over the runs that
    succeeded, failed or timed out, retries (attempts beyond the first: retries after a
    failure, failovers to another agent, loop rounds, runs again after an interruption),
    timeouts (attempts that timed out) and failures (attempts that failed, timed out or
    were cancelled, by reason). Workflows by name, stages in their order."""
    where, params = _stage_where(since, until, workflow)
    found = _figures(conn, ["t.workflow", "s.name"], where, params)
    bad: dict[tuple[str, str], dict[str, int]] = {}
    for wf, stage, kind, error, n in conn.execute(
        "SELECT t.workflow, e.stage, e.kind, substr(json_extract(e.data, '$.error'), 1, 200), COUNT(*)"
        f" FROM events e JOIN tasks t ON t.id = e.task_id WHERE {_BAD_ENDS} AND {where} GROUP BY 1, 2, 3, 4",
        params,
    ):
        reasons = bad.setdefault((wf, stage), {})
        reason = failure_reason(kind, error)
        reasons[reason] = reasons.get(reason, 0) + int(n)
    rows = []
    for (wf, stage), figures in found.items():
        reasons = bad.get((wf, stage), {})
        rows.append({
            "workflow": wf, "stage": stage, **figures,
            "timeouts": sum(n for r, n in reasons.items() if r in ("timed out", "idle timeout")),
            "failures": dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        })
    rows.sort(key=lambda r: (r["workflow"], r.pop("position"), r["stage"]))
    return rows


# -- compare -----------------------------------------------------------------------------------

DIMENSIONS = {"workflow": "t.workflow", "provider": "s.provider", "model": "s.model"}


def compare(conn: sqlite3.Connection, dimension: str, a: str, b: str, *, workflow: str | None = None,
            since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """Two workflows, providers (a stage's agent) or models (the model its agent reported)
    side by side on the stage runs of the tasks created in the window (and of `workflow`):
    for each side, overall and per stage, runs, success rate, p50/p95 duration, tokens,
    cost and cost per run. A side with no runs has "runs": 0 overall and no stages."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}: one of {', '.join(DIMENSIONS)}")
    column = DIMENSIONS[dimension]
    where, params = _stage_where(since, until, workflow)
    where += f" AND {column} IN (?, ?)"
    params = [*params, a, b]
    overall = _figures(conn, [column], where, params)
    staged = _figures(conn, [column, "s.name"], where, params)
    sides = []
    for name in (a, b):
        total = overall.get((name,)) or _no_runs()
        total.pop("position", None)
        stages = sorted(((stage, row) for (side, stage), row in staged.items() if side == name),
                        key=lambda item: (item[1]["position"], item[0]))
        sides.append({
            "name": name,
            "overall": total,
            "stages": [{"stage": stage, **{k: v for k, v in row.items() if k != "position"}} for stage, row in stages],
        })
    return {"dimension": dimension, "workflow": workflow, "sides": sides}


def _no_runs() -> dict[str, Any]:
    row: dict[str, Any] = {"runs": 0, **{state: 0 for state in _STAGE_STATES}}
    row.update(success_rate=None, p50_seconds=None, p95_seconds=None, retries=0,
               tokens={kind: 0 for kind in TOKEN_KINDS}, cost_usd=0.0, cost_per_run=None)
    return row
