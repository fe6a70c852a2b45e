"""The coordinator: picks queued tasks by priority then age, runs their stages as daughters
within the worker limits, and brings everything back after a crash.

Every transition is committed (through the store's one writer) before anything acts on
it; attempt.py says how, for the start and the end of each daughter. The engine imports
no Textual: the dashboard and the headless reporter both listen to the same `EventBus`.

This module wires the parts, each handed what it needs: the scheduler (where a task waits
for a worker), the task runner (a task's stage DAG), the attempts (one daughter, from the
transaction that starts it to the one that ends it), the outcomes (where a stage's outcome
is decided), recovery, the sampler and the sweeper, and an executor per provider. Here
too: run and stop, what other terminals ask through the store, and the verbs the CLI and
the dashboard call (submit, cancel, retry, pause, kill a daughter).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from tacx.agents import spending
from tacx.agents.health import ProviderHealth
from tacx.agents.base import Provider
from tacx.agents.prices import PriceTable
from tacx.agents.registry import configured_providers, provider_kinds
from tacx.agents.tailer import Tailer
from tacx.engine.attempt import Attempts
from tacx.engine.events import EngineEvent, EventBus
from tacx.engine.executor import Daughter, Executor, Executors
from tacx.engine.ray.executor import RayExecutor
from tacx.engine.local.supervisor import LocalExecutor
from tacx.engine.outcome import Outcomes
from tacx.engine.recovery import Recovery
from tacx.engine.runner import TaskRunner
from tacx.engine.scheduler import Scheduler
from tacx.engine.state import Lifecycle, StopMode, TaskLoader, TaskRun, Watch
from tacx.engine.sweeper import Sampler, Sweeper
from tacx.home import Home
from tacx.settings import Settings
from tacx.sources.base import Source, TaskRequest
from tacx.sources.build import sources_from
from tacx.sources.poller import SourcePoller
from tacx.store import records
from tacx.store.writer import Store
from tacx.submission import (
    SubmissionError, dedupe_key_for, load_named_workflow, names_a_file, prepare_inputs, task_fields,
)

log = logging.getLogger(__name__)

EXTERNAL_POLL_SECONDS = 0.25  # how often another terminal's submit/cancel/retry is looked for


class Coordinator:
    """The engine of one home: its parts, wired; what the CLI and the dashboard hold."""

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
        executors: Mapping[str, Executor] | None = None,
        sources: Sequence[Source] | None = None,  # None: those tacx.yaml asks for
    ) -> None:
        self.home = home
        self.store = store
        self.settings = settings or Settings()
        self.bus = bus or EventBus()
        self.providers = providers or configured_providers(self.settings)
        self.prices = PriceTable.load(self.settings.prices)
        self.tailer = Tailer()
        self.cooldowns = spending.Cooldowns(self.settings)
        self.health = ProviderHealth()
        self.exit_when_idle = exit_when_idle
        self.only_task = only_task
        self.running: dict[int, TaskRun] = {}
        self.recovered = False  # every task left running by an earlier tacx is in `running` (or ended)
        self.lifecycle = Lifecycle(self.publish)
        # Daughters being watched, by pid: the sampler ends idle ones, kill_daughter any.
        self._watched: dict[int, Watch] = {}
        self.sampler = Sampler(store, self.publish, self._watched)
        self.supervisor = LocalExecutor(
            grace=self.settings.kill_grace,
            sample_interval=self.settings.sample_interval,
            on_sample=self.sampler.on_sample,
            home_root=home.root,
            use_cgroups=self.settings.cgroups != "off",
        )
        # A stage's daughter runs on the executor its `executor:` key names; otherwise on its
        # provider's (the local one unless given another). The Ray executor connects to its
        # cluster only when a stage first asks for it (or recovery finds one of its jobs).
        ray = RayExecutor(
            self.settings.executors.ray, marker_prefix=home.marker_prefix, grace=self.settings.kill_grace,
            sample_interval=self.settings.sample_interval, on_sample=self.sampler.on_sample,
        )
        self.executors = Executors(self.supervisor, executors, named={ray.name: ray})
        self.sweeper = Sweeper(self.executors, home, only_task)
        loader = TaskLoader(self.providers)
        self.scheduler = Scheduler(
            store, self.publish, self.settings, self.providers,
            cooldowns=self.cooldowns, loader=loader, lifecycle=self.lifecycle, sweeper=self.sweeper,
            running=self.running, max_workers=max_workers or self.settings.max_workers,
            exit_when_idle=exit_when_idle, only_task=only_task, health=self.health, project=home.project_root,
        )
        self.outcomes = Outcomes(store, self.publish, self.lifecycle, self.providers, self.executors, home.trees,
                                 self.health)
        self.attempts = Attempts(
            home, store, self.publish, self.settings, self.providers,
            prices=self.prices, tailer=self.tailer, executors=self.executors, scheduler=self.scheduler,
            outcomes=self.outcomes, sweeper=self.sweeper, watched=self._watched,
        )
        self.runner = TaskRunner(
            store, self.publish, lifecycle=self.lifecycle, scheduler=self.scheduler, attempts=self.attempts,
            running=self.running, trees=home.trees,
        )
        self.scheduler.runner = self.runner  # a claimed task goes on as the runner's
        self.recovery = Recovery(
            home, store, self.publish, executors=self.executors, loader=loader, scheduler=self.scheduler,
            runner=self.runner,
        )
        self.sources = SourcePoller(
            sources_from(self.settings, home) if sources is None else sources, submit=self._submit_request,
            read=store.read, bus=self.bus, publish=self.publish, retry=self.retry_task, cancel=self.cancel_task,
            remember=store.write_soon,
        )
        self._background: list[asyncio.Task[None]] = []

    # What the CLI and the dashboard read.

    @property
    def max_workers(self) -> int:
        return self.scheduler.max_workers

    @property
    def paused(self) -> bool:
        return self.scheduler.paused

    @property
    def busy(self) -> int:
        return self.scheduler.busy

    @property
    def stuck(self) -> str | None:
        """Why a run that should end when idle could not go on."""
        return self.scheduler.stuck

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Recover, then schedule until stopped (or idle, or the one task ended)."""
        for executor in self.executors.all():
            executor.start()
        self.tailer.start()
        self.scheduler.paused = await self.store.read(records.is_paused)
        await self.scheduler.restore_cooldowns()
        await self.store.read(self.health.restore)
        if self.only_task is None:
            await self.recover()
        self.recovered = True
        self.scheduler.explain_others()
        self._background = [
            asyncio.create_task(self.scheduler.pump_loop(), name="tacx-pump"),
            asyncio.create_task(self._watch_external(), name="tacx-external"),
            asyncio.create_task(self.sweeper.loop(), name="tacx-sweep"),
        ]
        self.scheduler.kick()
        try:
            if self.only_task is None:
                await self.sources.start()
            await self.lifecycle.done.wait()
        finally:
            await self._shutdown()

    async def recover(self) -> None:
        """Reconcile every `running` row with the processes that really exist."""
        await self.recovery.recover()

    def stop(self, mode: StopMode = "stop") -> None:
        """Stop: end running daughters and requeue their tasks ("stop"), or leave them
        running to be re-adopted at the next start ("leave")."""
        self.lifecycle.stop(mode)

    async def _shutdown(self) -> None:
        await self.sources.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # A claim in flight ends within one write: it puts its task back (we are stopping)
        # or, if it committed just before, goes on as a runner, which is stopped below.
        while self.scheduler.claiming:
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
        for executor in self.executors.all():
            await executor.stop()
        await self.tailer.stop()
        await self.store.flush()
        await self.bus.drain()  # slow consumers hear the last events, within a bound

    def publish(self, kind: str, task_id: int | None = None, stage: str | None = None, **data: Any) -> None:
        self.bus.publish(EngineEvent(kind, task_id, stage, data))

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
        if paused != self.scheduler.paused:
            self.scheduler.paused = paused
            self.publish("coordinator.paused" if paused else "coordinator.resumed")
        self.scheduler.queue_changed()  # tasks submitted meanwhile need their wait reason too
        self.scheduler.explain_others()
        self.scheduler.kick()

    # -- the verbs ---------------------------------------------------------------------

    async def set_paused(self, paused: bool) -> None:
        await self.store.write(lambda c: records.set_paused(c, paused))
        self.scheduler.paused = paused
        self.scheduler.pause_changed()
        self.publish("coordinator.paused" if paused else "coordinator.resumed")
        self.scheduler.kick()

    async def retry_task(self, task_id: int) -> None:
        """Queue a failed, cancelled or timed-out task again (ValueError, LookupError if not)."""
        await self.store.write(lambda c: records.retry_task(c, task_id))
        self.publish("task.retried", task_id)
        self.scheduler.queue_changed()
        self.scheduler.kick()

    async def submit(self, **task: Any) -> tuple[int, bool]:
        """Queue a task (records.insert_task's arguments); (id, created)."""
        result = await self.store.write(lambda c: records.insert_task(c, **task))
        self.publish("task.submitted", result[0], title=task.get("title"))
        self.scheduler.queue_changed()
        self.scheduler.kick()
        return result

    async def submit_workflow(
        self,
        name: str,
        inputs: Mapping[str, str],
        *,
        title: str | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        dedupe_any: bool = False,
        source: tuple[str, str | None] | None = None,
    ) -> tuple[int, bool]:
        """Queue a task of a workflow found by name in the project's or the shipped
        workflows, as sources and remote callers ask: a name only, never a path (whoever
        names it must not be able to pick any file on the machine). Inputs, title and the
        workflow's own dedupe key work as with `tacx submit` (with `dedupe_any`, a task of
        that key that ended counts too). Raises SubmissionError or WorkflowError with a
        sentence for a person."""
        if not name or name.startswith(".") or names_a_file(name):
            raise SubmissionError(f"a workflow is named here, not given as a file: {name!r}")
        kinds = provider_kinds(self.providers)
        wf, path, text = await asyncio.to_thread(load_named_workflow, self.home, name, lambda: kinds)
        values, title = prepare_inputs(wf, dict(inputs), title)
        return await self.submit(**task_fields(
            self.home.project_root, wf, path, text, inputs=values, title=title, priority=priority,
            dedupe_key=dedupe_key_for(wf, values, dedupe_key),
        ), dedupe_any=dedupe_any, **({"source": source[0], "source_url": source[1]} if source else {}))

    async def _submit_request(self, request: TaskRequest, dedupe_key: str) -> tuple[int, bool]:
        return await self.submit_workflow(
            request.workflow, request.inputs, title=request.title, priority=request.priority, dedupe_key=dedupe_key,
            dedupe_any=True,  # a source's item runs once; a new request is a new key
            source=(dedupe_key[: -len(request.key) - 1] or dedupe_key, request.url),  # "<source>:<key>"
        )

    def live_daughters(self) -> list[Daughter]:
        """Every daughter running now, whichever executor runs it (for the dashboard)."""
        return [d for executor in self.executors.all() for d in list(executor.daughters.values()) if not d.done]

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
