"""The `tacx` command line: the parser, the entry point and the table of commands (each
lives with its concern: tasks, control, running, project). Exit codes: 0 ok, 1 a task
failed, 2 bad usage or invalid input (and nothing written) or an unusable store, 70 a bug
(crash.py), 130 interrupted."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence

from tacx.cli import crash, interrupts
from tacx.cli.codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from tacx.cli.parser import build_parser
from tacx.home import Home, LockHeld, resolve_home
from tacx.store.errors import StoreError, explain, is_environmental

# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (tacx completion SHELL)
        from tacx.cli.completion import complete

        complete(parser)
    args = parser.parse_args(argv)
    home: Home | None = None
    try:
        if args.listen is not None and args.command is not None:
            raise UsageError(f"--listen serves a coordinator: `tacx --no-ui --listen ...` or the dashboard, not `tacx {args.command}`")
        if args.command in _WITHOUT_HOME:
            interrupts.let_in()
            return _flushed(_WITHOUT_HOME[args.command](args))
        home = resolve_home(getattr(args, "home", None))
        crash.configure_logging(args.verbose, home)
        if args.command == "help":
            return _flushed(_help(args))
        handler = _handler(args.command, args.no_ui)
        interrupts.let_in()  # a ^C held while the command's modules were imported is raised here
        return _flushed(handler(home, args))
    except (UsageError, LockHeld) as exc:
        print(f"tacx: {exc}", file=sys.stderr)
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
        if isinstance(exc, OSError) and _output_refused(exc):  # `tacx ls > /dev/full`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            print(f"tacx: the output could not be written: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        if _raised_from(exc, "tacx.workflow.loader", "WorkflowError"):
            print(str(exc), file=sys.stderr)  # file:line:col, already said in full
            return EXIT_USAGE
        if _raised_from(exc, "tacx.submission", "SubmissionError") or _raised_from(exc, "tacx.settings", "SettingsError"):
            print(f"tacx: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return crash.report(exc, home)


def _flushed(code: int) -> int:
    """The command's output written out here, where a closed pipe or a full disk is met and
    said, not at exit (where Python prints "Exception ignored" and exits 120)."""
    sys.stdout.flush()
    return code


def _output_refused(exc: OSError) -> bool:
    """Standard output itself cannot be written (a full disk, a device error), asked by
    writing it one newline: after an error of that kind only, so the worst it costs a
    working terminal is a blank line before the report of a bug."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
        return False
    try:
        os.write(sys.stdout.fileno(), b"\n")
    except (OSError, ValueError):
        return True
    return False


def _raised_from(exc: Exception, module: str, name: str) -> bool:
    """``exc`` is ``module.name`` (or a subclass), asked without importing ``module``: had it
    not been imported, nothing could have raised its error."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))


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


# Each command's module is imported when the command runs: `tacx ls` (from a script, a
# shell's completion, the tests) does not import the engine, the agents or the dashboard.
_COMMANDS = {
    "doctor": "project:cmd_doctor",
    "providers": "project:cmd_providers",
    "sources": "sources:cmd_sources",
    "notify": "notify:cmd_notify",
    "demo": "running:cmd_demo",
    "clean": "project:cmd_clean",
    "run": "running:cmd_run",
    "submit": "running:cmd_submit",
    "ls": "tasks:cmd_ls",
    "show": "tasks:cmd_show",
    "report": "report:cmd_report",
    "logs": "logs:cmd_logs",
    "cancel": "control:cmd_cancel",
    "retry": "control:cmd_retry",
    "priority": "control:cmd_priority",
    "rm": "removal:cmd_rm",
    "prune": "removal:cmd_prune",
    "pause": "control:cmd_pause",
    "resume": "control:cmd_resume",
    "validate": "project:cmd_validate",
    "schema": "project:cmd_schema",
    "workflows": "project:cmd_workflows",
    "token": "serving:cmd_token",
}


def _handler(command: str | None, no_ui: bool) -> Callable[[Home, argparse.Namespace], int]:
    """The function that runs ``command`` (none: the dashboard, or the engine headless)."""
    where = _COMMANDS[command] if command else "running:headless" if no_ui else "running:run_dashboard"
    module, name = where.split(":")
    return getattr(importlib.import_module(f"tacx.cli.{module}"), name)  # type: ignore[no-any-return]


def _init(args: argparse.Namespace) -> int:
    from tacx.cli.init import cmd_init

    return cmd_init(args)


def _completion(args: argparse.Namespace) -> int:
    from tacx.cli.completion import cmd_completion

    return cmd_completion(args)


# Commands about the project folder or the shell, not a home: they neither find nor make one.
_WITHOUT_HOME = {"init": _init, "completion": _completion}
