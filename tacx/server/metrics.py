"""GET /metrics: the engine in Prometheus's text format, through the official client.

Counters come from the engine's events since this process started (tacx/server/tally.py:
attach before the coordinator runs to hear its recovery too). Gauges are read when scraped:
tasks by state and the queue from the store, through this object's own read connection in a
worker thread (never the engine's one writer, never on the loop); workers, daughters and
pause straight from the coordinator. The rendered text is kept CACHE_SECONDS, so a scraper
hammering /metrics costs one render (a few indexed counts, a few ms) a second. Each instance has its own registry: several in one
process (the tests) never share a series.

Mounting it: `metrics = EngineMetrics(coordinator); metrics.attach()` before
`coordinator.run()`, `metrics.detach()` after; a handler answers
`web.Response(body=await metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})`
(aiohttp's `content_type=` refuses a value that carries a charset, as CONTENT_TYPE does).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import tacx
from tacx.server.health import coordinator_running
from tacx.server.tally import KINDS, Counters, Tally
from tacx.states import TASK_STATES
from tacx.store.database import connect

if TYPE_CHECKING:
    from tacx.engine.coordinator import Coordinator

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
CACHE_SECONDS = 1.0  # how long a rendered text is served again


class StoreCounts:
    """Tasks by state: one pass over the tasks_queue index (status first, so it covers the
    query; 5 ms at 100,000 tasks, a third less than a COUNT per state), on a connection of
    its own. Used from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()  # one worker thread at a time on the connection

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path, create=False, any_thread=True)
        return self._conn

    def counts(self) -> dict[str, int] | None:
        """Every task state with its count (zeros too); None when the store cannot be read
        (said in the log; the next scrape tries again)."""
        try:
            found = dict(self._connection().execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall())
            return {state: int(found.get(state, 0)) for state in TASK_STATES}
        except Exception as exc:  # noqa: BLE001 - a scrape never fails on the store: it shows no counts
            log.warning("metrics could not count the tasks in %s: %s", self.path, exc)
            self.close()  # the next scrape connects again
            return None

    def workflows_of(self, task_ids: list[int]) -> dict[int, str]:
        marks = ", ".join("?" * len(task_ids))
        rows = self._connection().execute(f"SELECT id, workflow FROM tasks WHERE id IN ({marks})", task_ids)
        return {int(task_id): str(workflow) for task_id, workflow in rows}

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Gauges(Collector):
    """The gauges, from the snapshot `EngineMetrics.exposition` took just before rendering."""

    def __init__(self) -> None:
        self.live: dict[str, float] = {}
        self.counts: dict[str, int] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.counts is not None:
            tasks = GaugeMetricFamily("tacx_tasks", "Tasks in the store, by state.", labels=["state"])
            for state in TASK_STATES:
                tasks.add_metric([state], self.counts.get(state, 0))
            yield tasks
            yield GaugeMetricFamily("tacx_queue_depth", "Queued tasks.", value=self.counts.get("queued", 0))
        for name, (doc, _) in LIVE.items():
            if name in self.live:
                yield GaugeMetricFamily(name, doc, value=self.live[name])


# Gauges read from the coordinator on the loop (cheap attribute reads), at scrape time.
LIVE: dict[str, tuple[str, Any]] = {
    "tacx_up": ("1 while the coordinator runs (recovered, scheduling, not stopping).",
                lambda c: float(coordinator_running(c))),
    "tacx_paused": ("1 while the coordinator is paused (`tacx pause`).", lambda c: float(c.paused)),
    "tacx_workers_busy": ("Workers running a stage now.", lambda c: float(c.busy)),
    "tacx_workers_max": ("The worker limit (max_workers).", lambda c: float(c.max_workers)),
    "tacx_running_daughters": ("Daughter processes the coordinator watches now.",
                               lambda c: float(len(c.sampler.watched))),
    "tacx_tasks_running_here": ("Tasks this coordinator is running now.", lambda c: float(len(c.running))),
}


class EngineMetrics:
    """The Prometheus view of one coordinator: `attach()` to its bus, `exposition()` per scrape."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.registry = CollectorRegistry(auto_describe=True)
        self.counters = Counters(self.registry)
        self._gauges = _Gauges()
        self.registry.register(self._gauges)
        Info("tacx_build", "tacx's version and the Python running it.", registry=self.registry).info(
            {"version": tacx.__version__, "python": sys.version.split()[0]}
        )
        self.store_counts = StoreCounts(coordinator.store.path)
        self.tally = Tally(coordinator, self.counters, self._workflows_of)
        self._unsubscribe: Any = None
        self._close_after = False  # detached while a scrape read: that scrape closes the connection
        self._text: tuple[bytes, float] = (b"", 0.0)  # the last rendered text, and when (monotonic)

    def attach(self) -> None:
        """Hear the engine's events (idempotent)."""
        if self._unsubscribe is None:
            self._unsubscribe = self.coordinator.bus.subscribe(self.tally, kinds=KINDS)

    def detach(self) -> None:
        """Stop hearing events and let go of the read connection (the counters keep their values)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.tally.close()
        if self.store_counts.lock.acquire(blocking=False):
            try:
                self.store_counts.close()
            finally:
                self.store_counts.lock.release()
        else:  # a scrape is reading in its thread: it closes the connection when done
            self._close_after = True

    async def exposition(self) -> bytes:
        """The text format of every metric, rendered in a worker thread; a scrape within
        CACHE_SECONDS of the last render gets that text (a client hammering /metrics costs
        the engine one render a second)."""
        text, at = self._text
        if text and time.monotonic() - at < CACHE_SECONDS:
            return text
        live = {name: read(self.coordinator) for name, (_, read) in LIVE.items()}
        return await asyncio.to_thread(self._render, live)

    def _render(self, live: dict[str, float]) -> bytes:
        with self.store_counts.lock:
            text, at = self._text
            if text and time.monotonic() - at < CACHE_SECONDS:  # rendered while this one waited
                return text
            self._gauges.live = live
            self._gauges.counts = self.store_counts.counts()
            try:
                text = generate_latest(self.registry)
            finally:
                if self._close_after:
                    self.store_counts.close()
            self._text = (text, time.monotonic())
            return text

    async def _workflows_of(self, task_ids: list[int]) -> dict[int, str]:
        def read() -> dict[int, str]:
            with self.store_counts.lock:
                return self.store_counts.workflows_of(task_ids)

        return await asyncio.to_thread(read)
