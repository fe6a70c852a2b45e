"""Recovery at start: every `running` row reconciled with what really exists. Daughters
still alive are re-adopted, those that ended while tacx was away are concluded from what
their executor kept, one started but never recorded is found by its marker, daughters of
tasks no longer running are ended, and stragglers left by no known daughter go."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from tacx.agents.scripts import workflow_command
from tacx.engine.attempt import insert_daughter
from tacx.engine.events import Publish
from tacx.engine.executor import Daughter, Executor, Executors
from tacx.engine.outcome import close_daughter
from tacx.engine.runner import TaskRunner
from tacx.engine.scheduler import Scheduler
from tacx.engine.state import StageState, TaskLoader, TaskRun, marker, stage_rows
from tacx.home import Home
from tacx.store import records
from tacx.store.writer import Store


class Recovery:
    """Brings back the tasks an earlier tacx left running, and their daughters."""

    def __init__(
        self,
        home: Home,
        store: Store,
        publish: Publish,
        *,
        executors: Executors,
        loader: TaskLoader,
        scheduler: Scheduler,
        runner: TaskRunner,
    ) -> None:
        self.home = home
        self.store = store
        self.publish = publish
        self.executors = executors
        self.loader = loader
        self.scheduler = scheduler
        self.runner = runner

    def _marker(self, task_id: int, stage: str, attempt: int) -> str:
        return marker(self.home.marker_prefix, task_id, stage, attempt)

    async def recover(self) -> None:
        """Reconcile every `running` row with the processes that really exist."""

        def load(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row], list[sqlite3.Row]]:
            tasks = conn.execute("SELECT * FROM tasks WHERE status = 'running' ORDER BY id").fetchall()
            # With its stage's provider: that provider's executor knows it.
            daughters = conn.execute(
                "SELECT d.*, s.provider FROM daughters d JOIN stages s ON s.id = d.stage_id WHERE d.ended_at IS NULL"
            ).fetchall()
            stages = conn.execute(
                "SELECT s.task_id, s.name, s.attempt FROM stages s JOIN tasks t ON t.id = s.task_id"
                " WHERE s.status = 'running' AND t.status = 'running'"
            ).fetchall()
            return tasks, daughters, stages

        tasks, open_daughters, running_stages = await self.store.read(load)
        alive = await asyncio.to_thread(lambda: {
            d["id"] for d in open_daughters
            if self._executor_of(d).is_running(d["pid"], d["create_time"], self._marker(d["task_id"], d["stage"], d["attempt"]))
        })
        keep = {self._marker(d["task_id"], d["stage"], d["attempt"]) for d in open_daughters if d["id"] in alive}
        # A daughter started just before the crash may have no row yet: its stage's current
        # attempt is looked for by marker below, not ended as a straggler.
        keep |= {self._marker(s["task_id"], s["name"], s["attempt"]) for s in running_stages}
        ended: list[int] = []
        for executor in self.executors.all():
            ended += await executor.sweep_stragglers(self.home.marker_prefix, lambda: keep)
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
        for executor in self.executors.all():
            await executor.sweep_leftovers()

    def _executor_of(self, d: sqlite3.Row) -> Executor:
        """The executor that ran a recorded daughter: the one its row names."""
        return self.executors.recorded(d["executor"], d["provider"])

    async def _close_orphan_daughter(self, d: sqlite3.Row) -> None:
        executor = self._executor_of(d)
        daughter = executor.adopt(**self._adopt_args(d))
        if not daughter.done:
            await executor.terminate(daughter, "its task is no longer running")
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
            await self.scheduler.fail_unloadable(row["id"], exc)
            return
        interrupted: list[str] = []
        unrecorded: list[str] = []
        for st in run.stages.values():
            if st.status != "running":
                continue
            provider = await self.store.read(
                lambda c, sid=st.id: c.execute("SELECT provider FROM stages WHERE id = ?", (sid,)).fetchone()[0]
            )
            d = open_by_stage.get(st.id)
            if d is not None:
                daughter: Daughter | None = self._executor_of(d).adopt(**self._adopt_args(d))
            else:  # crashed between the stage's start and its daughter's row: the stage says where it ran
                executor = self.executors.for_stage(run.workflow.stage(st.name).executor, provider)
                daughter = await self._find_unrecorded(run, st, executor)
                if daughter is None:
                    interrupted.append(st.name)  # it never started, or nothing can tell how it ended
                    continue
                unrecorded.append(st.name)
            run.adopted[st.name] = (daughter, provider or "")
            self.scheduler.take_slot(provider or "")

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
        self.runner.start(run)

    async def _find_unrecorded(self, run: TaskRun, st: StageState, executor: Executor) -> Daughter | None:
        """A running stage whose daughter has no row: tacx died between starting it and
        recording it. Its daughter is found alive by its marker, or its end is read from
        the status file the keeper wrote; either way it gets its row, and the stage is
        concluded from it instead of run again. None when it never started."""
        log_path = self.home.stage_log(run.id, st.name, st.attempt)
        started_at = await self.store.read(
            lambda c: c.execute("SELECT started_at FROM stages WHERE id = ?", (st.id,)).fetchone()[0]
        )
        daughter = await executor.find_unrecorded(
            self._marker(run.id, st.name, st.attempt), log_path, log_path.with_suffix(".status"), started_at or 0.0
        )
        if daughter is not None:
            if daughter.argv:  # its command line, read from the process: the workflow's command shown
                daughter.command = await asyncio.to_thread(workflow_command, daughter.argv)
            await self.store.write(lambda c: insert_daughter(c, run.id, st.id, st.name, st.attempt, daughter))
        return daughter
