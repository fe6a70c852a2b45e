"""Polls each source on its schedule, submits what it asks for, and tells it how the
tasks it submitted ended.

The poller is handed what it needs and nothing more: a `submit` that turns a request into
a queued task (the same path as `tacx submit`), the store's `read`, and the engine's event
bus, on which it hears the ends of tasks and publishes what its sources do (`source.*`
events). It knows no source in particular and no source knows the engine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tacx.engine.events import EngineEvent, EventBus, Publish
from tacx.sources.base import RateLimited, Source, TaskEnd, TaskRequest
from tacx.store import records

log = logging.getLogger(__name__)

T = TypeVar("T")
# (request, dedupe key) -> (task id, created). A key that ever had a task makes none again.
Submit = Callable[[TaskRequest, str], Awaitable[tuple[int, bool]]]
Read = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]
Act = Callable[[int], Awaitable[Any]]  # retry or cancel a task by id

MAX_BACKOFF = 900.0  # a failing source is polled at least every 15 minutes
TELL_SECONDS = 5.0  # how long shutdown waits for sources still hearing of ends
MAX_KEY = 512  # characters of a source's key for an item
ENDS = tuple(f"task.{status}" for status in records.TERMINAL_TASK_STATES)
# What a narrating source hears of (the task's state after each, read from the store).
PROGRESS = ("task.started", "task.retried", "stage.started", "stage.succeeded", "stage.failed", "stage.timed_out",
            "stage.skipped", "stage.cancelled", "stage.failover", "stage.retrying")


@dataclass
class SourceStatus:
    """What `tacx sources` and the dashboard show of a source."""

    name: str
    last_poll: float | None = None
    next_poll: float | None = None
    made: int = 0  # tasks it created
    already: int = 0  # requests for items that already had a live task
    failures: int = 0  # polls failed in a row
    last_error: str | None = None
    rate_limited_until: float | None = None


def _untold(conn: sqlite3.Connection, source: str) -> list[tuple[int, str, str, str | None]]:
    """A source's tasks that ended with nobody telling it (tacx stopped, a cancel from a
    terminal while no coordinator ran): (id, dedupe key, status, error)."""
    return [(int(r[0]), str(r[1]), str(r[2]), r[3]) for r in conn.execute(
        "SELECT id, dedupe_key, status, error FROM tasks WHERE source = ? AND source_told IS NULL"
        " AND status IN ('succeeded', 'failed', 'cancelled', 'timed_out') AND dedupe_key IS NOT NULL", (source,))]


def dedupe_key(source: Source, request: TaskRequest) -> str:
    return f"{source.name}:{request.key}"


def key_problem(key: object) -> str | None:
    """Why a source's key for an item cannot name a task, or None."""
    if not isinstance(key, str) or not key.strip():
        return "an item needs a key (a non-empty string)"
    if len(key) > MAX_KEY:
        return f"the key is {len(key)} characters long; at most {MAX_KEY}"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        return "the key holds control characters"
    return None


class SourcePoller:
    def __init__(self, sources: Sequence[Source], *, submit: Submit, read: Read, bus: EventBus, publish: Publish,
                 retry: Act | None = None, cancel: Act | None = None,
                 remember: Callable[[Callable[[sqlite3.Connection], Any]], Any] | None = None) -> None:
        names = [s.name for s in sources]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"two sources are named {', '.join(duplicated)}: a source's name must be unique")
        self.sources = {s.name: s for s in sources}
        self.status = {s.name: SourceStatus(s.name) for s in sources}
        self._submit = submit
        self._retry = retry
        self._cancel = cancel
        self._remember = remember  # the store's write_soon: each source's state, for `tacx sources`
        self._read = read
        self._narrating: dict[int, asyncio.Task[None]] = {}  # task id -> its narration in flight
        self._renarrate: set[int] = set()  # tasks that changed while narrated
        self._telling_ends: set[int] = set()  # tasks whose end is being told
        self._told: set[int] = set()  # tasks whose end was told (the store hears it soon)
        self._bus = bus
        self._publish = publish
        self._mine: dict[int, tuple[str, str]] = {}  # task id -> (source name, the source's key)
        self._tasks: list[asyncio.Task[None]] = []
        self._telling: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        """Learn which open tasks came from our sources (they may end after a restart),
        then poll each source in its own task."""
        if not self.sources:
            return
        untold: list[tuple[Source, TaskEnd]] = []
        for source in self.sources.values():
            prefix = f"{source.name}:"
            for task_id, key in await self._read(lambda c, p=prefix: records.open_tasks_keyed(c, p)):
                self._mine[task_id] = (source.name, key[len(prefix):])
            for task_id, key, state, error in await self._read(lambda c, n=source.name: _untold(c, n)):
                if key.startswith(prefix):  # ended while no poller listened: told now
                    self._mine[task_id] = (source.name, key[len(prefix):])
                    untold.append((source, TaskEnd(key[len(prefix):], task_id, state, error)))
        self._unsubscribe = self._bus.subscribe(self._on_event, kinds=ENDS + PROGRESS)
        for source, end in untold:
            self._start(self._tell(source, end))
        self._tasks = [asyncio.create_task(self._poll_loop(s), name=f"tacx-source-{s.name}") for s in self.sources.values()]

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._telling:  # a source still answering an end gets a moment, not the shutdown
            _, late = await asyncio.wait(set(self._telling), timeout=TELL_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _poll_loop(self, source: Source) -> None:
        status = self.status[source.name]
        while True:
            try:
                delay = await self.poll_once(source)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug of ours must not silence a source for good
                log.exception("polling source %s failed", source.name)
                status.last_error = f"tacx failed polling it: {exc}"
                delay = MAX_BACKOFF
            status.next_poll = time.time() + delay
            self._keep(source)
            await asyncio.sleep(delay)

    async def poll_once(self, source: Source) -> float:
        """Poll one source and submit what it asks for; the seconds until its next poll."""
        status = self.status[source.name]
        status.last_poll = time.time()
        try:
            requests = list(await source.poll())
        except RateLimited as exc:
            status.rate_limited_until = time.time() + exc.retry_after
            status.last_error = f"rate limited: {exc}"
            self._publish("source.rate_limited", source=source.name, retry_after=exc.retry_after, error=str(exc))
            return max(exc.retry_after, source.interval)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a source's failure is its own, never the engine's
            status.failures += 1
            status.last_error = str(exc) or type(exc).__name__
            self._publish("source.failed", source=source.name, error=status.last_error, failures=status.failures)
            # The first failure waits one interval, then twice that, ... up to MAX_BACKOFF.
            return min(source.interval * 2 ** min(status.failures - 1, 30), max(source.interval, MAX_BACKOFF))
        status.failures, status.rate_limited_until = 0, None
        made = 0
        for request in requests:
            if problem := key_problem(getattr(request, "key", None)):
                status.last_error = problem
                self._publish("source.rejected", source=source.name, key=str(getattr(request, "key", ""))[:80], error=problem)
                continue
            key = dedupe_key(source, request)
            try:
                if request.action != "run":
                    await self._act(source, request, key)
                    continue
                task_id, created = await self._submit(request, key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. no such workflow, a bad input: said, then the next request
                status.last_error = f"{request.key}: {exc}"
                self._publish("source.rejected", source=source.name, key=request.key, error=str(exc))
                told = getattr(source, "rejected", None)
                if told is not None and request.action == "run":
                    try:
                        await told(request.key, str(exc))
                    except Exception as problem:  # noqa: BLE001 - the source's far side failing too
                        log.warning("source %s could not say %s was rejected: %s", source.name, request.key, problem)
                continue
            if created:
                self._mine[task_id] = (source.name, request.key)
                self._narrate(task_id)
            else:
                try:
                    await self._maybe_again(source, request, task_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the far side failing: said, never held against the item
                    status.last_error = f"{request.key}: {exc}"
            made += created
            status.already += not created
        status.made += made
        self._publish("source.polled", source=source.name, asked=len(requests), made=made)
        return source.interval

    async def _task_of(self, key: str) -> tuple[int, str, float | None, float | None, str | None] | None:
        row = await self._read(lambda c: c.execute(
            "SELECT id, status, ended_at, source_told, error FROM tasks WHERE dedupe_key = ?", (key,)).fetchone())
        return (int(row[0]), str(row[1]), row[2], row[3], row[4]) if row else None

    async def _act(self, source: Source, request: TaskRequest, key: str) -> None:
        """`retry` or `cancel` the item's task (a person asked for it on the source's side)."""
        found = await self._task_of(key)
        if found is None:
            return
        task_id, state, *_ = found
        self._mine[task_id] = (source.name, request.key)
        if request.action == "retry" and state in records.TERMINAL_TASK_STATES and state != "succeeded" \
                and self._retry is not None:
            await self._retry(task_id)
        elif request.action == "cancel" and state in ("queued", "running") and self._cancel is not None:
            await self._cancel(task_id)
        self._publish(f"source.{request.action}", source=source.name, key=request.key, task=task_id)

    async def _maybe_again(self, source: Source, request: TaskRequest, task_id: int) -> None:
        """An item asked for again after its task ended: retried when the source says it
        is wanted again since (a label put back), not merely still there."""
        found = await self._task_of(dedupe_key(source, request))
        if found is None or found[1] not in records.TERMINAL_TASK_STATES:
            return
        _, state, ended_at, told, error = found
        self._mine[task_id] = (source.name, request.key)
        if told is None and task_id not in self._told:  # its end was never told (tacx stopped first): told now
            if task_id not in self._telling_ends:
                self._start(self._tell(source, TaskEnd(request.key, task_id, state, error)))
            return
        wanted_again = getattr(source, "wanted_again", None)
        if wanted_again is None or ended_at is None or not await wanted_again(request.key, ended_at):
            return
        if state == "succeeded" or self._retry is None:  # done: its end is told again (the label goes)
            self._start(self._tell(source, TaskEnd(request.key, task_id, state, error)))
            return
        await self._retry(task_id)
        self._publish("source.retry", source=source.name, key=request.key, task=task_id)

    def _on_event(self, event: EngineEvent) -> None:
        owner = self._mine.get(event.task_id) if event.task_id is not None else None  # kept: a retried task ends again
        if owner is None:
            return
        if event.kind in PROGRESS:
            if event.kind == "task.retried":
                self._told.discard(event.task_id or 0)  # its next end is told anew
            self._narrate(event.task_id or 0)
            return
        name, key = owner
        end = TaskEnd(key, event.task_id or 0, event.kind.removeprefix("task."), event.data.get("error"))
        self._start(self._tell(self.sources[name], end))

    def _start(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)
        return task

    def _narrate(self, task_id: int) -> None:
        """Tell a narrating source where its task is: one telling at a time per task, and
        one more after it when the task changed meanwhile (the latest state, never a queue)."""
        name, key = self._mine[task_id]
        source = self.sources[name]
        if getattr(source, "task_progress", None) is None:
            return
        if task_id in self._narrating:
            self._renarrate.add(task_id)
            return

        async def tell() -> None:
            try:
                while True:
                    self._renarrate.discard(task_id)
                    task = await self._read(lambda c: records.show_task(c, task_id, events_limit=0))
                    if task is not None:
                        await source.task_progress(key, task)  # type: ignore[attr-defined]
                    if task_id not in self._renarrate:
                        return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status[name].last_error = f"telling how task {task_id} goes: {exc}"
                log.warning("source %s failed to hear how task %s goes: %s", name, task_id, exc)
            finally:
                self._narrating.pop(task_id, None)

        self._narrating[task_id] = self._start(tell())

    async def _tell(self, source: Source, end: TaskEnd) -> None:
        self._telling_ends.add(end.task_id)
        try:
            while end.task_id in self._narrating:  # the last progress is told before the end
                await asyncio.sleep(0.05)
            task = await self._read(lambda c: records.show_task(c, end.task_id, events_limit=0))
            end = TaskEnd(end.key, end.task_id, end.status, end.error, task)
            await source.task_ended(end)
            self._told.add(end.task_id)
            if self._remember is not None:  # told: not again at the next start
                self._remember(lambda c, t=end.task_id: c.execute(
                    "UPDATE tasks SET source_told = ? WHERE id = ? AND status IN ('succeeded', 'failed', 'cancelled',"
                    " 'timed_out')", (time.time(), t)))
        except Exception as exc:
            self.status[source.name].last_error = f"telling it task {end.task_id} ended: {exc}"
            log.warning("source %s failed to hear the end of task %s: %s", source.name, end.task_id, exc)
        finally:
            self._telling_ends.discard(end.task_id)

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.state_of(source) for source in self.sources.values()]

    def state_of(self, source: Source) -> dict[str, Any]:
        """What `tacx sources` shows: the poller's figures and the source's own."""
        own = getattr(source, "state", None)
        return {**vars(self.status[source.name]), **(own() if callable(own) else {})}

    def _keep(self, source: Source) -> None:
        """The source's state in the store (meta `source:<name>`), for other terminals."""
        if self._remember is None:
            return
        text = json.dumps({**self.state_of(source), "updated": time.time()}, default=str)
        self._remember(lambda c: c.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (f"source:{source.name}", text)))
