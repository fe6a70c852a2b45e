"""GET /health: is this tacx doing its job? The coordinator alive (its loop running, not
stopping), the store writable, and the sources' state, in one answer a load balancer or a
person reads: 200 when the coordinator and the store are fine, 503 otherwise.

Paused is reported, not a failure: a person paused it. A failing source is reported too,
not a failure: its far side (GitHub, the network) is down, not tacx, and restarting tacx
would not help.

"Writable" without slowing the engine: the store has not refused a write (`store.failure`,
set by the writer on a full disk, a corrupt page, a file gone read-only), the disk under
the home has room, and a tiny heartbeat row goes through the engine's one writer at most
once every HEARTBEAT_SECONDS (any health check in between reuses its answer): a writer that
cannot commit (a lock held by another process, a stuck disk) shows within HEARTBEAT_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tacx
from tacx.store.errors import StoreError

if TYPE_CHECKING:
    from tacx.engine.coordinator import Coordinator
    from tacx.store.writer import Store

HEARTBEAT_SECONDS = 10.0  # at most one heartbeat write this often
HEARTBEAT_TIMEOUT = 2.0  # a heartbeat not committed by then: the store is not writable
HEARTBEAT_KEY = "health:heartbeat"
MIN_FREE_BYTES = 16 * 1024 * 1024  # under this free on the home's disk the next writes may fail
ERROR_CHARS = 300  # how much of an error (or any text) the body carries
LATE = "the store's writer did not commit within"


def coordinator_running(coordinator: Coordinator) -> bool:
    """Recovered and scheduling, not stopping, its background loops alive. Before recovery
    ends (a start) and once it stops, it is not running."""
    lifecycle = coordinator.lifecycle
    if not coordinator.recovered or lifecycle.stopping is not None or lifecycle.done.is_set():
        return False
    loops = getattr(coordinator, "_background", [])  # the pump, the external watch, the sweeper
    return bool(loops) and not any(task.done() for task in loops)


@dataclass
class _Heartbeat:
    """The last heartbeat's time and outcome, and the one in flight (shared by concurrent checks)."""

    at: float = float("-inf")  # never: the first check writes one, however long the machine has been up
    error: str | None = None
    started: float = 0.0  # when the last heartbeat was queued (monotonic)
    committed: float = -1.0  # when a heartbeat last committed, a late one too
    flight: asyncio.Task[str | None] | None = None


_beats: weakref.WeakKeyDictionary[Any, _Heartbeat] = weakref.WeakKeyDictionary()


def _beat(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (HEARTBEAT_KEY, repr(time.time())),
    )


async def _write_heartbeat(store: Store, beat: _Heartbeat) -> str | None:
    try:
        written = store.write(_beat)
        written.add_done_callback(lambda future: _heard(future, beat))
        await asyncio.wait_for(asyncio.shield(written), HEARTBEAT_TIMEOUT)
    except TimeoutError:
        return f"{LATE} {HEARTBEAT_TIMEOUT:g}s (a lock held too long, a stuck disk)"
    except (StoreError, sqlite3.Error, OSError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _heard(future: asyncio.Future[Any], beat: _Heartbeat) -> None:
    """The write's outcome is read (never left unread), and when it commits, said."""
    if not future.cancelled() and future.exception() is None:
        beat.committed = time.monotonic()


async def _heartbeat(store: Store) -> str | None:
    """The last heartbeat's error, writing a new one when the last is older than HEARTBEAT_SECONDS."""
    beat = _beats.setdefault(store, _Heartbeat())
    if beat.flight is None and time.monotonic() - beat.at >= HEARTBEAT_SECONDS:
        beat.started = time.monotonic()
        beat.flight = asyncio.get_running_loop().create_task(_write_heartbeat(store, beat), name="tacx-health-heartbeat")
    if beat.flight is not None:
        flight = beat.flight
        error = await asyncio.shield(flight)
        if beat.flight is flight:
            beat.at, beat.error, beat.flight = time.monotonic(), error, None
    if beat.error is not None and beat.error.startswith(LATE) and beat.committed >= beat.started:
        # It committed after all: a writer busy for a moment (a large batch) is writable,
        # not failing until the next heartbeat, HEARTBEAT_SECONDS later.
        beat.error = None
    return beat.error


def _free_bytes(path: Any) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


async def store_report(store: Store) -> dict[str, Any]:
    """{writable, error, free_bytes}: the first refusal the writer met wins; then the disk's
    room; then the heartbeat."""
    if store.failure is not None:
        return {"writable": False, "error": str(store.failure)[:ERROR_CHARS], "free_bytes": None}
    free = await asyncio.to_thread(_free_bytes, os.path.dirname(store.path) or ".")
    if free is not None and free < MIN_FREE_BYTES:
        return {"writable": False, "free_bytes": free,
                "error": f"the disk holding {store.path} has {free:,} bytes free: free some space"}
    error = await _heartbeat(store)
    return {"writable": error is None, "error": error[:ERROR_CHARS] if error else None, "free_bytes": free}


def source_state(status: dict[str, Any], now: float) -> str:
    """One word for a source: waiting (not polled yet), ok, failing, rate_limited."""
    until = status.get("rate_limited_until")
    if isinstance(until, (int, float)) and until > now:
        return "rate_limited"
    if status.get("failures"):
        return "failing"
    if status.get("last_poll") is None:
        return "waiting"
    return "ok"


def sources_report(coordinator: Coordinator) -> list[dict[str, Any]]:
    """Each source as `tacx sources` shows it, with its state in one word."""
    now = time.time()
    found = []
    for status in coordinator.sources.snapshot():
        entry = {key: value[:ERROR_CHARS] if isinstance(value, str) else value for key, value in status.items()
                 if isinstance(value, (str, int, float, bool, type(None)))}
        entry["state"] = source_state(status, now)
        found.append(entry)
    return found


async def health_report(coordinator: Coordinator, store: Store) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 when the coordinator runs and the store is writable, else 503."""
    running = coordinator_running(coordinator)
    stored = await store_report(store)
    ok = running and stored["writable"]
    body = {
        "status": "ok" if ok else "failing",
        "coordinator": {
            "running": running,
            "paused": coordinator.paused,
            "stopping": coordinator.lifecycle.stopping,
            "workers_busy": coordinator.busy,
            "max_workers": coordinator.max_workers,
            "tasks_running": len(coordinator.running),
        },
        "store": stored,
        "sources": sources_report(coordinator),
        "version": tacx.__version__,
        "python": sys.version.split()[0],
    }
    return (200 if ok else 503), body


def public_view(body: dict[str, Any]) -> dict[str, Any]:
    """What /health tells a caller without the token: the verdict and each part's state,
    never a source's name (a private repository) or an error's text (paths, GitHub's words)."""
    return {
        "status": body["status"],
        "coordinator": {key: body["coordinator"][key] for key in ("running", "paused")},
        "store": {"writable": body["store"]["writable"]},
        "sources": [{"state": source["state"]} for source in body["sources"]],
    }
