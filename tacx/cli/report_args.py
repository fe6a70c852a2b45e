"""The arguments of `tacx report` (cli/parser.py adds them): light to import, as every
command's parser is built for each `tacx` run and each TAB of a shell's completion."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable

from tacx.durations import parse_duration
from tacx.store.reports import DIMENSIONS, GROUPS

WHEN_HELP = (
    "a date (2026-11-01, local time), an ISO date and time (2026-11-01T09:30, +01:00 allowed)"
    " or an age (12h, 7d: that long ago)"
)
LATEST = 253402300799.0  # 9999-12-31T23:59:59Z
WINDOW_HELP = (
    "--since is inclusive, --until exclusive; --until with a date alone means through the end of that day"
)


def when(text: str, *, end_of_day: bool = False) -> float:
    """Unix time from a date, an ISO date and time, or an age; a date alone is its local
    midnight, or with ``end_of_day`` the next one (so `--until 2026-11-30` takes that day in)."""
    text = text.strip()
    try:
        moment = _moment(text, end_of_day)
    except (OverflowError, OSError, ValueError):  # 9999-12-31's next day, year 1 in mktime
        raise argparse.ArgumentTypeError(f"time out of range {text!r}: give one between 1970 and 9999") from None
    return min(max(moment, 0.0), LATEST)  # before 1970 (an age of 1000 years): from the start


def _moment(text: str, end_of_day: bool) -> float:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None and len(text) == 10:
        if end_of_day:
            day += dt.timedelta(days=1)
        return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is not None:
        return moment.timestamp()
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: {WHEN_HELP}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: an age is more than 0 (12h, 7d)")
    return time.time() - seconds


def since_type(text: str) -> float:
    return when(text)


def until_type(text: str) -> float:
    return when(text, end_of_day=True)


def add_parser(command: Callable[[str, str], argparse.ArgumentParser], text_type: Callable[[str], str]) -> None:
    """`tacx report` and its three reports, on the top parser (cli/parser.py)."""
    report = command("report", "what was spent and how work went: cost, stats, compare")
    kinds = report.add_subparsers(dest="report", metavar="REPORT", required=True, help="cost, stats or compare")

    def kind(name: str, text: str) -> argparse.ArgumentParser:
        p = kinds.add_parser(name, prog=f"tacx report {name}", help=text, description=text,
                             epilog=f"WHEN: {WHEN_HELP}. {WINDOW_HELP}.")
        p.add_argument("--home", default=argparse.SUPPRESS, metavar="DIR",
                       help="the tacx home (default: nearest .tacx/, or $TACX_HOME)")
        return p

    def window(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--since", type=since_type, metavar="WHEN", help=f"only {what} from WHEN on")
        p.add_argument("--until", type=until_type, metavar="WHEN", help=f"only {what} before WHEN")
        shape = p.add_mutually_exclusive_group()
        shape.add_argument("--json", action="store_true", help="JSON")
        shape.add_argument("--csv", action="store_true", help="CSV: a header line, then one line per row")

    cost = kind("cost", "tokens and USD by day, week, month, workflow, provider, model or task"
                        " (spending counts when it happened: a task past midnight splits across days)")
    cost.add_argument("--by", choices=GROUPS, default="day", help="the groups (default: day)")
    window(cost, "spending")

    stats = kind("stats", "per workflow and stage: runs, success rate, p50/p95 duration, retries, timeouts,"
                          " failures by reason (of the tasks created in the window)")
    stats.add_argument("--workflow", type=text_type, help="only this workflow")
    window(stats, "tasks created")

    compare = kind("compare", "two workflows, providers or models side by side, overall and per stage"
                              " (of the tasks created in the window)")
    sides = compare.add_mutually_exclusive_group(required=True)
    for dimension in DIMENSIONS:
        sides.add_argument(f"--{dimension}s", nargs=2, type=text_type, metavar=("A", "B"),
                           help=f"compare two {dimension}s")
    compare.add_argument("--workflow", type=text_type, help="only stages of this workflow")
    window(compare, "tasks created")
