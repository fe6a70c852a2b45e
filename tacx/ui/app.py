"""The dashboard: a Textual app that hosts the coordinator in its own event loop.

Its loop never waits on a daughter, a file or a query: the store is read by a worker
thread (one snapshot at a time, then a one-shot timer re-armed), logs are tailed by the
log panel's thread, and daughters' figures come from the supervisor's sampler thread.
With another coordinator holding the home, the dashboard is a viewer: it reads the same
store and cancels, retries and pauses through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input

from tacx.engine.coordinator import Coordinator
from tacx.engine.events import EngineEvent, EventBus
from tacx.home import Home
from tacx.agents.registry import configured_providers, never_starts, provider_kinds
from tacx.agents.base import Provider
from tacx.settings import Settings
from tacx.store.database import connect_reader
from tacx.store.writer import Store
from tacx.store.errors import describe
from tacx.submission import workflow_dirs
from tacx.ui.control import TaskControl
from tacx.ui.data import STATUSES, DashboardData, Snapshot, StageRow, TaskDetail
from tacx.ui.launch import LaunchRequest, LaunchScreen, WorkflowChoice, find_workflows
from tacx.ui.logview import StageLog
from tacx.ui.notices import FINISHED_KINDS, FinishedNotices
from tacx.ui.notifying import dashboard_notifier
from tacx.ui.palette import WorkflowCommands
from tacx.ui.panels import (
    DaughtersPanel, FittingFooter, HeaderBar, StagesPanel, TasksPanel, TokensPanel, daughter_views, set_border,
    task_note,
)
from tacx.ui.providers import ProvidersScreen
from tacx.ui.reports import REFRESH_SECONDS as REPORT_SECONDS, ReportsScreen
from tacx.ui.screens import ConfirmScreen, HelpScreen, LogScreen, QuitScreen
from tacx.ui.selection import StageSelection
from tacx.ui.tuning import ProcessTuning

if TYPE_CHECKING:
    from tacx.server.notify.notifier import Notifier

log = logging.getLogger(__name__)

REFRESH_SECONDS = 0.5
QUIET_KINDS = {"stage.usage", "stage.waiting", "daughter.sample", "agent.output"}


class TacxApp(App[int]):
    """tacx's dashboard. ``engine=False`` makes it a viewer of a home another coordinator runs."""

    CSS_PATH = "app.tcss"
    TITLE = "tacx"
    COMMANDS = App.COMMANDS | {WorkflowCommands}
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]  # a short terminal gives the log more rows (app.tcss)
    BINDINGS = [
        Binding("n", "launch", "Launch"),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry"),
        Binding("p", "pause", "Pause"),
        Binding("f", "filter", "Filter"),
        Binding("slash", "search", "Search"),
        Binding("l", "full_log", "Log"),
        Binding("v", "raw", "Raw", show=False),
        Binding("d", "kill", "Kill"),
        Binding("a", "agents", "Agents"),
        Binding("g", "reports", "Reports"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        home: Home,
        settings: Settings,
        *,
        engine: bool = True,
        max_workers: int | None = None,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = REFRESH_SECONDS,
        listener: Any = None,  # a bound socket for the HTTP API (tacx.server.address.Listener)
    ) -> None:
        super().__init__()
        self.listener, self.server = listener, None
        self.home = home
        self.settings = settings
        self.engine = engine
        self.max_workers = max_workers or settings.max_workers
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.providers: dict[str, Provider] = configured_providers(settings)
        self.bus = EventBus()
        self.store: Store | None = None
        self.coordinator: Coordinator | None = None
        self.notifier: Notifier | None = None
        self.engine_task: asyncio.Task[None] | None = None
        self.workflow_choices: list[WorkflowChoice] = []
        self.snapshot: Snapshot | None = None
        self.status_filter: str | None = None
        self.search_text = ""
        self.offset = 0
        self.selected_task: int | None = None
        self.stage_selection = StageSelection()  # the stage shown: the stages cursor, the log, the full log
        self.log_stage: tuple[int, str] | None = None  # (task, stage) the log panel shows
        self._log_shown: tuple[str | None, str | None] | None = None
        self._refreshing = False
        self._refresh_again = False
        self._refresh_timer: Any = None
        self._quitting = False
        self.tuning = ProcessTuning()
        self.finished_notices = FinishedNotices(self.notify, self.set_timer)
        self.task_control = TaskControl(
            home, provider_kinds(self.providers), self.notify,
            never_starts=lambda wf: never_starts(wf.stages, self.providers, settings.checks_login, home.project_root),
        )
        self._last_error: str | None = None
        self.engine_stopped = False
        self.crash: BaseException | None = None
        self.report_days: int | None = 7  # the reports screen's period, kept between openings
        self.data = DashboardData(home.db_path, settings.budget.model_dump(exclude_none=True) if settings.budget else None)

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield HeaderBar(id="header")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield TasksPanel(id="tasks")
                yield StagesPanel(id="stages")
            with Vertical(id="right"):
                yield TokensPanel(id="tokens")
                yield DaughtersPanel(id="daughters")
                yield StageLog(id="log")
        yield Input(placeholder="search titles; enter keeps it, escape clears it", id="search")
        yield FittingFooter()

    async def on_mount(self) -> None:
        self.tuning.apply()
        self.query_one("#tasks").border_title = "tasks"
        self.query_one("#stages").border_title = "stages"
        self.query_one("#tokens").border_title = "tokens"
        self.query_one("#daughters").border_title = "daughters"
        self.query_one("#search").display = False
        self.query_one(TasksPanel).focus()
        self.bus.subscribe(self._on_engine_event)
        if self.engine:
            self.store = await Store(self.home.db_path).open()
            self.coordinator = Coordinator(self.home, self.store, self.settings, bus=self.bus,
                                           providers=self.providers, max_workers=self.max_workers)
            self.store.on_failure = self._store_refused
            self.task_control.coordinator = self.coordinator
            self.notifier = dashboard_notifier(self, self.home, self.settings, self.coordinator)
            self.engine_task = asyncio.create_task(self._run_engine(), name="tacx-engine")
            if self.listener is not None:
                from tacx.server.app import ApiServer, listening_line

                self.server = ApiServer(self.coordinator, self.listener)
                await self.server.start()
                if warning := self.listener.warning():
                    self.notify(warning, severity="warning", timeout=60)
                self.notify(listening_line(self.server.url), timeout=10)
        self.load_workflows()
        self.request_refresh()

    async def _run_engine(self) -> None:
        assert self.coordinator is not None
        try:
            await self.coordinator.run()
        except Exception as exc:  # the engine failed: say so, keep the dashboard readable
            log.exception("the coordinator failed")
            self.notify(f"the coordinator stopped: {exc!r}", severity="error", timeout=30)
        if self.notifier is not None:
            await self.notifier.close()
        if not self._quitting:
            self.engine_stopped = True
            self.notify("the coordinator stopped; the dashboard shows the store as it is", severity="warning")

    def _store_refused(self, error: Exception) -> None:
        """The file or the disk refused the engine (corrupt, full): it stops rather than retry."""
        self.notify(str(error), severity="error", timeout=60)
        if self.coordinator is not None:
            self.coordinator.stop("stop")

    def _handle_exception(self, error: Exception) -> None:
        """Textual prints the traceback as it exits; the CLI says it in one line instead
        (a StoreError's sentence, or a bug and where crash.log keeps the traceback)."""
        self.crash = self.crash or error
        super()._handle_exception(error)
        self._exit_renderables.clear()

    # -- refreshing from the store (in a worker thread) ---------------------------------------

    def request_refresh(self) -> None:
        """Read a new snapshot now (or right after the one being read)."""
        if self._quitting:
            return
        if self._refreshing:
            self._refresh_again = True
            return
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
            self._refresh_timer = None
        self._refreshing = True
        self._read_snapshot(*self._asking())

    def _asking(self) -> tuple[str | None, str, int, int | None]:
        return self.status_filter, self.search_text, self.offset, self.selected_task

    @work(thread=True, group="snapshot", exit_on_error=False)
    def _read_snapshot(self, status: str | None, search: str, offset: int, selected: int | None) -> None:
        try:
            snap = self.data.snapshot(status=status, search=search, offset=offset, selected=selected, now=self.clock())
        except Exception as exc:  # whatever it is, the refreshing goes on and says why
            self.call_from_thread(self._snapshot_failed, exc)
            return
        self.call_from_thread(self._apply_snapshot, snap, (status, search, offset, selected))

    def _snapshot_failed(self, exc: Exception) -> None:
        self._refreshing = False
        message = f"reading the store failed: {describe(exc, self.home.db_path)}"
        if message != self._last_error:  # said once, not every half second
            self._last_error = message
            log.error("%s", message)
            self.notify(message, severity="error", timeout=15)
        self._rearm()

    def _rearm(self) -> None:
        if self._refresh_again:
            self._refresh_again = False
            self.request_refresh()
        elif not self._quitting:
            self._refresh_timer = self.set_timer(self.refresh_seconds, self.request_refresh)

    def _apply_snapshot(self, snap: Snapshot, asked: tuple[Any, ...] | None = None) -> None:
        self._refreshing = False
        if self.snapshot is None:
            self.call_after_refresh(self.tuning.settle)
        if asked is not None and asked != self._asking() and self._refresh_again:
            self._rearm()  # read for a filter, page or selection that changed meanwhile: read again
            return
        self.snapshot = snap
        self.offset = snap.offset
        self._last_error = None
        try:
            self._show(snap)
        finally:
            self._rearm()

    def _show(self, snap: Snapshot) -> None:
        now = self.clock()
        with self.batch_update():
            self._show_header()
            tasks = self.query_one(TasksPanel)
            tasks.show(snap.tasks, now)
            set_border(tasks, "border_subtitle", self._page_text(snap))
            cursor = tasks.selected_task  # the cursor's row is the selected task, but for one being brought in
            if cursor is not None and cursor != self.selected_task and not tasks.wanting:
                self.selected_task = cursor
                self._refresh_again = True
            detail = snap.detail if snap.detail and snap.detail.task.id == self.selected_task else None
            stage = self.stage_selection.of(detail)
            stages_panel = self.query_one(StagesPanel)
            stages_panel.show(detail, now)
            stages_panel.select_key(stage.name if stage else None)
            stages = self.query_one("#stages")
            set_border(stages, "border_title", (
                f"stages · task {detail.task.id}" + (f" · {detail.branch}" if detail.branch else "") if detail else "stages"
            ))
            set_border(stages, "border_subtitle", task_note(detail.task) if detail else "")
            self.query_one(TokensPanel).show(detail)
            self._show_daughters()
            self._follow_log(detail, stage)

    def _page_text(self, snap: Snapshot) -> str:
        if not snap.matching:
            return "no tasks" + (" match" if self.status_filter or self.search_text else "")
        last = min(snap.offset + len(snap.tasks), snap.matching)
        return f"{snap.offset + 1}-{last} of {snap.matching}"

    def _show_header(self) -> None:
        filters = []
        if self.status_filter:
            filters.append(f"status {self.status_filter}")
        if self.search_text:
            filters.append(f"search {self.search_text!r}")
        busy = self.coordinator.busy if self.coordinator else 0
        if self.engine_stopped:
            filters.insert(0, "COORDINATOR STOPPED: restart tacx")
        self.query_one(HeaderBar).show(self.snapshot.overview if self.snapshot else None, busy, self.max_workers,
                                       self.engine, " · ".join(filters))

    def _show_daughters(self) -> None:
        if self.coordinator is None:
            return
        live = self.coordinator.live_daughters()
        self.query_one(DaughtersPanel).show(daughter_views(live, self.home.marker_prefix), self.clock())

    def _follow_log(self, detail: TaskDetail | None, stage: StageRow | None) -> None:
        """The log panel (and a full-screen log of the same task) shows the selected stage:
        the one the stages cursor is on (see StageSelection)."""
        self.log_stage = (detail.task.id, stage.name) if detail is not None and stage is not None else None
        path, kind, title = self._log_of(detail, stage)
        screen = self.screen
        if isinstance(screen, LogScreen) and detail is not None and screen.task_id == detail.task.id:
            screen.follow(path, kind, title or "log")
        key = (str(path) if path else None, stage.provider if stage else None)
        log_panel = self.query_one("#log", StageLog)
        if key == self._log_shown and title == log_panel.title:
            return
        self._log_shown = key
        log_panel.show(path, kind, title)

    def _log_of(self, detail: TaskDetail | None, stage: StageRow | None) -> tuple[Path | None, str | None, str]:
        """A stage's log file, its parser and the log view's title."""
        if detail is None or stage is None:
            return None, None, ""
        title = f"task {detail.task.id} · {stage.name} · " + (f"attempt {stage.attempt}" if stage.log_path else
                                                               "not started")
        return (Path(stage.log_path) if stage.log_path else None), self.parser_kind(stage.provider), title

    def parser_kind(self, provider: str | None) -> str | None:
        p = self.providers.get(provider or "")
        return getattr(p, "parser_kind", None) if p is not None and p.kind == "agent" else None

    # -- engine events ----------------------------------------------------------------------

    def _on_engine_event(self, event: EngineEvent) -> None:
        if event.kind in FINISHED_KINDS:
            self.finished_notices.add(event)
        if event.kind in QUIET_KINDS:
            return  # frequent figures: the next timed refresh shows them
        if event.kind.startswith(("task.", "stage.", "coordinator.")):
            self.request_refresh()

    # -- selection ---------------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """A person moved a cursor (the tables' own moves post nothing)."""
        if event.data_table.id == "tasks":
            task = self.query_one(TasksPanel).selected_task
            if task is not None and task != self.selected_task:
                self.selected_task = task
                self.request_refresh()
        elif event.data_table.id == "stages":
            stages = self.query_one(StagesPanel)
            detail = self.snapshot.detail if self.snapshot else None
            name = event.row_key.value  # the row moved to (a refresh may have moved the cursor since)
            if name in stages.stages and detail is not None and stages.task_id == detail.task.id == self.selected_task:
                self.stage_selection.pick(detail.task.id, name)
                stage = self.stage_selection.of(detail)
                stages.select_key(stage.name if stage else None)
                self._follow_log(detail, stage)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """enter: on a running task, attach to its live log; else the selected stage's log,
        full screen."""
        if event.data_table.id == "tasks" and self._attach(event.row_key.value):
            return
        if event.data_table.id in ("tasks", "stages"):
            self.action_full_log()

    def _attach(self, key: str | None) -> bool:
        """A running task's running stage, full screen, at its end; the app keeps the view on
        the task's selected stage as the task goes on (LogScreen.follow). False for a task
        not running."""
        row = next((t for t in self.snapshot.tasks if str(t.id) == key), None) if self.snapshot else None
        if row is None or row.status != "running":
            return False
        self.stage_selection.forget(row.id)  # a pick in the stages panel gives way to the running stage
        detail = self.snapshot.detail if self.snapshot else None
        path, kind, title = None, None, f"task {row.id}"  # until its snapshot is read
        if detail is not None and detail.task.id == row.id:
            stage = self.stage_selection.of(detail)
            self._follow_log(detail, stage)
            path, kind, title = self._log_of(detail, stage)
        self.push_screen(LogScreen(path, kind, title or "log", task_id=row.id))
        self.request_refresh()
        return True

    # -- actions -------------------------------------------------------------------------------

    MAIN_SCREEN_ACTIONS = {"launch", "cancel", "retry", "pause", "filter", "search", "full_log", "raw", "kill", "page", "reports"}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The main screen's keys act only there (not behind the full-screen log)."""
        if action in self.MAIN_SCREEN_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    @work(thread=True, group="workflows", exit_on_error=False)
    def load_workflows(self) -> None:
        choices = find_workflows(workflow_dirs(self.home), self.task_control.kinds)
        self.call_from_thread(setattr, self, "workflow_choices", choices)

    def action_launch(self) -> None:
        self.open_launch(None)

    def open_launch(self, preselect: str | None) -> None:
        self.load_workflows()  # files added or edited meanwhile are there the next time
        if not self.workflow_choices:
            self.notify("no workflows found (yet): put YAML files in ./workflows", severity="warning")
            return
        self.push_screen(LaunchScreen(self.workflow_choices, preselect=preselect), self._launch)

    def _launch(self, request: LaunchRequest | None) -> None:
        if request is not None:
            self.run_worker(self._submit(request), group="submit", exit_on_error=False)

    async def _submit(self, request: LaunchRequest) -> None:
        task_id = await self.task_control.launch(request)
        if task_id is not None:  # the cursor goes to the new task (its row comes with a snapshot)
            self.selected_task = task_id
            self.query_one(TasksPanel).select_key(str(task_id))
            self.status_filter, self.search_text, self.offset = None, "", 0
            self.request_refresh()

    async def action_cancel(self) -> None:
        if self.selected_task is not None and await self.task_control.cancel(self.selected_task):
            self.request_refresh()

    async def action_retry(self) -> None:
        if self.selected_task is not None and await self.task_control.retry(self.selected_task):
            self.request_refresh()

    async def action_pause(self) -> None:
        if self.coordinator is not None:
            paused = self.coordinator.paused
        else:
            paused = bool(self.snapshot and self.snapshot.overview.paused)
        if await self.task_control.set_paused(not paused):
            self.request_refresh()

    def action_filter(self) -> None:
        order = [None, *STATUSES]
        self.status_filter = order[(order.index(self.status_filter) + 1) % len(order)]
        self.offset = 0
        self.request_refresh()

    def action_search(self) -> None:
        search = self.query_one("#search", Input)
        search.display = True
        search.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":
            self.search_text = event.value
            self.offset = 0
            self.request_refresh()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "search":
            event.input.display = bool(event.value)
            self.query_one(TasksPanel).focus()

    def on_key(self, event: Any) -> None:
        search = self.query_one("#search", Input)
        if event.key == "escape" and search.has_focus:
            search.value = ""
            search.display = False
            self.query_one(TasksPanel).focus()
            event.stop()

    def action_page(self, step: int) -> None:
        matching = self.snapshot.matching if self.snapshot else 0
        self.offset = max(0, min(self.offset + step * 100, max(matching - 1, 0) // 100 * 100))
        self.request_refresh()

    def action_full_log(self) -> None:
        panel = self.query_one("#log", StageLog)
        path, provider = self._log_shown or (None, None)
        self.push_screen(LogScreen(Path(path) if path else None, self.parser_kind(provider), panel.title or "log",
                                   task_id=self.log_stage[0] if self.log_stage else None))

    def action_raw(self) -> None:
        self.query_one("#log", StageLog).toggle_raw()

    def action_kill(self) -> None:
        pid = self.query_one(DaughtersPanel).selected_pid
        if pid is None or self.coordinator is None:
            self.notify("no daughter selected (tab to the daughters panel)" if self.coordinator else
                        "a viewer kills nothing: the coordinator of this home runs elsewhere", severity="warning")
            return
        view = next((v for v in daughter_views(
            [d for d in self.coordinator.live_daughters() if d.pid == pid], self.home.marker_prefix)), None)
        where = f"pid {view.shown_pid or '?'} on {view.node}" if view is not None and view.node else f"pid {pid}"
        what = where + (f" (task {view.task}, stage {view.stage}: {view.command})" if view else "")

        def answer(yes: bool | None) -> None:
            if yes and self.coordinator is not None:
                ok = self.coordinator.kill_daughter(pid)
                self.notify(f"killing {what}" if ok else f"{where} has already ended")

        self.push_screen(ConfirmScreen(f"Kill {what} and its whole process tree?"), answer)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_agents(self) -> None:
        self.push_screen(ProvidersScreen(self._provider_report))

    def action_reports(self) -> None:
        def closed(days: int | None) -> None:
            self.report_days = days

        self.push_screen(ReportsScreen(self.home.db_path, self.bus, clock=self.clock, days=self.report_days,
                                       refresh_seconds=max(REPORT_SECONDS, self.refresh_seconds)), closed)

    def _provider_report(self) -> list[dict[str, Any]]:
        """`tacx providers`, read in a worker thread with a connection of its own."""
        from tacx.agents.report import report

        conn = connect_reader(self.home.db_path)
        try:
            return report(self.providers, self.settings, conn, self.home.project_root)
        finally:
            if conn is not None:
                conn.close()

    async def action_quit(self) -> None:
        if self.coordinator is None:
            self._finish()
            return
        # The engine's own count once it has re-adopted what an earlier tacx left running
        # (a snapshot can lag a cancel by half a second); until then the screen's too.
        shown = self.snapshot.overview.counts.get("running", 0) if self.snapshot and self.engine else 0
        running = len(self.coordinator.running) if self.coordinator.recovered else max(len(self.coordinator.running), shown)
        if not running:
            await self._stop_engine("stop")
            return

        async def chosen(choice: str | None) -> None:
            if choice in ("stop", "leave"):
                await self._stop_engine(choice)  # type: ignore[arg-type]

        self.push_screen(QuitScreen(running), chosen)

    async def _stop_engine(self, mode: str) -> None:
        self._quitting = True
        assert self.coordinator is not None
        self.notify("stopping running tasks…" if mode == "stop" else "leaving tasks running for the next start…")
        self.coordinator.stop(mode)  # type: ignore[arg-type]
        if self.engine_task is not None:
            await asyncio.gather(self.engine_task, return_exceptions=True)
        self._finish()

    def _finish(self) -> None:
        self._quitting = True
        self.exit(0)

    async def on_unmount(self) -> None:
        self._quitting = True
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
        if self.coordinator is not None and self.engine_task is not None and not self.engine_task.done():
            # Not a chosen quit (an error, the terminal gone): nothing is killed; the next
            # start re-adopts the daughters, as after a crash.
            self.coordinator.stop("leave")
            await asyncio.gather(self.engine_task, return_exceptions=True)
        if self.server is not None:
            await self.server.stop()
        if self.store is not None:
            await self.store.close()
        for _ in range(200):  # the snapshot being read finishes before its connection closes
            if not self._refreshing:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(self.data.close)
        self.tuning.restore()


def make_app(home: Home, settings: Settings, **options: Any) -> TacxApp:
    """The dashboard as the CLI and the tests build it."""
    return TacxApp(home, settings, **options)
