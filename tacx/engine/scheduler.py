"""Where a task waits for a worker: the queue (priority, then age), the worker and
per-provider limits, routing a stage to the first provider that can take it, rests after
rate limits, claims of queued tasks, and why a task or a stage waits (or, headless, why
nothing can ever start: "stuck").

A stage of a running task asks for a worker with `request_slot`; the pump grants those
first, then starts queued tasks, each claim committing the task's start and its first
stage's start in one transaction before the task runner takes it over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import Counter
from typing import Any, Protocol
from collections.abc import Callable, Mapping
from pathlib import Path

from tacx.agents import spending
from tacx.agents.base import Provider
from tacx.agents.health import ProviderHealth
from tacx.agents.registry import why_not
from tacx.engine.events import Publish
from tacx.engine.state import Grant, Lifecycle, SlotRequest, Started, StartedGrant, TaskLoader, TaskRun, stage_rows
from tacx.engine.sweeper import Sweeper
from tacx.settings import Settings
from tacx.store import records
from tacx.store.writer import Store

log = logging.getLogger(__name__)

PAUSED_REASON = "coordinator paused: `tacx resume` (or p in the dashboard) to continue"
AVAILABILITY_TTL = 1.0  # how long "is this provider installed?" is believed
QUEUE_PAGE = 200


class TaskStarter(Protocol):
    """Where a claimed task goes on (the task runner): the claim commits its first stage's
    start (`start_tx`) with the task's, then runs the task on."""

    def start_tx(self, run: TaskRun, name: str, provider_name: str, reason: str) -> Callable[[sqlite3.Connection], Started]: ...

    async def run_task(self, run: TaskRun, first: StartedGrant | None) -> None: ...


class Scheduler:
    """Grants workers to stages and starts queued tasks, within the limits."""

    runner: TaskStarter  # handed over by the coordinator once the runner exists (it asks for workers here)

    def __init__(
        self,
        store: Store,
        publish: Publish,
        settings: Settings,
        providers: dict[str, Provider],
        *,
        cooldowns: spending.Cooldowns,
        loader: TaskLoader,
        lifecycle: Lifecycle,
        sweeper: Sweeper,
        running: dict[int, TaskRun],
        max_workers: int,
        exit_when_idle: bool,
        only_task: int | None,
        health: ProviderHealth | None = None,
        project: Path | None = None,
    ) -> None:
        self.health = health or ProviderHealth()
        self.project = project
        self.store = store
        self.publish = publish
        self.settings = settings
        self.providers = providers
        self.cooldowns = cooldowns
        self.loader = loader
        self.lifecycle = lifecycle
        self.sweeper = sweeper
        self.running = running
        self.max_workers = max_workers
        self.exit_when_idle = exit_when_idle
        self.only_task = only_task
        self.paused = False
        self.busy = 0
        self.busy_by_provider: Counter[str] = Counter()
        self.claiming: dict[int, asyncio.Task[None]] = {}
        self.stuck: str | None = None  # why a run that should end when idle could not go on
        self._requests: list[SlotRequest] = []
        self._queue: list[tuple[int, int, str, bool]] = []  # (id, priority, workflow_hash, never started), best first
        self._queue_stale = True
        self._queue_exhausted = False
        self._bulk_reason: str | None = None
        self._published_reason: str | None = None
        self._task_reasons: dict[int, str] = {}  # queued task -> why it cannot start
        self._available: dict[str, tuple[float, str | None, bool]] = {}  # provider -> (when asked, problem, logged out)
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    def queue_changed(self) -> None:
        """Tasks were submitted or retried: read the queue again, and say again why they wait."""
        self._queue_stale, self._bulk_reason = True, None

    def pause_changed(self) -> None:
        """Paused or resumed: why the queued tasks wait is said again."""
        self._bulk_reason = None

    async def pump_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._pump()
                await self._check_idle()
            except Exception:
                log.exception("scheduling failed")
                await asyncio.sleep(0.5)
                self.kick()

    def _route(
        self, candidates: list[str], passed: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> tuple[str | None, str]:
        """The first candidate that is installed, logged in, not resting and under its limit,
        and why. With others to choose from, one that lately failed on its access (health)
        is passed over while its hold lasts, and one that failed in this very stage
        (``passed``) is not chosen again; when nothing else can run, the troubled one is."""
        refusals: list[str] = []
        troubled: list[tuple[str, str]] = []
        for name in candidates:
            if passed and name in passed:
                refusals.append(passed[name])
                continue
            refusal = self._refusal(name, env)
            if refusal:
                refusals.append(refusal)
                continue
            held = self.health.held(name) if len(candidates) > 1 else None
            if held:
                troubled.append((name, held))
                continue
            why = "only candidate" if len(candidates) == 1 else f"first available of {candidates}"
            if refusals or troubled:
                why += f" ({'; '.join(refusals + [t for _, t in troubled])})"
            return name, why + self._slots(name)
        if troubled:
            name, held = troubled[0]
            others = f"; {'; '.join(refusals)}" if refusals else ""
            return name, f"no other of {candidates} can run ({held}{others}): trying {name} again" + self._slots(name)
        return None, "waiting for a provider: " + "; ".join(refusals)

    def _refusal(self, name: str, env: Mapping[str, str] | None = None) -> str | None:
        """Why ``name`` cannot take a stage now: unknown, not installed or not logged in,
        resting after a rate limit, or at its limit. ``env`` is the stage's own `env:`,
        which its daughter gets too (a key set there is a login)."""
        provider = self.providers.get(name)
        if provider is None:
            return f"{name} is not a known provider"
        problem = self._availability(name, provider, env)
        if problem:
            return problem
        resting = self.cooldowns.reason(name)
        if resting:
            return resting
        limit = self.settings.provider_limit(name)
        if limit is not None and self.busy_by_provider[name] >= limit:
            return f"{name} is at its limit ({self.busy_by_provider[name]} of {limit} busy)"
        return None

    def _slots(self, name: str) -> str:
        limit = self.settings.provider_limit(name)
        return f"; {self.busy_by_provider[name]} of {limit} {name} slots were busy" if limit is not None else ""

    def can_work(self, name: str, env: Mapping[str, str] | None = None) -> bool:
        """Whether ``name`` could take a stage at all (a rest or a full limit passes)."""
        provider = self.providers.get(name)
        return provider is not None and self._availability(name, provider, env) is None

    def _availability(self, name: str, provider: Provider, env: Mapping[str, str] | None = None) -> str | None:
        """Whether a provider can run here: installed, and not surely logged out (unless
        tacx.yaml says `check_login: false`). Looked up at most once per second (it reads a
        few files; installing a CLI or logging in is noticed within that second). A stage
        whose `env:` sets variables is judged again with them."""
        now = time.monotonic()
        cached = self._available.get(name)
        checks = self.settings.checks_login(name)
        if cached is None or now - cached[0] > AVAILABILITY_TTL:
            cached = (now, *why_not(name, provider, check_login=checks, project=self.project))
            self._available[name] = cached
        if cached[2] and env:  # logged out as tacx sees it: the stage's env may log it in
            return why_not(name, provider, check_login=checks, project=self.project, env=env)[0]
        return cached[1]

    def take_slot(self, provider: str) -> None:
        self.busy += 1
        self.busy_by_provider[provider] += 1

    def release_slot(self, provider: str) -> None:
        self.busy -= 1
        self.busy_by_provider[provider] -= 1
        self.kick()

    def _workers_reason(self) -> str:
        return f"waiting for a free worker ({self.busy} of {self.max_workers} busy)"

    async def _pump(self) -> None:
        """Grant free workers: first to stages of tasks already running, then to queued tasks."""
        if self.lifecycle.stopping:
            return
        reasons: dict[int, str] = {}  # stage id -> wait reason
        self._requests.sort(key=lambda r: r.key)
        for req in list(self._requests):
            if req.future.done():
                self._requests.remove(req)
                continue
            if self.paused:
                reason = PAUSED_REASON
            elif self.busy >= self.max_workers:
                reason = self._workers_reason()
            else:
                provider, reason = self._route(req.candidates, req.passed, req.run.workflow.stage(req.stage).env)
                if provider is not None:
                    self.take_slot(provider)
                    self._requests.remove(req)
                    req.future.set_result((provider, reason))
                    continue
            if req.reason != reason:
                req.reason = reason
                reasons[req.run.stages[req.stage].id] = reason
                self.publish("stage.waiting", req.run.id, req.stage, reason=reason)
        if reasons:
            self.store.write_soon(lambda c: c.executemany(
                "UPDATE stages SET wait_reason = ? WHERE id = ?", [(r, sid) for sid, r in reasons.items()]
            ))
        await self._start_queued()
        self._check_stuck()

    def _check_stuck(self) -> None:
        """Nothing runs, and what waits waits for a provider that is not there: a headless
        run that should end when idle would wait forever. Say why and stop instead."""
        if not (self.exit_when_idle or self.only_task is not None) or self.paused or self.lifecycle.stopping:
            return
        waiting = [r for r in self._requests if not r.future.done()]
        if self.busy or self.claiming or not (waiting or self._queue):
            return
        if any(r.reason is None for r in waiting) or any(q[0] not in self._task_reasons for q in self._queue):
            return  # asked for after this pump looked: not refused yet
        if {r.run.id for r in waiting} != set(self.running):
            return  # some running task is between stages (a retry's backoff, a write)
        reasons = sorted({r.reason for r in waiting if r.reason} | set(self._task_reasons.values()))
        if any("cooling down after a rate limit" in reason for reason in reasons):
            return  # a rate-limited provider comes back by itself
        self.stuck = "; ".join(reasons) or "nothing can start"
        self.publish("coordinator.stuck", reason=self.stuck)
        self.lifecycle.stop("stop")

    async def _refill_queue(self) -> None:
        only = self.only_task

        def head(conn: sqlite3.Connection) -> list[tuple[int, int, str, bool]]:
            sql = "SELECT id, priority, workflow_hash, started_at IS NULL FROM tasks WHERE status = 'queued'"
            params: tuple[Any, ...] = ()
            if only is not None:
                sql += " AND id = ?"
                params = (only,)
            sql += f" ORDER BY priority DESC, id LIMIT {QUEUE_PAGE}"
            return [tuple(r) for r in conn.execute(sql, params)]  # type: ignore[misc]

        rows = await self.store.read(head)
        self._queue = [q for q in rows if q[0] not in self.running and q[0] not in self.claiming]
        self._queue_exhausted = len(rows) < QUEUE_PAGE
        self._queue_stale = False

    async def _start_queued(self) -> None:
        if self.paused:
            self._set_bulk_reason(PAUSED_REASON)
            return
        if self._queue_stale or (not self._queue and not self._queue_exhausted):
            await self._refill_queue()
        skipped: list[tuple[int, int, str, bool]] = []
        specific: dict[int, str] = {}
        while self._queue and self.busy < self.max_workers and not self.lifecycle.stopping:
            task_id, priority, wf_hash, fresh = self._queue.pop(0)
            wf = self.loader.workflow(wf_hash, None, "")
            if wf is None:
                row = await self.store.read(
                    lambda c, t=task_id: c.execute(
                        "SELECT workflow_text, workflow_path FROM tasks WHERE id = ?", (t,)
                    ).fetchone()
                )
                try:
                    wf = self.loader.workflow(wf_hash, row[0], row[1])
                except Exception as exc:
                    await self.fail_unloadable(task_id, exc)
                    continue
            assert wf is not None
            first = wf.topo_order()[0]
            grant: Grant | None = None
            if wf.stage(first).when != "failure":  # a root stage that will run: start it with the claim
                provider, reason = self._route(wf.stage(first).provider, env=wf.stage(first).env)
                if provider is None:
                    skipped.append((task_id, priority, wf_hash, fresh))
                    specific[task_id] = reason
                    continue
                self.take_slot(provider)
                grant = (first, provider, reason)
            # Claims are not awaited here: many overlap and share a commit.
            self.claiming[task_id] = asyncio.create_task(self._claim(task_id, grant))
            if not self._queue and not self._queue_exhausted:
                await self._refill_queue()
        self._queue[:0] = skipped
        if self._queue and self.busy >= self.max_workers:
            self._set_bulk_reason(f"waiting for a free worker (limit {self.max_workers})")
        if specific:
            self.store.write_soon(lambda c: c.executemany(
                "UPDATE tasks SET wait_reason = ? WHERE id = ? AND status = 'queued'",
                [(r, t) for t, r in specific.items()],
            ))
            for task_id, reason in specific.items():
                if self._task_reasons.get(task_id) != reason:
                    self.publish("task.waiting", task_id, reason=reason)
        self._task_reasons = specific

    def _set_bulk_reason(self, reason: str) -> None:
        """One statement sets why every queued task waits, only when that reason changes."""
        if reason == self._bulk_reason:
            return
        self._bulk_reason = reason
        only = self.only_task
        self.store.write_soon(
            lambda c: c.execute(
                "UPDATE tasks SET wait_reason = ? WHERE status = 'queued' AND wait_reason IS NOT ?"
                + (" AND id = ?" if only is not None else ""),
                (reason, reason, only) if only is not None else (reason, reason),
            )
        )
        if reason != self._published_reason:
            self._published_reason = reason
            self.publish("queue.waiting", reason=reason)

    async def _claim(self, task_id: int, grant: Grant | None) -> None:
        """Mark a queued task running (unless someone cancelled it meanwhile) and, in the
        same transaction, start its first stage: one round trip to start a task."""
        now = time.time()

        def claim(conn: sqlite3.Connection) -> tuple[TaskRun, Started | None] | None:
            row = conn.execute(
                "UPDATE tasks SET status = 'running', started_at = COALESCE(started_at, ?), wait_reason = NULL"
                " WHERE id = ? AND status = 'queued' AND cancel_requested = 0 RETURNING *",
                (now, task_id),
            ).fetchone()
            if row is None:
                # Cancelled meanwhile; or a cancel asked for before tacx last stopped.
                records.cancel_queued(conn, task_id)
                return None
            records.add_event(conn, task_id, None, "task.started", {})
            run = self.loader.load_run(row, *stage_rows(conn, task_id))
            # A retried or interrupted task may have finished its first stage already.
            fresh = grant is not None and run.stages[grant[0]].status == "pending"
            started = self.runner.start_tx(run, *grant)(conn) if grant and fresh else None
            return run, started

        try:
            claimed = await self.store.write(claim)
            if claimed is not None and self.lifecycle.stopping:
                await self.store.write(lambda c: requeue_tx(c, task_id))
                claimed = None
        except Exception:
            log.exception("claiming task %s failed", task_id)
            claimed = None
        finally:
            self.claiming.pop(task_id, None)
        if claimed is None:
            if grant:
                self.release_slot(grant[1])
            return
        run, started = claimed
        if grant and started is None:
            self.release_slot(grant[1])
        self.publish("task.started", task_id, title=run.title, workflow=run.workflow.name)
        # This claim goes on as the task's runner: one task less to schedule.
        self.running[run.id] = run
        run.runner = asyncio.current_task()  # type: ignore[assignment]
        await self.runner.run_task(run, (*grant, started) if grant and started is not None else None)

    async def request_slot(
        self, run: TaskRun, stage: str, candidates: list[str], passed: Mapping[str, str] | None = None
    ) -> tuple[str, str]:
        """Wait for a worker for a stage: (provider, why that provider). CancelledError when
        the task is cancelled meanwhile."""
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._requests.append(SlotRequest(run, stage, candidates, future, passed=dict(passed or {})))
        self.kick()
        cancel = asyncio.ensure_future(run.cancel.wait())
        try:
            await asyncio.wait({future, cancel}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel.cancel()
        if future.done():
            return future.result()
        future.cancel()
        raise asyncio.CancelledError("task cancelled while waiting for a worker")

    async def _check_idle(self) -> None:
        if self.lifecycle.done.is_set():
            return
        if self.claiming:
            return
        if self.only_task is not None:
            if self.only_task not in self.running and not self._queue:
                status = await self.store.read(lambda c: records.task_status(c, self.only_task))
                if status != "queued":  # None: ended and deleted (tacx rm) meanwhile
                    self.lifecycle.done.set()
            return
        if not self.exit_when_idle or self.running or self.busy:
            return
        queued = await self.store.read(
            lambda c: c.execute("SELECT COUNT(*) FROM tasks WHERE status = 'queued'").fetchone()[0]
        )
        if queued == 0 or self.paused:
            await self.sweeper.sweep()
            self.publish("coordinator.idle", queued=queued, paused=self.paused)
            self.lifecycle.done.set()

    def explain_others(self) -> None:
        """`tacx run` runs only its own task: the others say why they do not start."""
        if self.only_task is None:
            return
        reason = (
            f"the home is held by `tacx run` (task {self.only_task}, pid {os.getpid()}); "
            "queued tasks start when a coordinator runs (`tacx --no-ui`)"
        )
        self.store.write_soon(lambda c: c.execute(
            "UPDATE tasks SET wait_reason = ? WHERE status = 'queued' AND id != ? AND wait_reason IS NOT ?",
            (reason, self.only_task, reason),
        ))

    # -- rests after rate limits ---------------------------------------------------------

    async def restore_cooldowns(self) -> None:
        """A restart does not end a rest: the pump looks again when each one ends."""
        for until in await self.store.read(self.cooldowns.restore):
            asyncio.get_running_loop().call_later(until - time.time() + 0.05, self.kick)

    def note_rate_limit(
        self, run: TaskRun, name: str, attempt: int, provider_name: str, detail: str, resets_at: float | None
    ) -> None:
        """Rest a provider that reported rate limiting (once per attempt); the pump looks
        again when the rest ends, and the choice is recorded."""
        if (name, attempt) in run.rate_noted:
            return
        run.rate_noted.add((name, attempt))
        why = f"task {run.id} stage {name}: {detail}"[:300]
        until = self.cooldowns.start(provider_name, why, resets_at)
        if until is None:
            return
        asyncio.get_running_loop().call_later(until - time.time() + 0.05, self.kick)
        data = {"provider": provider_name, "until": until, "reason": why}
        self.publish("provider.cooldown", **data)
        self.store.write_soon(lambda c: records.add_event(c, None, None, "provider.cooldown", data))

    # -- tasks that cannot start, or go back ----------------------------------------------

    async def fail_unloadable(self, task_id: int, exc: Exception) -> None:
        message = f"cannot run this task's workflow any more: {exc}"

        def fail(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET status = 'failed', error = ?, ended_at = ?, wait_reason = NULL WHERE id = ?",
                (message, time.time(), task_id),
            )
            records.add_event(conn, task_id, None, "task.failed", {"error": message})

        await self.store.write(fail)
        self.publish("task.failed", task_id, error=message)


def requeue_tx(conn: sqlite3.Connection, task_id: int) -> None:
    """Back to the queue; a cancel asked for meanwhile is not forgotten."""
    conn.execute(
        "UPDATE stages SET status = 'pending', interrupted = 1, wait_reason = 'interrupted: tacx stopped'"
        " WHERE task_id = ? AND status = 'running'",
        (task_id,),
    )
    conn.execute(
        "UPDATE tasks SET status = 'queued', wait_reason = 'interrupted: tacx stopped; resumes at the next start'"
        " WHERE id = ? AND status = 'running'",
        (task_id,),
    )
    records.add_event(conn, task_id, None, "task.interrupted", {})
    if conn.execute("SELECT cancel_requested FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]:
        records.cancel_queued(conn, task_id)
