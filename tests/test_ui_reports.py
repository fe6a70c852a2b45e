"""The dashboard's reports screen (`g`): cost per day and per workflow as bars, success per
workflow, over a period `t` switches. A store prepared by hand (figures below computed by
hand), the clock frozen, the real app (no engine: the screen only reads)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from tacx.engine.events import EngineEvent
from tacx.home import Home
from tacx.settings import Settings
from tacx.store import records
from tacx.store.database import connect, transaction
from tacx.ui.app import TacxApp, make_app
from tacx.ui.charts import bar, day_chart, success_chart
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

# (workflow, created, status, usage rows as (ts, input tokens, output tokens, USD))
TASKS = [
    ("build-review", local(20, 10), "succeeded", [(local(20, 10) + 300, 1000, 200, 1.50),
                                                  (local(20, 10) + 1200, 2000, 300, 2.25)]),
    ("build-review", local(18, 9), "failed", [(local(18, 9) + 600, 500, 50, 0.75)]),
    ("docs", local(21, 9), "succeeded", [(local(21, 9) + 300, 400, 40, 0.40)]),
    ("shell-pipeline", local(21, 10), "succeeded", []),
    ("shell-pipeline", local(21, 11), "timed_out", []),
    ("build-review", local(1, 12), "succeeded", [(local(1, 12) + 600, 3000, 100, 5.00)]),  # 20 days ago
    ("docs", local(22, 12, month=9), "cancelled", [(local(22, 12, month=9) + 60, 800, 0, 8.00)]),  # 60 days ago
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
            for m, (ts, tokens_in, tokens_out, usd) in enumerate(usage):
                conn.execute("INSERT INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens,"
                             " output_tokens, cost_usd) VALUES (?, ?, 1, ?, ?, 'claude-sonnet-4-5', ?, ?, ?)",
                             (task_id, stage, ts, f"m{m}", tokens_in, tokens_out, usd))
            conn.execute("UPDATE stages SET (input_tokens, output_tokens, cost_usd) = (SELECT COALESCE(SUM(input_tokens),"
                         " 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0) FROM usage WHERE stage_id = ?)"
                         " WHERE id = ?", (stage, stage))
    conn.close()
    return home


def app_for(home: Home) -> TacxApp:
    return make_app(home, Settings(), engine=False, clock=lambda: NOW, refresh_seconds=60)


def plain(text: object, width: int) -> list[str]:
    console = Console(width=width, file=None, record=True, color_system=None, legacy_windows=False)
    with console.capture():
        console.print(text)
    return [line.rstrip() for line in console.export_text().splitlines()]


async def open_reports(app: TacxApp, pilot: object) -> ReportsScreen:
    await until(lambda: app.snapshot is not None, what="the first snapshot")
    await pilot.press("g")  # type: ignore[attr-defined]
    screen = await until(lambda: isinstance(app.screen, ReportsScreen) and app.screen.reads and app.screen)
    await pilot.pause()  # type: ignore[attr-defined]
    return screen
