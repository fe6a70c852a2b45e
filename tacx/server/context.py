"""What every route is handed: the coordinator, the home, the reader, the limits; and the
few helpers all routes share (a JSON error, a bounded query number, a JSON body read with
its line and column when it is not JSON)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from aiohttp import web

from tacx.engine.coordinator import Coordinator
from tacx.home import Home
from tacx.server.reads import StoreReader

MAX_BODY = 1 << 20  # bytes of a request body: a workflow's text fits many times over
MAX_LIST = 1000  # tasks in one GET /tasks page
DEFAULT_LIST = 100
MAX_LOG_RANGE = 1 << 20  # bytes of a log in one response (follow streams it in pieces of this)
MAX_STREAMS = 16  # event streams and log follows open at once
HEARTBEAT_SECONDS = 15.0
FOLLOW_POLL_SECONDS = 0.2
MAX_REST = 0.5  # the longest the next request waits for its turn after one request


@dataclass
class Limits:
    body: int = MAX_BODY
    list: int = MAX_LIST
    log_range: int = MAX_LOG_RANGE
    streams: int = MAX_STREAMS
    heartbeat: float = HEARTBEAT_SECONDS
    follow_poll: float = FOLLOW_POLL_SECONDS
    events_behind: int = 1000  # events one client may fall behind before it is told it missed some
    share: float = 0.2  # the most of the loop's time requests may take (FairShare)
    waiting: int = 64  # requests queued for their turn before more are refused (503)


class FairShare:
    """Requests take turns, and after each the next waits long enough that requests take at
    most `share` of the time: a client asking as fast as it can gets answers at a bounded
    rate, and the engine, in the same loop and process, keeps the rest. A single request
    is answered at once (the wait is before the next one); a crowd waits in line, and
    beyond `waiting` of them is refused. Streams are not counted: they are few (429) and
    each does little work per event."""

    def __init__(self, share: float, waiting: int) -> None:
        self.share = share
        self.limit = waiting
        self.waiting = 0
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self.waiting >= self.limit:
            fail(503, f"{self.waiting} requests are waiting for this server; try again shortly")
        self.waiting += 1
        try:
            await self._turn.acquire()
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            yield
        finally:
            # Wall time stands for the request's cost; one that waited (a busy store) is not
            # made to cost the next more than MAX_REST.
            rest = min((loop.time() - began) * (1 / self.share - 1), MAX_REST)
            loop.call_later(rest, self._turn.release)


@dataclass
class Context:
    coordinator: Coordinator
    home: Home
    reader: StoreReader
    limits: Limits = field(default_factory=Limits)
    streams: int = 0
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # the server stops: streams end
    share: FairShare = field(init=False)

    def __post_init__(self) -> None:
        self.share = FairShare(self.limits.share, self.limits.waiting)

    @contextmanager
    def stream_slot(self) -> Iterator[None]:
        """One of the few long-lived responses (429 when all are taken)."""
        if self.streams >= self.limits.streams:
            fail(429, f"{self.streams} streams are open, the most this server keeps; close one and try again")
        self.streams += 1
        try:
            yield
        finally:
            self.streams -= 1


CONTEXT = web.AppKey("tacx-context", Context)
AUTHORIZED = web.RequestKey("tacx-authorized", bool)  # its bearer token is the home's (set by the auth middleware)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT]


def error_response(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def fail(status: int, message: str) -> NoReturn:
    """End the request with a JSON error (the middleware turns it into a response)."""
    raise ApiError(status, message)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() and not (text.startswith("-") and text[1:].isdigit()):
        fail(400, f"{name} must be a whole number, got {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        fail(400, f"{name} must be from {low} to {high}, got {value}")
    return value


def query_flag(request: web.Request, name: str, default: bool) -> bool:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    fail(400, f"{name} is 1 or 0, got {text[:40]!r}")


def path_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18:
        fail(400, f"a task id is a positive whole number, got {text[:40]!r}")
    return int(text)


async def body_text(request: web.Request) -> str:
    """The body as text (a body over the limit is a 413, from aiohttp's own check)."""
    data = await request.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(400, f"the body is not UTF-8 (byte {exc.start})")


async def json_object(request: web.Request) -> dict[str, Any]:
    text = await body_text(request)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(400, f"the body is not JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}")
    except RecursionError:
        fail(400, "the body is not JSON tacx reads: nested too deeply")
    if not isinstance(value, dict):
        fail(400, f"the body must be a JSON object, got {type(value).__name__}")
    return value
