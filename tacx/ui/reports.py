"""The reports screen (`g`): cost per day and per workflow as bar charts, and each
workflow's success rate, over the last 7, 30 or 90 days or all time (`t` switches). What
`tacx report cost` and `stats` print, drawn for people who would rather look than read.

The store is read in a worker thread on a connection of its own (reportdata.read_home),
never on the event loop: again every few seconds and soon after a task ends (the engine's
bus), but never for more than a tenth of the time (a big store's 90 days take about a
second to read: it is read every ten). Charts redraw only when their figures change, at
the width they are given."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static

from tacx.engine.events import EngineEvent, EventBus
from tacx.store.errors import describe
from tacx.ui.charts import day_chart, dollars, rate_style, success_chart, workflow_cost_chart
from tacx.ui.notices import FINISHED_KINDS
from tacx.ui.panels import FittingFooter, QuietStatic, fmt_tokens
from tacx.ui.reportdata import PERIODS, Report, period_words, read_home

REFRESH_SECONDS = 5.0  # the figures are read again this often while the screen is open...
LOAD_SHARE = 0.1  # ...or less often: reading takes at most this share of the time
SOON_SECONDS = 0.5  # a task's end is read after this (ends meanwhile join it)
PERIOD_KEYS = {7: "7d", 30: "30d", 90: "90d", None: "all"}

Draw = Callable[[Report, int], Text]


class Chart(Widget):
    """A chart drawn from a report at the chart's own width (again when it is resized);
    shown anew only when its figures change."""

    DEFAULT_CSS = "Chart { height: auto; }"

    def __init__(self, draw: Draw, part: Callable[[Report], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.draw, self.part = draw, part
        self.report: Report | None = None

    def show(self, report: Report) -> None:
        if self.report is not None and self.part(report) == self.part(self.report):
            return
        self.report = report
        self.refresh(layout=True)

    def render(self) -> Text:
        if self.report is None:
            return Text("reading the store…", style="dim")
        return self.draw(self.report, self.content_size.width)


def draw_days(report: Report, width: int) -> Text:
    return day_chart(report.per_day, width, today=report.today)


def days_of(report: Report) -> Any:
    return report.per_day, report.today


def draw_workflow_costs(report: Report, width: int) -> Text:
    return workflow_cost_chart(report.per_workflow, width)


def workflow_costs_of(report: Report) -> Any:
    return report.per_workflow


def draw_success(report: Report, width: int) -> Text:
    return success_chart(report.outcomes, width)


def outcomes_of(report: Report) -> Any:
    return report.outcomes


def totals_text(report: Report) -> Text:
    """The period's totals: cost, tokens, tasks and how many of those that ended succeeded."""
    text = Text()
    text.append(f"{period_words(report.days)}: ")
    text.append(dollars(report.cost, report.unpriced), style="bold cyan")
    text.append(f" · {fmt_tokens(report.tokens)} tokens · {report.tasks} task{'s' if report.tasks != 1 else ''}")
    if report.ended:
        rate = report.succeeded / report.ended
        text.append(" · ")
        text.append(f"{report.succeeded}/{report.ended} succeeded ({rate * 100:.0f}%)", style=rate_style(rate))
    if report.unpriced:
        text.append(f" · unpriced: {', '.join(report.unpriced)} (no price known)", style="yellow")
    return text


def periods_text(days: int | None) -> Text:
    text = Text("t ", style="bold")
    for option in PERIODS:
        text.append(f" {PERIOD_KEYS[option]} ", style="bold reverse" if option == days else "dim")
    return text


def empty_words(days: int | None) -> str:
    if days is None:
        return "Nothing has run yet: no task, no cost to chart. Launch one with n, or submit one with `tacx submit`."
    return f"Nothing ran in {period_words(days)}: no task, no cost to chart. Press t for a longer period."


class ReportsScreen(Screen["int | None"]):
    """Cost per day, cost per workflow, success rate per workflow; dismissed with the
    period last shown (the dashboard opens the next one on it)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,g", "close", "Back"),
        Binding("t", "period", "Period: 7d 30d 90d all"),
    ]

    def __init__(self, db_path: Path, bus: EventBus | None, *, clock: Callable[[], float], days: int | None = 7,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        super().__init__()
        self.db_path, self.bus, self.clock = db_path, bus, clock
        self.days = days if days in PERIODS else PERIODS[0]
        self.refresh_seconds = refresh_seconds
        self.report: Report | None = None
        self.reads = 0  # reports shown: a test waits on it
        self._reading = False
        self._next: float | None = None  # a read asked for while one was read: in how many seconds
        self._timer: Any = None
        self._due = 0.0  # when the timer's read is due (time.monotonic)
        self._took = 0.0  # seconds the last read took
        self._closed = False
        self._unsubscribe: Callable[[], None] | None = None
        self._error: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="report-top"):
            yield QuietStatic(id="report-totals")
            yield QuietStatic(id="report-periods")
        with Horizontal(id="report-charts"):
            with VerticalScroll(id="report-days"):
                yield Chart(draw_days, days_of, id="day-chart")
            with Vertical(id="report-right"):
                with VerticalScroll(id="report-workflows"):
                    yield Chart(draw_workflow_costs, workflow_costs_of, id="workflow-chart")
                with VerticalScroll(id="report-success"):
                    yield Chart(draw_success, outcomes_of, id="success-chart")
        yield Static(id="report-empty")
        yield FittingFooter()

    def on_mount(self) -> None:
        self.query_one("#report-empty").display = False
        self.query_one("#report-workflows").border_title = "cost per workflow"
        self.query_one("#report-success").border_title = "success per workflow"
        self._titles()
        if self.bus is not None:
            self._unsubscribe = self.bus.subscribe(self._on_task_end, kinds=FINISHED_KINDS)
        self.request_read()

    def on_unmount(self) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._timer is not None:
            self._timer.stop()

    def _titles(self) -> None:
        self.query_one("#report-days").border_title = f"cost per day · {period_words(self.days)}"
        self.query_one("#report-periods", QuietStatic).show_text(periods_text(self.days))

    # -- reading (in a worker thread) -----------------------------------------------------

    def _on_task_end(self, event: EngineEvent) -> None:
        self._read_in(self._gap())  # the ends of the next moments join this read

    def request_read(self) -> None:
        """Read the report now, or right after the one being read."""
        self._read_in(0)

    def _gap(self) -> float:
        """How long to wait before a read: reads take at most LOAD_SHARE of a thread's time
        (at 100,000 tasks one read of 90 days takes a second), and never follow a task's
        end sooner than SOON_SECONDS (a burst of ends is one read)."""
        return max(SOON_SECONDS, self._took / LOAD_SHARE)

    def _read_in(self, delay: float) -> None:
        """Read after ``delay`` seconds, unless a read is due sooner already."""
        if self._closed:
            return
        if self._reading:  # asked again while reading: once it is read
            self._next = delay if self._next is None else min(self._next, delay)
            return
        due = time.monotonic() + delay
        if self._timer is not None:
            if self._due <= due:
                return
            self._timer.stop()
            self._timer = None
        self._due = due
        if delay > 0:
            self._timer = self.set_timer(delay, self._start)
        else:
            self._start()

    def _start(self) -> None:
        self._timer = None
        self._reading = True
        self._read(self.days)

    @work(thread=True, group="reports", exit_on_error=False)
    def _read(self, days: int | None) -> None:
        started = time.monotonic()
        try:
            report = read_home(self.db_path, days, self.clock())
        except Exception as exc:  # said on the screen; the reading goes on
            self.app.call_from_thread(self._failed, exc, time.monotonic() - started)
            return
        self.app.call_from_thread(self._apply, report, time.monotonic() - started)

    def _failed(self, exc: Exception, took: float) -> None:
        if self._read_done(took):
            self._error = f"reading the store failed: {describe(exc, self.db_path)}"
            self.query_one("#report-totals", QuietStatic).show_text(Text(self._error, style="bold red"))
            self._rearm()

    def _apply(self, report: Report, took: float) -> None:
        if self._read_done(took):
            if report.days != self.days:  # the period changed while this one was read
                self._next = 0
            else:
                self.show(report)
            self._rearm()

    def _read_done(self, took: float) -> bool:
        self._reading = False
        self._took = took
        return not self._closed

    def _rearm(self) -> None:
        """The next read: one asked for while reading, else the regular refresh."""
        asked, self._next = self._next, None
        self._read_in(max(self.refresh_seconds, self._gap()))
        if asked is not None:
            self._read_in(asked)

    # -- showing --------------------------------------------------------------------------

    def show(self, report: Report) -> None:
        self.report = report
        self._error = None
        with self.app.batch_update():
            self.query_one("#report-totals", QuietStatic).show_text(totals_text(report))
            empty = self.query_one("#report-empty", Static)
            charts = self.query_one("#report-charts")
            empty.display, charts.display = report.empty, not report.empty
            if report.empty:
                empty.update(empty_words(report.days))
            else:
                for chart in self.query(Chart):
                    chart.show(report)
        self.reads += 1

    # -- keys -----------------------------------------------------------------------------

    def action_period(self) -> None:
        self.days = PERIODS[(PERIODS.index(self.days) + 1) % len(PERIODS)]
        self._titles()
        self.request_read()

    def action_close(self) -> None:
        self.dismiss(self.days)
