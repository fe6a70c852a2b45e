"""`tacx report` and tacx/store/reports.py on a prepared store: seven tasks of two workflows
over two days (Berlin time, UTC+1), two agents and three models, with retries, a timeout,
failures, a cancellation, unpriced usage and a task running past midnight. Every expected
figure below was computed by hand from the rows inserted here."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator

import pytest

from tacx.store import reports
from tacx.store.database import connect
from tests.conftest import Project

BERLIN = dt.timezone(dt.timedelta(hours=1))  # Europe/Berlin in November: no daylight saving


def at(day: int, hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(2026, 11, day, hour, minute, second, tzinfo=BERLIN).timestamp()


# (id, workflow, status, created)
TASKS = [
    (1, "fix", "succeeded", at(29, 10, 0)),
    (2, "fix", "timed_out", at(29, 23, 30)),  # runs past midnight
    (3, "docs", "failed", at(30, 9, 0)),
    (4, "docs", "succeeded", at(30, 12, 0)),
    (5, "fix", "queued", at(30, 13, 0)),
    (6, "fix", "running", at(30, 14, 0)),
    (7, "docs", "cancelled", at(30, 15, 0)),
]
# (id, task, name, position, status, attempt, provider, model, started, ended, error,
#  input, output, cache_read, cache_write, cost): the token columns are the usage rows' sums.
STAGES = [
    (1, 1, "plan", 0, "succeeded", 1, "claude", "sonnet", at(29, 10, 0), at(29, 10, 1, 40), None, 1000, 100, 0, 0, 0.25),
    (2, 1, "code", 1, "succeeded", 2, "codex", "gpt-5", at(29, 10, 10), at(29, 10, 25), None, 2500, 250, 4000, 0, 0.625),
    (3, 2, "plan", 0, "succeeded", 1, "claude", "sonnet", at(29, 23, 30), at(29, 23, 40), None, 3000, 300, 0, 1000, 0.5),
    (4, 2, "code", 1, "timed_out", 1, "codex", "gpt-5", at(29, 23, 45), at(30, 0, 15), "timed out after 30m (timeout)",
     1000, 0, 0, 0, 0.25),
    (5, 3, "draft", 0, "failed", 2, "claude", "sonnet", at(30, 9, 10), at(30, 9, 12), "exited with code 1", 150, 15, 0, 0, 0.0625),
    (6, 3, "review", 1, "skipped", 0, None, None, None, None, None, 0, 0, 0, 0, 0.0),
    (7, 4, "draft", 0, "succeeded", 1, "codex", "gpt-5", at(30, 12, 0), at(30, 12, 0, 40), None, 400, 40, 0, 0, 0.03),
    (8, 4, "review", 1, "succeeded", 1, "claude", "sonnet", at(30, 12, 1), at(30, 12, 1, 20), None, 200, 20, 1000, 0, 0.015),
    (9, 5, "plan", 0, "pending", 0, None, None, None, None, None, 0, 0, 0, 0, 0.0),
    (10, 5, "code", 1, "pending", 0, None, None, None, None, None, 0, 0, 0, 0, 0.0),
    (11, 6, "plan", 0, "running", 1, "claude", "sonnet", at(30, 14, 0), None, None, 10, 1, 0, 0, 0.0078),
    (12, 6, "code", 1, "pending", 0, None, None, None, None, None, 0, 0, 0, 0, 0.0),
    (13, 7, "draft", 0, "cancelled", 1, "codex", "gpt-5", at(30, 15, 0), at(30, 15, 0, 30), None, 0, 0, 0, 0, 0.0),
    (14, 7, "review", 1, "cancelled", 0, None, None, None, at(30, 15, 0, 30), None, 0, 0, 0, 0, 0.0),
]
# (task, stage id, attempt, ts, model, input, output, cache_read, cache_write, cost)
USAGE = [
    (1, 1, 1, at(29, 10, 1), "sonnet", 1000, 100, 0, 0, 0.25),
    (1, 2, 1, at(29, 10, 5), "gpt-5", 2000, 200, 0, 0, 0.5),
    (1, 2, 2, at(29, 10, 20), "gpt-5", 500, 50, 4000, 0, 0.125),
    (2, 3, 1, at(29, 23, 35), "sonnet", 3000, 300, 0, 1000, 0.5),
    (2, 4, 1, at(30, 0, 5), "gpt-5", 1000, 0, 0, 0, 0.25),
    (3, 5, 1, at(30, 9, 5), "sonnet", 100, 10, 0, 0, 0.0625),
    (3, 5, 2, at(30, 9, 11), "mystery", 50, 5, 0, 0, 0.0),  # no price known: unpriced
    (4, 7, 1, at(30, 12, 0, 30), "gpt-5", 400, 40, 0, 0, 0.03),
    (4, 8, 1, at(30, 12, 1, 10), "sonnet", 200, 20, 1000, 0, 0.015),
    (6, 11, 1, at(30, 14, 2), "sonnet", 10, 1, 0, 0, 0.0078),
]
# (task, stage, ts, kind, error): attempts that ended badly, as the engine records them.
EVENTS = [
    (1, "code", at(29, 10, 8), "stage.failed", "exited with code 1; last output:\nboom"),
    (2, "code", at(30, 0, 15), "stage.timed_out", "timed out after 30m (timeout); last output:\n..."),
    (3, "draft", at(30, 9, 6), "stage.failed", "exited with code 1: rate limit exceeded, try again later"),
    (3, "draft", at(30, 9, 12), "stage.failed", "exited with code 1; last output:\nerror"),
    (7, "draft", at(30, 15, 0, 30), "stage.cancelled", "cancelled"),
]


def prepare(conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT INTO tasks (id, trace_id, workflow, workflow_path, workflow_text, workflow_hash, title, inputs, status,"
        " project_root, created_at) VALUES (?, 't', ?, 'w.yaml', '', 'h', ?, '{}', ?, '/p', ?)",
        [(i, wf, f"task {i}", status, created) for i, wf, status, created in TASKS],
    )
    conn.executemany(
        "INSERT INTO stages (id, task_id, name, position, status, attempt, provider, model, started_at, ended_at, error,"
        " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", STAGES,
    )
    conn.executemany(
        "INSERT INTO usage (task_id, stage_id, attempt, ts, model, input_tokens, output_tokens, cache_read_tokens,"
        " cache_write_tokens, cost_usd, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*u, f"m{n}") for n, u in enumerate(USAGE)],
    )
    conn.executemany(
        "INSERT INTO events (task_id, stage, ts, kind, data) VALUES (?, ?, ?, ?, ?)",
        [(task, stage, ts, kind, json.dumps({"attempt": 1, "error": error})) for task, stage, ts, kind, error in EVENTS],
    )


def row(key: str, i: int, o: int, cr: int, cw: int, cost: float, tasks: int, unpriced: tuple[str, ...] = ()) -> dict:
    return {"key": key, "input": i, "output": o, "cache_read": cr, "cache_write": cw, "cost_usd": cost,
            "tasks": tasks, "unpriced": list(unpriced)}


DAYS = [
    row("2026-11-29", 6500, 650, 4000, 1000, 1.375, 2),
    row("2026-11-30", 1760, 76, 1000, 0, 0.3653, 4, ("mystery",)),
]
TOTAL = {"input": 8260, "output": 726, "cache_read": 5000, "cache_write": 1000, "cost_usd": 1.7403}


@pytest.fixture
def berlin() -> Iterator[None]:
    """Local time is Berlin's while the test runs (the day keys depend on it)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def store(tmp_path, berlin) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "tacx.db")
    with conn:
        conn.execute("BEGIN")
        prepare(conn)
    yield conn
    conn.close()


@pytest.fixture
def reporting(project: Project) -> Project:
    """A project whose home holds the prepared store; its commands run in Berlin time."""
    conn = connect(project.home / "tacx.db")
    with conn:
        conn.execute("BEGIN")
        prepare(conn)
    conn.close()
    project.env["TZ"] = "Europe/Berlin"
    return project


# -- the store ---------------------------------------------------------------------------------


def test_cost_by_each_group_hand_computed(store: sqlite3.Connection) -> None:
    assert reports.cost_rows(store, "day") == DAYS
    assert reports.cost_rows(store, "week") == [
        row("2026-W48", 6500, 650, 4000, 1000, 1.375, 2),
        row("2026-W49", 1760, 76, 1000, 0, 0.3653, 4, ("mystery",)),
    ]
    assert reports.cost_rows(store, "month") == [row("2026-11", 8260, 726, 5000, 1000, 1.7403, 5, ("mystery",))]
    assert reports.cost_rows(store, "workflow") == [
        row("fix", 7510, 651, 4000, 1000, 1.6328, 3),
        row("docs", 750, 75, 1000, 0, 0.1075, 2, ("mystery",)),
    ]
    assert reports.cost_rows(store, "provider") == [
        row("codex", 3900, 290, 4000, 0, 0.905, 3),
        row("claude", 4360, 436, 1000, 1000, 0.8353, 5, ("mystery",)),
    ]
    assert reports.cost_rows(store, "model") == [
        row("gpt-5", 3900, 290, 4000, 0, 0.905, 3),
        row("sonnet", 4310, 431, 1000, 1000, 0.8353, 5),
        row("mystery", 50, 5, 0, 0, 0.0, 1, ("mystery",)),
    ]
    by_task = reports.cost_rows(store, "task")
    assert [(r["key"], r["title"], r["cost_usd"], r["tasks"]) for r in by_task] == [
        ("1", "task 1", 0.875, 1), ("2", "task 2", 0.75, 1), ("3", "task 3", 0.0625, 1),
        ("4", "task 4", 0.045, 1), ("6", "task 6", 0.0078, 1),
    ]


def test_cost_windows_cut_quarter_hours_exactly(store: sqlite3.Connection) -> None:
    # since inclusive (the 10:05 row is in), until exclusive (the 23:35 row is out); both
    # cut a quarter hour, and task 1 spends on both sides of 10:15: counted once.
    window = {"since": at(29, 10, 5), "until": at(29, 23, 35)}
    assert reports.cost_rows(store, "day", **window) == [row("2026-11-29", 2500, 250, 4000, 0, 0.625, 1)]
    assert reports.cost_rows(store, "workflow", **window) == [row("fix", 2500, 250, 4000, 0, 0.625, 1)]
    # Both ends inside one quarter hour.
    assert reports.cost_rows(store, "provider", since=at(29, 10, 1), until=at(29, 10, 4)) == [
        row("claude", 1000, 100, 0, 0, 0.25, 1)]
    # Whole days: task 2's spending splits at midnight.
    assert reports.cost_rows(store, "task", since=at(30, 0, 0)) == [
        {**row("2", 1000, 0, 0, 0, 0.25, 1), "title": "task 2"},
        {**row("3", 150, 15, 0, 0, 0.0625, 1, ("mystery",)), "title": "task 3"},
        {**row("4", 600, 60, 1000, 0, 0.045, 1), "title": "task 4"},
        {**row("6", 10, 1, 0, 0, 0.0078, 1), "title": "task 6"},
    ]
    assert reports.cost_rows(store, "day", since=at(1, 0, 0) + 40 * 86400) == []


def test_workflow_outcomes(store: sqlite3.Connection) -> None:
    assert reports.workflow_outcomes(store) == [
        {"workflow": "fix", "tasks": 4, "succeeded": 1, "failed": 0, "cancelled": 0, "timed_out": 1, "running": 1,
         "queued": 1, "success_rate": 0.5, "cost_usd": 1.6328},
        {"workflow": "docs", "tasks": 3, "succeeded": 1, "failed": 1, "cancelled": 1, "timed_out": 0, "running": 0,
         "queued": 0, "success_rate": 0.3333, "cost_usd": 0.1075},
    ]
    since_monday = reports.workflow_outcomes(store, since=at(30, 0, 0))
    assert [(r["workflow"], r["tasks"], r["success_rate"], r["cost_usd"]) for r in since_monday] == [
        ("docs", 3, 0.3333, 0.1075), ("fix", 2, None, 0.0078)]


def test_stage_stats(store: sqlite3.Connection) -> None:
    found = {(r["workflow"], r["stage"]): r for r in reports.stage_stats(store)}
    assert list(found) == [("docs", "draft"), ("docs", "review"), ("fix", "plan"), ("fix", "code")]
    figures = ("runs", "succeeded", "failed", "timed_out", "cancelled", "skipped", "running", "success_rate",
               "p50_seconds", "p95_seconds", "retries", "timeouts", "failures", "cost_usd")
    assert {k: [found[k][f] for f in figures] for k in found} == {
        ("fix", "plan"): [3, 2, 0, 0, 0, 0, 1, 1.0, 100.0, 600.0, 0, 0, {}, 0.7578],
        ("fix", "code"): [2, 1, 0, 1, 0, 0, 0, 0.5, 900.0, 1800.0, 1, 1, {"exit code 1": 1, "timed out": 1}, 0.875],
        ("docs", "draft"): [3, 1, 1, 0, 1, 0, 0, 0.3333, 40.0, 120.0, 1, 0,
                            {"cancelled": 1, "exit code 1": 1, "rate limited": 1}, 0.0925],
        ("docs", "review"): [2, 1, 0, 0, 0, 1, 0, 1.0, 20.0, 20.0, 0, 0, {}, 0.015],
    }
    only_fix = reports.stage_stats(store, workflow="fix", since=at(29, 12, 0))  # tasks 2, 5 and 6
    assert [(r["stage"], r["runs"], r["p50_seconds"], r["failures"]) for r in only_fix] == [
        ("plan", 2, 600.0, {}), ("code", 1, 1800.0, {"timed out": 1})]


def test_nearest_rank_percentiles_and_failure_reasons() -> None:
    twenty = [float(n) for n in range(1, 21)]
    assert (reports.nearest_rank(twenty, 50), reports.nearest_rank(twenty, 95)) == (10.0, 19.0)
    assert reports.nearest_rank([7.0], 95) == 7.0
    said = {
        ("stage.failed", "exited with code 137; last output:\nKilled"): "exit code 137",
        ("stage.failed", "stopped: budget exceeded: cost $5.1 passed the budget of $5.00 by $0.1"): "budget",
        ("stage.failed", "killed by signal SIGKILL"): "signal SIGKILL",
        ("stage.failed", "exited with code 1: You've hit your usage limit"): "rate limited",
        ("stage.failed", "exited 0 but did not write out.md (expects)"): "missing expects",
        ("stage.timed_out", "no output for 5m (idle_timeout)"): "idle timeout",
        ("stage.failed", "cannot reach the API: ECONNREFUSED (no answer for 300s; unreachable_after)"): "unreachable",
        ("stage.failed", None): "unknown",
    }
    assert {key: reports.failure_reason(*key) for key in said} == said


def test_compare(store: sqlite3.Connection) -> None:
    found = reports.compare(store, "provider", "claude", "codex")
    claude, codex = found["sides"]
    keys = ("runs", "succeeded", "failed", "timed_out", "cancelled", "running", "success_rate", "p50_seconds",
            "p95_seconds", "retries", "tokens", "cost_usd", "cost_per_run")
    assert [claude["overall"][k] for k in keys] == [
        5, 3, 1, 0, 0, 1, 0.75, 100.0, 600.0, 1,
        {"input": 4360, "output": 436, "cache_read": 1000, "cache_write": 1000}, 0.8353, 0.16706]
    assert [codex["overall"][k] for k in keys] == [
        4, 2, 0, 1, 1, 0, 0.5, 900.0, 1800.0, 1,
        {"input": 3900, "output": 290, "cache_read": 4000, "cache_write": 0}, 0.905, 0.22625]
    assert [(s["stage"], s["runs"], s["success_rate"], s["p50_seconds"], s["p95_seconds"]) for s in claude["stages"]] == [
        ("draft", 1, 0.0, 120.0, 120.0), ("plan", 3, 1.0, 100.0, 600.0), ("review", 1, 1.0, 20.0, 20.0)]
    assert [(s["stage"], s["runs"], s["success_rate"], s["cost_per_run"]) for s in codex["stages"]] == [
        ("draft", 2, 0.5, 0.015), ("code", 2, 0.5, 0.4375)]
    models = reports.compare(store, "model", "sonnet", "gpt-5", workflow="fix")
    assert [(s["name"], s["overall"]["runs"], s["overall"]["cost_usd"]) for s in models["sides"]] == [
        ("sonnet", 3, 0.7578), ("gpt-5", 2, 0.875)]
    workflows = reports.compare(store, "workflow", "fix", "docs")
    assert [(s["name"], s["overall"]["runs"], s["overall"]["p50_seconds"], s["overall"]["p95_seconds"])
            for s in workflows["sides"]] == [("fix", 5, 600.0, 1800.0), ("docs", 5, 40.0, 120.0)]
    nobody = reports.compare(store, "workflow", "fix", "nothing")
    assert nobody["sides"][1]["overall"]["runs"] == 0 and nobody["sides"][1]["stages"] == []


def test_rollup_follows_new_usage_and_removal(store: sqlite3.Connection) -> None:
    """Usage written after the reports were read counts (the trigger), a message read
    twice counts once (INSERT OR IGNORE), and rm's deletion takes a task's spending away."""
    from tacx.store.removal import delete_ended

    again = "INSERT OR IGNORE INTO usage (task_id, stage_id, attempt, ts, model, input_tokens, cost_usd, message_id)" \
            " VALUES (6, 11, 1, ?, 'sonnet', 5, 0.002, ?)"
    store.execute(again, (at(30, 14, 3), "late"))
    store.execute(again, (at(30, 14, 3), "late"))
    assert reports.cost_rows(store, "day", since=at(30, 0, 0))[0]["input"] == 1765
    with store:
        store.execute("BEGIN")
        assert delete_ended(store, [1]) == [1]
    assert reports.cost_rows(store, "day") == [
        row("2026-11-29", 3000, 300, 0, 1000, 0.5, 1),
        row("2026-11-30", 1765, 76, 1000, 0, 0.3673, 4, ("mystery",)),
    ]


# -- the command -------------------------------------------------------------------------------


def test_report_cost_json_adds_up_to_the_tasks_totals(reporting: Project) -> None:
    days = json.loads(reporting.tacx("report", "cost", "--json").stdout)
    assert days == DAYS
    tasks = reporting.ls()
    for kind in ("input", "output", "cache_read", "cache_write"):
        assert sum(r[kind] for r in days) == sum(t["tokens"][kind] for t in tasks) == TOTAL[kind]
    assert round(sum(r["cost_usd"] for r in days), 6) == round(sum(t["cost_usd"] for t in tasks), 6) == TOTAL["cost_usd"]


def test_report_cost_csv_table_and_windows(reporting: Project) -> None:
    text = reporting.tacx("report", "cost", "--by", "provider", "--csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["key"], r["input"], r["cost_usd"], r["tasks"], r["unpriced"]) for r in rows] == [
        ("codex", "3900", "0.905", "3", ""), ("claude", "4360", "0.8353", "5", "mystery")]
    table = reporting.tacx("report", "cost", "--by", "workflow").stdout.splitlines()
    assert table[0].split() == ["WORKFLOW", "TASKS", "INPUT", "OUTPUT", "CACHE", "READ", "CACHE", "WRITE", "COST"]
    assert table[1].split() == ["fix", "3", "7,510", "651", "4,000", "1,000", "$1.6328"]
    assert table[2].split() == ["docs", "2", "750", "75", "1,000", "0", "$0.1075", "+", "unpriced", "(mystery)"]
    assert table[3].split() == ["TOTAL", "8,260", "726", "5,000", "1,000", "$1.7403", "+", "unpriced", "(mystery)"]
    # A date alone: --since from its midnight, --until through its end.
    assert [r["key"] for r in json.loads(reporting.tacx("report", "cost", "--since", "2026-11-30", "--json").stdout)] == [
        "2026-11-30"]
    assert json.loads(reporting.tacx("report", "cost", "--until", "2026-11-29", "--json").stdout) == DAYS[:1]
    # An age past 1970, or a date before it: from the start.
    for since in ("9999999999999999999d", "1900-01-01"):
        assert json.loads(reporting.tacx("report", "cost", "--since", since, "--json").stdout) == DAYS
    edges = ["--since", "2026-11-29T10:05:00+01:00", "--until", "2026-11-29T23:35", "--json"]
    assert json.loads(reporting.tacx("report", "cost", *edges).stdout) == [row("2026-11-29", 2500, 250, 4000, 0, 0.625, 1)]


def test_report_stats_and_compare_commands(reporting: Project) -> None:
    stats = list(csv.DictReader(io.StringIO(reporting.tacx("report", "stats", "--csv").stdout)))
    assert [(r["workflow"], r["stage"], r["runs"], r["p95_seconds"], r["failures"]) for r in stats] == [
        ("docs", "draft", "3", "120.0", "cancelled=1; exit code 1=1; rate limited=1"),
        ("docs", "review", "2", "20.0", ""),
        ("fix", "plan", "3", "600.0", ""),
        ("fix", "code", "2", "1800.0", "exit code 1=1; timed out=1"),
    ]
    table = reporting.tacx("report", "stats", "--workflow", "fix").stdout.splitlines()
    assert [line.split()[:6] for line in table[1:]] == [
        ["fix", "plan", "3", "100%", "1m40s", "10m00s"], ["fix", "code", "2", "50%", "15m00s", "30m00s"]]
    found = json.loads(reporting.tacx("report", "compare", "--providers", "claude", "codex", "--json").stdout)
    assert [(s["name"], s["overall"]["runs"], s["overall"]["cost_per_run"]) for s in found["sides"]] == [
        ("claude", 5, 0.16706), ("codex", 4, 0.22625)]
    lines = reporting.tacx("report", "compare", "--workflows", "fix", "docs").stdout.splitlines()
    assert lines[1].split()[:4] == ["(all)", "fix", "5", "75%"]
    assert lines[2].split()[:4] == ["(all)", "docs", "5", "50%"]


@pytest.mark.parametrize("args, said", [
    (["cost", "--by", "year"], "invalid choice: 'year'"),
    (["cost", "--since", "2026-12-01", "--until", "2026-11-01"], "--since must be before --until"),
    (["cost", "--since", "yesterday"], "invalid time 'yesterday'"),
    (["stats", "--until", "2026-13-01"], "invalid time '2026-13-01'"),
    (["cost", "--until", "9999-12-31"], "time out of range"),
    (["compare", "--providers", "claude", "gemini"], "no stage runs for provider 'gemini'"),
    (["compare", "--models", "sonnet", "sonnet"], "not 'sonnet' with itself"),
    (["compare", "--workflow", "fix"], "one of the arguments --workflows --providers --models is required"),
])
def test_report_refuses_bad_input_in_one_line(reporting: Project, args: list[str], said: str) -> None:
    proc = reporting.tacx("report", *args, check=2)
    assert proc.stdout == "" and said in proc.stderr and "Traceback" not in proc.stderr


def test_report_in_an_empty_home_makes_no_store(project: Project) -> None:
    assert project.tacx("report", "cost", "--json").stdout.strip() == "[]"
    assert project.tacx("report", "stats", "--csv").stdout.startswith("workflow,stage,runs,")
    assert project.tacx("report", "cost").stdout.splitlines()[-1].split() == ["TOTAL", "0", "0", "0", "0", "$0.0000"]
    assert "nothing to compare" in project.tacx("report", "compare", "--workflows", "a", "b", check=2).stderr
    assert not project.home.exists()


def test_reports_of_a_real_run_add_up_to_its_stages(project: Project) -> None:
    """Through the engine: fake claude and codex CLIs write their streams, tacx parses them
    into usage rows, and the rollup the reports read follows (its trigger) with the
    provider of each attempt."""
    fakes = os.path.join(os.path.dirname(__file__), "fakes")
    project.env["PATH"] = f"{fakes}{os.pathsep}{project.env['PATH']}"
    (project.root / "pair.yaml").write_text(
        "name: pair\nstages:\n"
        "  - {name: think, provider: claude, prompt: go, env: {FAKE_SCENARIO: sample}}\n"
        "  - {name: write, provider: codex, prompt: go, env: {FAKE_SCENARIO: sample}}\n"
    )
    project.tacx("run", "pair.yaml", "--no-ui", timeout=120)
    stages = {s["provider"]: s for s in project.show(project.ls()[0]["id"])["stages"]}
    by_provider = {r["key"]: r for r in json.loads(project.tacx("report", "cost", "--by", "provider", "--json").stdout)}
    assert set(by_provider) == {"claude", "codex"}
    for provider, stage in stages.items():
        assert {k: by_provider[provider][k] for k in stage["tokens"]} == stage["tokens"]
        assert by_provider[provider]["cost_usd"] == round(stage["cost_usd"], 6) and by_provider[provider]["tasks"] == 1
    assert any(stage["cost_usd"] for stage in stages.values())  # priced usage was there to add up
    stats = json.loads(project.tacx("report", "stats", "--json").stdout)
    assert [(r["stage"], r["runs"], r["succeeded"], r["success_rate"]) for r in stats] == [
        ("think", 1, 1, 1.0), ("write", 1, 1, 1.0)]
