"""Running tasks: `tacx submit`, `tacx run` (which follows its task to the end, also when
another coordinator runs it), `tacx demo`, the headless coordinator (`tacx --no-ui`) and the
dashboard's launch."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import TYPE_CHECKING

from tacx.cli import serving
from tacx.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, project_provider_kinds, project_settings
from tacx.agents.registry import configured_providers, never_starts
from tacx.cli.reporter import ConsoleReporter
from tacx.cli.summary import run_summary
from tacx.engine.coordinator import Coordinator
from tacx.engine.events import EngineEvent, EventBus
from tacx.home import CoordinatorLock, Home, LockHeld, coordinator_running
from tacx.settings import Settings
from tacx.store import records
from tacx.store.writer import Store
from tacx.store.errors import StoreError
from tacx.store.database import connect
from tacx.submission import Prepared, load_named_workflow, prepare_inputs, prepare_tasks, submit_tasks

if TYPE_CHECKING:
    from tacx.server.address import Listener
    from tacx.server.notify.notifier import Notifier


# -- submitting --------------------------------------------------------------------------------


def _prepared(home: Home, args: argparse.Namespace) -> Prepared:
    return prepare_tasks(home, lambda: project_provider_kinds(home), args.workflow, pairs=args.input,
                         each=getattr(args, "each", None), title=args.title, dedupe_key=args.dedupe_key)


def cmd_submit(home: Home, args: argparse.Namespace) -> int:
    results = submit_tasks(home, _prepared(home, args), args.priority)
    if args.json:
        print(json.dumps([{"id": task_id, "created": created} for task_id, created in results]))
    else:
        for task_id, created in results:
            print(task_id if created else f"{task_id} (already queued with the same dedupe key)")
    if not coordinator_running(home) and not args.json:
        print("tacx: no coordinator is running here: `tacx --no-ui` runs the queue", file=sys.stderr)
    return EXIT_OK


# -- the dashboard -------------------------------------------------------------------------------


def run_dashboard(home: Home, args: argparse.Namespace) -> int:
    """The dashboard with the coordinator inside it; a viewer when another coordinator
    holds the home (it reads the same store, and cancels or retries through it)."""
    lock = CoordinatorLock(home)
    try:
        lock.acquire()
    except LockHeld as held:
        serving.refuse_in_viewer(held, args.listen)
        print(f"tacx: {held.describe()}; the dashboard opens as a viewer", file=sys.stderr)
        return _dashboard(home, args, None)
    try:
        return _dashboard(home, args, lock, serving.listener(home, args.listen))
    finally:
        lock.release()


def _need_terminal() -> None:
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        raise UsageError("the dashboard needs a terminal: run `tacx --no-ui` for the headless coordinator")


def _dashboard(home: Home, args: argparse.Namespace, lock: CoordinatorLock | None, listener: Listener | None = None) -> int:
    _need_terminal()
    from tacx.ui.app import make_app  # Textual is imported only for the dashboard

    settings = project_settings(home)
    connect(home.db_path).close()  # a store that cannot be used is said here, before the screen is taken
    app = make_app(home, settings, engine=lock is not None, max_workers=getattr(args, "max_workers", None), listener=listener)
    app.run()
    if app.crash is not None:  # Textual caught it: said in one line by main (crash.log for a bug)
        raise app.crash
    if app.store is not None and app.store.failure is not None:
        raise app.store.failure
    return app.return_code or EXIT_OK


# -- the coordinator, headless ------------------------------------------------------------------


def headless(home: Home, args: argparse.Namespace) -> int:
    settings = project_settings(home)
    lock = CoordinatorLock(home)
    lock.acquire()
    try:
        listener = serving.listener(home, args.listen)  # a port in use: exit 2 before anything starts
        reporter = ConsoleReporter(json_mode=args.json)
        return asyncio.run(_run_coordinator(home, settings, args, reporter, exit_when_idle=args.exit_when_idle,
                                            listener=listener))
    finally:
        lock.release()


async def _run_coordinator(
    home: Home,
    settings: Settings,
    args: argparse.Namespace,
    reporter: ConsoleReporter,
    *,
    exit_when_idle: bool = False,
    only_task: int | None = None,
    listener: Listener | None = None,
) -> int:
    store = await Store(home.db_path).open()
    bus = EventBus()
    bus.subscribe(reporter)
    try:
        coordinator = Coordinator(
            home,
            store,
            settings,
            bus=bus,
            max_workers=args.max_workers,
            exit_when_idle=exit_when_idle,
            only_task=only_task,
        )
    except BaseException:
        await store.close()
        raise
    store.on_failure = lambda error: coordinator.stop("stop")  # exits 2 with the sentence, below
    notifier = _notifications(home, settings, coordinator)
    interrupted = asyncio.Event()

    def on_signal() -> None:
        interrupted.set()
        coordinator.stop("stop")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    progress = asyncio.create_task(_count_queued(store, reporter)) if reporter.progress else None
    began = time.monotonic()
    server = None
    try:
        server = await serving.serve(coordinator, listener, reporter)
        await coordinator.run()
        await _summarise(store, reporter, time.monotonic() - began)
    finally:
        if server is not None:
            await server.stop()
        elif listener is not None:
            listener.close()
        if progress:
            progress.cancel()
        if notifier is not None:
            await notifier.close()
        reporter.close()
        await store.close()
    if interrupted.is_set():
        return EXIT_INTERRUPTED
    if store.failure is not None:  # the engine stopped because the file or the disk refused a write
        raise store.failure
    if coordinator.stuck:
        print(f"tacx: nothing can run: {coordinator.stuck}", file=sys.stderr)
        return EXIT_FAILED
    if only_task is not None:
        conn = connect(home.db_path)
        status = records.task_status(conn, only_task)  # None: deleted meanwhile (tacx rm)
        conn.close()
        return EXIT_OK if status == "succeeded" else EXIT_FAILED
    return EXIT_FAILED if reporter.failures else EXIT_OK


def _notifications(home: Home, settings: Settings, coordinator: Coordinator) -> Notifier | None:
    """tacx.yaml's `notify:` rules on the coordinator's bus (nothing is loaded without them);
    a channel that gives up says so on stderr."""
    if not settings.notify:
        return None
    from tacx.server.notify.notifier import start_notifications
    from tacx.server.notify.terminal import stderr_terminal

    return start_notifications(home, settings.notify, coordinator.bus, coordinator.lifecycle.done,
                               terminal=stderr_terminal(), say=lambda line: print(f"tacx: {line}", file=sys.stderr))


async def _summarise(store: Store, reporter: ConsoleReporter, wall_seconds: float) -> None:
    """The run's summary, read from the store as the run ends (however it ends: idle,
    interrupted, its one task over). A store that refuses the read is said by the caller."""
    touched = set(reporter.touched)
    try:
        figures = await store.read(lambda c: run_summary(c, touched, wall_seconds))
    except StoreError:
        return
    reporter.summary(figures)


async def _count_queued(store: Store, reporter: ConsoleReporter) -> None:
    while True:
        try:
            counts = await store.read(lambda c: dict(c.execute(
                "SELECT status, COUNT(*) FROM tasks WHERE status IN ('queued', 'running') GROUP BY status").fetchall()))
        except StoreError:  # the coordinator stops on it and the command says why
            return
        reporter.set_queued(counts.get("queued", 0), counts.get("running", 0))
        await asyncio.sleep(0.5)


def cmd_run(home: Home, args: argparse.Namespace) -> int:
    settings = project_settings(home)
    prepared = _prepared(home, args)
    # `run` waits for its task: one that can never start is refused before anything is made.
    problem = never_starts(prepared[0].stages, configured_providers(settings), settings.checks_login, home.project_root)
    if problem is not None:
        raise UsageError(f"{problem}\nnothing was queued (install or log in, then run it again)")
    lock = CoordinatorLock(home)
    try:
        lock.acquire()
    except LockHeld:
        ((task_id, _),) = submit_tasks(home, prepared, args.priority)
        print(f"task {task_id} handed to the running coordinator", file=sys.stderr)
        return _follow(home, task_id, args.json)
    try:
        ((task_id, _),) = submit_tasks(home, prepared, args.priority)
        reporter = ConsoleReporter(json_mode=args.json, only_task=task_id)
        return asyncio.run(_run_coordinator(home, settings, args, reporter, only_task=task_id))
    finally:
        lock.release()


def _follow(home: Home, task_id: int, json_mode: bool) -> int:
    """Print a task's events as another coordinator records them, until it ends."""
    reporter = ConsoleReporter(json_mode=json_mode, progress=False)
    conn = connect(home.db_path)
    last = 0
    began = time.monotonic()
    try:
        while True:
            for row in conn.execute("SELECT * FROM events WHERE task_id = ? AND id > ? ORDER BY id", (task_id, last)):
                last = row["id"]
                reporter(EngineEvent(row["kind"], row["task_id"], row["stage"], json.loads(row["data"]), row["ts"]))
            status = records.task_status(conn, task_id)
            if status is None:  # ended, then deleted by `tacx rm` from another terminal
                print(f"tacx: task {task_id} was deleted (tacx rm) before it was seen to end", file=sys.stderr)
                return EXIT_FAILED
            if status in records.TERMINAL_TASK_STATES:
                reporter.summary(run_summary(conn, {task_id}, time.monotonic() - began))
                return EXIT_OK if status == "succeeded" else EXIT_FAILED
            time.sleep(0.25)
    finally:
        conn.close()


# -- the demo ------------------------------------------------------------------------------------


DEMO_TITLES = (
    "Add a --dry-run flag to the importer",
    "Fix the off-by-one in pagination",
    "Write tests for the CSV parser",
    "Rename the config loader and update callers",
)


def cmd_demo(home: Home, args: argparse.Namespace) -> int:
    """Queue demo tasks on the mock agent and watch them run: in the dashboard, or headless."""
    if not args.no_ui:
        _need_terminal()  # before anything is queued: exit 2 writes nothing
    wf, path, text = load_named_workflow(home, "demo", lambda: project_provider_kinds(home))
    batches = []
    for i in range(args.tasks or len(DEMO_TITLES)):
        title = DEMO_TITLES[i % len(DEMO_TITLES)] + (f" (#{i // len(DEMO_TITLES) + 1})" if i >= len(DEMO_TITLES) else "")
        inputs, _ = prepare_inputs(wf, {"title": title}, None)
        batches.append((inputs, title, None))
    lock = CoordinatorLock(home)
    try:
        lock.acquire()
    except LockHeld:
        ids = [task_id for task_id, _ in submit_tasks(home, (wf, path, text, batches), 0)]
        print(f"demo tasks {', '.join(map(str, ids))} handed to the running coordinator", file=sys.stderr)
        return EXIT_OK
    try:
        ids = [task_id for task_id, _ in submit_tasks(home, (wf, path, text, batches), 0)]
        print(f"tacx demo: queued tasks {', '.join(map(str, ids))} on the mock agent (a simulator: its tokens and cost are made up)",
              file=sys.stderr)
        if not args.no_ui:
            return _dashboard(home, args, lock)
        reporter = ConsoleReporter(json_mode=args.json)
        return asyncio.run(_run_coordinator(home, project_settings(home), args, reporter, exit_when_idle=True))
    finally:
        lock.release()
