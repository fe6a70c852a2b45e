"""Looking after daughters while they run: the sampler's callback (idle timeouts, live
figures for the dashboard, peak memory and CPU in the store) and the periodic sweep for
stragglers, descendants that escaped their daughter's group (setsid, double fork)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from tacx.engine.events import Publish
from tacx.engine.executor import Daughter, Executors
from tacx.engine.state import Watch
from tacx.home import Home
from tacx.store.writer import Store

log = logging.getLogger(__name__)

STRAGGLER_SWEEP_SECONDS = 10.0


class Sampler:
    """What each sample of the watched daughters (`watched`, by pid) leads to."""

    def __init__(self, store: Store, publish: Publish, watched: dict[int, Watch]) -> None:
        self.store = store
        self.publish = publish
        self.watched = watched

    def on_sample(self, daughters: Sequence[Daughter]) -> None:
        now = time.time()
        updates = []
        for d in daughters:
            watched = self.watched.get(d.pid)
            if watched is None:
                continue
            run, stage, spec, settle = watched
            if spec.idle_timeout and now - d.last_output_at > spec.idle_timeout:
                settle("idle")
            updates.append((d.peak_rss, d.cpu_seconds, d.node, d.pid, d.started_at))
            self.publish(
                "daughter.sample",
                run.id,
                stage,
                pid=d.pid,
                rss=d.rss,
                cpu_percent=round(d.cpu_percent, 1),
                children=d.children,
                log_size=d.log_size,
                idle_seconds=round(now - d.last_output_at, 1),
                node=d.node,
            )
        if updates:
            self.store.write_soon(lambda c: c.executemany(
                "UPDATE daughters SET peak_rss = ?, cpu_seconds = ?, node = NULLIF(?, '') WHERE pid = ? AND started_at = ?"
                " AND ended_at IS NULL",
                updates,
            ))


class Sweeper:
    """Ends processes that carry this coordinator's marker but belong to no live daughter."""

    def __init__(self, executors: Executors, home: Home, only_task: int | None) -> None:
        self.executors = executors
        self.home = home
        self.only_task = only_task
        self._ended_since_sweep = False

    def daughter_ended(self) -> None:
        """A daughter ended: the next periodic sweep looks (none runs while nothing ends)."""
        self._ended_since_sweep = True

    @property
    def prefix(self) -> str:
        """What this coordinator may sweep: the whole home, or, for `tacx run` (which does
        not reconcile the rest of the home), only its own task's processes."""
        if self.only_task is not None:
            return f"{self.home.marker_prefix}{self.only_task}/"
        return self.home.marker_prefix

    def live_markers(self) -> set[str]:
        return {d.marker for executor in self.executors.all() for d in executor.daughters.values() if not d.done}

    async def sweep(self) -> list[int]:
        ended: list[int] = []
        for executor in self.executors.all():
            ended += await executor.sweep_stragglers(self.prefix, self.live_markers)
        return ended

    async def loop(self) -> None:
        """Descendants that escaped their group (setsid, double fork) are found by marker."""
        while True:
            await asyncio.sleep(STRAGGLER_SWEEP_SECONDS)
            if self._ended_since_sweep:
                self._ended_since_sweep = False
                try:
                    await self.sweep()
                except Exception:
                    log.exception("straggler sweep failed")
