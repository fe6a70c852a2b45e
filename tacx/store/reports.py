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


def _stage_where(since: float | None, until: float | None, workflow: str | None,
                 alias: str = "s") -> tuple[str, list[Any]]:
    """The stages (``s``) or attempt ends (``a``) of the tasks created in the window, by
    their copies of the task's workflow and creation time (schema 5)."""
    where, params = _task_window(since, until, f"{alias}.task_created_at")
    if workflow is not None:
        where += f" AND {alias}.workflow = ?"
        params = [*params, workflow]
    return where, params


def _figures(conn: sqlite3.Connection, where: str, params: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per workflow and stage, of the stage runs ``where`` picks: counts by state, retries,
    tokens, cost and the first position, unfinished (``_finish`` makes the figures shown)."""
    # Grouped by state too, in the order of the index stages_runs: it streams, unsorted.
    sql = (
        "SELECT s.workflow, s.name, s.status, COUNT(*), SUM(MAX(s.attempt - 1, 0)), SUM(s.input_tokens),"
        " SUM(s.output_tokens), SUM(s.cache_read_tokens), SUM(s.cache_write_tokens), SUM(s.cost_usd), MIN(s.position)"
        f" FROM stages s WHERE {where} AND {_RAN} GROUP BY s.workflow, s.name, s.status"
    )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for workflow, name, status, runs, retries, *spent, position in conn.execute(sql, params):
        row = found.get((workflow, name))
        if row is None:
            row = found[(workflow, name)] = _no_runs()
            row.update(cost_usd=0.0, position=position)
        _add(row, status, runs, retries, spent, position)
    return found


def _add(row: dict[str, Any], status: str, runs: int, retries: int | None, spent: list[Any], position: int) -> None:
    row["runs"] += runs
    if status in row:
        row[status] += runs
    row["retries"] += int(retries or 0)
    for kind, n in zip(TOKEN_KINDS, spent[:4]):
        row["tokens"][kind] += int(n or 0)
    row["cost_usd"] += float(spent[4] or 0.0)
    row["position"] = min(row["position"], position)


# Ended runs' durations in whole seconds: the index of durations on each side's column
# (schema 5: stages_durations, stages_provider_durations, stages_model_durations) holds
# them in this order, so their counts per second stream out of it unsorted.
_SECOND = "CAST(s.ended_at - s.started_at AS INTEGER)"


def _percentiles(conn: sqlite3.Connection, column: str, where: str, params: list[Any],
                 *, overall: bool = False) -> dict[tuple[Any, Any], tuple[float, float]]:
    """p50 and p95 (nearest rank) of the ended runs' durations per ``column`` and stage
    (and with ``overall``, per ``column`` alone, keyed (value, None)), read without
    fetching every duration: the runs counted per whole second give the second holding
    each rank, and only that second's durations are fetched and sorted (5x faster than
    sorting 250,000 durations here at 100,000 tasks)."""
    counts: dict[tuple[Any, Any], dict[int, int]] = {}
    for side, name, second, n in conn.execute(
        f"SELECT {column}, s.name, {_SECOND}, COUNT(*) FROM stages s WHERE {where} AND {_ENDED}"
        f" GROUP BY {column}, s.name, {_SECOND}", params,
    ):
        counts.setdefault((side, name), {})[second] = n
        if overall:
            seconds = counts.setdefault((side, None), {})
            seconds[second] = seconds.get(second, 0) + n
    at_second = f"SELECT s.ended_at - s.started_at FROM stages s WHERE {where} AND {_ENDED} AND {column} = ?"
    found = {}
    for (side, name), seconds in counts.items():
        picked = []
        for percent in (50, 95):
            second, nth = _holding(seconds, rank(sum(seconds.values()), percent))
            names = [name] if name is not None else [n for s, n in counts if s == side and n is not None]
            durations = sorted(d for (d,) in conn.execute(
                f"{at_second} AND s.name IN ({', '.join('?' * len(names))}) AND {_SECOND} = ?",
                [*params, side, *names, second]))
            picked.append(round(durations[nth - 1], 3))
        found[(side, name)] = (picked[0], picked[1])
    return found


def _holding(seconds: dict[int, int], k: int) -> tuple[int, int]:
    """The second holding the k-th duration of those counted, and its rank there."""
    below = 0
    for second in sorted(seconds):
        if below + seconds[second] >= k:
            return second, k - below
        below += seconds[second]
    raise ValueError(f"rank {k} beyond {below} durations")


def _merged(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Several groups' unfinished figures as one group's (a side's stages, overall)."""
    total = _no_runs()
    total.update(cost_usd=0.0, position=0)
    for row in rows:
        for key in ("runs", *_STAGE_STATES, "retries"):
            total[key] += row[key]
        for kind in TOKEN_KINDS:
            total["tokens"][kind] += row["tokens"][kind]
        total["cost_usd"] += row["cost_usd"]
    return total


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    """The figures shown: success rate (succeeded of the runs that ended, skipped aside),
    p50/p95 by nearest rank, cost and cost per run to six places."""
    row.pop("position", None)
    ended = row["succeeded"] + row["failed"] + row["timed_out"] + row["cancelled"]
    row["success_rate"] = success_rate(row["succeeded"], ended)
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
    found = _figures(conn, where, params)
    for key, percentiles in _percentiles(conn, "s.workflow", where, params).items():
        if key in found:
            found[key]["percentiles"] = percentiles
    # Attempts that ended badly, with the words of their error before the output tacx
    # appends to it: kept as the engine records them (schema 5: attempt_ends), in this order.
    where, params = _stage_where(since, until, workflow, "a")
    bad: dict[tuple[str, str], dict[str, int]] = {}
    for wf, stage, kind, error, n in conn.execute(
        f"SELECT a.workflow, a.stage, a.kind, a.reason, COUNT(*) FROM attempt_ends a WHERE {where}"
        " GROUP BY a.workflow, a.stage, a.kind, a.reason", params,
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
    percentiles = _percentiles(conn, column, f"{where} AND {column} IN (?, ?)", [*params, a, b], overall=True)
    sides = []
    for name in (a, b):
        # A side's runs per workflow and stage, in the order of stages_runs (no sort), as one
        # row per stage across the workflows.
        staged: dict[str, dict[str, Any]] = {}
        for (_, stage), row in _figures(conn, f"{where} AND {column} = ?", [*params, name]).items():
            if stage in staged:
                first = min(staged[stage]["position"], row["position"])
                row = _merged([staged[stage], row])
                row["position"] = first
            staged[stage] = row
        stages = sorted(staged.items(), key=lambda item: (item[1]["position"], item[0]))
        for stage, row in stages:
            if (name, stage) in percentiles:
                row["percentiles"] = percentiles[(name, stage)]
        overall = _no_runs()
        if stages:
            overall = _merged([row for _, row in stages])
            overall["percentiles"] = percentiles.get((name, None), (None, None))
            overall = _finish(overall)
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
