"""The dashboard driven with the keyboard (App.run_test and Pilot), with the real engine,
real daughters and the real store: what is on screen agrees with `tacx show --json`."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import time
from typing import Any, Callable

import sqlite3

import psutil
import pytest
from rich.console import Console

from tacx.home import Home
from tacx.settings import Settings
from tacx.ui.app import TacxApp, make_app
from tacx.ui.launch import LaunchScreen
from tacx.ui.panels import DaughtersPanel, StagesPanel, TasksPanel
from tacx.ui.logview import StageLog
from tacx.ui.screens import ConfirmScreen, LogScreen, QuitScreen
from tests.conftest import Project

SLEEPER = """\
name: sleeper
inputs:
  title: {required: true}
stages:
  - name: nap
    provider: bash
    run: sleep 30 & sleep 30 & wait
"""

TICKER = """\
name: ticker
inputs:
  title: {required: true}
stages:
  - name: warm
    provider: bash
    run: echo warm
  - name: tick
    provider: bash
    run: for i in $(seq 1 3000); do echo "tick $i"; sleep 0.05; done
  - name: last
    provider: bash
    run: echo last
"""

QUICK = """\
name: quick
inputs:
  title: {required: true}
stages:
  - name: say
    provider: shell
    run: echo "said $TACX_INPUT_TITLE"
"""


def screen_text(app: TacxApp) -> str:
    """The screen as plain text (what a person reads), for asserting and snapshots."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


async def until(predicate: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def status_of(project: Project, task_id: int) -> str | None:
    rows = project.query("SELECT status FROM tasks WHERE id = ?", task_id)
    return rows[0][0] if rows else None


@pytest.fixture
def dash(project: Project) -> Project:
    (project.root / "workflows").mkdir()
    (project.root / "workflows" / "sleeper.yaml").write_text(SLEEPER)
    (project.root / "workflows" / "quick.yaml").write_text(QUICK)
    (project.root / "workflows" / "ticker.yaml").write_text(TICKER)
    return project


def app_for(project: Project, **options: Any) -> TacxApp:
    return make_app(Home(project.home), Settings(), refresh_seconds=0.2, **options)


async def test_launch_a_demo_task_with_the_keyboard_and_watch_it_succeed(dash: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TACX_MOCK_PACE", "0.1")  # the simulator's thinking at a tenth: the same streams
    app = app_for(dash)
    async with app.run_test(size=(180, 50)) as pilot:
        await launch(app, pilot, "demo", "Show me the demo")
        task_id = await until(lambda: dash.query("SELECT id FROM tasks"), what="the task queued")
        task_id = task_id[0][0]
        await until(lambda: status_of(dash, task_id) == "succeeded", 60, "the demo task to succeed")
        shown = dash.show(task_id)
        await until(lambda: "succeeded" in screen_text(app) and app.query_one(StagesPanel).stages.get("review")
                    and app.query_one(StagesPanel).stages["review"].status == "succeeded", 10)
        text = screen_text(app)
        assert "Show me the demo" in text
        for stage in ("plan", "build", "test", "review"):
            assert stage in text
        # The tokens panel agrees with the store, and so do the stages.
        stages = app.query_one(StagesPanel).stages
        for s in shown["stages"]:
            assert stages[s["name"]].status == s["status"]
            assert stages[s["name"]].cost_usd == pytest.approx(s["cost_usd"])
        assert f"total {_fmt_tokens(sum(shown['tokens'].values()))} tokens" in text
        await pilot.press("q")
        await until(lambda: not app.is_running, 20)


async def shown_idle(app: Any) -> None:
    """Before q after a cancel: q asks first while the screen still counts a running task,
    and the snapshot after the cancel can lag on a loaded machine."""
    await until(lambda: app.snapshot and not app.snapshot.overview.counts.get("running"), 20, "none shown running")


async def launch(app: Any, pilot: Any, workflow: str, title: str) -> None:
    """`n`, the workflow picked by typing its name, the title typed: the launch form's way."""
    await until(lambda: app.workflow_choices, what="workflows loaded")
    await pilot.press("n")
    await until(lambda: isinstance(app.screen, LaunchScreen))
    await pilot.press(*workflow, "enter")
    await pilot.pause(0.2)
    await pilot.press(*title, "enter")


def _fmt_tokens(n: int) -> str:
    from tacx.ui.panels import fmt_tokens

    return fmt_tokens(n)


async def test_the_cursor_follows_a_launch_and_the_stages_cursor_and_the_log_show_one_stage(dash: Project) -> None:
    """Defect 3 of issue 12: after a launch the cursor is on the new task; after any switch
    of task the stages cursor and the log panel show the same stage (a person's pick per
    task, else the running one); enter on a running task attaches to its live log."""
    done = dash.submit("quick", "-i", "title=done quickly")
    ticking = dash.submit("ticker", "-i", "title=ticking")
    app = app_for(dash)
    async with app.run_test(size=(160, 40)) as pilot:
        tasks, stages = app.query_one(TasksPanel), app.query_one(StagesPanel)
        log = app.query_one("#log", StageLog)

        def agree(task: int, stage: str) -> bool:
            return (app.selected_task == task and stages.task_id == task and stages.selected_key == stage
                    and app.log_stage == (task, stage) and f"task {task} · {stage} ·" in log.title)

        await until(lambda: status_of(dash, done) == "succeeded" and dash.query(
            "SELECT 1 FROM stages WHERE task_id = ? AND name = 'tick' AND status = 'running'", ticking), 20)
        await launch(app, pilot, "quick", "launched here")
        launched = (await until(lambda: dash.query("SELECT id FROM tasks WHERE title = 'launched here'"), 10))[0][0]
        await until(lambda: tasks.selected_key == str(launched) and agree(launched, "say"), 10, "the cursor on the launch")
        assert f"stages · task {launched}" in screen_text(app)
        # Switch between a task of one stage and a running one of three: the running
        # stage, whatever row the stages cursor was on before.
        tasks.focus()
        for task, stage in ((ticking, "tick"), (done, "say"), (ticking, "tick")):
            await pilot.press("down" if tasks._keys.index(str(task)) > tasks.cursor_row else "up")
            if tasks.selected_key != str(task):
                tasks.move_cursor(row=tasks._keys.index(str(task)))
            await until(lambda: agree(task, stage), 10, f"task {task} showing stage {stage}")
        # A person's pick holds for that task, across switches.
        stages.focus()
        await pilot.press("up")
        await until(lambda: agree(ticking, "warm"), 10, "the picked stage in the log")
        tasks.focus()
        await pilot.press("down")  # newest first: launched, ticking, done
        await until(lambda: agree(done, "say"), 10)
        await pilot.press("up")
        await until(lambda: agree(ticking, "warm"), 10, "the pick kept")
        # enter on the running task: its running stage's live log, full screen, at its end.
        await pilot.press("enter")
        full = await until(lambda: isinstance(app.screen, LogScreen) and app.screen.query_one(StageLog))
        await until(lambda: "tick" in full.title and full.lines and full.lines[-1].startswith("tick"), 10)
        first = int(full.lines[-1].split()[1])
        await until(lambda: int(full.lines[-1].split()[1]) > first + 5, 10, "new lines in the attached log")
        assert full.following and full.is_vertical_scroll_end
        assert agree(ticking, "tick")  # attaching dropped the pick: the panels show the running stage too
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, LogScreen))
        await pilot.press("c")
        await until(lambda: status_of(dash, ticking) == "cancelled", 20)
        await shown_idle(app)
        await pilot.press("q")
        await until(lambda: not app.is_running, 20)


async def test_cancel_retry_filter_and_search(dash: Project) -> None:
    alpha = dash.submit("sleeper", "-i", "title=alpha sleeper")
    beta = dash.submit("quick", "-i", "title=beta quick")
    app = app_for(dash)
    async with app.run_test(size=(180, 50)) as pilot:
        await until(lambda: status_of(dash, beta) == "succeeded" and status_of(dash, alpha) == "running", 20)
        tasks = app.query_one(TasksPanel)
        await until(lambda: set(tasks._keys) == {str(alpha), str(beta)})
        # Select alpha (the older task is the lower row), cancel it.
        tasks.focus()
        tasks.move_cursor(row=tasks._keys.index(str(alpha)))
        await until(lambda: app.selected_task == alpha)
        await until(lambda: app.query_one(DaughtersPanel)._keys, what="alpha's daughter shown")
        await pilot.press("c")
        await until(lambda: status_of(dash, alpha) == "cancelled", 20, "the cancel")
        assert not dash.marked_processes()
        await until(lambda: "cancelled" in screen_text(app))
        # Retry: it runs again.
        await pilot.press("r")
        await until(lambda: status_of(dash, alpha) == "running", 20, "the retry")
        # Filter by status: f cycles all -> queued -> running.
        await pilot.press("f", "f")
        await until(lambda: tasks._keys == [str(alpha)], what="only the running task")
        assert "status running" in screen_text(app)
        await pilot.press("f")  # succeeded
        await until(lambda: tasks._keys == [str(beta)])
        for _ in range(4):  # failed, cancelled, timed out, then all again
            await pilot.press("f")
        await until(lambda: len(tasks._keys) == 2)
        # Search titles.
        await pilot.press("slash", *"beta")
        await until(lambda: tasks._keys == [str(beta)], what="the search")
        await pilot.press("escape")
        await until(lambda: len(tasks._keys) == 2)
        assert app.selected_task == beta  # the search chose beta; the cursor stays on it
        tasks.move_cursor(row=tasks._keys.index(str(alpha)))
        await until(lambda: app.selected_task == alpha)
        await pilot.press("c")  # cancel alpha before quitting
        await until(lambda: status_of(dash, alpha) == "cancelled", 20)
        await shown_idle(app)
        await pilot.press("q")
        await until(lambda: not app.is_running, 20)


async def test_a_task_submitted_from_another_terminal_appears_within_a_second(dash: Project) -> None:
    app = app_for(dash)
    async with app.run_test(size=(160, 40)):
        await until(lambda: app.snapshot is not None)
        task_id = await asyncio.to_thread(dash.submit, "quick", "-i", "title=from elsewhere")
        seen = time.monotonic()
        await until(lambda: str(task_id) in app.query_one(TasksPanel)._keys, 5)
        assert time.monotonic() - seen < 1.5
        await until(lambda: status_of(dash, task_id) == "succeeded", 20)
        await until(lambda: any("succeeded" in str(n.message) for n in app._notifications), 5,
                    "a notification that the task finished")


async def test_quit_leaving_tasks_running_then_a_restart_readopts_them(dash: Project) -> None:
    task_id = dash.submit("sleeper", "-i", "title=left running")
    app = app_for(dash)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(lambda: status_of(dash, task_id) == "running", 20)
        await until(lambda: app.coordinator is not None and app.coordinator.supervisor.daughters, 10)
        pid = next(iter(app.coordinator.supervisor.daughters))
        await pilot.press("q")
        await until(lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("l")
        await until(lambda: not app.is_running, 20)
    assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    assert status_of(dash, task_id) == "running"
    # The next start re-adopts it: the same daughter, no second one.
    restarted = app_for(dash)
    async with restarted.run_test(size=(160, 40)) as pilot:
        await until(lambda: restarted.coordinator is not None and pid in restarted.coordinator.supervisor.daughters, 20)
        # The daughter is watched as soon as it is adopted; the event is committed just after.
        await until(lambda: "task.recovered" in [e["kind"] for e in dash.show(task_id)["events"]], 10)
        await pilot.press("q")
        await until(lambda: isinstance(restarted.screen, QuitScreen))
        await pilot.press("s")  # stop them this time
        await until(lambda: not restarted.is_running, 30)
    assert status_of(dash, task_id) == "queued"
    assert not dash.marked_processes()


def question_text(app: TacxApp) -> str:
    """The words of the confirmation on screen, as rendered (markup taken as markup)."""
    from textual.widgets import Static

    return app.screen.query_one(Static).render().plain


NAPPERS = {
    "bash-nap": """\
name: bash-nap
inputs: {title: {required: true}}
stages:
  - {name: nap, provider: bash, run: 'sleep 30 & sleep 30 & wait # [b]not markup[/b]'}
""",
    "python-nap": """\
name: python-nap
inputs: {title: {required: true}}
stages:
  - {name: doze, provider: python, run: 'import time; time.sleep(30)'}
""",
}


async def test_kill_a_daughter_after_confirming(dash: Project) -> None:
    """The daughters panel and the kill confirmation show the command the workflow asked
    for (a bash script, a python one), never tacx's status wrapper around it."""
    for name, text in NAPPERS.items():
        (dash.root / "workflows" / f"{name}.yaml").write_text(text)
    bash_task = dash.submit("bash-nap", "-i", "title=to be killed")
    python_task = dash.submit("python-nap", "-i", "title=killed too")
    python_command = f"{os.path.basename(sys.executable)} -c import time; time.sleep(30)"  # the panel names programs
    app = app_for(dash)
    async with app.run_test(size=(160, 40)) as pilot:
        panel = app.query_one(DaughtersPanel)
        await until(lambda: len(panel._keys) == 2, 20, "both daughters known")
        await until(lambda: "sleep 30 & s" in screen_text(app) and python_command[:12] in screen_text(app), 10,
                    "both commands on screen, from their start")
        assert "trap" not in screen_text(app)
        by_command = {d.command[0]: pid for pid, d in app.coordinator.supervisor.daughters.items()}
        bash_pid = next(pid for program, pid in by_command.items() if program.endswith("bash"))
        python_pid = by_command[sys.executable]
        commands = {key: cells[4] for key, cells in panel._cells.items()}  # the whole cell, not just what fits
        assert commands == {str(bash_pid): "sleep 30 & sleep 30 & wait # [b]not markup[/b]",
                            str(python_pid): python_command}
        panel.focus()
        panel.move_cursor(row=panel._keys.index(str(bash_pid)))
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        asked = question_text(app)
        assert f"Kill pid {bash_pid} (task {bash_task}, stage nap: sleep 30 & sleep 30 & wait # [b]not markup[/b])" in asked
        assert "trap" not in asked
        await pilot.press("n")  # declined: still running
        await asyncio.sleep(0.3)
        assert status_of(dash, bash_task) == "running"
        await pilot.press("d", "y")
        await until(lambda: status_of(dash, bash_task) == "failed", 20)
        assert "killed from the dashboard" in dash.show(bash_task)["stages"][0]["error"]
        await until(lambda: panel._keys == [str(python_pid)], 20, "only the python daughter left")
        panel.move_cursor(row=0)
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        assert f"Kill pid {python_pid} (task {python_task}, stage doze: {python_command})" in question_text(app)
        await pilot.press("y")
        await until(lambda: status_of(dash, python_task) == "failed", 20)
        assert not dash.marked_processes()
        await pilot.press("q")
        await until(lambda: not app.is_running, 20)


async def test_viewer_of_a_home_another_coordinator_runs(dash: Project) -> None:
    coordinator = dash.start("--no-ui")
    task_id = dash.submit("sleeper", "-i", "title=watched")
    app = app_for(dash, engine=False)
    async with app.run_test(size=(160, 40)) as pilot:
        tasks = app.query_one(TasksPanel)
        await until(lambda: str(task_id) in tasks._keys and status_of(dash, task_id) == "running", 20)
        assert "viewer" in screen_text(app)
        await until(lambda: app.selected_task == task_id)
        await pilot.press("c")  # through the store: the coordinator notices
        await until(lambda: status_of(dash, task_id) == "cancelled", 20)
        await shown_idle(app)
        await pilot.press("q")
        await until(lambda: not app.is_running, 10)
    coordinator.send_signal(signal.SIGINT)
    coordinator.wait(timeout=20)


def test_tacx_demo_opens_the_dashboard_on_a_terminal(project: Project) -> None:
    """The real command on a pty: `tacx demo` queues tasks and opens the dashboard; q asks
    what to do with the running tasks, s stops them (they go back to the queue)."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import sys
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: the real CLI on a terminal
        os.chdir(project.root)
        os.execve(sys.executable, [sys.executable, "-m", "tacx", "demo", "--tasks", "2"], project.env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 180, 0, 0))
    seen = bytearray()

    def read_until(needle: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    seen.extend(os.read(fd, 65536))
                except OSError:
                    return

    try:
        read_until(b"mock_agent", 30)  # a daughter in the daughters panel: tasks are running
        assert b"tasks" in seen and b"mock_agent" in seen
        os.write(fd, b"q")
        read_until(b"Stop them", 10)
        assert b"Stop them" in seen
        os.write(fd, b"s")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            read_until(b"\x00never", 0.2)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
        else:
            raise AssertionError("the dashboard did not exit")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
    assert {t["status"] for t in project.ls()} <= {"queued", "succeeded"}
    assert not project.marked_processes()


async def test_command_palette_launches_a_workflow_and_help_shows_the_keys(dash: Project) -> None:
    app = app_for(dash)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(lambda: app.workflow_choices, what="workflows loaded")
        await pilot.press("question_mark")
        await until(lambda: "launch a task" in screen_text(app) and "attach to its live log" in screen_text(app))
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await until(lambda: "Launch quick" in screen_text(app), 5, "the palette listing workflows before typing")
        await pilot.press(*"Launch quick")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, LaunchScreen), 5, "the launch form, preselected")
        await pilot.press(*"from the palette", "enter")
        rows = await until(lambda: dash.query("SELECT id, title, workflow FROM tasks"), 10)
        assert (rows[0]["title"], rows[0]["workflow"]) == ("from the palette", "quick")
        await until(lambda: app.query_one(TasksPanel).selected_key == str(rows[0]["id"]) == str(app.selected_task)
                    and app.query_one(StagesPanel).task_id == rows[0]["id"], 10, "the cursor on the palette's launch")
        await until(lambda: status_of(dash, rows[0]["id"]) == "succeeded", 20)
        await pilot.press("q")
        await until(lambda: not app.is_running, 20)


async def test_the_full_screen_log_takes_no_main_screen_keys_and_errors_do_not_kill_the_app(dash: Project) -> None:
    task_id = dash.submit("sleeper", "-i", "title=behind the log")
    app = app_for(dash)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(lambda: status_of(dash, task_id) == "running" and app.selected_task == task_id, 20)
        await pilot.press("l")
        await until(lambda: type(app.screen).__name__ == "LogScreen")
        await pilot.press("c")  # not the main screen: nothing is cancelled behind the log
        await asyncio.sleep(0.5)
        assert status_of(dash, task_id) == "running"
        await pilot.press("escape")
        await until(lambda: type(app.screen).__name__ == "Screen")

        async def broken(task: int) -> None:
            raise sqlite3.OperationalError("database is locked")

        app.coordinator.retry_task = broken  # type: ignore[union-attr,method-assign]
        await pilot.press("r")  # the store refuses: a notification, and the app and its task go on
        await until(lambda: any("database is locked" in str(n.message) for n in app._notifications), 5)
        assert app.is_running and status_of(dash, task_id) == "running"
        await pilot.press("c")
        await until(lambda: status_of(dash, task_id) == "cancelled", 20)
        await shown_idle(app)
        await pilot.press("q")
        await until(lambda: not app.is_running, 20)


async def test_a_table_selects_a_row_a_later_update_brings_and_posts_only_a_persons_moves() -> None:
    """KeyedTable.select_key waits for a row not there yet (a launched task's comes with
    the next snapshot), unless a person moves the cursor first; the table's own moves post
    no RowHighlighted, so the app never mistakes them for a choice."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    class Host(App[None]):
        def __init__(self) -> None:
            super().__init__()
            self.highlighted: list[str | None] = []

        def compose(self) -> ComposeResult:
            yield TasksPanel(id="tasks")

        def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
            self.highlighted.append(event.row_key.value)

    def rows(*ids: int) -> list[tuple[str, tuple[Any, ...]]]:
        return [(str(i), (str(i), "queued", "0", "wf", f"task {i}", "", "", "")) for i in ids]

    app = Host()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(TasksPanel)
        table.apply(rows(2, 1))
        table.select_key("3")
        await pilot.pause()
        assert table.selected_key == "2" and table.wanting
        table.apply(rows(3, 2, 1))
        await pilot.pause()
        assert table.selected_key == "3" and not table.wanting
        table.focus()
        await pilot.press("down")
        await pilot.pause()
        assert table.selected_key == "2" and app.highlighted == ["2"]  # only the person's move
        table.select_key("4")
        await pilot.press("down")  # the person moves first: their row stays
        table.apply(rows(4, 3, 2, 1))
        await pilot.pause()
        assert table.selected_key == "1" and not table.wanting and app.highlighted == ["2", "1"]


async def test_q_right_after_a_cancel_quits_without_asking(dash: Project) -> None:
    """The quit dialog counted the tasks running by the last snapshot too, which lags a
    cancel by up to a refresh: "1 task running" asked about a task already cancelled. Once
    the engine has re-adopted what an earlier tacx left running, its own count decides. The
    lag is made certain here: the snapshot still says one task runs."""
    task_id = dash.submit("sleeper", "-i", "title=cancel then quit")
    app = app_for(dash)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(lambda: status_of(dash, task_id) == "running" and app.selected_task == task_id, 20)
        await pilot.press("c")
        await until(lambda: status_of(dash, task_id) == "cancelled" and not app.coordinator.running, 20)
        app.snapshot.overview.counts["running"] = 1  # the snapshot before the cancel's
        await pilot.press("q")
        await until(lambda: not app.is_running or isinstance(app.screen, QuitScreen), 20)
        assert not isinstance(app.screen, QuitScreen)
