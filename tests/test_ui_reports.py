"""The dashboard's reports screen (`g`): cost per day and per workflow as bars, success per
workflow, over a period `t` switches. A store prepared by hand (figures below computed by
hand), the clock frozen, the real app (no engine: the screen only reads)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from rich.console import Console

from tacx.engine.events import EngineEvent
from tacx.home import Home
from tacx.settings import Settings
from tacx.store import records
from tacx.store.database import connect, transaction
from tacx.ui.app import TacxApp, make_app
from tacx.ui.charts import EIGHTHS, FULL, bar, day_chart, rate_style, success_chart
from tacx.ui.panels import TasksPanel
from tacx.ui.reports import Chart, ReportsScreen
from tacx.workflow.loader import load_workflow_text
from tests.test_ui_app import screen_text, until


def local(day: int, hour: int, month: int = 11) -> float:
    return time.mktime((2026, month, day, hour, 0, 0, 0, 0, -1))


NOW = local(21, 15)  # Saturday 2026-11-21, 15:00 local time

WORKFLOW = """\
name: {name}
inputs:
  title: {{required: true}}
stages:
  - {{name: work, provider: bash, run: echo work}}
"""

UNPRICED = "o9-preview"  # a model with no known price: its usage costs "unpriced", not $0
# (workflow, created, status, usage rows as (ts, input tokens, output tokens, USD[, model]))
TASKS = [
    ("build-review", local(20, 10), "succeeded", [(local(20, 10) + 300, 1000, 200, 1.50),
                                                  (local(20, 10) + 1200, 2000, 300, 2.25)]),
    ("build-review", local(18, 9), "failed", [(local(18, 9) + 600, 500, 50, 0.75)]),
    ("docs", local(21, 9), "succeeded", [(local(21, 9) + 300, 400, 40, 0.40)]),
    ("shell-pipeline", local(21, 10), "succeeded", []),
    ("shell-pipeline", local(21, 11), "timed_out", []),
    ("build-review", local(1, 12), "succeeded", [(local(1, 12) + 600, 3000, 100, 5.00)]),  # 20 days ago
    ("docs", local(22, 12, month=9), "cancelled", [(local(22, 12, month=9) + 60, 800, 0, 8.00),  # 60 days ago
                                                    (local(22, 12, month=9) + 120, 500, 0, 0.0, UNPRICED)]),
    ("build-review", local(21, 14), "running", [(local(21, 14) + 600, 100, 10, 0.10)]),
]


def prepare(root: Path) -> Home:
    home = Home(root / ".tacx")
    conn = connect(home.db_path)
    with transaction(conn):
        for n, (name, created, status, usage) in enumerate(TASKS, 1):
            text = WORKFLOW.format(name=name)
            task_id, _ = records.insert_task(conn, workflow=load_workflow_text(text, f"{name}.yaml"),
                                          workflow_path=f"/workflows/{name}.yaml", workflow_text=text,
                                          title=f"task {n}", inputs={"title": f"task {n}"}, priority=0,
                                          dedupe_key=None, project_root=str(root))
            conn.execute("UPDATE tasks SET created_at = ?, status = ? WHERE id = ?", (created, status, task_id))
            stage = conn.execute("SELECT id FROM stages WHERE task_id = ?", (task_id,)).fetchone()[0]
            for m, (ts, tokens_in, tokens_out, usd, *model) in enumerate(usage):
                conn.execute("INSERT INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens,"
                             " output_tokens, cost_usd) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?)",
                             (task_id, stage, ts, f"m{m}", model[0] if model else "claude-sonnet-4-5", tokens_in,
                              tokens_out, usd))
            conn.execute("UPDATE stages SET (input_tokens, output_tokens, cost_usd) = (SELECT COALESCE(SUM(input_tokens),"
                         " 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0) FROM usage WHERE stage_id = ?)"
                         " WHERE id = ?", (stage, stage))
    conn.close()
    return home


def app_for(home: Home) -> TacxApp:
    return make_app(home, Settings(), engine=False, clock=lambda: NOW, refresh_seconds=60)


def plain(text: object, width: int) -> list[str]:
    """What a terminal of ``width`` columns shows of a chart, line by line."""
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None, legacy_windows=False)
    console.print(text)
    return [line.rstrip() for line in console.export_text().splitlines()]


BARS = re.compile(r"^(\S+(?: \d\d-\d\d)?) +([█▏▎▍▌▋▊▉]*)░* +(.*)$")


def chart(app: TacxApp, text: str, name: str) -> list[tuple[str, str, str]]:
    """A chart as the screen shows it: (label, bar, figures) for each of its lines, read
    from the screen's text inside the chart's region."""
    region = app.screen.query_one(f"#{name}", Chart).content_region
    lines = text.splitlines()[region.y:region.bottom]
    return [m.groups() for m in (BARS.match(line[region.x:region.right].strip()) for line in lines) if m]


def eighths(shown: str) -> int:
    return sum(8 if c == FULL else EIGHTHS.index(c) for c in shown)


async def open_reports(app: TacxApp, pilot: object) -> ReportsScreen:
    await until(lambda: app.snapshot is not None, what="the first snapshot")
    await pilot.press("g")  # type: ignore[attr-defined]
    screen = await until(lambda: isinstance(app.screen, ReportsScreen) and app.screen.reads and app.screen)
    await pilot.pause()  # type: ignore[attr-defined]
    return screen


def test_a_bar_is_its_share_of_the_largest_value_in_eighths_of_a_cell() -> None:
    assert bar(1, 4, 10) == "██▌"  # 2.5 cells
    assert bar(3, 3, 10) == "█" * 10
    assert bar(0.001, 100, 10) == "▏"  # a spend, however small, is seen
    assert bar(0, 5, 10) == ""
    # 40 columns: 9 for the label, 6 for the figure, a space each side of the bar: 23 cells
    # for the largest day; $2 of $8 is 23 / 4 = 5.75 cells, five full and one ▊ (6/8).
    days = [("2026-11-19", 2.0, ()), ("2026-11-20", 0.0, ()), ("2026-11-21", 8.0, ())]
    assert plain(day_chart(days, 40, today="2026-11-21"), 40) == [
        "Sat 11-21 " + "█" * 23 + " $8.000",
        "Fri 11-20 " + " " * 23 + "     $0",
        "Thu 11-19 █████▊" + " " * 17 + " $2.000",
    ]
    assert (rate_style(1.0), rate_style(0.75), rate_style(0.5), rate_style(None)) == ("green", "yellow", "bold red", "dim")
    # A success gauge of 15 cells (30 columns less 5 of name, 8 of " 75% 3/4" and 2 spaces; no room
    # for "1 failed" beside it): 3 of 4 is 11.25 cells, eleven full and ▎ (2/8), then the track.
    outcome = {"workflow": "build", "tasks": 4, "succeeded": 3, "failed": 1, "cancelled": 0, "timed_out": 0,
               "running": 0, "queued": 0, "success_rate": 0.75}
    assert plain(success_chart([outcome], 30), 30) == ["build " + "█" * 11 + "▎" + "░" * 3 + "  75% 3/4"]


SEVEN_DAYS = [("Sat 11-21", "$0.500"), ("Fri 11-20", "$3.750"), ("Thu 11-19", "$0"), ("Wed 11-18", "$0.750"),
              ("Tue 11-17", "$0"), ("Mon 11-16", "$0"), ("Sun 11-15", "$0")]


async def test_g_shows_the_stores_figures_as_bars_t_switches_the_period_and_a_task_end_refreshes(tmp_path: Path) -> None:
    app = app_for(prepare(tmp_path))
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await open_reports(app, pilot)
        text = screen_text(app)
        assert "the last 7 days: $5.000 · 4.6k tokens · 6 tasks · 3/5 succeeded (60%)" in text
        days = chart(app, text, "day-chart")
        assert [(label, figure) for label, _, figure in days] == SEVEN_DAYS
        fri, wed = eighths(days[1][1]), eighths(days[3][1])
        assert abs(fri - 5 * wed) <= 3 and fri > 8 * 40  # $3.75 is 5 x $0.75; the largest bar fills the panel
        assert [(label, figure) for label, _, figure in chart(app, text, "workflow-chart")] == [
            ("build-review", "$4.600 · 3 tasks"), ("docs", "$0.400 · 1 task")]
        assert [(label, figure) for label, _, figure in chart(app, text, "success-chart")] == [
            ("build-review", "50% 1/2 1 failed, 1 running"), ("shell-pipeline", "50% 1/2 1 timed out"),
            ("docs", "100% 1/1")]

        async def period(totals: str) -> str:
            reads = screen.reads
            await pilot.press("t")
            await until(lambda: screen.reads > reads, what="the next period read")
            await pilot.pause()
            text = screen_text(app)
            assert totals in text
            return text

        text = await period("the last 30 days: $10.00 · 7.7k tokens · 7 tasks · 4/6 succeeded (67%)")
        days = chart(app, text, "day-chart")
        assert (len(days), days[0][0], days[20][0], days[20][2], days[-1][0]) == (30, "Sat 11-21", "Sun 11-01", "$5.000",
                                                                                 "Fri 10-23")
        assert chart(app, text, "workflow-chart")[0][::2] == ("build-review", "$9.600 · 4 tasks")
        assert chart(app, text, "success-chart")[0][::2] == ("build-review", "67% 2/3 1 failed, 1 running")
        text = await period("the last 90 days: $18.00+ · 9.0k tokens · 8 tasks · 4/7 succeeded (57%)"
                            " · unpriced: o9-preview (no price known)")
        assert [w[::2] for w in chart(app, text, "workflow-chart")] == [("build-review", "$9.600 · 4 tasks"),
                                                                       ("docs", "$8.400+ · 2 tasks")]
        assert chart(app, text, "success-chart")[1][::2] == ("docs", "50% 1/2 1 cancelled")
        text = await period("all time: $18.00+ · 9.0k tokens · 8 tasks · 4/7 succeeded (57%)")
        days = screen.query_one("#day-chart", Chart).render().plain.splitlines()  # more than the panel shows
        assert (len(days), days[0][:9], days[-1][:9], days[-1].split()[-1]) == (61, "Sat 11-21", "Tue 09-22", "$8.000+")

        # A task ends: the screen reads again at once (its timer waits 60 s here).
        conn = connect(app.home.db_path)
        with transaction(conn):
            conn.execute("INSERT INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens, cost_usd)"
                         " VALUES (8, (SELECT id FROM stages WHERE task_id = 8), 1, ?, 'm9', 'claude-sonnet-4-5', 1000,"
                         " 1.25)", (NOW - 60,))
            conn.execute("UPDATE tasks SET status = 'succeeded' WHERE id = 8")
        conn.close()
        app.bus.publish(EngineEvent("task.succeeded", 8))
        await until(lambda: "all time: $19.25+ · 10k tokens · 8 tasks · 5/8 succeeded (62%)" in screen_text(app), 10,
                    "the figures after the task's end")
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, ReportsScreen))
        assert app.report_days is None  # the next opening shows all time again


async def test_at_100x30_every_figure_shows_and_escape_returns_with_the_selection_intact(tmp_path: Path) -> None:
    app = app_for(prepare(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        tasks = app.query_one(TasksPanel)
        await until(lambda: tasks.selected_key == "8", what="the newest task selected")
        await pilot.press("down")
        await until(lambda: app.selected_task == 7)
        await open_reports(app, pilot)
        text = screen_text(app)
        lines = text.splitlines()
        assert "the last 7 days: $5.000 · 4.6k tokens · 6 tasks · 3/5 succeeded (60%)" in lines[0]
        assert lines[0].split()[-5:] == ["t", "7d", "30d", "90d", "all"]
        assert "esc Back t Period" in lines[-1]
        assert [(label, figure) for label, _, figure in chart(app, text, "day-chart")] == SEVEN_DAYS
        assert [(label, figure) for label, _, figure in chart(app, text, "workflow-chart")] == [
            ("build-review", "$4.600 · 3 tasks"), ("docs", "$0.400 · 1 task")]
        assert [(label, figure) for label, _, figure in chart(app, text, "success-chart")] == [
            ("build-review", "50% 1/2"), ("shell-pipeline", "50% 1/2"), ("docs", "100% 1/1")]
        # Half of 100 columns, less the border, padding and scrollbar gutter (2 each): 44 cells
        # for the chart, 27 of them for the bars (9 of label, 6 of figure, 2 spaces).
        # $0.75 of $3.75 is 5.4 cells: 43 eighths, five full and ▍ (3/8).
        assert [bar for _, bar, _ in chart(app, text, "day-chart")][1:4] == ["█" * 27, "", "█████▍"]
        await pilot.resize_terminal(120, 30)  # 10 more columns for each half: the bars grow with it
        await until(lambda: chart(app, screen_text(app), "day-chart")[1][1] == "█" * 37, 5, "bars drawn anew")
        await pilot.resize_terminal(100, 30)
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, ReportsScreen))
        await pilot.pause()
        assert (app.selected_task, tasks.selected_key) == (7, "7")
        assert "stages · task 7" in screen_text(app)


async def test_a_period_with_nothing_in_it_says_so_in_a_sentence(tmp_path: Path) -> None:
    home = Home(tmp_path / ".tacx")
    connect(home.db_path).close()
    app = app_for(home)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_reports(app, pilot)
        assert not screen.query_one("#report-charts").display
        assert "Nothing ran in the last 7 days: no task, no cost to chart. Press t for a longer period." in screen_text(app)
