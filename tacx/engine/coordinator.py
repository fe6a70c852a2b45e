"""The coordinator: picks queued tasks by priority then age, runs their stages as daughters
within the worker limits, and brings everything back after a crash.

Every transition is committed (through the store's one writer) before anything acts on
it: a stage is `running` in the store before its daughter starts, and its outcome is in
the store, in the same transaction as the daughter's exit status, before the next stage
reads it back. The engine imports no Textual: the dashboard and the headless reporter
both listen to the same `EventBus`.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any
from collections.abc import Callable

from tacx.engine import faults
from tacx.store import records
from tacx.agents import spending
from tacx.workspace import worktree
from tacx.bounds import retry_delay
from tacx.engine.events import EngineEvent, EventBus
from tacx.home import Home
from tacx.agents.prices import PriceTable
from tacx.agents.registry import configured_providers
from tacx.agents.base import AgentState, Outcome, Provider, StageContext, Usage
from tacx.settings import Settings
from tacx.store.database import Store
from tacx.engine.executor import Daughter, Executors
from tacx.engine.outcome import Outcomes, close_daughter
from tacx.engine.state import (
    Grant, Lifecycle, SlotRequest, StageState, Started, StartedGrant, StopMode, TaskLoader, TaskRun, Watch, marker,
    stage_rows,
)
from tacx.engine.sweeper import Sampler, Sweeper
from tacx.engine.local.supervisor import LocalExecutor
from tacx.agents.tailer import Batch, Tail, Tailer
from tacx.workflow.model import SETUP_STAGE, Budget, StageSpec, input_env_name, render

log = logging.getLogger(__name__)

PAUSED_REASON = "coordinator paused: `tacx resume` (or p in the dashboard) to continue"
EXTERNAL_POLL_SECONDS = 0.25  # how often another terminal's submit/cancel/retry is looked for
AVAILABILITY_TTL = 1.0  # how long "is this provider installed?" is believed
QUEUE_PAGE = 200


class Coordinator:
    def __init__(
        self,
        home: Home,
        store: Store,
        settings: Settings | None = None,
        *,
        bus: EventBus | None = None,
        providers: dict[str, Provider] | None = None,
        max_workers: int | None = None,
        exit_when_idle: bool = False,
        only_task: int | None = None,
    ) -> None:
        self.home = home
        self.store = store
        self.settings = settings or Settings()
        self.bus = bus or EventBus()
        self.providers = providers or configured_providers(self.settings)
        self.prices = PriceTable.load(self.settings.prices)
        self.tailer = Tailer()
        self.cooldowns = spending.Cooldowns(self.settings)
        self._excluded_homes: set[Path] = set()
        self.max_workers = max_workers or self.settings.max_workers
        self.exit_when_idle = exit_when_idle
        self.only_task = only_task
        self.lifecycle = Lifecycle(self.publish)
        self.loader = TaskLoader(self.providers)
        self._watched: dict[int, Watch] = {}
        self.sampler = Sampler(store, self.publish, self._watched)
        self.supervisor = LocalExecutor(
            grace=self.settings.kill_grace,
            sample_interval=self.settings.sample_interval,
            on_sample=self.sampler.on_sample,
            home_root=home.root,
            use_cgroups=self.settings.cgroups != "off",
        )
        self.executors = Executors(self.supervisor)
        self.sweeper = Sweeper(self.executors, home, only_task)
        self.outcomes = Outcomes(store, self.publish, self.lifecycle, self.providers, self.executors, home.trees)
        self.running: dict[int, TaskRun] = {}
        self.paused = False
        self.busy = 0
        self.busy_by_provider: Counter[str] = Counter()
        self._requests: list[SlotRequest] = []
        self._queue: list[tuple[int, int, str, bool]] = []  # (id, priority, workflow_hash, never started), best first
        self._queue_stale = True
        self._queue_exhausted = False
        self._bulk_reason: str | None = None
        self._published_reason: str | None = None
        self._task_reasons: dict[int, str] = {}  # queued task -> why it cannot start
        self._available: dict[str, tuple[float, str | None]] = {}  # provider -> (when asked, problem)
        self.stuck: str | None = None  # why a run that should end when idle could not go on
        self._wake = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._claiming: dict[int, asyncio.Task[None]] = {}
        # What every daughter inherits; TACX_* of an enclosing tacx never leaks in.
        self._base_env = {k: v for k, v in os.environ.items() if not k.startswith("TACX_")}

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Recover, then schedule until stopped (or idle, or the one task ended)."""
        self.supervisor.start()
        self.tailer.start()
        self.paused = await self.store.read(records.is_paused)
        for until in await self.store.read(self.cooldowns.restore):  # a restart does not end a rest
            asyncio.get_running_loop().call_later(until - time.time() + 0.05, self._kick)
        if self.only_task is None:
            await self.recover()
        self._explain_others()
        self._background = [
            asyncio.create_task(self._pump_loop(), name="tacx-pump"),
            asyncio.create_task(self._watch_external(), name="tacx-external"),
            asyncio.create_task(self.sweeper.loop(), name="tacx-sweep"),
        ]
        self._kick()
        try:
            await self.lifecycle.done.wait()
        finally:
            await self._shutdown()

    def stop(self, mode: StopMode = "stop") -> None:
        """Stop: end running daughters and requeue their tasks ("stop"), or leave them
        running to be re-adopted at the next start ("leave")."""
        self.lifecycle.stop(mode)

    async def _shutdown(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # A claim in flight ends within one write: it puts its task back (we are stopping)
        # or, if it committed just before, goes on as a runner, which is stopped below.
        while self._claiming:
            await asyncio.sleep(0.01)
        runners = [r.runner for r in self.running.values() if r.runner is not None]
        if self.lifecycle.stopping == "leave":
            for runner in runners:
                runner.cancel()
        else:
            for run in self.running.values():
                run.interrupt("shutdown")
        await asyncio.gather(*runners, return_exceptions=True)
        if self.lifecycle.stopping != "leave":
            await self.sweeper.sweep()
        await self.supervisor.stop()
        await self.tailer.stop()
        await self.store.flush()

    def _kick(self) -> None:
        self._wake.set()

    def publish(self, kind: str, task_id: int | None = None, stage: str | None = None, **data: Any) -> None:
        self.bus.publish(EngineEvent(kind, task_id, stage, data))

    # -- recovery ----------------------------------------------------------------------

    async def recover(self) -> None:
        """Reconcile every `running` row with the processes that really exist."""

        def load(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row], list[sqlite3.Row]]:
            tasks = conn.execute("SELECT * FROM tasks WHERE status = 'running' ORDER BY id").fetchall()
            daughters = conn.execute("SELECT * FROM daughters WHERE ended_at IS NULL").fetchall()
            stages = conn.execute(
                "SELECT s.task_id, s.name, s.attempt FROM stages s JOIN tasks t ON t.id = s.task_id"
                " WHERE s.status = 'running' AND t.status = 'running'"
            ).fetchall()
            return tasks, daughters, stages

        tasks, open_daughters, running_stages = await self.store.read(load)
        alive = await asyncio.to_thread(
            lambda: {d["id"] for d in open_daughters if self.supervisor.is_running(d["pid"], d["create_time"])}
        )
        keep = {self._marker(d["task_id"], d["stage"], d["attempt"]) for d in open_daughters if d["id"] in alive}
        # A daughter started just before the crash may have no row yet: its stage's current
        # attempt is looked for by marker below, not ended as a straggler.
        keep |= {self._marker(s["task_id"], s["name"], s["attempt"]) for s in running_stages}
        ended = await self.supervisor.sweep_stragglers(self.home.marker_prefix, lambda: keep)
        if ended:
            self.publish("recovery.stragglers_ended", pids=ended)
            await self.store.write(
                lambda c: records.add_event(c, None, None, "recovery.stragglers_ended", {"pids": ended})
            )
        by_stage = {d["stage_id"]: d for d in open_daughters}
        # Daughters whose task is no longer running (a cancel raced a crash): end them.
        running_ids = {t["id"] for t in tasks}
        for d in open_daughters:
            if d["task_id"] not in running_ids:
                await self._close_orphan_daughter(d)
        for row in tasks:
            await self._resume_task(row, by_stage)
        await self.supervisor.sweep_leftovers()

    async def _close_orphan_daughter(self, d: sqlite3.Row) -> None:
        daughter = self.supervisor.adopt(**self._adopt_args(d))
        if not daughter.done:
            await self.supervisor.terminate(daughter, "its task is no longer running")
        info = await daughter.exited
        ended_at = daughter.ended_at or time.time()
        await self.store.write(lambda c: close_daughter(c, "id = ?", (d["id"],), ended_at, info))

    def _adopt_args(self, d: sqlite3.Row) -> dict[str, Any]:
        return dict(
            pid=d["pid"],
            create_time=d["create_time"],
            argv=json.loads(d["argv"]),
            log_path=Path(d["log_path"]),
            status_path=Path(d["status_path"]),
            marker=self._marker(d["task_id"], d["stage"], d["attempt"]),
            started_at=d["started_at"],
        )

    async def _resume_task(self, row: sqlite3.Row, open_by_stage: dict[int, sqlite3.Row]) -> None:
        try:
            run = self.loader.load_run(row, *await self.store.read(lambda c: stage_rows(c, row["id"])))
        except Exception as exc:
            await self._fail_unloadable(row["id"], exc)
            return
        interrupted: list[str] = []
        unrecorded: list[str] = []
        for st in run.stages.values():
            if st.status != "running":
                continue
            d = open_by_stage.get(st.id)
            if d is not None:
                daughter: Daughter | None = self.supervisor.adopt(**self._adopt_args(d))
            else:  # crashed between the stage's start and its daughter's row
                daughter = await self._find_unrecorded(run, st)
                if daughter is None:
                    interrupted.append(st.name)  # it never started, or nothing can tell how it ended
                    continue
                unrecorded.append(st.name)
            provider = await self.store.read(
                lambda c, sid=st.id: c.execute("SELECT provider FROM stages WHERE id = ?", (sid,)).fetchone()[0]
            )
            run.adopted[st.name] = (daughter, provider or "")
            self._take_slot(provider or "")

        def note(conn: sqlite3.Connection) -> None:
            for name in interrupted:
                conn.execute(
                    "UPDATE stages SET status = 'pending', interrupted = 1,"
                    " wait_reason = 'interrupted by a crash; runs again'"
                    " WHERE id = ?",
                    (run.stages[name].id,),
                )
            records.add_event(
                conn,
                run.id,
                None,
                "task.recovered",
                {
                    "adopted": {n: d.pid for n, (d, _) in run.adopted.items() if not d.done},
                    "ended_while_away": [n for n, (d, _) in run.adopted.items() if d.done],
                    "found_without_row": unrecorded,
                    "rerun": interrupted,
                },
            )

        await self.store.write(note)
        for name in interrupted:
            run.stages[name].status = "pending"
        self.publish("task.recovered", run.id, adopted=sorted(run.adopted), rerun=interrupted)
        self._start_runner(run)

    async def _find_unrecorded(self, run: TaskRun, st: StageState) -> Daughter | None:
        """A running stage whose daughter has no row: tacx died between starting it and
        recording it. Its daughter is found alive by its marker, or its end is read from
        the status file the keeper wrote; either way it gets its row, and the stage is
        concluded from it instead of run again. None when it never started."""
        marker = self._marker(run.id, st.name, st.attempt)
        log_path = self.home.stage_log(run.id, st.name, st.attempt)
        started_at = await self.store.read(
            lambda c: c.execute("SELECT started_at FROM stages WHERE id = ?", (st.id,)).fetchone()[0]
        )
        daughter = await self.supervisor.find_unrecorded(
            marker, log_path, log_path.with_suffix(".status"), started_at or 0.0
        )
        if daughter is not None:
            await self.store.write(lambda c: _insert_daughter(c, run.id, st.id, st.name, st.attempt, daughter))
        return daughter

    async def _fail_unloadable(self, task_id: int, exc: Exception) -> None:
        message = f"cannot run this task's workflow any more: {exc}"

        def fail(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET status = 'failed', error = ?, ended_at = ?, wait_reason = NULL WHERE id = ?",
                (message, time.time(), task_id),
            )
            records.add_event(conn, task_id, None, "task.failed", {"error": message})

        await self.store.write(fail)
        self.publish("task.failed", task_id, error=message)

    # -- scheduling --------------------------------------------------------------------

    async def _pump_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._pump()
                await self._check_idle()
            except Exception:
                log.exception("scheduling failed")
                await asyncio.sleep(0.5)
                self._kick()

    def _route(self, candidates: list[str]) -> tuple[str | None, str]:
        """The first candidate that is installed and under its limit, and why."""
        refusals = []
        for name in candidates:
            provider = self.providers.get(name)
            if provider is None:
                refusals.append(f"{name} is not a known provider")
                continue
            problem = self._availability(name, provider)
            if problem:
                refusals.append(problem)
                continue
            resting = self.cooldowns.reason(name)
            if resting:
                refusals.append(resting)
                continue
            limit = self.settings.provider_limit(name)
            if limit is not None and self.busy_by_provider[name] >= limit:
                refusals.append(f"{name} is at its limit ({self.busy_by_provider[name]} of {limit} busy)")
                continue
            why = "only candidate" if len(candidates) == 1 else f"first available of {candidates}"
            if refusals:
                why += f" ({'; '.join(refusals)})"
            if limit is not None:
                why += f"; {self.busy_by_provider[name]} of {limit} {name} slots were busy"
            return name, why
        return None, "waiting for a provider: " + "; ".join(refusals)

    def _availability(self, name: str, provider: Provider) -> str | None:
        """Whether a provider can run here, looked up at most once per second (it asks the
        file system; installing a CLI is noticed within that second)."""
        now = time.monotonic()
        cached = self._available.get(name)
        if cached is None or now - cached[0] > AVAILABILITY_TTL:
            cached = (now, provider.availability())
            self._available[name] = cached
        return cached[1]

    def _take_slot(self, provider: str) -> None:
        self.busy += 1
        self.busy_by_provider[provider] += 1

    def _release_slot(self, provider: str) -> None:
        self.busy -= 1
        self.busy_by_provider[provider] -= 1
        self._kick()

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
                provider, reason = self._route(req.candidates)
                if provider is not None:
                    self._take_slot(provider)
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
        if self.busy or self._claiming or not (waiting or self._queue):
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
        self.stop("stop")

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
        self._queue = [q for q in rows if q[0] not in self.running and q[0] not in self._claiming]
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
                    await self._fail_unloadable(task_id, exc)
                    continue
            assert wf is not None
            first = wf.topo_order()[0]
            grant: Grant | None = None
            if wf.stage(first).when != "failure":  # a root stage that will run: start it with the claim
                provider, reason = self._route(wf.stage(first).provider)
                if provider is None:
                    skipped.append((task_id, priority, wf_hash, fresh))
                    specific[task_id] = reason
                    continue
                self._take_slot(provider)
                grant = (first, provider, reason)
            # Claims are not awaited here: many overlap and share a commit.
            self._claiming[task_id] = asyncio.create_task(self._claim(task_id, grant))
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
            started = self._start_tx(run, *grant)(conn) if grant and fresh else None
            return run, started

        try:
            claimed = await self.store.write(claim)
            if claimed is not None and self.lifecycle.stopping:
                await self.store.write(lambda c: self._requeue_tx(c, task_id))
                claimed = None
        except Exception:
            log.exception("claiming task %s failed", task_id)
            claimed = None
        finally:
            self._claiming.pop(task_id, None)
        if claimed is None:
            if grant:
                self._release_slot(grant[1])
            return
        run, started = claimed
        if grant and started is None:
            self._release_slot(grant[1])
        self.publish("task.started", task_id, title=run.title, workflow=run.workflow.name)
        # This claim goes on as the task's runner: one task less to schedule.
        self.running[run.id] = run
        run.runner = asyncio.current_task()  # type: ignore[assignment]
        await self._run_task(run, (*grant, started) if grant and started is not None else None)

    def _start_runner(self, run: TaskRun) -> None:
        """Run a task resumed after a restart (claimed tasks are run by their claim)."""
        self.running[run.id] = run
        run.runner = asyncio.create_task(self._run_task(run, None), name=f"tacx-task-{run.id}")

    async def _request_slot(self, run: TaskRun, stage: str, candidates: list[str]) -> tuple[str, str]:
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._requests.append(SlotRequest(run, stage, candidates, future))
        self._kick()
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
        if self._claiming:
            return
        if self.only_task is not None:
            if self.only_task not in self.running and not self._queue:
                status = await self.store.read(
                    lambda c: c.execute("SELECT status FROM tasks WHERE id = ?", (self.only_task,)).fetchone()[0]
                )
                if status != "queued":
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

    # -- another terminal --------------------------------------------------------------

    async def _watch_external(self) -> None:
        """Notice submit, cancel, retry and pause from other processes (PRAGMA data_version)."""
        last = None
        while True:
            try:
                version = await self.store.read(lambda c: c.execute("PRAGMA data_version").fetchone()[0])
                if version != last:
                    last = version
                    await self._apply_external()
            except Exception:
                log.exception("watching the store failed")
            await asyncio.sleep(EXTERNAL_POLL_SECONDS)

    async def _apply_external(self) -> None:
        def look(conn: sqlite3.Connection) -> tuple[list[int], bool]:
            ids = [r[0] for r in conn.execute("SELECT id FROM tasks WHERE cancel_requested = 1 AND status = 'running'")]
            return ids, records.is_paused(conn)

        cancels, paused = await self.store.read(look)
        for task_id in cancels:
            run = self.running.get(task_id)
            if run is not None and not run.user_cancelled:
                run.request_cancel()
        if paused != self.paused:
            self.paused = paused
            self.publish("coordinator.paused" if paused else "coordinator.resumed")
        self._queue_stale = True
        self._bulk_reason = None  # tasks submitted meanwhile need their wait reason too
        self._explain_others()
        self._kick()

    def _explain_others(self) -> None:
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

    async def set_paused(self, paused: bool) -> None:
        await self.store.write(lambda c: records.set_paused(c, paused))
        self.paused = paused
        self._bulk_reason = None
        self.publish("coordinator.paused" if paused else "coordinator.resumed")
        self._kick()

    async def retry_task(self, task_id: int) -> None:
        """Queue a failed, cancelled or timed-out task again (ValueError, LookupError if not)."""
        await self.store.write(lambda c: records.retry_task(c, task_id))
        self.publish("task.retried", task_id)
        self._queue_stale, self._bulk_reason = True, None
        self._kick()

    async def submit(self, **task: Any) -> tuple[int, bool]:
        """Queue a task (records.insert_task's arguments); (id, created)."""
        result = await self.store.write(lambda c: records.insert_task(c, **task))
        self.publish("task.submitted", result[0], title=task.get("title"))
        self._queue_stale, self._bulk_reason = True, None
        self._kick()
        return result

    def kill_daughter(self, pid: int) -> bool:
        """End one daughter's tree as if it had crashed: its stage fails (and retries or
        loops as its workflow says). False when tacx is not watching that pid."""
        watched = self._watched.get(pid)
        if watched is None:
            return False
        watched[3]("killed")
        return True

    async def cancel_task(self, task_id: int) -> str:
        status = await self.store.write(lambda c: records.request_cancel(c, task_id))
        run = self.running.get(task_id)
        if run is not None:
            run.request_cancel()
        if status == "cancelled":
            self.publish("task.cancelled", task_id)
        return status

    # -- stragglers and samples ----------------------------------------------------------

    def _marker(self, task_id: int, stage: str, attempt: int) -> str:
        return marker(self.home.marker_prefix, task_id, stage, attempt)

    # -- running a task ----------------------------------------------------------------

    async def _run_task(self, run: TaskRun, first: StartedGrant | None) -> None:
        try:
            await self._drive(run, first)
        except asyncio.CancelledError:
            if self.lifecycle.stopping != "leave":
                raise
        except Exception as exc:
            log.exception("task %s failed inside tacx", run.id)
            await self._finish_task(run, "failed", f"internal error in tacx: {exc!r}")
        finally:
            self.running.pop(run.id, None)
            self._kick()

    async def _drive(self, run: TaskRun, first: StartedGrant | None) -> None:
        """Run the stage DAG: start every ready stage, skip those whose `when` is not met."""
        wf = run.workflow
        self._check_budget(run)  # a resumed task may have spent it already
        if run.cancel.is_set() and first is not None:  # the claim's worker is not used: give it back
            self._release_slot(first[1])
            first = None
        if wf.workspace == "worktree" and first is None and not run.adopted and not run.workspace_ready:
            # A retried or resumed task: its tree may have been cleaned meanwhile, and a tree
            # made anew needs its setup again (see _prepare_worktree) before any stage starts.
            try:
                await self._prepare_worktree(run, run.folder(self.home.trees))
            except worktree.WorkspaceError:
                pass  # the next stage tries again and fails, saying why
        active: dict[asyncio.Task[str], str] = {}
        for name, (daughter, provider) in run.adopted.items():
            active[asyncio.create_task(self._stage(run, name, None, daughter, provider))] = name
        run.adopted = {}
        grant = first
        try:
            while not run.cancel.is_set():
                skips: list[str] = []
                ready: list[tuple[str, tuple[str, str, Started] | None]] = []
                for name in wf.topo_order():
                    if run.stages[name].status != "pending" or name in active.values():
                        continue
                    if any(run.stages[n].status not in records.FINISHED_STAGE_STATES for n in wf.needs_of(name)):
                        continue
                    if not self._when_met(run, name):
                        run.stages[name].status = "skipped"
                        skips.append(name)
                        continue
                    pre = None
                    if grant is not None and grant[0] == name:
                        pre, grant = grant[1:], None
                    ready.append((name, pre))
                if grant is not None:  # the pre-granted stage did not start: give the worker back
                    self._release_slot(grant[1])
                    grant = None
                if skips:
                    await self._write_skips(run, skips)
                if len(ready) == 1 and not active and not skips:
                    await self._stage(run, *ready[0])  # one stage at a time: no task to schedule
                    await self._maybe_loop(run, ready[0][0])
                    continue
                for name, pre in ready:
                    active[asyncio.create_task(self._stage(run, name, pre))] = name
                if skips:
                    continue  # skipping may make more stages ready
                if not active:
                    break
                done, _ = await asyncio.wait(set(active), return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    name = active.pop(t)
                    t.result()  # an internal error surfaces here
                    await self._maybe_loop(run, name)
            # Cancelled or stopping: each stage ends its own daughter.
            await asyncio.gather(*active, return_exceptions=True)
        except asyncio.CancelledError:  # leaving daughters running for the next start
            for t in active:
                t.cancel()
            await asyncio.gather(*active, return_exceptions=True)
            raise
        except Exception:  # a bug in tacx: end the stages still running before failing the task
            run.interrupt("shutdown")
            await asyncio.gather(*active, return_exceptions=True)
            raise
        if run.user_cancelled:
            await self._finish_task(run, "cancelled", "cancelled by request")
        elif run.budget_error:
            await self._finish_task(run, "failed", run.budget_error, detail=False)
        elif self.lifecycle.stopping:
            await self._requeue(run)
        else:
            await self._finish_task(run, *self._outcome(run))

    async def _maybe_loop(self, run: TaskRun, name: str) -> None:
        """`loop: {back_to: S, max: N}`: a stage that failed sends the task back to S (its
        result stays readable as stages.<name>.result), at most N times."""
        spec = run.workflow.stage(name)
        st = run.stages[name]
        if spec.loop is None or st.status not in ("failed", "timed_out") or run.cancel.is_set():
            return
        if st.loops >= spec.loop.max:
            return
        wf = run.workflow
        path = {name} | wf.upstream_of(name)
        again = [n for n in wf.topo_order() if n in path and (n == spec.loop.back_to or spec.loop.back_to in wf.upstream_of(n))]
        st.loops += 1
        reason = f"loop {st.loops} of {spec.loop.max}: {name} {st.status.replace('_', ' ')}"
        ids = [run.stages[n].id for n in again]

        def back(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE stages SET loops = ? WHERE id = ?", (st.loops, st.id))
            conn.executemany(
                "UPDATE stages SET status = 'pending', failures = 0, ended_at = NULL, wait_reason = ? WHERE id = ?",
                [(reason, sid) for sid in ids],
            )
            records.add_event(conn, run.id, name, "stage.loop", {"back_to": spec.loop.back_to, "round": st.loops, "rerun": again})

        await self.store.write(back)
        for n in again:
            run.stages[n].status, run.stages[n].failures = "pending", 0
        self.publish("stage.loop", run.id, name, back_to=spec.loop.back_to, round=st.loops, reason=reason)

    def _when_met(self, run: TaskRun, name: str) -> bool:
        when = run.workflow.stage(name).when
        if when == "always":
            return True
        upstream = [run.stages[n].status for n in run.workflow.upstream_of(name)]
        failed = any(s in ("failed", "timed_out") for s in upstream)
        if when == "failure":
            return failed
        return all(s == "succeeded" for s in upstream)

    @staticmethod
    def _first_failure(run: TaskRun) -> StageState | None:
        """The stage that failed (or timed out) first: it names the task's outcome."""
        bad = [s for s in run.stages.values() if s.status in ("failed", "timed_out")]
        return min(bad, key=lambda s: s.ended_at or 0) if bad else None

    def _outcome(self, run: TaskRun) -> tuple[str, str | None]:
        first = self._first_failure(run)
        if first is None:
            return "succeeded", None
        return first.status, f"stage {first.name} {first.status.replace('_', ' ')}"

    async def _write_skips(self, run: TaskRun, names: list[str]) -> None:
        now = time.time()

        def skip(conn: sqlite3.Connection) -> None:
            for name in names:
                conn.execute(
                    "UPDATE stages SET status = 'skipped', ended_at = ?, wait_reason = NULL WHERE id = ?",
                    (now, run.stages[name].id),
                )
                records.add_event(conn, run.id, name, "stage.skipped", {"when": run.workflow.stage(name).when})

        await self.store.write(skip)
        for name in names:
            run.stages[name].ended_at = now
            self.publish("stage.skipped", run.id, name)

    async def _finish_task(self, run: TaskRun, status: str, summary: str | None, detail: bool = True) -> None:
        """Record the task's end. Not awaited: FIFO order puts it before any later write,
        and a crash before its commit is repaired by recovery (the task resumes, finds
        nothing left to run, and ends). Listeners hear of it once it is committed."""
        now = time.time()
        first = self._first_failure(run)
        culprit = first.id if first and detail else None

        def finish(conn: sqlite3.Connection) -> str | None:
            error = summary
            if culprit is not None and summary:
                detail = conn.execute("SELECT error FROM stages WHERE id = ?", (culprit,)).fetchone()[0]
                error = f"{summary}: {detail}" if detail else summary
            conn.execute(
                "UPDATE tasks SET status = ?, error = ?, ended_at = ?, wait_reason = NULL, cancel_requested = 0"
                " WHERE id = ?",
                (status, error, now, run.id),
            )
            if status == "cancelled":
                conn.execute(
                    "UPDATE stages SET status = 'cancelled', ended_at = ?, wait_reason = NULL,"
                    " error = 'cancelled by request', exit_code = NULL"
                    " WHERE task_id = ? AND status IN ('pending', 'running')",
                    (now, run.id),
                )
            else:
                conn.execute(
                    "UPDATE stages SET status = 'skipped', ended_at = ?, wait_reason = NULL"
                    " WHERE task_id = ? AND status IN ('pending', 'running')",
                    (now, run.id),
                )
            records.add_event(conn, run.id, None, f"task.{status}", {"error": error} if error else {})
            return error

        def committed(future: asyncio.Future[str | None]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.publish(f"task.{status}", run.id, title=run.title, error=future.result())
            elif not future.cancelled():
                self.lifecycle.store_failed(f"recording the end of task {run.id}", future.exception())

        self.store.write(finish).add_done_callback(committed)

    async def _requeue(self, run: TaskRun) -> None:
        """tacx is stopping: the task goes back to the queue and resumes at its next start."""
        if self.lifecycle.stopping == "leave":
            return

        await self.store.write(lambda c: self._requeue_tx(c, run.id))
        self.publish("task.interrupted", run.id)

    @staticmethod
    def _requeue_tx(conn: sqlite3.Connection, task_id: int) -> None:
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

    # -- running a stage ---------------------------------------------------------------

    async def _stage(
        self,
        run: TaskRun,
        name: str,
        grant: tuple[str, str, Started] | None,
        adopted: Daughter | None = None,
        adopted_provider: str = "",
    ) -> str:
        """Attempts of one stage, with retries and backoff, until it reaches a final state."""
        spec = run.workflow.stage(name)
        st = run.stages[name]
        while True:
            if adopted is not None:
                status = await self._finish_attempt(run, name, spec, adopted, adopted_provider)
                adopted = None
            else:
                started: Started | None = None
                if grant is None:
                    try:
                        provider, reason = await self._request_slot(run, name, spec.provider)
                    except asyncio.CancelledError:
                        if self.lifecycle.stopping == "leave":
                            raise
                        return st.status
                else:
                    provider, reason, started = grant
                    grant = None
                status = await self._attempt(run, name, spec, provider, reason, started)
            if status == "interrupted":
                if self.lifecycle.stopping or run.cancel.is_set():
                    return "interrupted"
                continue  # ended unseen while tacx was away: run it again (not a retry)
            if status in ("failed", "timed_out") and st.failures <= spec.retries and not run.cancel.is_set():
                delay = retry_delay(spec.backoff, st.failures)
                if await self._backoff(run, name, delay):
                    continue
                return "cancelled"
            return status

    async def _backoff(self, run: TaskRun, name: str, delay: float) -> bool:
        """Wait before a retry; False when the task was cancelled meanwhile."""
        st = run.stages[name]
        spec = run.workflow.stage(name)
        reason = f"retry {st.failures} of {spec.retries} in {delay:g}s"

        def pend(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE stages SET status = 'pending', wait_reason = ? WHERE id = ?", (reason, st.id))
            records.add_event(conn, run.id, name, "stage.retrying", {"delay": delay, "failures": st.failures})

        await self.store.write(pend)
        st.status = "pending"
        self.publish("stage.retrying", run.id, name, delay=delay, reason=reason)
        try:
            await asyncio.wait_for(run.cancel.wait(), timeout=delay)
        except TimeoutError:
            return True
        return False

    def _values(self, run: TaskRun, results: dict[str, str | None]) -> dict[str, str]:
        values = {f"inputs.{k}": v for k, v in run.inputs.items()}
        values.update({f"stages.{k}.result": v or "" for k, v in results.items()})
        values.update(
            {
                "task.id": str(run.id),
                "task.title": run.title,
                "task.trace_id": run.trace_id,
                "workflow.name": run.workflow.name,
            }
        )
        return values

    def _env(
        self, run: TaskRun, name: str, attempt: int, spec: StageSpec, values: dict[str, str],
        results: dict[str, str | None], workspace: Path, status_path: Path,
    ) -> dict[str, str]:
        env = dict(self._base_env)
        env.update(
            TACX_HOME=str(self.home.root),
            TACX_TASK_ID=str(run.id),
            TACX_TRACE_ID=run.trace_id,
            TACX_STAGE=name,
            TACX_ATTEMPT=str(attempt),
            TACX_WORKSPACE=str(workspace),
            TACX_PROJECT_ROOT=str(run.project_root),
            TACX_STATUS_FILE=str(status_path),
        )
        for key, value in run.inputs.items():
            env[input_env_name(key)] = value
        for stage, result in results.items():
            env["TACX_RESULT_" + stage.upper().replace("-", "_")] = result or ""
        for key, template in spec.env.items():
            env[key] = render(template, values)
        return env

    def _start_tx(self, run: TaskRun, name: str, provider_name: str, reason: str) -> Callable[[sqlite3.Connection], Started]:
        """The transaction that marks an attempt running, before its daughter exists."""
        st = run.stages[name]
        spec = run.workflow.stage(name)
        attempt = st.attempt + 1
        workspace = str(run.folder(self.home.trees))
        record_workspace = run.recorded_workspace != workspace
        run.recorded_workspace = workspace
        log_path = str(self.home.stage_log(run.id, name, attempt))
        now = time.time()

        resumes = spec.resume and getattr(self.providers.get(provider_name), "resumable", False)

        def start(conn: sqlite3.Connection) -> Started:
            session, interrupted, last_provider = conn.execute(
                "SELECT session_id, interrupted, provider FROM stages WHERE id = ?", (st.id,)
            ).fetchone()
            # Only the interrupted attempt's own session, and only with the same agent.
            resume = session if resumes and interrupted and session and last_provider == provider_name else None
            conn.execute(
                "UPDATE stages SET status = 'running', attempt = ?, provider = ?, model = ?, started_at = ?,"
                " ended_at = NULL, exit_code = NULL, error = NULL, wait_reason = NULL, log_path = ?,"
                " interrupted = 0, turns = 0, api_retries = 0, rate_limits = 0, session_id = ? WHERE id = ?",
                (attempt, provider_name, spec.model, now, log_path, resume, st.id),
            )
            if record_workspace:
                conn.execute("UPDATE tasks SET workspace = ? WHERE id = ?", (workspace, run.id))
            records.add_event(
                conn, run.id, name, "provider.chosen",
                {"provider": provider_name, "candidates": spec.provider, "reason": reason, "trace_id": run.trace_id},
            )
            records.add_event(
                conn, run.id, name, "stage.started",
                {"attempt": attempt, "provider": provider_name, **({"resume_session": resume} if resume else {})},
            )
            # Earlier stages' results, read back from the store (lesson 3).
            results = dict(conn.execute("SELECT name, result FROM stages WHERE task_id = ?", (run.id,)).fetchall())
            return Started(results, resume)

        return start

    async def _attempt(
        self,
        run: TaskRun,
        name: str,
        spec: StageSpec,
        provider_name: str,
        reason: str,
        started: Started | None = None,
    ) -> str:
        """Start one attempt of a stage (committed first, unless the claim did it), then
        watch it to its end. The slot taken for it is released on every path."""
        st = run.stages[name]
        attempt = st.attempt + 1
        workspace = run.folder(self.home.trees)
        log_path = self.home.stage_log(run.id, name, attempt)
        status_path = log_path.with_suffix(".status")
        mkdirs: tuple[Path, ...] = () if run.folders_made else (self.home.logs / str(run.id),)
        if not run.folders_made and run.workflow.workspace != "worktree":  # git makes the worktree
            mkdirs += (workspace,)
        if started is None:
            try:
                started = await self.store.write(self._start_tx(run, name, provider_name, reason))
            except BaseException:
                self._release_slot(provider_name)
                raise
        results = started.results
        if started.resume_session:  # the session's earlier usage, for agents that report running totals
            run.baselines[(name, attempt)] = st.usage.get(attempt - 1, Usage()) + run.baselines.get(
                (name, attempt - 1), Usage()
            )
        st.status, st.attempt = "running", attempt
        self.publish("provider.chosen", run.id, name, provider=provider_name, reason=reason, trace_id=run.trace_id)
        self.publish("stage.started", run.id, name, attempt=attempt, provider=provider_name)
        try:
            if run.workflow.workspace == "worktree" and not run.workspace_ready:
                await self._prepare_worktree(run, workspace)
            values = self._values(run, results)
            ctx = StageContext(
                task_id=run.id,
                trace_id=run.trace_id,
                stage=name,
                attempt=attempt,
                workspace=workspace,
                prompt=render(spec.prompt, values) if spec.prompt else None,
                script_path=log_path.with_suffix(".script"),
                resume_session=started.resume_session,
            )
            launch = self.providers[provider_name].launch(spec, ctx)
            env = self._env(run, name, attempt, spec, values, results, workspace, status_path)
            env.update(launch.env)
            daughter = await self.supervisor.spawn(
                launch.argv, env=env, cwd=workspace, log_path=log_path, status_path=status_path,
                marker=self._marker(run.id, name, attempt), mkdirs=mkdirs, files=launch.files,
            )
            run.folders_made = True
        except worktree.WorkspaceError as exc:
            self._release_slot(provider_name)
            self.outcomes.end_stage(run, name, None, "failed", f"could not prepare the task's git worktree: {exc}", None, None)
            return "failed"
        except (OSError, ValueError, KeyError) as exc:
            self._release_slot(provider_name)
            why = f"could not start the {provider_name} daughter: {exc}"
            if isinstance(exc, OSError) and exc.errno == errno.E2BIG:
                why += (" (its prompt, environment or arguments are over the kernel's limits:"
                        " 128 KiB a value, about 2 MiB in all; a result or input handed on is too big)")
            self.outcomes.end_stage(run, name, None, "failed", why, None, None)
            return "failed"
        except BaseException:
            self._release_slot(provider_name)
            raise
        faults.point("after-spawn")  # tests: a crash between the daughter's start and its row
        self.store.write_soon(lambda c: _insert_daughter(c, run.id, st.id, name, attempt, daughter))
        self.publish("daughter.started", run.id, name, pid=daughter.pid, argv=daughter.argv)
        return await self._finish_attempt(run, name, spec, daughter, provider_name)

    async def _prepare_worktree(self, run: TaskRun, path: Path) -> None:
        """Create the task's git worktree on its own branch, or find it again on a resume
        (its work is kept as it is). Runs git in a thread."""
        branch = run.branch or worktree.branch_name(run.id, run.title)

        def make() -> worktree.Worktree:
            repo = worktree.require_git_repo(run.project_root)
            if repo not in self._excluded_homes:
                worktree.exclude_home(repo, self.home.root)  # the trees do not show in `git status`
                self._excluded_homes.add(repo)
            return worktree.ensure_worktree(repo, path, branch)

        tree = await asyncio.to_thread(make)
        run.workspace_ready, run.branch = True, tree.branch
        data = {"path": str(tree.path), "branch": tree.branch, "base": tree.base, "created": tree.created}
        setup = run.stages.get(SETUP_STAGE)
        redo_setup = tree.created and setup is not None and setup.status == "succeeded"
        if redo_setup:  # setup runs once per worktree: this one is new
            assert setup is not None
            setup.status = "pending"
            data["setup_again"] = True

        def note(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET branch = ?, base_commit = COALESCE(base_commit, ?) WHERE id = ?",
                (tree.branch, tree.base, run.id),
            )
            if redo_setup:
                conn.execute(
                    "UPDATE stages SET status = 'pending', ended_at = NULL,"
                    " wait_reason = 'the worktree was made anew: setup runs again' WHERE id = ?",
                    (setup.id,),
                )
            records.add_event(conn, run.id, None, "workspace.created" if tree.created else "workspace.reused", data)

        self.store.write_soon(note)
        self.publish("workspace.created" if tree.created else "workspace.reused", run.id, **data)

    async def _finish_attempt(
        self, run: TaskRun, name: str, spec: StageSpec, d: Daughter, provider_name: str
    ) -> str:
        """Wait for the daughter's end, or for a reason to end it (cancel, shutdown,
        timeout, idle timeout: each settles `stop` with its cause), then record it."""
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[str | None] = loop.create_future()

        def settle(cause: str | None) -> None:
            if not stop.done():
                stop.set_result(cause)

        d.exited.add_done_callback(lambda _: settle(None))
        run.stoppers.add(settle)
        self._watched[d.pid] = (run, name, spec, settle)
        tail: Tail | None = None
        outcome: Outcome | None = None
        timer = None
        if spec.timeout:
            timer = loop.call_later(max(d.started_at + spec.timeout - time.time(), 0), settle, "timeout")
        if run.cancel.is_set():
            settle("cancel" if run.user_cancelled else "budget" if run.budget_error else "shutdown")
        try:
            tail = self._watch_output(run, name, spec, d, provider_name)
            cause = await stop  # cancelled only when leaving daughters running for the next start
            if cause is None:
                await self.supervisor.clean_after_exit(d)
            else:
                await self.supervisor.terminate(d, cause)
            info = d.exited.result()
            if tail is not None:  # the rest of the output, parsed and its usage recorded
                try:
                    outcome = await self.tailer.finish(tail)
                except Exception as exc:  # concluding failed: the stage still ends, saying so
                    log.exception("reading the end of %s failed", d.log_path)
                    outcome = Outcome(error=f"tacx could not read the agent's output: {exc!r}")
        finally:
            if tail is not None and outcome is None:
                self.tailer.forget(tail)
            if timer is not None:
                timer.cancel()
            run.stoppers.discard(settle)
            self._watched.pop(d.pid, None)
            self._release_slot(provider_name)
            self.sweeper.daughter_ended()
        status = await self.outcomes.classify(run, name, spec, d, info, cause, provider_name, outcome)
        if tail is not None and status == "failed" and tail.parser.state.rate_limited:
            state = tail.parser.state  # it gave up on a rate limit: rest the provider
            self._note_rate_limit(run, name, run.stages[name].attempt, provider_name,
                                  state.error or "the agent ended rate limited", state.rate_limit_resets_at)
        return status

    def _watch_output(self, run: TaskRun, name: str, spec: StageSpec, d: Daughter, provider_name: str) -> Tail | None:
        """Agents' output is parsed as it is written (an adopted daughter's from the start:
        its usage rows are keyed by message, so nothing is counted twice)."""
        provider = self.providers.get(provider_name)
        if provider is None or provider.kind != "agent":
            return None
        # The engine needs the accounting; the log panel renders what the agent showed.
        parser = provider.parser(model=spec.model, prices=self.prices, sidecar=provider.sidecar(d.log_path),
                                 display=False)
        if not parser.streaming:
            return None
        attempt = run.stages[name].attempt
        if (name, attempt) in run.baselines:
            parser.resume_from(run.baselines[(name, attempt)])

        def deliver(tail: Tail, batch: Batch, state: AgentState) -> None:
            try:
                self._on_agent_output(run, name, attempt, provider_name, batch, state)
            except Exception:
                log.exception("recording the output of task %s stage %s failed", run.id, name)

        return self.tailer.watch(d.log_path, parser, deliver)

    def _on_agent_output(
        self, run: TaskRun, name: str, attempt: int, provider_name: str, batch: Batch, state: AgentState
    ) -> None:
        """Usage, session and what the agent said about itself reach the store (several
        times a second while it runs); the budget and rate limits are acted on here."""
        st = run.stages[name]
        st.usage[attempt] = state.usage
        self.store.write_soon(lambda c: spending.record_agent_output(
            c, task_id=run.id, stage_id=st.id, stage=name, attempt=attempt,
            usage=batch.usage, notable=batch.notable, state=state,
        ))
        if batch.shown:  # for the dashboard; a flood shows its last lines (all of it stays in the log)
            self.publish("agent.output", run.id, name, attempt=attempt,
                         events=[(e.kind, e.data) for e in batch.shown], skipped=batch.dropped)
        total, spent = st.total, run.spent()
        self.publish(
            "stage.usage", run.id, name, attempt=attempt, tokens=spending.tokens_json(total),
            cost_usd=round(total.cost_usd, 6), task_tokens=spending.tokens_json(spent),
            task_cost_usd=round(spent.cost_usd, 6), session_id=state.session_id,
        )
        limit = spending.rejected_limit(batch.notable)
        if limit:  # the agent hit a limit (a 429 it retried by itself rests nothing)
            self._note_rate_limit(run, name, attempt, provider_name, limit, state.rate_limit_resets_at)
        self._check_budget(run)

    def _note_rate_limit(
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
        asyncio.get_running_loop().call_later(until - time.time() + 0.05, self._kick)
        data = {"provider": provider_name, "until": until, "reason": why}
        self.publish("provider.cooldown", **data)
        self.store.write_soon(lambda c: records.add_event(c, None, None, "provider.cooldown", data))

    def _budget(self, run: TaskRun) -> Budget | None:
        return run.workflow.budget or self.settings.budget

    def _check_budget(self, run: TaskRun) -> None:
        """A task that passed its budget stops: its running stages (whole trees) end and
        the task fails, saying which budget and by how much."""
        if run.budget_error:
            return
        exceeded = spending.budget_exceeded(self._budget(run), run.spent(), run.budget_base)
        if exceeded is None:
            return
        run.budget_error = exceeded["error"]
        self.store.write_soon(lambda c: records.add_event(c, run.id, None, "task.budget_exceeded", exceeded))
        self.publish("task.budget_exceeded", run.id, **exceeded)
        run.interrupt("budget")


def _insert_daughter(conn: sqlite3.Connection, task_id: int, stage_id: int, stage: str, attempt: int, d: Daughter) -> None:
    conn.execute(
        "INSERT INTO daughters (task_id, stage_id, stage, attempt, pid, create_time, argv, log_path,"
        " status_path, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, stage_id, stage, attempt, d.pid, d.create_time, json.dumps(d.argv),
         str(d.log_path), str(d.status_path), d.started_at),
    )
