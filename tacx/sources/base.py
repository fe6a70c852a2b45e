"""The source seam: what a source of tasks (GitHub issues, later others) is to tacx.

A source is polled on a schedule and answers with the tasks it wants, each under a key of
its own ("owner/repo#12"). tacx submits them with the dedupe key "<source>:<key>": an item
runs once, so a poll that sees it again submits nothing, whether its task is queued,
running or over (a failed one is retried by a person, `tacx retry`, or asked for again by
the source under a new key, e.g. "owner/repo#12@<label event>"). tacx tells the source how
each task it submitted ended, so the source can answer on its side (a comment, a label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class TaskRequest:
    """One task a source asks for."""

    key: str  # the source's own, stable name for the item: "owner/repo#12"
    workflow: str  # a workflow name, as `tacx submit` takes it
    inputs: Mapping[str, str] = field(default_factory=dict)
    title: str | None = None
    priority: int = 0
    action: Literal["run", "retry", "cancel"] = "run"  # retry or cancel the item's task, if it has one
    url: str | None = None  # a link to the item (the issue), shown with its task


@dataclass(frozen=True)
class TaskEnd:
    """How a task a source submitted ended."""

    key: str
    task_id: int
    status: str  # succeeded, failed, cancelled, timed_out
    error: str | None = None
    task: Mapping[str, Any] | None = None  # the task as `tacx show --json` gives it, at its end


class RateLimited(Exception):
    """A source's far side asked it to wait: the next poll is `retry_after` seconds away."""

    def __init__(self, retry_after: float, message: str = "rate limited") -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Source(Protocol):
    """Anything that can be polled for tasks. `name` is unique among a home's sources and
    prefixes the dedupe keys of the tasks it makes; `interval` is seconds between polls."""

    name: str
    interval: float

    async def poll(self) -> Sequence[TaskRequest]:
        """The tasks wanted now; an item that already had a task is not submitted again.
        Raises RateLimited to be left alone for a while; any other exception is recorded as
        the source's last error and the poll is tried again, later each time."""
        ...

    async def task_ended(self, end: TaskEnd) -> None:
        """A task this source submitted has ended (heard once per end, while tacx runs)."""
        ...


class Narrating(Source, Protocol):
    """A source that also hears how its tasks go, to tell it on its side (an issue comment):
    when a task starts and as each stage ends (the latest state, not every event)."""

    async def task_progress(self, key: str, task: Mapping[str, Any]) -> None: ...


class Asking(Source, Protocol):
    """A source that can tell whether an item whose task ended is wanted again (an issue
    labelled again after its task ended): its task is then retried."""

    async def wanted_again(self, key: str, ended_at: float) -> bool: ...
