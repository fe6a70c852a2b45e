"""One task's stage DAG, run to its end: every ready stage started (a worker asked for
each), stages whose `when:` is not met skipped, retries after a backoff, `loop:` back to
an earlier stage, and then the task finished (or, when tacx stops, put back in the queue).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from collections.abc import Callable

from tacx.bounds import retry_delay
from tacx.engine.attempt import Attempts
from tacx.engine.events import Publish
from tacx.engine.executor import Daughter
from tacx.engine.scheduler import Scheduler, requeue_tx
from tacx.engine.state import Lifecycle, StageState, Started, StartedGrant, TaskRun
from tacx.agents.health import KIND_WORDS
from tacx.store import records
from tacx.store.writer import Store
from tacx.workspace import worktree

log = logging.getLogger(__name__)


class TaskRunner:
    """Runs each task's stages (a claimed task's first stage already started by its claim)."""

    def __init__(
        self,
        store: Store,
        publish: Publish,
        *,
        lifecycle: Lifecycle,
        scheduler: Scheduler,
        attempts: Attempts,
        running: dict[int, TaskRun],
        trees: Path,
    ) -> None:
        self.store = store
        self.publish = publish
        self.lifecycle = lifecycle
        self.scheduler = scheduler
        self.attempts = attempts
        self.running = running
        self.trees = trees

    def start_tx(self, run: TaskRun, name: str, provider_name: str, reason: str) -> Callable[[sqlite3.Connection], Started]:
        """The first stage's start transaction, committed by the claim with the task's start."""
        return self.attempts.start_tx(run, name, provider_name, reason)

    def start(self, run: TaskRun) -> None:
        """Run a task resumed after a restart (claimed tasks are run by their claim)."""
        self.running[run.id] = run
        run.runner = asyncio.create_task(self.run_task(run, None), name=f"tacx-task-{run.id}")

    async def run_task(self, run: TaskRun, first: StartedGrant | None) -> None:
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
            self.scheduler.kick()

    async def _drive(self, run: TaskRun, first: StartedGrant | None) -> None:
        """Run the stage DAG: start every ready stage, skip those whose `when` is not met."""
        wf = run.workflow
        self.attempts.check_budget(run)  # a resumed task may have spent it already
        if run.cancel.is_set() and first is not None:  # the claim's worker is not used: give it back
            self.scheduler.release_slot(first[1])
            first = None
        if wf.workspace == "worktree" and first is None and not run.adopted and not run.workspace_ready:
            # A retried or resumed task: its tree may have been cleaned meanwhile, and a tree
            # made anew needs its setup again (see prepare_worktree) before any stage starts.
            try:
                await self.attempts.prepare_worktree(run, run.folder(self.trees))
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
                    self.scheduler.release_slot(grant[1])
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

        await self.store.write(lambda c: requeue_tx(c, run.id))
        self.publish("task.interrupted", run.id)

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
        passed: dict[str, str] = {}  # candidates that failed on their access in this stage, and how
        while True:
            st.trouble = None  # set by this attempt's classification, if its agent's access failed
            if adopted is not None:
                provider = adopted_provider
                status = await self.attempts.finish_attempt(run, name, spec, adopted, adopted_provider)
                adopted = None
            else:
                started: Started | None = None
                if grant is None:
                    try:
                        provider, reason = await self.scheduler.request_slot(run, name, spec.provider, passed)
                    except asyncio.CancelledError:
                        if self.lifecycle.stopping == "leave":
                            raise
                        return st.status
                else:
                    provider, reason, started = grant
                    grant = None
                status = await self.attempts.attempt(run, name, spec, provider, reason, started)
            if status == "interrupted":
                if self.lifecycle.stopping or run.cancel.is_set():
                    return "interrupted"
                continue  # ended unseen while tacx was away: run it again (not a retry)
            if status == "failed" and st.trouble is not None and not run.cancel.is_set():
                kind, said = st.trouble
                passed[provider] = f"{provider} {KIND_WORDS[kind]} in attempt {st.attempt} of this stage ({said[:200]})"
                if any(c not in passed and self.scheduler.can_work(c, spec.env) for c in spec.provider):
                    await self._failover(run, name, provider, kind, said)
                    continue  # the next candidate, not a retry
                passed.clear()  # no other candidate: a retry may choose any of them again
            if status in ("failed", "timed_out") and st.failures <= spec.retries and not run.cancel.is_set():
                delay = retry_delay(spec.backoff, st.failures)
                if await self._backoff(run, name, delay):
                    continue
                return "cancelled"
            return status

    async def _failover(self, run: TaskRun, name: str, provider: str, kind: str, said: str) -> None:
        """The attempt failed on the agent's access (its credentials, or its API out of
        reach), not on the work: the stage goes to its next candidate at once, and the
        failure does not count against its retries."""
        st = run.stages[name]
        reason = f"{provider} {KIND_WORDS[kind]}: trying the next candidate"
        data = {"from": provider, "trouble": kind, "error": said[:300], "attempt": st.attempt}

        def pend(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE stages SET status = 'pending', failures = MAX(failures - 1, 0), wait_reason = ? WHERE id = ?",
                (reason, st.id),
            )
            records.add_event(conn, run.id, name, "stage.failover", data)

        await self.store.write(pend)
        st.status, st.failures = "pending", max(st.failures - 1, 0)
        self.publish("stage.failover", run.id, name, reason=reason, **data)

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
