"""What was spent and how work went, read from the store: `tacx report` and the dashboard's
reports screen. Pure functions over a sqlite3 connection (no asyncio, no printing).

Spending (`cost_rows`, in tacx/store/spend.py) is attributed to the time of each usage row,
so a task that runs past midnight splits across two days; its rows add up exactly to the
tasks' own totals (see spend.py for why).

Outcomes, stage statistics and comparisons are about tasks: their window picks the tasks
created in ``[since, until)``, and a task's cost there is its whole total.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from tacx.store.spend import (  # noqa: F401 - the reports' one module for their readers
    GROUPS, TIME_GROUPS, TOKEN_KINDS, UNKNOWN_MODEL, UNKNOWN_PROVIDER, cost_rows, period_key, periods_between,
)

# -- outcomes ----------------------------------------------------------------------------------


def _task_window(since: float | None, until: float | None, created: str = "t.created_at") -> tuple[str, list[float]]:
    where, params = ["1"], []
    if since is not None:
        where.append(f"{created} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{created} < ?")
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
    # The tasks' own totals (their stages'); a stage that never ran spent nothing, so the
    # stages that ran are enough, read in workflow order from stages_runs without a sort.
    where, params = _stage_where(since, until, None)
    costs = dict(conn.execute(
        f"SELECT s.workflow, SUM(s.cost_usd) FROM stages s WHERE {where} AND {_RAN} GROUP BY s.workflow", params
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
# Attempts that ended badly, as the engine records them (engine/outcome.py end_stage); the
# partial index events_attempt_ends finds them (it is used only when this text is the same).
_BAD_ENDS = "e.kind IN ('stage.failed', 'stage.timed_out', 'stage.cancelled')"
# An error's words before the output tacx appends to it ("; last output:\n..."): the reason
# is in them, and grouped by them a hundred thousand errors are a few dozen texts.
_ERROR = "json_extract(e.data, '$.error')"
_ERROR_HEAD = (f"substr(CASE WHEN instr({_ERROR}, '; last output:') > 0 THEN substr({_ERROR}, 1,"
               f" instr({_ERROR}, '; last output:') - 1) ELSE {_ERROR} END, 1, 200)")


def _stage_where(since: float | None, until: float | None, workflow: str | None,
                 alias: str = "s") -> tuple[str, list[Any]]:
    """The stages (``s``: their copies of the task's workflow and creation time, schema 5)
    or events joined with their tasks (``t``) of the tasks created in the window."""
    where, params = _task_window(since, until, f"{alias}.task_created_at" if alias == "s" else f"{alias}.created_at")
    if workflow is not None:
        where += f" AND {alias}.workflow = ?"
        params = [*params, workflow]
    return where, params


def _figures(conn: sqlite3.Connection, group: list[str], where: str, params: list[Any],
             *, ranked: bool = False) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per group of stage runs (``group``: SQL columns of ``stages s``): counts by state,
    retries, tokens, cost, the first position and the ended runs' durations (or, per
    workflow and stage with ``ranked``, their p50 and p95 read from the index), unfinished
    (``_finish`` makes the figures shown)."""
    columns = ", ".join(group)
    # Grouped by state too, in the order of the index stages_runs: it streams, unsorted.
    sql = (
        f"SELECT {columns}, s.status, COUNT(*), SUM(MAX(s.attempt - 1, 0)), SUM(s.input_tokens), SUM(s.output_tokens),"
        " SUM(s.cache_read_tokens), SUM(s.cache_write_tokens), SUM(s.cost_usd), MIN(s.position)"
        f" FROM stages s WHERE {where} AND {_RAN} GROUP BY {columns}, s.status"
    )
    width = len(group)
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in conn.execute(sql, params):
        key, (status, runs, retries, *spent), position = tuple(r[:width]), r[width:-1], r[-1]
        row = found.get(key)
        if row is None:
            row = found[key] = _no_runs()
            row.update(cost_usd=0.0, position=position, durations=[])
        row["runs"] += runs
        if status in row:
            row[status] += runs
        row["retries"] += int(retries or 0)
        for kind, n in zip(TOKEN_KINDS, spent[:4]):
            row["tokens"][kind] += int(n or 0)
        row["cost_usd"] += float(spent[4] or 0.0)
        row["position"] = min(row["position"], position)
    if ranked and group == ["s.workflow", "s.name"]:
        for key, p50, p95 in _indexed_percentiles(conn, where, params):
            if key in found:
                found[key]["percentiles"] = (p50, p95)
        return found
    # Other groups: the ended runs' durations, sorted here (SQL's window functions took 3x longer).
    for r in conn.execute(
        f"SELECT {columns}, s.ended_at - s.started_at FROM stages s WHERE {where} AND {_ENDED}", params
    ):
        if (key := tuple(r[:width])) in found:
            found[key]["durations"].append(r[width])
    return found


def _indexed_percentiles(conn: sqlite3.Connection, where: str,
                         params: list[Any]) -> Iterator[tuple[tuple[str, str], float, float]]:
    """p50 and p95 of each workflow's stage's ended runs, read at their ranks from the index
    of durations (schema 5, `stages_durations`: the planner takes it for this order): no
    duration is fetched but the two (3-4x faster than sorting them here at 100,000 tasks)."""
    index = "stages s"
    at_rank = (f"SELECT s.ended_at - s.started_at FROM {index} WHERE s.workflow = ? AND s.name = ? AND {where}"
               f" AND {_ENDED} ORDER BY s.ended_at - s.started_at LIMIT 1 OFFSET ?")
    for workflow, name, n in conn.execute(
        f"SELECT s.workflow, s.name, COUNT(*) FROM {index} WHERE {where} AND {_ENDED} GROUP BY 1, 2", params
    ).fetchall():
        p50, p95 = (conn.execute(at_rank, [workflow, name, *params, rank(n, p) - 1]).fetchone()[0] for p in (50, 95))
        yield (workflow, name), round(p50, 3), round(p95, 3)


def _merged(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Several groups' unfinished figures as one group's (a side's stages, overall)."""
    total = _no_runs()
    total.update(cost_usd=0.0, position=0, durations=[])
    for row in rows:
        for key in ("runs", *_STAGE_STATES, "retries"):
            total[key] += row[key]
        for kind in TOKEN_KINDS:
            total["tokens"][kind] += row["tokens"][kind]
        total["cost_usd"] += row["cost_usd"]
        total["durations"] += row["durations"]
    return total


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    """The figures shown: success rate (succeeded of the runs that ended, skipped aside),
    p50/p95 by nearest rank, cost and cost per run to six places."""
    durations = sorted(row.pop("durations"))
    row.pop("position", None)
    ended = row["succeeded"] + row["failed"] + row["timed_out"] + row["cancelled"]
    row["success_rate"] = success_rate(row["succeeded"], ended)
    if durations:
        row["p50_seconds"], row["p95_seconds"] = round(nearest_rank(durations, 50), 3), round(nearest_rank(durations, 95), 3)
    else:
        row["p50_seconds"], row["p95_seconds"] = row.pop("percentiles", (None, None))
    row["cost_usd"] = round(row["cost_usd"], 6)
    row["cost_per_run"] = round(row["cost_usd"] / row["runs"], 6) if row["runs"] else None
    return row


def rank(n: int, percent: int) -> int:
    """The nearest rank of a percentile among n values: ceil(percent / 100 * n), at least 1."""
    return max((percent * n + 99) // 100, 1)


def nearest_rank(ordered: list[float], percent: int) -> float:
    """The value at the percentile's nearest rank of n sorted values."""
    return ordered[rank(len(ordered), percent) - 1]


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
    found = _figures(conn, ["s.workflow", "s.name"], where, params, ranked=True)
    where, params = _stage_where(since, until, workflow, "t")
    bad: dict[tuple[str, str], dict[str, int]] = {}
    for wf, stage, kind, error, n in conn.execute(
        f"SELECT t.workflow, e.stage, e.kind, {_ERROR_HEAD}, COUNT(*)"
        f" FROM events e JOIN tasks t ON t.id = e.task_id WHERE {_BAD_ENDS} AND {where} GROUP BY 1, 2, 3, 4",
        params,
    ):
        reasons = bad.setdefault((wf, stage), {})
        reason = failure_reason(kind, error)
        reasons[reason] = reasons.get(reason, 0) + int(n)
    rows = []
    for (wf, stage), figures in sorted(found.items(), key=lambda item: (item[0][0], item[1]["position"], item[0][1])):
        reasons = bad.get((wf, stage), {})
        rows.append({
            "workflow": wf, "stage": stage, **_finish(figures),
            "timeouts": sum(n for r, n in reasons.items() if r in ("timed out", "idle timeout")),
            "failures": dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        })
    return rows


def failure_reason(kind: str, error: str | None) -> str:
    """A short reason for an attempt that ended badly, from the error tacx wrote for it
    (engine/outcome.py): "exit code 1", "timed out", "idle timeout", "budget", "rate
    limited", "cancelled", "killed", "signal SIGKILL", "unreachable", "agent failure",
    "missing expects", "unreadable output"; another error's first words."""
    if kind == "stage.cancelled":
        return "cancelled"
    text = (error or "").partition("; last output:")[0].strip()
    lowered = text.lower()
    if kind == "stage.timed_out":
        return "idle timeout" if lowered.startswith("no output for") else "timed out"
    if lowered.startswith("stopped: budget"):
        return "budget"
    if "rate limit" in lowered or "rate_limit" in lowered or "usage limit" in lowered or " 429" in lowered:
        return "rate limited"
    if lowered.startswith("exited with code "):
        return "exit code " + text[len("exited with code "):].split(":")[0].strip()
    if lowered.startswith("killed by signal "):
        return "signal " + text[len("killed by signal "):].split()[0]
    if lowered.startswith("killed from the dashboard"):
        return "killed"
    if lowered.startswith("cannot reach the api"):
        return "unreachable"
    if lowered.startswith("exited 0 but did not write"):
        return "missing expects"
    if lowered.startswith("exited 0, but"):
        return "agent failure"
    if lowered.startswith("tacx could not read the agent"):
        return "unreadable output"
    if not text:
        return "unknown"
    head = text.splitlines()[0]
    return head if len(head) <= 40 else head[:39] + "…"


# -- compare -----------------------------------------------------------------------------------

DIMENSIONS = {"workflow": "s.workflow", "provider": "s.provider", "model": "s.model"}


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
    staged = _figures(conn, [column, "s.name"], where, params)
    sides = []
    for name in (a, b):
        stages = sorted(((stage, row) for (side, stage), row in staged.items() if side == name),
                        key=lambda item: (item[1]["position"], item[0]))
        overall = _finish(_merged([row for _, row in stages])) if stages else _no_runs()
        sides.append({
            "name": name,
            "overall": overall,
            "stages": [{"stage": stage, **_finish(row)} for stage, row in stages],
        })
    return {"dimension": dimension, "workflow": workflow, "sides": sides}


def _no_runs() -> dict[str, Any]:
    row: dict[str, Any] = {"runs": 0, **{state: 0 for state in _STAGE_STATES}}
    row.update(success_rate=None, p50_seconds=None, p95_seconds=None, retries=0,
               tokens={kind: 0 for kind in TOKEN_KINDS}, cost_usd=0.0, cost_per_run=None)
    return row
