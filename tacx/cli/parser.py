"""The `tacx` argument parser: every command and option, each with its one-line description,
and a top-level `--help` that fits one screen (commands grouped, as gh does)."""

from __future__ import annotations

import argparse

from tacx import __version__, bounds
from tacx.cli import report_args
from tacx.states import TASK_STATES
from tacx.durations import parse_duration

SHELLS = ("bash", "zsh", "fish")

# The groups of `tacx --help`, in order; every command is in exactly one (a test checks).
COMMAND_GROUPS: dict[str, tuple[str, ...]] = {
    "Tasks": ("run", "submit", "ls", "show", "logs", "report", "cancel", "retry", "priority", "rm", "prune", "clean"),
    "Coordinator": ("pause", "resume", "demo", "sources", "notify", "token"),
    "Project": ("init", "workflows", "validate", "schema", "providers", "doctor", "completion", "help"),
}

_TOP_OPTIONS = """\
Options: --home DIR  the tacx home (default: the nearest .tacx/, or $TACX_HOME)
  --no-ui [--exit-when-idle] [--max-workers N] [--json]  the engine, headless
  --listen HOST:PORT  serve the HTTP API too  -v  log to stderr  -V  version"""


class _TopParser(argparse.ArgumentParser):
    """The top-level parser, whose help lists the commands by group on one screen."""

    def format_help(self) -> str:
        commands = self._subcommands()
        width = max(len(name) for name in commands) + 2
        lines = [self.format_usage().rstrip(), self.description or ""]
        for group, names in COMMAND_GROUPS.items():
            lines.append(f"{group}:")
            lines += [f"  {name:<{width}}{commands[name]}" for name in names]
        return "\n".join([*lines, _TOP_OPTIONS, ""])  # Options: a group like the others (34 rows)

    def _subcommands(self) -> dict[str, str]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return {choice.dest: choice.help or "" for choice in action._choices_actions}
        return {}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, metavar="DIR",
                        help="the tacx home (default: nearest .tacx/, or $TACX_HOME)")

    p = _TopParser(
        prog="tacx",
        usage="tacx [--home DIR] [--no-ui ...] [-v] [-V] [COMMAND [ARGS ...]]",
        description="A control center for AI coding agents; no COMMAND: the dashboard.",
        parents=[common],
    )
    p.add_argument("-V", "--version", action="version", version=f"tacx {__version__}")
    p.add_argument("--no-ui", action="store_true", help="run the coordinator headless, printing progress")
    p.add_argument("--exit-when-idle", action="store_true", help="with --no-ui: exit once nothing is queued or running")
    p.add_argument("--max-workers", type=positive, metavar="N", help="most daughters at once (default: tacx.yaml, else 4)")
    p.add_argument("--json", action="store_true", help="with --no-ui: one JSON event per line")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="serve health, metrics and the JSON API here (PORT alone: 127.0.0.1; 0: a free port)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the engine does to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=argparse.ArgumentParser)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, prog=f"tacx {name}", parents=[common], help=text, description=text)

    run = command("run", "submit one task and run it to its end")
    _task_args(run)
    run.add_argument("--no-ui", action="store_true", help="print progress instead of opening the dashboard")
    run.add_argument("--json", action="store_true", help="one JSON event per line")
    run.add_argument("--max-workers", type=positive, metavar="N", help="most daughters at once")

    submit = command("submit", "queue one task, or one per JSON line of inputs")
    _task_args(submit)
    submit.add_argument("--each", metavar="FILE.jsonl", help="one task per line; each line a JSON object of inputs")
    submit.add_argument("--json", action="store_true", help="print the ids as JSON")

    ls = command("ls", "list tasks, newest first, and why queued ones wait")
    ls.add_argument("--status", choices=TASK_STATES, help="only tasks in this state")
    ls.add_argument("--workflow", type=bounds.text, help="only tasks of this workflow")
    ls.add_argument("--limit", type=positive, help="the newest N")
    ls.add_argument("--since", type=age, metavar="AGE", help="made in the last AGE (30m, 2h, 7d)")
    ls.add_argument("--source", type=bounds.text, nargs="?", const="any",
                    help="only tasks a source made (its name, e.g. github:owner/repo; alone: any source)")
    ls.add_argument("--json", action="store_true", help="a JSON list")

    show = command("show", "a task: stages, tokens, cost, daughters, events")
    show.add_argument("id", type=bounds.task_id, metavar="ID", help="the task")
    show.add_argument("--json", action="store_true", help="a JSON object")

    logs = command("logs", "a stage's output")
    logs.add_argument("id", type=bounds.task_id, metavar="ID", help="the task")
    logs.add_argument("stage", nargs="?", help="default: the stage that started last")
    logs.add_argument("--attempt", type=positive, help="default: the latest attempt")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing as the task goes on: each attempt of each stage, until the task ends"
                           " (with STAGE: until that stage ends)")
    logs.add_argument("--raw", action="store_true", help="an agent's stream as written (default: shown for people)")

    cancel = command("cancel", "cancel tasks (also from another terminal)")
    cancel.add_argument("ids", nargs="+", type=bounds.task_id, metavar="ID", help="the tasks")
    retry = command("retry", "queue failed, cancelled or timed-out tasks again")
    retry.add_argument("ids", nargs="+", type=bounds.task_id, metavar="ID", help="the tasks")

    priority = command("priority", "change a queued task's priority (higher runs first)")
    priority.add_argument("id", type=bounds.task_id, metavar="ID", help="the queued task")
    priority.add_argument("priority", type=bounds.sqlite_int, metavar="N", help="its new priority (tasks start at 0; higher runs first)")

    rm = command("rm", "delete ended tasks: their records, logs and workspaces")
    rm.add_argument("ids", nargs="+", type=bounds.task_id, metavar="ID", help="the tasks")
    _removal_args(rm)
    prune = command("prune", "delete the tasks that ended more than AGE ago")
    prune.add_argument("--older-than", type=age, metavar="AGE", required=True, help="e.g. 30d, 12h")
    _removal_args(prune)

    report_args.add_parser(command, bounds.text)

    command("pause", "stop starting new stages (running ones go on)")
    command("resume", "start stages again after pause")

    validate = command("validate", "check workflow files")
    validate.add_argument("files", nargs="+", metavar="FILE", help="workflow files")
    command("schema", "print the JSON Schema of workflow files")
    command("workflows", "list the workflows tacx can find")

    providers = command("providers", "agent CLIs installed, versions, limits, usage so far")
    providers.add_argument("--json", action="store_true", help="a JSON list")

    sources = command("sources", "GitHub repositories whose labelled issues become tasks")
    sources.add_argument("--json", action="store_true", help="a JSON list")

    notify = command("notify", "send a test message through each channel of tacx.yaml's notify:")
    notify.add_argument("action", choices=["test"], help="test: send one and say what each channel did")

    demo = command("demo", "queue demo tasks on the mock agent and watch them run")
    demo.add_argument("--no-ui", action="store_true", help="print progress instead of opening the dashboard")
    demo.add_argument("--tasks", type=bounds.bounded_int(1, 10_000), metavar="N",
                      help="how many (default: one per demo title, 4)")
    demo.add_argument("--json", action="store_true", help="one JSON event per line")
    demo.add_argument("--max-workers", type=positive, metavar="N", help="most daughters at once")

    token = command("token", "print the HTTP API's bearer token (made on first use)")
    token.add_argument("--rotate", action="store_true", help="make a new token; the old one stops working")

    doctor = command("doctor", "what this machine gives tacx: store, containment, providers")
    doctor.add_argument("--json", action="store_true", help="a JSON list")

    helper = command("help", "this help, or a command's: tacx help COMMAND")
    helper.add_argument("topic", nargs="?", metavar="COMMAND", help="the command")

    clean = command("clean", "remove workspaces of ended tasks (never unsaved work)")
    clean.add_argument("ids", nargs="*", type=bounds.task_id, metavar="ID", help="default: every ended task")
    clean.add_argument("--json", action="store_true", help="a JSON list")

    init = command("init", "start a project here: tacx.yaml, a starter workflow, .tacx/")
    init.add_argument("--force", action="store_true", help="overwrite tacx.yaml and the starter workflow if they exist")

    completion = command("completion", "print a shell's completion script (bash, zsh, fish)")
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash, zsh or fish")
    p.set_defaults(parsers=dict(sub.choices), top=p)
    return p


def _removal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="also delete workspaces holding uncommitted or unpushed work, and source tasks not yet reported")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    p.add_argument("--json", action="store_true", help="a JSON list, one entry per task")


def age(text: str) -> float:
    """An age such as 30m, 2h or 7d, in seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("an age is more than 0 (30m, 2h, 7d)")
    return seconds


def _task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", help="a workflow file, or the name of one in workflows/")
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE", help="an input (repeatable)")
    p.add_argument("--priority", type=bounds.sqlite_int, default=0, help="higher runs first (default 0)")
    p.add_argument("--title", type=bounds.text, help="the task's title (default: from the workflow)")
    p.add_argument("--dedupe-key", type=bounds.text, help="do not queue a second live task with this key")


positive = bounds.positive_int
