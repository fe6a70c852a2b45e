"""Snapshots of the dashboard's main screen and launch form, as text: a store prepared by
hand, the clock frozen, no engine and no processes. A change to what is shown fails here;
`TACX_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_ui_snapshots.py` writes them anew."""

from __future__ import annotations

import asyncio
import difflib
import os
import time
from pathlib import Path

from tacx.store import records
from tacx.home import Home
from tacx.settings import Settings
from tacx.store.database import connect, transaction
from tacx.ui.app import TacxApp, make_app
from tacx.ui.launch import LaunchScreen, WorkflowChoice
from tacx.ui.logview import StageLog
from tacx.ui.panels import COMPACT_BELOW, NARROW_TOKEN_COLUMNS, TOKEN_COLUMNS, HeaderBar, KeyedTable, StagesPanel, TasksPanel
from tacx.ui.screens import LogScreen
from tacx.workflow.loader import load_workflow_text
from tests.test_ui_app import screen_text, until

SNAPSHOTS = Path(__file__).parent / "snapshots"
NOW = time.mktime((2026, 11, 21, 15, 30, 0, 0, 0, -1))  # a Saturday afternoon, local time

BUILD = """\
name: build-review
description: Plan, build and review a change with the mock agent.
workspace: dir
inputs:
  goal: {required: true, description: what to build}
  branch: {default: main, description: the branch to start from}
defaults: {provider: mock}
budget: {usd: 2.00}
stages:
  - {name: plan, prompt: "Plan {{ inputs.goal }}"}
  - {name: build, prompt: "Build {{ inputs.goal }}"}
  - {name: test, provider: bash, run: pytest -q}
  - {name: review, prompt: Review it}
"""

CLAUDE_LOG = """\
{"type":"system","subtype":"init","cwd":"/repo","session_id":"8d45afe0-771b-4803-8379-491dd9455365","tools":["Bash"],"model":"claude-sonnet-4-5-20250929"}
{"type":"assistant","message":{"id":"msg_01A","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"I'll run the tests."}],"usage":{"input_tokens":3,"output_tokens":8}}}
{"type":"assistant","message":{"id":"msg_01A","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"toolu_01X","name":"Bash","input":{"command":"pytest -q"}}],"usage":{"input_tokens":3,"output_tokens":8}}}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01X","type":"tool_result","content":"3 passed in 0.41s","is_error":false}]}}
"""


def prepare(root: Path) -> Home:
    """Four tasks in four states, one of them mid-way with tokens, a budget and a log."""
    home = Home(root / ".tacx")
    wf = load_workflow_text(BUILD, "build-review.yaml")
    conn = connect(home.db_path)
    log = home.logs / "4" / "build.1.log"
    log.parent.mkdir(parents=True)
    log.write_text(CLAUDE_LOG)
    titles = ["Add a --dry-run flag", "Fix the pagination off-by-one", "Write tests for the CSV parser",
              "Rename the config loader"]
    with transaction(conn):
        for i, title in enumerate(titles, 1):
            records.insert_task(conn, workflow=wf, workflow_path="/workflows/build-review.yaml",
                                workflow_text=BUILD, title=title, inputs={"goal": title, "branch": "main"},
                                priority=i % 2, dedupe_key=None, project_root=str(root))
        conn.execute("UPDATE tasks SET created_at = ? - 3600 + id * 60, trace_id = 'trace' || id", (NOW,))
        conn.execute("UPDATE tasks SET status = 'succeeded', started_at = ? - 3000, ended_at = ? - 2900 WHERE id = 1",
                     (NOW, NOW))
        conn.execute("UPDATE stages SET status = 'succeeded', attempt = 1 WHERE task_id = 1")
        conn.execute("UPDATE tasks SET status = 'failed', started_at = ? - 2000, ended_at = ? - 1990,"
                     " error = 'stage test failed: exited with code 1' WHERE id = 2", (NOW, NOW))
        conn.execute("UPDATE stages SET status = 'failed', attempt = 1, error = 'exited with code 1'"
                     " WHERE task_id = 2 AND name = 'plan'")
        conn.execute("UPDATE tasks SET wait_reason = 'waiting for a free worker (4 of 4 busy)' WHERE id = 3")
        conn.execute("UPDATE tasks SET status = 'running', started_at = ? - 95 WHERE id = 4", (NOW,))
        stage = {row["name"]: row["id"] for row in conn.execute("SELECT id, name FROM stages WHERE task_id = 4")}
        conn.execute("UPDATE stages SET status = 'succeeded', attempt = 1, provider = 'mock', started_at = ? - 95,"
                     " ended_at = ? - 60 WHERE id = ?", (NOW, NOW, stage["plan"]))
        conn.execute("UPDATE stages SET status = 'running', attempt = 1, provider = 'claude', started_at = ? - 60,"
                     " log_path = ?, session_id = '8d45afe0' WHERE id = ?", (NOW, str(log), stage["build"]))
        usage = [
            (4, stage["plan"], 1, NOW - 80, "msg_p1", "mock-sonnet", 12, 640, 52000, 16000, 0.0930),
            (4, stage["build"], 1, NOW - 50, "msg_b1", "claude-sonnet-4-5", 3, 8, 14000, 12000, 0.0493),
            (4, stage["build"], 1, NOW - 20, "msg_b2", "claude-sonnet-4-5", 5, 220, 26000, 600, 0.0135),
        ]
        conn.executemany(
            "INSERT INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens, output_tokens,"
            " cache_read_tokens, cache_write_tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            usage,
        )
        conn.execute(
            "UPDATE stages SET (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd) ="
            " (SELECT SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),"
            " SUM(cost_usd) FROM usage WHERE usage.stage_id = stages.id) WHERE task_id = 4 AND status != 'pending'"
        )
    conn.close()
    return home


def add_tasks(home: Home, count: int) -> None:
    conn = connect(home.db_path)
    wf = load_workflow_text(BUILD, "build-review.yaml")
    with transaction(conn):
        for i in range(count):
            records.insert_task(conn, workflow=wf, workflow_path="/workflows/build-review.yaml", workflow_text=BUILD,
                                title=f"queued {i}", inputs={"goal": "more", "branch": "main"}, priority=0,
                                dedupe_key=None, project_root=str(home.root.parent))
    conn.close()


def check(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    if os.environ.get("TACX_UPDATE_SNAPSHOTS") or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
        if not os.environ.get("TACX_UPDATE_SNAPSHOTS"):
            raise AssertionError(f"{path} did not exist: written now; check it and run again")
        return
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "expected", "shown"))
        raise AssertionError(f"the screen differs from {path}:\n{diff}")


def cut_headers(app: TacxApp, text: str) -> list[str]:
    """Every header on screen that is wrapped, cut or hidden in part: the tables' column
    labels, the tokens table's, the header bar's words and the footer's keys."""
    lines = text.splitlines()
    problems = []

    def words_at(widget: object, row: int = 0) -> list[str]:
        region = widget.content_region  # type: ignore[attr-defined]
        return lines[region.y + row][region.x : region.right].split()

    for table in app.query(KeyedTable):
        labels = [column.label.plain for column in table.ordered_columns]
        if words_at(table) != labels:
            problems.append(f"{table.id}: {words_at(table)} shown of {labels}")
        needed = sum(column.get_render_width(table) for column in table.ordered_columns)
        if needed > table.scrollable_content_region.width:
            problems.append(f"{table.id}: its columns need {needed} cells, it has {table.scrollable_content_region.width}")
    tokens = app.query_one("#token-table")
    if words_at(tokens) not in (list(TOKEN_COLUMNS[1:]), list(NARROW_TOKEN_COLUMNS[1:])):
        problems.append(f"tokens: {words_at(tokens)}, then {words_at(tokens, 1)}")
    header = app.query_one(HeaderBar)._shown
    if header is None or lines[0].split() != header.plain.split():
        problems.append(f"header bar: {lines[0]!r}")
    keys = [b.description for b in TacxApp.BINDINGS if b.show]  # type: ignore[union-attr]
    keys += ["palette"] if app.size.width >= COMPACT_BELOW else []  # a narrow footer leaves ctrl+p to the help
    if not all(key in lines[-1].split() for key in keys):
        problems.append(f"footer: {lines[-1]!r}")
    return problems


def toasts_over(app: TacxApp, log: StageLog) -> list[str]:
    """The toasts shown, and whether any covers the log."""
    toasts = list(app.screen.query("Toast"))  # Textual's notifications (a private class)
    assert toasts, "no toast shown"
    return [f"toast at {t.region} covers the log at {log.region}" for t in toasts if t.region.overlaps(log.region)]


async def test_main_screen(tmp_path: Path) -> None:
    home = prepare(tmp_path)
    app = make_app(home, Settings(), engine=False, clock=lambda: NOW, refresh_seconds=60)
    async with app.run_test(size=(160, 44)) as pilot:
        await until(lambda: app.snapshot is not None and app.snapshot.detail is not None)
        log = app.query_one("#log", StageLog)
        await until(lambda: any("pytest -q" in line for line in log.lines), what="the log rendered")
        await until(lambda: len(app.screen.query("FooterKey")) > 5, what="the footer's keys")
        await pilot.pause(0.2)
        text = screen_text(app)
        check("main", text)
        assert cut_headers(app, text) == []


async def test_main_screen_at_100x30_with_notifications(tmp_path: Path) -> None:
    """Issue 12: at 100x30 no header is wrapped or cut (narrow panels leave columns out,
    the tokens table joins its cache columns, the header bar and footer go compact), and
    a notification never covers the log, the panel's or the full-screen one."""
    home = prepare(tmp_path)
    app = make_app(home, Settings(), engine=False, clock=lambda: NOW, refresh_seconds=60)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await until(lambda: app.snapshot is not None and app.snapshot.detail is not None)
        log = app.query_one("#log", StageLog)
        await until(lambda: any("pytest -q" in line for line in log.lines), what="the log rendered")
        await until(lambda: len(app.screen.query("FooterKey")) > 5, what="the footer's keys")
        app.notify("task 3 succeeded: Write tests for the CSV parser", timeout=60)
        app.notify("the coordinator stopped; the dashboard shows the store as it is", severity="warning", timeout=60)
        await pilot.pause(0.3)
        text = screen_text(app)
        check("main-100x30", text)
        assert cut_headers(app, text) == []
        assert toasts_over(app, log) == []
        add_tasks(home, 30)  # enough for a scrollbar: it takes no column's room
        app.request_refresh()
        tasks = app.query_one("#tasks", KeyedTable)
        await until(lambda: len(tasks._keys) == 34 and tasks.show_vertical_scrollbar, what="a long list")
        await pilot.pause(0.2)
        assert cut_headers(app, screen_text(app)) == []
        await pilot.press("l")
        await until(lambda: isinstance(app.screen, LogScreen))
        app.notify("another one, over the full-screen log", timeout=60)
        await pilot.pause(0.3)
        assert toasts_over(app, app.screen.query_one(StageLog)) == []


async def test_launch_form(tmp_path: Path) -> None:
    home = prepare(tmp_path)
    app = make_app(home, Settings(), engine=False, clock=lambda: NOW, refresh_seconds=60)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(lambda: app.workflow_choices, what="workflows loaded")
        await asyncio.sleep(0.1)
        wf = load_workflow_text(BUILD, "build-review.yaml")
        app.workflow_choices = [WorkflowChoice("build-review", Path("/workflows/build-review.yaml"), wf)]
        await pilot.press("n")
        await until(lambda: isinstance(app.screen, LaunchScreen))
        await pilot.press("enter")
        await pilot.press(*"Add a --dry-run flag")
        await pilot.pause(0.2)
        check("launch", screen_text(app))


async def test_enter_attaches_to_a_running_task_and_follows_it_to_its_next_stage(tmp_path: Path) -> None:
    """enter on a running task: its running stage's log full screen (a pick in the stages
    panel is dropped), and when that stage ends the next one's log replaces it."""
    home = prepare(tmp_path)
    app = make_app(home, Settings(), engine=False, clock=lambda: NOW, refresh_seconds=60)
    async with app.run_test(size=(160, 44)) as pilot:
        await until(lambda: app.snapshot is not None and app.log_stage == (4, "build"))
        app.query_one(StagesPanel).focus()
        await pilot.press("up")
        await until(lambda: app.log_stage == (4, "plan"), what="plan picked")
        app.query_one(TasksPanel).focus()
        await pilot.press("enter")
        full = await until(lambda: isinstance(app.screen, LogScreen) and app.screen.query_one(StageLog))
        await until(lambda: "task 4 · build" in full.title and any("pytest -q" in line for line in full.lines))
        assert app.log_stage == (4, "build")
        log = home.logs / "4" / "test.1.log"
        log.write_text("collected 3 items\n")
        conn = connect(home.db_path)
        with transaction(conn):
            conn.execute("UPDATE stages SET status = 'succeeded', ended_at = ? WHERE task_id = 4 AND name = 'build'",
                         (NOW - 5,))
            conn.execute("UPDATE stages SET status = 'running', attempt = 1, provider = 'bash', started_at = ?,"
                         " log_path = ? WHERE task_id = 4 AND name = 'test'", (NOW - 4, str(log)))
        conn.close()
        app.request_refresh()
        await until(lambda: "task 4 · test" in full.title and full.lines == ["collected 3 items"], what="the next stage")
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, LogScreen))
        assert app.query_one(StagesPanel).selected_key == "test" and app.log_stage == (4, "test")
