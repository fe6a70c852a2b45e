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

from tacx.cli import crash
from tacx.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from tacx.cli.control import cmd_cancel, cmd_priority, cmd_retry, set_paused
from tacx.cli.parser import build_parser
from tacx.cli.removal import cmd_prune, cmd_rm
from tacx.cli.project import cmd_clean, cmd_doctor, cmd_providers, cmd_schema, cmd_validate, cmd_workflows
from tacx.cli.sources import cmd_sources
from tacx.cli.running import cmd_demo, cmd_run, cmd_submit, headless, run_dashboard
from tacx.cli.logs import cmd_logs
from tacx.cli.tasks import cmd_ls, cmd_show
from tacx.home import Home, LockHeld, resolve_home
from tacx.settings import SettingsError
from tacx.store.errors import StoreError
from tacx.store.errors import explain, is_environmental
from tacx.submission import SubmissionError
from tacx.workflow.loader import WorkflowError

# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (tacx completion SHELL)
        from tacx.cli.completion import complete

        complete(parser)
    args = parser.parse_args(argv)
    home: Home | None = None
    try:
        if args.command in _WITHOUT_HOME:
            return _WITHOUT_HOME[args.command](args)
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
    "priority": cmd_priority,
    "rm": cmd_rm,
    "prune": cmd_prune,
    "pause": lambda home, args: set_paused(home, True),
    "resume": lambda home, args: set_paused(home, False),
    "validate": cmd_validate,
    "schema": cmd_schema,
    "workflows": cmd_workflows,
}


def _init(args: argparse.Namespace) -> int:
    from tacx.cli.init import cmd_init

    return cmd_init(args)


def _completion(args: argparse.Namespace) -> int:
    from tacx.cli.completion import cmd_completion

    return cmd_completion(args)


# Commands about the project folder or the shell, not a home: they neither find nor make one.
_WITHOUT_HOME = {"init": _init, "completion": _completion}
