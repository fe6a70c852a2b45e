"""The `tacx` command line: the parser, the entry point and the table of commands (each
lives with its concern: tasks, control, running, project). Exit codes: 0 ok, 1 a task
failed, 2 bad usage or invalid input (and nothing written) or an unusable store, 70 a bug
(crash.py), 130 interrupted."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence

from tacx import __version__, bounds
from tacx.cli import crash
from tacx.workflow.model import parse_duration
from tacx.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from tacx.cli.control import cmd_cancel, cmd_retry, set_paused
from tacx.cli.project import cmd_clean, cmd_doctor, cmd_providers, cmd_schema, cmd_validate, cmd_workflows
from tacx.cli.sources import cmd_sources
from tacx.cli.running import DEMO_TITLES, cmd_demo, cmd_run, cmd_submit, headless, run_dashboard
from tacx.cli.logs import cmd_logs
from tacx.cli.tasks import cmd_ls, cmd_show
from tacx.home import Home, LockHeld, resolve_home
from tacx.settings import SettingsError
from tacx.store import records
from tacx.store.errors import StoreError
from tacx.store.errors import explain, is_environmental
from tacx.submission import SubmissionError
from tacx.workflow.loader import WorkflowError

# -- argument parsing -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="the tacx home (default: nearest .tacx/, or $TACX_HOME)")

    p = argparse.ArgumentParser(
        prog="tacx",
        description="A terminal control center for AI coding agents and shell/bash/python workflows.",
        parents=[common],
    )
    p.add_argument("-V", "--version", action="version", version=f"tacx {__version__}")
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
    ls.add_argument("--limit", type=_positive, help="the newest N")
    ls.add_argument("--since", type=_age, metavar="AGE", help="made in the last AGE (30m, 2h, 7d)")
    ls.add_argument("--source", type=bounds.text, nargs="?", const="any",
                    help="only tasks a source made (its name, e.g. github:owner/repo; alone: any source)")
    ls.add_argument("--json", action="store_true")

    show = sub.add_parser("show", parents=[common], help="a task: stages, tokens, cost, daughters, events")
    show.add_argument("id", type=bounds.task_id)
    show.add_argument("--json", action="store_true")

    logs = sub.add_parser("logs", parents=[common], help="a stage's output")
    logs.add_argument("id", type=bounds.task_id)
    logs.add_argument("stage", nargs="?", help="default: the stage that started last")
    logs.add_argument("--attempt", type=_positive, help="default: the latest attempt")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing as the task goes on: each attempt of each stage, until the task ends"
                           " (with STAGE: until that stage ends)")
    logs.add_argument("--raw", action="store_true", help="an agent's stream as written (default: shown for people)")

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

    sources = sub.add_parser("sources", parents=[common], help="GitHub repositories whose labelled issues become tasks")
    sources.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", parents=[common], help="queue demo tasks on the mock agent and watch them run")
    demo.add_argument("--no-ui", action="store_true", help="print progress instead of opening the dashboard")
    demo.add_argument("--tasks", type=bounds.bounded_int(1, 10_000), default=len(DEMO_TITLES), help=f"how many (default {len(DEMO_TITLES)})")
    demo.add_argument("--json", action="store_true", help="one JSON event per line")
    demo.add_argument("--max-workers", type=_positive)

    doctor = sub.add_parser("doctor", parents=[common], help="what this machine gives tacx: store, containment, providers")
    doctor.add_argument("--json", action="store_true")

    helper = sub.add_parser("help", parents=[common], help="this help, or a command's: tacx help COMMAND")
    helper.add_argument("topic", nargs="?", metavar="COMMAND")

    clean = sub.add_parser("clean", parents=[common], help="remove workspaces of ended tasks (never unsaved work)")
    clean.add_argument("ids", nargs="*", type=bounds.task_id, help="default: every ended task")
    clean.add_argument("--json", action="store_true")
    p.set_defaults(parsers=dict(sub.choices), top=p)
    return p


def _age(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("an age is more than 0 (30m, 2h, 7d)")
    return seconds


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
            return headless(home, args) if args.no_ui else run_dashboard(home, args)
        if args.command == "help":
            return _help(args)
        handler = _COMMANDS[args.command]
        return handler(home, args)
    except (UsageError, SubmissionError, WorkflowError, SettingsError, LockHeld) as exc:
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


def _help(args: argparse.Namespace) -> int:
    """`tacx help [COMMAND]`: the same text as `tacx [COMMAND] --help`."""
    if args.topic is None:
        args.top.print_help()
        return EXIT_OK
    parser = args.parsers.get(args.topic)
    if parser is None:
        raise UsageError(f"no command {args.topic!r}; the commands: {', '.join(sorted(args.parsers))}")
    parser.print_help()
    return EXIT_OK


# -- the commands, by name ------------------------------------------------------------------


_COMMANDS = {
    "doctor": cmd_doctor,
    "providers": cmd_providers,
    "sources": cmd_sources,
    "demo": cmd_demo,
    "clean": cmd_clean,
    "run": cmd_run,
    "submit": cmd_submit,
    "ls": cmd_ls,
    "show": cmd_show,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "pause": lambda home, args: set_paused(home, True),
    "resume": lambda home, args: set_paused(home, False),
    "validate": cmd_validate,
    "schema": cmd_schema,
    "workflows": cmd_workflows,
}
