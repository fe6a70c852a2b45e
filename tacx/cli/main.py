"""The `tacx` command line. Exit codes: 0 ok, 1 a task failed, 2 bad usage or invalid
input (and nothing written) or an unusable store, 70 a bug (crash.py), 130 interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from tacx import __version__, bounds
from tacx.engine.local import cgroups
from tacx.cli import crash
from tacx.store import records
from tacx.engine.coordinator import Coordinator
from tacx.engine.events import EngineEvent, EventBus
from tacx.home import CoordinatorLock, Home, LockHeld, coordinator_running, resolve_home
from tacx.workspace import worktree
from tacx.agents.prices import PriceTable
from tacx.agents.registry import configured_providers, provider_kinds
from tacx.cli.reporter import ConsoleReporter
from tacx.text import printable
from tacx.settings import Settings, SettingsError, load_settings
from tacx.store.database import connect, connect_reader, transaction
from tacx.store.errors import StoreError, explain, is_environmental
from tacx.store.writer import Store
from tacx.engine.local.processes import end_processes, scan_marked
from tacx.userfiles import EACH_FILE_LIMIT, FileRefused, read_text_file
from tacx.workflow.loader import WorkflowError, load_workflow, load_workflow_text, read_workflow
from tacx.workflow.model import Workflow, resolve_inputs, workflow_json_schema
from tacx.workflow.templates import render

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad usage or invalid input: exit 2, nothing written."""


# -- argument parsing -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="the tacx home (default: nearest .tacx/, or $TACX_HOME)")

    p = argparse.ArgumentParser(
        prog="tacx",
        description="A terminal control center for AI coding agents and shell/bash/python workflows.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"tacx {__version__}")
    p.add_argument("--no-ui", action="store_true", help="run the coordinator headless, printing progress")
    p.add_argument("--exit-when-idle", action="store_true", help="with --no-ui: exit once nothing is queued or running")
    p.add_argument("--max-workers", type=_positive, help="most daughters at once (default: tacx.yaml, else 4)")
    p.add_argument("--json", action="store_true", help="with --no-ui: one JSON event per line")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the engine does to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="submit one task and run it to its end")
    _task_args(run)
    run.add_argument("--no-ui", action="store_true", help="print progress instead of opening the dashboard")
    run.add_argument("--json", action="store_true", help="one JSON event per line")
    run.add_argument("--max-workers", type=_positive)

    submit = sub.add_parser("submit", parents=[common], help="queue one task, or one per JSON line of inputs")
    _task_args(submit)
    submit.add_argument("--each", metavar="FILE.jsonl", help="one task per line; each line a JSON object of inputs")
    submit.add_argument("--json", action="store_true", help="print the ids as JSON")

    ls = sub.add_parser("ls", parents=[common], help="list tasks")
    ls.add_argument("--status", choices=records.TASK_STATES)
    ls.add_argument("--workflow", type=bounds.text)
    ls.add_argument("--limit", type=_positive)
    ls.add_argument("--json", action="store_true")

    show = sub.add_parser("show", parents=[common], help="a task: stages, tokens, cost, daughters, events")
    show.add_argument("id", type=bounds.task_id)
    show.add_argument("--json", action="store_true")

    logs = sub.add_parser("logs", parents=[common], help="a stage's output")
    logs.add_argument("id", type=bounds.task_id)
    logs.add_argument("stage", nargs="?", help="default: the stage that started last")
    logs.add_argument("--attempt", type=_positive, help="default: the latest attempt")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the stage ends")

    for name, text in (("cancel", "cancel a task (also from another terminal)"), ("retry", "queue a failed, cancelled or timed-out task again")):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("id", type=bounds.task_id)

    sub.add_parser("pause", parents=[common], help="stop starting new stages (running ones go on)")
    sub.add_parser("resume", parents=[common], help="start stages again after pause")

    validate = sub.add_parser("validate", parents=[common], help="check workflow files")
    validate.add_argument("files", nargs="+")
    sub.add_parser("schema", parents=[common], help="print the JSON Schema of workflow files")
    sub.add_parser("workflows", parents=[common], help="list the workflows tacx can find")

    providers = sub.add_parser("providers", parents=[common], help="agent CLIs installed, versions, limits, usage so far")
    providers.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", parents=[common], help="queue demo tasks on the mock agent and watch them run")
    demo.add_argument("--no-ui", action="store_true", help="print progress instead of opening the dashboard")
    demo.add_argument("--tasks", type=bounds.bounded_int(1, 10_000), default=len(DEMO_TITLES), help=f"how many (default {len(DEMO_TITLES)})")
    demo.add_argument("--json", action="store_true", help="one JSON event per line")
    demo.add_argument("--max-workers", type=_positive)

    doctor = sub.add_parser("doctor", parents=[common], help="what this machine gives tacx: store, containment, providers")
    doctor.add_argument("--json", action="store_true")

    clean = sub.add_parser("clean", parents=[common], help="remove workspaces of ended tasks (never unsaved work)")
    clean.add_argument("ids", nargs="*", type=bounds.task_id, help="default: every ended task")
    clean.add_argument("--json", action="store_true")
    return p


DEMO_TITLES = (
    "Add a --dry-run flag to the importer",
    "Fix the off-by-one in pagination",
    "Write tests for the CSV parser",
    "Rename the config loader and update callers",
)


def _task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", help="a workflow file, or the name of one in workflows/")
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--priority", type=bounds.sqlite_int, default=0, help="higher runs first (default 0)")
    p.add_argument("--title", type=bounds.text, help="the task's title (default: from the workflow)")
    p.add_argument("--dedupe-key", type=bounds.text, help="do not queue a second live task with this key")


_positive = bounds.positive_int


# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    home: Home | None = None
    try:
        home = resolve_home(getattr(args, "home", None))
        crash.configure_logging(args.verbose, home)
        if args.command is None:
            return _headless(home, args) if args.no_ui else run_dashboard(home, args)
        handler = _COMMANDS[args.command]
        return handler(home, args)
    except (UsageError, WorkflowError, SettingsError, LockHeld) as exc:
        print(f"tacx: {exc}" if not isinstance(exc, WorkflowError) else str(exc), file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"tacx: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.Error as exc:  # a query met a corrupt page, a full disk, a lock held too long
        if home is None or not is_environmental(exc):
            return crash.report(exc, home)
        print(f"tacx: {explain(exc, home.db_path)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tacx logs 3 | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in crash.log
        return crash.report(exc, home)


# -- workflows and submission -----------------------------------------------------------------


def shipped_workflows_dir() -> Path:
    return Path(str(resources.files("tacx.workflows")))


def workflow_dirs(home: Home) -> list[Path]:
    return [home.project_root / "workflows", home.root / "workflows", shipped_workflows_dir()]


def find_workflow(home: Home, name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path.resolve()
    if path.suffix in (".yaml", ".yml") or os.sep in name:
        raise UsageError(f"no workflow file {name}")
    for folder in workflow_dirs(home):
        for ext in (".yaml", ".yml"):
            candidate = folder / f"{name}{ext}"
            if candidate.is_file():
                return candidate.resolve()
    known = sorted({p.stem for folder in workflow_dirs(home) if folder.is_dir() for p in folder.glob("*.y*ml")})
    raise UsageError(f"no workflow named {name!r}; known: {', '.join(known) or 'none'}")


def _settings(home: Home) -> Settings:
    settings = load_settings(home.project_root)
    try:
        PriceTable.load(settings.prices)
    except ValueError as exc:
        raise SettingsError(f"{home.project_root / 'tacx.yaml'}: prices: {exc}") from None
    return settings


def _kinds(home: Home) -> dict[str, str]:
    """Every provider a workflow here may name: built in, and defined in tacx.yaml."""
    return provider_kinds(configured_providers(_settings(home)))


def _load(home: Home, name: str) -> tuple[Workflow, Path, str]:
    path = find_workflow(home, name)
    if problem := bounds.unusable_text(str(path)):  # the path is stored with the task
        raise UsageError(f"the workflow's path {problem}; rename the file")
    text = read_workflow(path)  # read once: the text validated is the text stored
    wf = load_workflow_text(text, str(path), _kinds(home))
    if wf.workspace == "worktree":
        try:
            worktree.require_git_repo(home.project_root)
        except worktree.WorkspaceError as exc:
            raise UsageError(f"{path}: workspace: worktree: {exc}") from None
    return wf, path, text


def _parse_pairs(pairs: list[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"-i takes NAME=VALUE, got {pair!r}")
        given[name] = value
    return given


def prepare_inputs(wf: Workflow, given: dict[str, Any], title: str | None, where: str = "") -> tuple[dict[str, str], str]:
    try:
        inputs = resolve_inputs(wf, given)
    except ValueError as exc:
        raise UsageError(f"{where}{exc}") from None
    for key, value in inputs.items():
        if problem := bounds.text_value_problem(value):
            raise UsageError(f"{where}input {key} {problem}")
    values = {f"inputs.{k}": v for k, v in inputs.items()} | {"workflow.name": wf.name}
    if title is None:
        if wf.title:
            title = render(wf.title, values)
        elif "title" in inputs and inputs["title"]:
            title = inputs["title"]
        else:
            title = wf.name
    return inputs, title.strip().splitlines()[0][:200] if title.strip() else wf.name


def dedupe_key_for(wf: Workflow, inputs: dict[str, str], explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if wf.dedupe_key:
        return f"{wf.name}:" + render(wf.dedupe_key, {f"inputs.{k}": v for k, v in inputs.items()} | {"workflow.name": wf.name})
    return None


Prepared = tuple[Workflow, Path, str, list[tuple[dict[str, str], str, str | None]]]


def prepare_tasks(home: Home, args: argparse.Namespace) -> Prepared:
    """Load the workflow and check every task's inputs; raises before anything is written."""
    wf, path, text = _load(home, args.workflow)
    batches: list[tuple[dict[str, str], str, str | None]] = []
    if getattr(args, "each", None):
        if args.input:
            raise UsageError("--each and -i do not go together: put every input in the JSON lines")
        each = Path(args.each)
        try:
            lines = read_text_file(each, EACH_FILE_LIMIT, "an --each file").split("\n")  # not splitlines: JSON may hold U+2028
        except FileRefused as exc:
            raise UsageError(str(exc)) from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{each}:{number}: "
            try:
                given = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{each}:{number}:{exc.colno}: not JSON: {exc.msg}") from None
            if not isinstance(given, dict):
                raise UsageError(f"{where}each line must be a JSON object of inputs")
            inputs, title = prepare_inputs(wf, given, args.title, where)
            batches.append((inputs, title, dedupe_key_for(wf, inputs, args.dedupe_key)))
        if not batches:
            raise UsageError(f"{each} has no lines of inputs")
    else:
        inputs, title = prepare_inputs(wf, _parse_pairs(args.input), args.title)
        batches.append((inputs, title, dedupe_key_for(wf, inputs, args.dedupe_key)))
    return wf, path, text, batches


def submit_tasks(home: Home, prepared: Prepared, priority: int) -> list[tuple[int, bool]]:
    """Queue all prepared tasks in one transaction (all or nothing). Returns (id, created)."""
    wf, path, text, batches = prepared
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            return [
                records.insert_task(
                    conn,
                    workflow=wf,
                    workflow_path=str(path),
                    workflow_text=text,
                    title=title,
                    inputs=inputs,
                    priority=priority,
                    dedupe_key=key,
                    project_root=str(home.project_root),
                )
                for inputs, title, key in batches
            ]
    finally:
        conn.close()


def cmd_submit(home: Home, args: argparse.Namespace) -> int:
    results = submit_tasks(home, prepare_tasks(home, args), args.priority)
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
        print(f"tacx: {held.describe()}; the dashboard opens as a viewer", file=sys.stderr)
        return _dashboard(home, args, None)
    try:
        return _dashboard(home, args, lock)
    finally:
        lock.release()


def _need_terminal() -> None:
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        raise UsageError("the dashboard needs a terminal: run `tacx --no-ui` for the headless coordinator")


def _dashboard(home: Home, args: argparse.Namespace, lock: CoordinatorLock | None) -> int:
    _need_terminal()
    from tacx.ui.app import make_app  # Textual is imported only for the dashboard

    settings = _settings(home)
    connect(home.db_path).close()  # a store that cannot be used is said here, before the screen is taken
    app = make_app(home, settings, engine=lock is not None, max_workers=getattr(args, "max_workers", None))
    app.run()
    if app.crash is not None:  # Textual caught it: said in one line by main (crash.log for a bug)
        raise app.crash
    if app.store is not None and app.store.failure is not None:
        raise app.store.failure
    return app.return_code or EXIT_OK


# -- the coordinator, headless ------------------------------------------------------------------


def _headless(home: Home, args: argparse.Namespace) -> int:
    settings = _settings(home)
    lock = CoordinatorLock(home)
    lock.acquire()
    try:
        reporter = ConsoleReporter(json_mode=args.json)
        return asyncio.run(_run_coordinator(home, settings, args, reporter, exit_when_idle=args.exit_when_idle))
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
    interrupted = asyncio.Event()

    def on_signal() -> None:
        interrupted.set()
        coordinator.stop("stop")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    progress = asyncio.create_task(_count_queued(store, reporter)) if reporter.progress else None
    try:
        await coordinator.run()
    finally:
        if progress:
            progress.cancel()
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
        status = conn.execute("SELECT status FROM tasks WHERE id = ?", (only_task,)).fetchone()[0]
        conn.close()
        return EXIT_OK if status == "succeeded" else EXIT_FAILED
    return EXIT_FAILED if reporter.failures else EXIT_OK


async def _count_queued(store: Store, reporter: ConsoleReporter) -> None:
    while True:
        try:
            queued = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM tasks WHERE status = 'queued'").fetchone()[0])
        except StoreError:  # the coordinator stops on it and the command says why
            return
        reporter.set_queued(queued)
        await asyncio.sleep(0.5)


def cmd_run(home: Home, args: argparse.Namespace) -> int:
    settings = _settings(home)
    prepared = prepare_tasks(home, args)
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
    try:
        while True:
            for row in conn.execute("SELECT * FROM events WHERE task_id = ? AND id > ? ORDER BY id", (task_id, last)):
                last = row["id"]
                reporter(EngineEvent(row["kind"], row["task_id"], row["stage"], json.loads(row["data"]), row["ts"]))
            status = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]
            if status in records.TERMINAL_TASK_STATES:
                return EXIT_OK if status == "succeeded" else EXIT_FAILED
            time.sleep(0.25)
    finally:
        conn.close()


# -- reading ---------------------------------------------------------------------------------------


def _reader(home: Home) -> sqlite3.Connection | None:
    """A connection for read-only commands; None when the home has no database yet."""
    return connect_reader(home.db_path)


def cmd_ls(home: Home, args: argparse.Namespace) -> int:
    conn = _reader(home)
    tasks = records.list_tasks(conn, status=args.status, workflow=args.workflow, limit=args.limit) if conn else []
    if conn:
        conn.close()
    if args.json:
        print(json.dumps(tasks))
        return EXIT_OK
    if not tasks:
        print("no tasks")
        return EXIT_OK
    running = coordinator_running(home)
    print(f"{'ID':>5}  {'STATUS':<10} {'PRI':>3}  {'WORKFLOW':<18} {'TIME':>7}  TITLE")
    for t in tasks:
        note = ""
        if t["status"] == "queued":
            note = t["wait_reason"] if running and t["wait_reason"] else ("" if running else "no coordinator is running")
        elif t["status"] in ("failed", "timed_out") and t["error"]:
            note = _gist(t["error"])
        print(printable(
            f"{t['id']:>5}  {t['status']:<10} {t['priority']:>3}  {t['workflow'][:18]:<18} {_elapsed(t):>7}  "
            f"{t['title'][:60]}" + (f"  — {note}" if note else "")
        ))
    return EXIT_OK


def _gist(error: str) -> str:
    """One line of an error for a listing: what happened, and the last line of output."""
    head, _, output = error.partition("; last output:\n")
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return head.splitlines()[0] + (f": {lines[-1].strip()[:120]}" if lines else "")


def _elapsed(t: dict[str, Any]) -> str:
    if not t["started_at"]:
        return "-"
    return _duration((t["ended_at"] or time.time()) - t["started_at"])


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def cmd_show(home: Home, args: argparse.Namespace) -> int:
    conn = _reader(home)
    task = records.show_task(conn, args.id) if conn else None
    if conn:
        conn.close()
    if task is None:
        raise UsageError(f"no task {args.id}")
    if args.json:
        print(json.dumps(task))
        return EXIT_OK
    print(printable(f"task {task['id']}: {task['title']}"))
    print(f"  workflow {task['workflow']} · status {task['status']} · priority {task['priority']} · trace {task['trace_id']}")
    if task["status"] == "queued" and task["wait_reason"]:
        print(f"  waiting: {task['wait_reason']}")
    if task["error"]:
        print(printable("  error: " + task["error"].replace("\n", "\n    ")))
    if task["inputs"]:
        print("  inputs: " + ", ".join(f"{k}={v!r}" for k, v in task["inputs"].items()))
    if task["workspace"]:
        print(f"  workspace: {task['workspace']}" + (f" (branch {task['branch']})" if task["branch"] else ""))
    if any(task["tokens"].values()) or task["cost_usd"]:
        print(f"  tokens: {_token_text(task['tokens'])} · cost ${task['cost_usd']:.4f}")
    print("  stages:")
    for s in task["stages"]:
        took = _duration(s["ended_at"] - s["started_at"]) if s["started_at"] and s["ended_at"] else ""
        line = f"    {s['name']:<16} {s['status']:<10} attempt {s['attempt']}  {s['provider'] or '':<8} {took}"
        if s["exit_code"] is not None:
            line += f"  exit {s['exit_code']}"
        if any(s["tokens"].values()) or s["cost_usd"]:
            line += f"  {_token_text(s['tokens'])} ${s['cost_usd']:.4f}"
        print(line.rstrip())
        if s["session_id"]:
            agent = f"      session {s['session_id']}" + (f" · {s['model']}" if s["model"] else "")
            agent += f" · {s['turns']} turns" if s["turns"] else ""
            agent += f" · {s['api_retries']} API retries" if s["api_retries"] else ""
            agent += f" · {s['rate_limits']} rate-limit events" if s["rate_limits"] else ""
            print(printable(agent))
        if s["wait_reason"] and s["status"] == "pending":
            print(f"      waiting: {s['wait_reason']}")
        if s["error"]:
            print(printable("      " + s["error"].replace("\n", "\n        ")))
        for d in s["daughters"]:
            end = f"exit {d['exit_code']}" if d["exit_code"] is not None else (f"signal {d['signal']}" if d["signal"] else "running" if not d["ended_at"] else "ended")
            rss = f"{d['peak_rss'] / 2**20:.1f} MB" if d["peak_rss"] else "not sampled"
            cpu = f"{d['cpu_seconds']:.2f}s cpu" if d["cpu_seconds"] is not None else ""
            print(f"      pid {d['pid']} (attempt {d['attempt']}): {end}, peak {rss}, {cpu}")
    print("  events:")
    for e in task["events"][-20:]:
        clock = time.strftime("%H:%M:%S", time.localtime(e["ts"]))
        data = ", ".join(f"{k}={v}" for k, v in e["data"].items() if k != "error")
        print(f"    {clock} {e['kind']:<22} {e['stage'] or '':<12} {data}"[:160])
    return EXIT_OK


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def _token_text(tokens: dict[str, int]) -> str:
    return (
        f"in {_count(tokens['input'])} · out {_count(tokens['output'])} · "
        f"cache r {_count(tokens['cache_read'])} w {_count(tokens['cache_write'])}"
    )


def cmd_logs(home: Home, args: argparse.Namespace) -> int:
    conn = _reader(home)
    if conn is None:
        raise UsageError(f"no task {args.id}")
    try:
        stages = conn.execute(
            "SELECT id, name, status, attempt, log_path FROM stages WHERE task_id = ? ORDER BY COALESCE(started_at, 0), position",
            (args.id,),
        ).fetchall()
        if not stages:
            raise UsageError(f"no task {args.id}")
        if args.stage:
            chosen = [s for s in stages if s["name"] == args.stage]
            if not chosen:
                raise UsageError(f"task {args.id} has no stage {args.stage!r}; stages: {', '.join(s['name'] for s in stages)}")
            stage = chosen[0]
        else:
            started = [s for s in stages if s["attempt"] > 0]
            if not started:
                raise UsageError(f"no stage of task {args.id} has started yet")
            stage = started[-1]
        attempt = args.attempt or stage["attempt"]
        if attempt == 0 or attempt > stage["attempt"]:
            raise UsageError(f"stage {stage['name']} has no attempt {attempt} (it has run {stage['attempt']} time(s))")
        path = home.stage_log(args.id, stage["name"], attempt)
        out = sys.stdout.buffer
        offset = _copy(path, 0, out)
        while args.follow:
            row = conn.execute("SELECT status, attempt FROM stages WHERE id = ?", (stage["id"],)).fetchone()
            still = row["status"] == "running" and row["attempt"] == attempt
            offset = _copy(path, offset, out)
            if not still:
                offset = _copy(path, offset, out)
                break
            time.sleep(0.2)
        return EXIT_OK
    finally:
        conn.close()


def _copy(path: Path, offset: int, out: Any) -> int:
    """Copy a log from offset in bounded chunks; returns the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 20):
                out.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        pass
    out.flush()
    return offset


# -- changing tasks from another terminal ------------------------------------------------------------


def _writer(home: Home) -> sqlite3.Connection:
    try:
        return connect(home.db_path, create=False)
    except FileNotFoundError:
        raise UsageError(f"no tasks in {home.root}") from None


def cmd_cancel(home: Home, args: argparse.Namespace) -> int:
    conn = _writer(home)
    try:
        lock = CoordinatorLock(home)
        try:
            lock.acquire()
        except LockHeld:
            with transaction(conn):
                status = _checked(records.request_cancel, conn, args.id)
            if status == "cancelled":
                print(f"task {args.id} cancelled")
            else:
                print(f"task {args.id}: cancel requested; the running coordinator stops it within a second")
            return EXIT_OK
        try:
            return _cancel_without_coordinator(home, conn, args.id)
        finally:
            lock.release()
    finally:
        conn.close()


def _cancel_without_coordinator(home: Home, conn: sqlite3.Connection, task_id: int) -> int:
    """No coordinator watches this home: end the task's daughters here and record it."""
    with transaction(conn):
        status = _checked(records.request_cancel, conn, task_id)
    if status == "cancelled":
        print(f"task {task_id} cancelled")
        return EXIT_OK
    prefix = f"{home.marker_prefix}{task_id}/"
    grace = _settings(home).kill_grace
    ended = end_processes(scan_marked(lambda m: m.startswith(prefix)), grace)
    cgroups.end_task(home.root, task_id, grace)  # escapees that dropped the marker, where cgroups are in use
    with transaction(conn):
        records.mark_cancelled(conn, task_id, "running", {"ended_pids": ended, "coordinator": False})
        conn.execute("UPDATE daughters SET ended_at = ? WHERE task_id = ? AND ended_at IS NULL", (time.time(), task_id))
    print(f"task {task_id} cancelled" + (f"; ended pids {ended}" if ended else ""))
    return EXIT_OK


def _checked(fn: Any, conn: sqlite3.Connection, task_id: int) -> Any:
    try:
        return fn(conn, task_id)
    except (LookupError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def cmd_retry(home: Home, args: argparse.Namespace) -> int:
    conn = _writer(home)
    try:
        with transaction(conn):
            _checked(records.retry_task, conn, args.id)
    finally:
        conn.close()
    print(f"task {args.id} queued again; stages that succeeded are kept")
    if not coordinator_running(home):
        print("tacx: no coordinator is running here: `tacx --no-ui` runs the queue", file=sys.stderr)
    return EXIT_OK


def _set_paused(home: Home, paused: bool) -> int:
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            records.set_paused(conn, paused)
    finally:
        conn.close()
    print("paused: running stages go on, no new ones start" if paused else "resumed")
    return EXIT_OK


# -- workflows -------------------------------------------------------------------------------------------


def cmd_validate(home: Home, args: argparse.Namespace) -> int:
    kinds = _kinds(home)
    bad = 0
    for name in args.files:
        try:
            wf = load_workflow(name, kinds)
        except WorkflowError as exc:
            print(str(exc), file=sys.stderr)
            bad += 1
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror}", file=sys.stderr)
            bad += 1
        else:
            print(f"{name}: ok ({wf.name}, {len(wf.stages)} stage{'s' if len(wf.stages) != 1 else ''})")
    return EXIT_USAGE if bad else EXIT_OK


def cmd_schema(home: Home, args: argparse.Namespace) -> int:
    print(json.dumps(workflow_json_schema(), indent=2))
    return EXIT_OK


def cmd_workflows(home: Home, args: argparse.Namespace) -> int:
    seen: set[str] = set()
    kinds = _kinds(home)
    for folder in workflow_dirs(home):
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                wf = load_workflow(path, kinds)
                print(f"{path.stem:<24} {wf.description.strip().splitlines()[0] if wf.description.strip() else ''}  ({path})")
            except WorkflowError:
                print(f"{path.stem:<24} INVALID  ({path}: `tacx validate` says why)")
    return EXIT_OK


# -- agents ----------------------------------------------------------------------------------------------


def cmd_providers(home: Home, args: argparse.Namespace) -> int:
    from tacx.agents import report as provider_report

    settings = _settings(home)
    conn = _reader(home)
    try:
        entries = provider_report.report(configured_providers(settings), settings, conn)
    finally:
        if conn:
            conn.close()
    print(json.dumps(entries) if args.json else provider_report.render_text(entries))
    return EXIT_OK


def cmd_demo(home: Home, args: argparse.Namespace) -> int:
    """Queue demo tasks on the mock agent and watch them run: in the dashboard, or headless."""
    if not args.no_ui:
        _need_terminal()  # before anything is queued: exit 2 writes nothing
    wf, path, text = _load(home, "demo")
    batches = []
    for i in range(args.tasks):
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
        return asyncio.run(_run_coordinator(home, _settings(home), args, reporter, exit_when_idle=True))
    finally:
        lock.release()


def cmd_clean(home: Home, args: argparse.Namespace) -> int:
    from tacx.workspace import cleanup

    conn = _reader(home)
    results = cleanup.clean(home, conn, args.ids or None) if conn else []
    if conn:
        conn.close()
    if args.json:
        print(json.dumps(results))
    elif not results:
        print("nothing to clean: no ended task has a workspace under " + str(home.trees))
    else:
        for entry in results:
            print(printable(cleanup.describe(entry)))
    return EXIT_OK


def cmd_doctor(home: Home, args: argparse.Namespace) -> int:
    from tacx.cli import doctor

    checks = doctor.report(home, _settings(home))
    print(json.dumps(checks) if args.json else doctor.render(checks))
    return EXIT_FAILED if any(c["status"] == "fail" for c in checks) else EXIT_OK


_COMMANDS = {
    "doctor": cmd_doctor,
    "providers": cmd_providers,
    "demo": cmd_demo,
    "clean": cmd_clean,
    "run": cmd_run,
    "submit": cmd_submit,
    "ls": cmd_ls,
    "show": cmd_show,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "pause": lambda home, args: _set_paused(home, True),
    "resume": lambda home, args: _set_paused(home, False),
    "validate": cmd_validate,
    "schema": cmd_schema,
    "workflows": cmd_workflows,
}
