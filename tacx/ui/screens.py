"""Modal screens of the dashboard: quit with tasks running, confirm a kill, help, and the
full-screen log."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Static

from tacx.ui.logview import StageLog

QuitChoice = Literal["stop", "leave"]


class QuitScreen(ModalScreen["QuitChoice | None"]):
    """Tasks are running: stop them, or leave them running to be re-adopted at the next start."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop them"),
        Binding("l", "choose('leave')", "Leave running"),
        Binding("escape", "choose(None)", "Stay"),
    ]
    DEFAULT_CSS = """
    QuitScreen { align: center middle; }
    QuitScreen > Vertical { width: 64; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    QuitScreen Horizontal { height: auto; margin-top: 1; }
    QuitScreen Button { margin-right: 1; }
    """

    def __init__(self, running: int) -> None:
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"{self.running} task{'s are' if self.running != 1 else ' is'} running.\n\n"
                "[b]s[/b] stop them: their daughters end and the tasks go back to the queue.\n"
                "[b]l[/b] leave them running: the next start of tacx re-adopts them.\n"
                "[b]escape[/b] stay in the dashboard."
            )
            with Horizontal():
                yield Button("Stop them (s)", id="stop", variant="error")
                yield Button("Leave running (l)", id="leave", variant="primary")
                yield Button("Stay (esc)", id="stay")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss({"stop": "stop", "leave": "leave"}.get(event.button.id or ""))

    def action_choose(self, choice: QuitChoice | None) -> None:
        self.dismiss(choice)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; y or enter confirms, n or escape declines."""

    BINDINGS = [Binding("y,enter", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 64; height: auto; border: thick $error; background: $surface; padding: 1 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():  # the question may quote a command: its brackets are text, not markup
            yield Static(escape(self.question) + "\n\n[b]y[/b] yes · [b]n[/b] no")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


HELP = """\
[b]tacx dashboard[/b]: every task, stage, token, dollar and daughter, live.

[b]n[/b]  launch a task (pick a workflow, fill its inputs, priority, Enter)
[b]c[/b]  cancel the selected task          [b]r[/b]  retry it (failed, cancelled, timed out)
[b]p[/b]  pause / resume the coordinator (running stages go on; nothing new starts)
[b]f[/b]  filter by status (cycles)          [b]/[/b]  search titles (escape clears)
[b]\\[[/b] [b]][/b]  previous / next page of tasks
[b]l[/b]  the selected stage's log, full screen       [b]v[/b]  raw / rendered log
[b]enter[/b]  on a running task: attach to its live log, full screen, kept at the end
       and on to each next stage until you scroll up or escape; elsewhere as [b]l[/b]
[b]d[/b]  kill the selected daughter (asks first)
[b]a[/b]  the agents: installed, logged in, resting, failing since when; versions, usage
[b]g[/b]  reports: cost per day and per workflow as bars, success rates ([b]t[/b]: period)
[b]tab[/b]  move between panels        [b]ctrl+p[/b]  command palette ("Launch <workflow>")
[b]?[/b]  this help                    [b]q[/b]  quit (asks what to do with running tasks)
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: 84; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        yield Static(HELP)


class LogScreen(Screen[None]):
    """One stage's log, full screen; v switches between rendered agent events and raw.

    With ``task_id``, the dashboard keeps it on that task's selected stage (``follow``): a
    running task's next stage replaces the one that ended, until the reader scrolls up."""

    BINDINGS = [
        Binding("escape,q,l", "app.pop_screen", "Back"),
        Binding("v", "raw", "Raw / rendered"),
    ]

    def __init__(self, path: Path | None, parser_kind: str | None, title: str, *, task_id: int | None = None) -> None:
        super().__init__()
        self.path, self.parser_kind, self.log_title = path, parser_kind, title
        self.task_id = task_id

    def compose(self) -> ComposeResult:
        yield StageLog(id="full-log", max_lines=10_000, tail_bytes=2 << 20)
        yield Footer()

    def on_mount(self) -> None:
        log = self.query_one(StageLog)
        log.show(self.path, self.parser_kind, self.log_title)
        log.focus()

    def follow(self, path: Path | None, parser_kind: str | None, title: str) -> None:
        """Show this log now, unless the reader scrolled up to read (showing the log already
        shown costs nothing)."""
        log = self.query_one(StageLog)
        if log.following and (path is not None or log.path is None):
            log.show(path, parser_kind, title)

    def action_raw(self) -> None:
        self.query_one(StageLog).toggle_raw()
