"""The bounds tacx puts on values from outside: numbers the store keeps, names, text
handed to daughters, and the retry delay.

Why a module of its own: each bound answers a limit that sits elsewhere (SQLite's 64-bit
integers, the kernel's 128 KiB per environment string, file-name lengths, a float's
range), so they are kept together, with the reason, rather than spread over the modules
that meet them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from pydantic import AfterValidator

__all__ = [
    "MAX_ISSUES",
    "MAX_NAME",
    "MAX_RETRY_DELAY",
    "MAX_STAGES",
    "SQLITE_INT_MAX",
    "SQLITE_INT_MIN",
    "TEXT_VALUE_LIMIT",
    "TooManyIssues",
    "bounded_int",
    "control_characters",
    "handoff_text",
    "max_length",
    "positive_int",
    "refuse",
    "retry_delay",
    "sqlite_int",
    "task_id",
    "text",
    "text_value_problem",
    "too_many_stages",
    "unusable_text",
]

SQLITE_INT_MIN, SQLITE_INT_MAX = -(2**63), 2**63 - 1
"""What an SQLite INTEGER holds; a Python int outside it raises OverflowError on the way in."""

MAX_NAME = 100
"""Workflow and stage names: a stage's name is in its log file's name
(``<stage>.<attempt>.log``, 255 bytes at most on most file systems) and in listings."""

TEXT_VALUE_LIMIT = 64 * 1024
"""UTF-8 bytes of one input or one stage result. Each reaches a daughter as one environment
variable or argv element, which the kernel refuses over 128 KiB; this leaves room for a
prompt that quotes two of them."""

MAX_STAGES = 100
"""Stages in one workflow: far beyond real ones (a handful). Validation follows ``needs:``
recursively and scheduling orders stages in quadratic time or worse, so a 1 MiB file of
20,000 stages would exhaust the stack or stall the engine."""

MAX_ISSUES = 100
"""Mistakes reported for one workflow file before checking stops: each costs a message
naming the known names, so a file of 25,000 bad templates took minutes, not milliseconds."""

MAX_RETRY_DELAY = 3600.0
"""Doubling ``backoff`` stops growing at an hour, unless ``backoff`` itself is longer."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_UNENCODABLE = re.compile(r"[\ud800-\udfff]")


# --- numbers -----------------------------------------------------------------------------


def bounded_int(low: int, high: int, what: str = "must be") -> Callable[[str], int]:
    """An argparse type accepting whole numbers from ``low`` to ``high`` (exit 2 otherwise)."""

    def parse(arg: str) -> int:
        try:
            if not arg.isascii():  # int() reads any script's digits: `tacx show ٣` meant no task 3
                raise ValueError(arg)
            value = int(arg)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{arg[:40]!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} between {low} and {high}, not {arg[:40]}")
        return value

    return parse


sqlite_int = bounded_int(SQLITE_INT_MIN, SQLITE_INT_MAX, "must be a whole number")
"""``--priority``: any value the store can keep."""
task_id = bounded_int(1, SQLITE_INT_MAX, "task ids are whole numbers")
positive_int = bounded_int(1, SQLITE_INT_MAX, "must be a whole number")


def retry_delay(backoff: float, failures: int) -> float:
    """Seconds before retry number ``failures``: ``backoff`` doubling each time, at most an
    hour (or ``backoff`` when that is longer). The exponent is capped, so no number of
    retries overflows a float (2 ** 1024 did, at attempt 1025)."""
    doubled = backoff * 2.0 ** min(max(failures - 1, 0), 64)
    return min(doubled, max(MAX_RETRY_DELAY, backoff))


def too_many_stages(stages: Any) -> str | None:
    if isinstance(stages, list) and len(stages) > MAX_STAGES:
        return f"{len(stages):,} stages; a workflow may have at most {MAX_STAGES}"
    return None


class TooManyIssues(Exception):
    """Raised by a checker that has found MAX_ISSUES mistakes: the rest are not looked for."""


# --- text --------------------------------------------------------------------------------


def unusable_text(value: str) -> str | None:
    """Why ``value`` cannot reach a command line, an environment variable or the store, or
    None: a NUL byte ends a C string, and a lone surrogate (YAML "\\ud800", an argument
    that is not UTF-8) is not encodable as UTF-8."""
    if "\x00" in value:
        return "contains a NUL byte (\\0), which no command line or environment variable can carry"
    bad = _UNENCODABLE.search(value)
    if bad:
        return f"contains {bad.group()!r}, which is not a character (not UTF-8 text)"
    return None


def text(arg: str) -> str:
    """An argparse type for text the store keeps or queries with (--title, --workflow): an
    argument that is not UTF-8 reaches Python as lone surrogates, which SQLite cannot take."""
    problem = unusable_text(arg)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return arg


def text_value_problem(value: str) -> str | None:
    """Why an input value cannot be handed to a daughter, or None (see TEXT_VALUE_LIMIT)."""
    problem = unusable_text(value)
    if problem:
        return problem
    size = len(value.encode("utf-8"))
    if size > TEXT_VALUE_LIMIT:
        return (
            f"is {size:,} bytes; a value may be at most {TEXT_VALUE_LIMIT // 1024} KiB "
            "(it reaches a daughter as one environment variable)"
        )
    return None


def control_characters(value: str) -> str | None:
    """Why ``value`` cannot be a one-line name (a newline, an escape sequence...), or None."""
    bad = _CONTROL.search(value)
    if bad:
        return f"contains the control character {bad.group()!r}; a name is one line of plain text"
    return None


def max_length(limit: int, why: str) -> Callable[[str], str | None]:
    """A check that text has at most ``limit`` characters; ``why`` is said when it has more."""

    def check(value: str) -> str | None:
        if len(value) > limit:
            return f"is {len(value):,} characters long; at most {limit} are allowed ({why})"
        return None

    return check


def refuse(*checks: Callable[[str], str | None]) -> AfterValidator:
    """A pydantic validator from checks above, each returning why a value is refused."""

    def check(value: str) -> str:
        for problem in filter(None, (c(value) for c in checks)):
            raise ValueError(f"{value[:40]!r}{'...' if len(value) > 40 else ''} {problem}")
        return value

    return AfterValidator(check)


def handoff_text(result: str | None) -> str | None:
    """A stage's result made safe to hand on as $TACX_RESULT_<STAGE> and in prompts: NUL
    bytes dropped, lone surrogates replaced with U+FFFD, at most TEXT_VALUE_LIMIT bytes as
    UTF-8 (a cut keeps the start and ends in "…"). The log keeps the daughter's bytes."""
    if result is None:
        return None
    result = _UNENCODABLE.sub("\ufffd", result.replace("\x00", ""))
    data = result.encode("utf-8")
    if len(data) <= TEXT_VALUE_LIMIT:
        return result
    return data[: TEXT_VALUE_LIMIT - 3].decode("utf-8", errors="ignore") + "…"
