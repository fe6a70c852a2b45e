"""The long answers: a stage's log (a bounded range, or followed as it grows until the stage
ends) and the engine's events as server-sent events.

A log is only ever read from the path tacx recorded for that stage and attempt, inside
the home's logs folder: the client names a task, a stage and an attempt, never a file.
Each event client has its own bounded queue: one that reads too slowly loses the oldest
events and is told how many (an `event: missed`), and the engine never waits for it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import deque
from pathlib import Path

from aiohttp import web

from tacx.engine.events import EngineEvent
from tacx.server.context import ApiError, Context, context, fail, path_id, query_flag, query_int
from tacx.store import records

routes = web.RouteTableDef()
GONE_CHECK_SECONDS = 1.0


# -- logs ----------------------------------------------------------------------------------


def _stage_log(conn: sqlite3.Connection, ctx: Context, task_id: int, name: str, attempt: int | None,
               wait: bool = False) -> tuple[Path, int] | None:
    """(the recorded log of the attempt, the attempt); None when the stage has not started
    and the caller `wait`s for it (a follow asked before the stage began)."""
    if records.task_status(conn, task_id) is None:
        fail(404, f"no task {task_id}")
    stage = conn.execute("SELECT id, name, attempt, provider, log_path FROM stages WHERE task_id = ? AND name = ?",
                         (task_id, name)).fetchone()
    if stage is None:
        names = [r[0] for r in conn.execute("SELECT name FROM stages WHERE task_id = ? ORDER BY position", (task_id,))]
        fail(404, f"task {task_id} has no stage {name[:100]!r}; stages: {', '.join(names)}")
    if stage["attempt"] == 0:
        if wait and (attempt or 1) == 1:
            return None
        fail(404, f"stage {stage['name']} of task {task_id} has not started yet")
    attempt = attempt or stage["attempt"]
    if attempt > stage["attempt"]:
        fail(404, f"stage {stage['name']} has no attempt {attempt} (it has run {stage['attempt']} time(s))")
    row = conn.execute("SELECT log_path FROM daughters WHERE stage_id = ? AND attempt = ? ORDER BY id DESC LIMIT 1",
                       (stage["id"], attempt)).fetchone()
    recorded = row[0] if row else stage["log_path"] if attempt == stage["attempt"] else None
    path = Path(recorded) if recorded else ctx.home.stage_log(task_id, stage["name"], attempt)
    if not path.resolve().is_relative_to(ctx.home.logs.resolve()):
        fail(404, f"the log of stage {stage['name']} is not in this home's logs folder")
    return path, attempt


def _never_starts(conn: sqlite3.Connection, task_id: int, name: str) -> bool:
    """A stage not started that will not start now: its task ended (or is gone), or it
    was skipped or cancelled before it ran."""
    if records.task_status(conn, task_id) in (None, *records.TERMINAL_TASK_STATES):
        return True
    row = conn.execute("SELECT status, attempt FROM stages WHERE task_id = ? AND name = ?", (task_id, name)).fetchone()
    return row is None or (row["attempt"] == 0 and row["status"] in records.FINISHED_STAGE_STATES)


def _read_range(path: Path, offset: int, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes from `offset`, and the file's size (0 when not written yet)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(offset)
            return f.read(limit), size
    except FileNotFoundError:
        return b"", 0


def _running(conn: sqlite3.Connection, task_id: int, name: str, attempt: int) -> bool:
    row = conn.execute("SELECT status, attempt FROM stages WHERE task_id = ? AND name = ?", (task_id, name)).fetchone()
    return row is not None and row["status"] == "running" and row["attempt"] == attempt


@routes.get("/tasks/{id}/logs/{stage}")
async def stage_log(request: web.Request) -> web.StreamResponse:
    """?attempt=N (default the latest) &offset=BYTES &limit=BYTES (at most the range limit)
    &follow=1 (stream as it grows until the attempt ends; asked before the stage began, it
    waits for the first attempt, or ends empty if none comes). Bytes as the daughter wrote them."""
    ctx = context(request)
    task_id = path_id(request)
    name = request.match_info["stage"]
    attempt_asked = query_int(request, "attempt", 0, 0, 10**9) or None
    offset = query_int(request, "offset", 0, 0, 2**62)
    cap = ctx.limits.log_range
    limit = query_int(request, "limit", cap, 1, 2**62)
    if limit > cap:
        fail(400, f"limit is at most {cap} bytes a request; ask the rest with offset=")
    if not query_flag(request, "raw", True):
        fail(400, "the API serves logs as written (raw=1); `tacx logs` shows an agent's stream for people")
    follow = query_flag(request, "follow", False)
    found = await ctx.reader.read(lambda c: _stage_log(c, ctx, task_id, name, attempt_asked, wait=follow))
    if not follow:
        assert found is not None
        path, attempt = found
        data, size = await asyncio.to_thread(_read_range, path, offset, limit)
        return web.Response(body=data, headers={"Content-Type": "application/octet-stream", "X-Tacx-Attempt": str(attempt),
                                                "X-Tacx-Log-Size": str(size), "X-Tacx-Next-Offset": str(offset + len(data))})
    with ctx.stream_slot():
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        try:
            while found is None:  # asked before the stage began: wait for its first attempt
                if ctx.closing.is_set() or _gone(request) or await ctx.reader.read(lambda c: _never_starts(c, task_id, name)):
                    await response.write_eof()
                    return response
                await _sleep_or_close(ctx, ctx.limits.follow_poll)
                found = await ctx.reader.read(lambda c: _stage_log(c, ctx, task_id, name, attempt_asked, wait=True))
            path, attempt = found
            while True:
                running = await ctx.reader.read(lambda c: _running(c, task_id, name, attempt))
                while not ctx.closing.is_set() and (data := (await asyncio.to_thread(_read_range, path, offset, cap))[0]):
                    await response.write(data)
                    offset += len(data)
                if not running or ctx.closing.is_set() or _gone(request):  # read once more after the end
                    break
                await _sleep_or_close(ctx, ctx.limits.follow_poll)
            await response.write_eof()
        except ConnectionError:  # the client went away
            pass
        except ApiError:  # the task was deleted (tacx rm) while it was followed: the stream ends
            await response.write_eof()
        return response


def _gone(request: web.Request) -> bool:
    """The client closed the connection (a stream learns it here, or at its next write)."""
    return request.transport is None or request.transport.is_closing()


async def _sleep_or_close(ctx: Context, seconds: float) -> None:
    try:
        await asyncio.wait_for(ctx.closing.wait(), seconds)
    except TimeoutError:
        pass


# -- events --------------------------------------------------------------------------------


class Feed:
    """One client's queue of (sequence, event): bounded, the oldest dropped and counted."""

    def __init__(self, kinds: tuple[str, ...], limit: int) -> None:
        self.kinds = kinds
        self.limit = limit
        self.queue: deque[tuple[int, EngineEvent]] = deque()
        self.missed = 0
        self.ready = asyncio.Event()

    def wants(self, kind: str) -> bool:
        return not self.kinds or any(kind == k or (k.endswith(".") and kind.startswith(k)) for k in self.kinds)

    def put(self, number: int, event: EngineEvent) -> None:
        if len(self.queue) >= self.limit:
            self.queue.popleft()
            self.missed += 1
        self.queue.append((number, event))
        self.ready.set()


class EventFanout:
    """The server's one subscriber on the engine's bus: numbers each event (the SSE `id:`)
    and hands it to the feeds that want it. Constant work per feed, on the engine's loop."""

    def __init__(self) -> None:
        self.sequence = 0
        self.feeds: set[Feed] = set()

    def __call__(self, event: EngineEvent) -> None:
        self.sequence += 1
        for feed in self.feeds:
            if feed.wants(event.kind):
                feed.put(self.sequence, event)


FANOUT = web.AppKey("tacx-events", EventFanout)


def _sse(number: int, event: EngineEvent) -> bytes:
    data = json.dumps(event.as_json(), default=str, separators=(",", ":"))
    return f"id: {number}\nevent: {event.kind}\ndata: {data}\n\n".encode()


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events; `?kinds=task.,stage.failed` keeps those kinds (a trailing dot:
    the family). A comment every heartbeat keeps proxies from closing an idle stream."""
    ctx = context(request)
    kinds = tuple(k.strip() for k in request.query.get("kinds", "").split(",") if k.strip())
    if len(kinds) > 50 or any(len(k) > 100 for k in kinds):
        fail(400, "kinds is a short comma-separated list of event kinds, e.g. task.,stage.failed")
    fanout = request.app[FANOUT]
    with ctx.stream_slot():
        feed = Feed(kinds, ctx.limits.events_behind)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        fanout.feeds.add(feed)
        try:
            await response.write(b": tacx events\n\n")
            while not ctx.closing.is_set():
                await _next(ctx, feed, request)
                if _gone(request):
                    break
                out: list[bytes] = []
                if feed.missed:
                    out.append(f"event: missed\ndata: {json.dumps({'missed': feed.missed})}\n\n".encode())
                    feed.missed = 0
                while feed.queue:
                    out.append(_sse(*feed.queue.popleft()))
                await response.write(b"".join(out) or b": keepalive\n\n")
        except ConnectionError:  # the client went away
            pass
        finally:
            fanout.feeds.discard(feed)
        return response


async def _next(ctx: Context, feed: Feed, request: web.Request) -> None:
    """Until an event is queued, the server closes, a heartbeat is due or the client has
    gone (looked at every second, so a closed stream soon gives its place back)."""
    if feed.queue:
        return
    feed.ready.clear()
    waiters = [asyncio.ensure_future(feed.ready.wait()), asyncio.ensure_future(ctx.closing.wait())]
    deadline = asyncio.get_running_loop().time() + ctx.limits.heartbeat
    try:
        while not _gone(request):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            done, _ = await asyncio.wait(waiters, timeout=min(left, GONE_CHECK_SECONDS), return_when=asyncio.FIRST_COMPLETED)
            if done:
                return
    finally:
        for waiter in waiters:
            waiter.cancel()
