"""`tacx report` at scale: each report query on a store of 100,000 tasks, with and without
the schema-5 indexes (tacx/store/schema.py). Goal: under 200 ms each.

One store is built in one transaction (executemany, plain SQL matching the schema): tasks
of four workflows of 2-5 stages over 90 days, run by four agents and six models, most
succeeding, some failing (exit codes, rate limits, budget stops), timing out or cancelled,
some stages retried, a few usage groups unpriced; a usage row per agent message (a few per
attempt), and the events the engine writes (stage starts and ends, retries). A copy loses
the new indexes (and gets back schema 4's index on usage.ts). Both are opened in this
process; every query (cost by each group, workflow outcomes, stage stats, compare), without
a window and over the last 7 days, runs `--runs` times on each, alternating; the medians,
and the ratio without / with, are printed.

    python bench/report.py               # 100,000 tasks, 5 runs
    python bench/report.py --tasks 10000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report_baseline as baseline  # noqa: E402
from tacx.store import reports  # noqa: E402
from tacx.store.database import connect  # noqa: E402
from tacx.store.schema import MIGRATIONS  # noqa: E402

GOAL_MS = 200.0
DAYS = 90
# workflow -> its stages; each stage's agents (the first most often) and weight.
WORKFLOWS: dict[str, list[str]] = {
    "fix-issue": ["plan", "implement", "test", "review"],
    "refactor": ["plan", "implement", "test", "lint", "review"],
    "triage": ["classify", "label"],
    "docs": ["draft", "check", "review"],
}
WORKFLOW_WEIGHTS = [5, 2, 4, 1]
AGENTS = {  # provider -> (models, $ per 1k tokens, usage rows per attempt)
    "claude": (["claude-sonnet-4-5", "claude-haiku-4-5"], 0.006, (3, 12)),
    "codex": (["gpt-5-codex"], 0.004, (2, 8)),
    "gemini": (["gemini-2.5-pro", "gemini-2.5-flash"], 0.003, (2, 6)),
    "aider": (["local-qwen"], 0.0, (1, 3)),  # no price known: unpriced
}
AGENT_WEIGHTS = [6, 4, 2, 1]
ERRORS = [
    ("stage.failed", "exited with code 1; last output:\nError: tests failed"),
    ("stage.failed", "exited with code 2"),
    ("stage.failed", "exited with code 1: rate limit exceeded (429)"),
    ("stage.failed", "stopped: budget exceeded: cost $5.1200 passed the budget of $5.00 by $0.1200"),
    ("stage.failed", "exited 0, but the agent reported a failure"),
    ("stage.timed_out", "timed out after 20m (timeout)"),
    ("stage.timed_out", "no output for 5m (idle_timeout)"),
]
ERROR_WEIGHTS = [6, 2, 2, 1, 2, 2, 1]
NEW_INDEXES = ("tasks_created", "tasks_outcomes", "events_attempt_ends", "stages_runs", "stages_durations")


def build(path: Path, count: int, seed: int = 13) -> dict[str, int]:
    """A store of `count` tasks, made in one transaction; the number of rows per table."""
    rng = random.Random(seed)
    now = time.time()
    conn = connect(path)
    tasks: list[tuple[Any, ...]] = []
    stages: list[tuple[Any, ...]] = []
    usage: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    stage_id = 0
    names, providers = list(WORKFLOWS), list(AGENTS)
    for task_id in range(1, count + 1):
        created = now - DAYS * 86400 * (1 - task_id / count) - 60
        workflow = rng.choices(names, WORKFLOW_WEIGHTS)[0]
        newest = task_id > count - 20
        t = created + rng.uniform(1, 30)
        events.append((task_id, None, created, "task.queued", "{}"))
        status = "queued" if newest and rng.random() < 0.5 else "succeeded"
        if status != "queued":
            events.append((task_id, None, t, "task.started", "{}"))
        for position, name in enumerate(WORKFLOWS[workflow]):
            stage_id += 1
            provider = rng.choices(providers, AGENT_WEIGHTS)[0]
            models, price, per_attempt = AGENTS[provider]
            model = rng.choice(models)
            row = {"status": "pending", "attempt": 0, "started": None, "ended": None, "error": None, "exit": None}
            spent = [0, 0, 0, 0, 0.0]
            if status == "succeeded":
                attempts = 1 + (rng.random() < 0.08) + (rng.random() < 0.02)
                for attempt in range(1, attempts + 1):
                    started = t
                    t += rng.uniform(5, 600)
                    last = attempt == attempts
                    bad = not last or rng.random() < 0.06
                    events.append((task_id, name, started, "stage.started", json.dumps({"attempt": attempt, "provider": provider})))
                    for n in range(rng.randint(*per_attempt)):
                        tokens = [rng.randint(100, 20_000), rng.randint(50, 4000), rng.randint(0, 80_000), rng.randint(0, 5000)]
                        cost = round(sum(tokens) / 1000 * price, 6)
                        spent = [a + b for a, b in zip(spent, [*tokens, cost])]
                        usage.append((task_id, stage_id, attempt, started + (n + 1) * (t - started) / (per_attempt[1] + 1),
                                      f"m{stage_id}-{attempt}-{n}", model, *tokens, cost))
                    if bad:
                        kind, error = rng.choices(ERRORS, ERROR_WEIGHTS)[0]
                        events.append((task_id, name, t, kind, json.dumps({"attempt": attempt, "error": error})))
                        if not last:
                            events.append((task_id, name, t, "stage.retrying", json.dumps({"delay": 5, "failures": attempt})))
                            t += 5
                        else:
                            row.update(status=kind.removeprefix("stage."), error=error)
                    else:
                        events.append((task_id, name, t, "stage.succeeded", json.dumps({"attempt": attempt})))
                        row["status"] = "succeeded"
                    row.update(attempt=attempt, started=started, ended=t)
                if row["status"] != "succeeded":
                    status = row["status"]
            elif status in ("failed", "timed_out"):
                row["status"] = "skipped"
            stages.append((stage_id, task_id, name, position, row["status"], row["attempt"], max(row["attempt"] - 1, 0),
                           provider, model, row["started"], row["ended"], row["error"], *spent))
        if rng.random() < 0.01 and status == "succeeded":
            status = "cancelled"
        ended = t if status not in ("queued",) else None
        if ended:
            events.append((task_id, None, t, f"task.{status}", "{}"))
        tasks.append((task_id, workflow, f"task {task_id}: {workflow}", status, created,
                      None if status == "queued" else created + 1, ended))
    with conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO tasks (id, trace_id, workflow, workflow_path, workflow_text, workflow_hash, title, inputs,"
            " status, project_root, created_at, started_at, ended_at) VALUES (?, 'trace', ?, 'w.yaml', '', 'h', ?,"
            " '{}', ?, '/project', ?, ?, ?)", tasks)
        conn.executemany(
            "INSERT INTO stages (id, task_id, name, position, status, attempt, failures, provider, model, started_at,"
            " ended_at, error, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", stages)
        conn.executemany(
            "INSERT INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens, output_tokens,"
            " cache_read_tokens, cache_write_tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", usage)
        conn.executemany("INSERT INTO events (task_id, stage, ts, kind, data) VALUES (?, ?, ?, ?, ?)", events)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"tasks": len(tasks), "stages": len(stages), "usage": len(usage), "events": len(events)}


def without_new_indexes(source: Path, target: Path) -> None:
    """A copy of the store as schema 4 indexed it: no usage rollup, none of the new indexes."""
    shutil.copy(source, target)
    conn = sqlite3.connect(target)
    conn.execute("DROP TRIGGER usage_rollup_add")
    conn.execute("DROP TABLE usage_rollup")  # its indexes go with it
    for name in NEW_INDEXES:
        conn.execute(f"DROP INDEX {name}")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


# Spending as summed from the usage rows themselves (what the store has without the rollup):
# the baseline the rollup is measured against. The same rows, unpriced usage aside.
_SUMS = ("SUM(u.input_tokens), SUM(u.output_tokens), SUM(u.cache_read_tokens), SUM(u.cache_write_tokens),"
         " SUM(u.cost_usd), COUNT(DISTINCT u.task_id)")
_NAMED = {
    "workflow": ("t.workflow", "JOIN tasks t ON t.id = u.task_id"),
    "provider": ("s.provider", "JOIN stages s ON s.id = u.stage_id"),
    "model": ("u.model", ""),
    "task": ("u.task_id", ""),
}


def cost_from_usage(conn: sqlite3.Connection, by: str, since: float | None) -> list[tuple[Any, ...]]:
    window, params = ("u.ts >= ?", [since]) if since is not None else ("1", [])
    if by in reports.TIME_GROUPS:
        first, last = conn.execute(f"SELECT MIN(u.ts), MAX(u.ts) FROM usage u WHERE {window}", params).fetchone()
        periods = list(reports.periods_between(by, first, last))
        values = ", ".join("(?, ?, ?)" for _ in periods)
        return conn.execute(
            f"WITH periods(key, lo, hi) AS (VALUES {values}) SELECT p.key, {_SUMS} FROM periods p JOIN usage u"
            f" ON u.ts >= p.lo AND u.ts < p.hi WHERE {window} GROUP BY p.key",
            [*(v for period in periods for v in period), *params]).fetchall()
    column, join = _NAMED[by]
    return conn.execute(f"SELECT {column}, {_SUMS} FROM usage u {join} WHERE {window} GROUP BY 1", params).fetchall()


def queries(since: float | None) -> dict[str, tuple[Callable[[sqlite3.Connection], Any], ...]]:
    """name -> (the query with the new schema, the same without it)."""
    found: dict[str, tuple[Callable[[sqlite3.Connection], Any], ...]] = {}
    for by in reports.GROUPS:
        found[f"cost --by {by}"] = (lambda c, by=by: reports.cost_rows(c, by, since=since),
                                    lambda c, by=by: cost_from_usage(c, by, since))
    pairs = {
        "workflow_outcomes": (lambda c: reports.workflow_outcomes(c, since=since),
                              lambda c: baseline.workflow_outcomes(c, since=since)),
        "stats": (lambda c: reports.stage_stats(c, since=since), lambda c: baseline.stage_stats(c, since=since)),
        "stats --workflow": (lambda c: reports.stage_stats(c, since=since, workflow="fix-issue"),
                             lambda c: baseline.stage_stats(c, since=since, workflow="fix-issue")),
    }
    for name, args, kwargs in (
        ("compare --providers", ("provider", "claude", "codex"), {}),
        ("compare --models -w", ("model", "claude-sonnet-4-5", "gpt-5-codex"), {"workflow": "fix-issue"}),
        ("compare --workflows", ("workflow", "fix-issue", "refactor"), {}),
    ):
        pairs[name] = (lambda c, a=args, k=kwargs: reports.compare(c, *a, since=since, **k),
                       lambda c, a=args, k=kwargs: baseline.compare(c, *a, since=since, **k))
    found.update(pairs)
    return found


def timed(fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection) -> tuple[float, float, Any]:
    """Wall and CPU milliseconds of one run, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    found = fn(conn)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, found


def comparable(found: Any) -> Any:
    """A report's figures in one shape for both sides: cost rows by key (the baseline's are
    tuples), floats to 4 places (sums in another order differ in the last bits)."""
    if isinstance(found, list) and found and isinstance(found[0], tuple):
        return {str(r[0]): [*r[1:5], round(round(r[5], 6), 4), r[6]] for r in found}  # rounded as cost_rows does
    if isinstance(found, list) and found and "key" in found[0]:
        return {r["key"]: [r["input"], r["output"], r["cache_read"], r["cache_write"], round(r["cost_usd"], 4), r["tasks"]]
                for r in found}
    if isinstance(found, dict):
        return {k: comparable(v) for k, v in found.items()}
    if isinstance(found, list):
        return [comparable(v) for v in found]
    return round(found, 4) if isinstance(found, float) else found


def insert_cost(path: Path, rows: int = 20_000) -> float:
    """Microseconds per usage row inserted (in one transaction, rolled back): what the
    rollup's trigger adds to the engine's writes."""
    conn = sqlite3.connect(path, isolation_level=None)
    stage_id, task_id = conn.execute("SELECT id, task_id FROM stages WHERE attempt > 0 LIMIT 1").fetchone()
    conn.execute("BEGIN")
    started = time.perf_counter()
    conn.executemany(
        "INSERT INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens, output_tokens,"
        " cache_read_tokens, cache_write_tokens, cost_usd) VALUES (?, ?, 9, ?, ?, 'm', 10, 5, 100, 0, 0.001)",
        [(task_id, stage_id, time.time() + n, f"bench-{n}") for n in range(rows)])
    took = time.perf_counter() - started
    conn.execute("ROLLBACK")
    conn.close()
    return took / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks in the store (default 100,000)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each query on each store (default 5)")
    args = parser.parse_args()
    assert len(MIGRATIONS) >= 5, "schema 5 (the report indexes) is needed"
    with tempfile.TemporaryDirectory(prefix="tacx-bench-report-") as tmp:
        indexed, bare = Path(tmp) / "indexed.db", Path(tmp) / "bare.db"
        started = time.perf_counter()
        sizes = build(indexed, args.tasks)
        built = time.perf_counter() - started
        without_new_indexes(indexed, bare)
        print(f"report: {', '.join(f'{n:,} {k}' for k, n in sizes.items())}; built in {built:.1f} s;"
              f" medians of {args.runs} runs (ms)")
        conns = {True: sqlite3.connect(indexed), False: sqlite3.connect(bare)}
        print(f"  load average at the start: {' '.join(f'{n:.2f}' for n in os.getloadavg())} (2 cores, shared)")
        print(f"  {'query':<22} {'window':<7} {'without':>8} {'with':>8} {'ratio':>6} {'with, cpu':>10}")
        worst = 0.0
        disagree = []
        for window, since in (("all", None), ("7 days", time.time() - 7 * 86400)):
            for name, (new, old) in queries(since).items():
                wall: dict[bool, list[float]] = {True: [], False: []}
                cpu: list[float] = []
                results: dict[bool, Any] = {}
                for run in range(args.runs):
                    for index in ((True, False) if run % 2 == 0 else (False, True)):
                        took, used, results[index] = timed(new if index else old, conns[index])
                        wall[index].append(took)
                        if index:
                            cpu.append(used)
                if comparable(results[True]) != comparable(results[False]):
                    disagree.append(f"{name} ({window})")
                with_index, without = statistics.median(wall[True]), statistics.median(wall[False])
                worst = max(worst, with_index)
                print(f"  {name:<22} {window:<7} {without:>8.1f} {with_index:>8.1f} {without / with_index:>5.1f}x"
                      f" {statistics.median(cpu):>10.1f}")
        for conn in conns.values():
            conn.close()
        print(f"  load average at the end: {' '.join(f'{n:.2f}' for n in os.getloadavg())}")
        print(f"  slowest with schema 5: {worst:.1f} ms (goal < {GOAL_MS:.0f} ms)")
        print(f"  a usage row inserted: {insert_cost(indexed):.1f} us with the rollup's trigger,"
              f" {insert_cost(bare):.1f} us without")
        print("  both sides give the same figures" if not disagree else f"  DIFFERENT figures: {', '.join(disagree)}")


if __name__ == "__main__":
    main()
