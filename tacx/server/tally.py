"""The engine's events turned into Prometheus counters (tacx/server/metrics.py owns them).

Events name a task by id; labels may not (ids and titles would make a series per task).
So a few small maps say what the labels need: a task's workflow (from `task.started`, or
the engine's running task, or a batched store read for tasks never seen running), a stage's
provider (`stage.started`; a re-adopted daughter's from the engine's running task) and
model (the agent's `session` event in `agent.output`, else the stage's own `model:`), and
the stage's token totals at its last `stage.usage` event, whose totals are cumulative over
the stage's attempts: each event counts its increase. A task's entries go when it ends (or
goes back to the queue), so memory follows the running tasks, never the events.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from tacx.agents.base import Usage
from tacx.engine.events import EngineEvent
from tacx.store.records import TERMINAL_TASK_STATES

if TYPE_CHECKING:
    from tacx.engine.coordinator import Coordinator

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # a label value nobody could tell
OTHER = "other"  # a label value past the bound
# Distinct values a label takes; later ones count as "other". Worst case, the histogram has
# 30 workflows x 10 providers x 19 lines (5,700; at 50 x 20 a scrape was 3.2 MB and took 242 ms):
# bounded, whatever agents and workflows are named.
MAX_WORKFLOWS, MAX_PROVIDERS, MAX_MODELS, MAX_SOURCES = 30, 10, 30, 20
MAX_LABEL_CHARS = 100
MAX_TASKS = 20_000  # tasks remembered at once: past this (ends never heard), the oldest go
STAGE_OUTCOMES = ("succeeded", "failed", "timed_out", "cancelled", "interrupted")
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
# Seconds to hours: shell steps take a second, agents' stages minutes to hours.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
# What the tally listens to (the bus hands it nothing else: daughter.sample is the busiest).
KINDS = ("task.", "stage.", "agent.output", "source.polled", "source.failed", "source.rate_limited")

Totals = tuple[float, float, float, float, float]  # input, output, cache_read, cache_write, USD
ZERO: Totals = (0, 0, 0, 0, 0.0)
LookupWorkflows = Callable[[list[int]], Awaitable[dict[int, str]]]  # task ids -> their workflows
LOOKUP_BATCH = 500  # ended tasks whose workflows one store read finds
MAX_UNLABELLED = 100_000  # ends waiting for that read (~20 MB); past it they count as "unknown"


def _figures(usage: Usage) -> Totals:
    return (usage.input, usage.output, usage.cache_read, usage.cache_write, usage.cost_usd)


class Bounded:
    """One label's values: the first `limit` distinct ones as they are (cut to
    MAX_LABEL_CHARS), then "other": a misbehaving agent or workflow cannot grow the series."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            return UNKNOWN
        text = "".join(c if c.isprintable() else "?" for c in value.strip()[:MAX_LABEL_CHARS])
        if text in self._seen or text == UNKNOWN:
            return text
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(text)
        return text


class Counters:
    """The counters and the histogram, in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.tasks_ended = counter("tacx_tasks_ended_total", "Tasks that ended, by workflow and final state.",
                                   ("workflow", "state"))
        self.stage_runs = counter("tacx_stage_runs_total", "Stage attempts that ended, by outcome.",
                                  ("workflow", "provider", "outcome"))
        self.stage_duration = Histogram(
            "tacx_stage_duration_seconds", "How long a stage attempt's daughter ran.", ("workflow", "provider"),
            buckets=DURATION_BUCKETS, registry=registry,
        )
        self.tokens = counter("tacx_tokens_total", "Tokens agents used, by kind.", ("provider", "model", "kind"))
        self.cost = counter("tacx_cost_usd_total", "What agents cost, in US dollars.", ("provider", "model"))
        self.retries = counter("tacx_stage_retries_total", "Stage retries after a failure or timeout.",
                               ("workflow", "provider"))
        self.timeouts = counter("tacx_stage_timeouts_total", "Stage attempts ended by a timeout or idle timeout.",
                                ("workflow", "provider"))
        self.budget_stops = counter("tacx_budget_stops_total", "Tasks stopped for passing their budget.",
                                    ("workflow",))
        self.readoptions = counter("tacx_readoptions_total",
                                   "Daughters found again by recovery after a restart (re-adopted, or their end read).")
        self.source_polls = counter("tacx_source_polls_total", "Polls of a task source that succeeded.", ("source",))
        self.source_errors = counter("tacx_source_errors_total", "Polls of a task source that failed or were"
                                     " rate limited.", ("source",))


@dataclass
class StageSeen:
    provider: str | None = None
    model: str | None = None
    attempt: int | None = None  # the attempt of the last usage event
    last: Totals | None = None  # the stage's totals (all its attempts) at the last usage event


@dataclass
class TaskSeen:
    workflow: str | None = None
    stages: dict[str, StageSeen] = field(default_factory=dict)


class Tally:
    """The bus consumer: quick, synchronous, its maps bounded by the running tasks."""

    def __init__(self, coordinator: Coordinator, counters: Counters, lookup_workflows: LookupWorkflows) -> None:
        self.coordinator = coordinator
        self.counters = counters
        self.lookup_workflows = lookup_workflows
        self.tasks: dict[int, TaskSeen] = {}
        # Ends of tasks never seen running (their end states, by task), counted once one
        # read in batches says their workflows: one reader, however many end at once (a
        # `tacx cancel` of 100,000 queued tasks made a task and a thread hop each: 500 MB).
        self.unlabelled: dict[int, list[str]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.workflows, self.providers = Bounded(MAX_WORKFLOWS), Bounded(MAX_PROVIDERS)
        self.models, self.sources = Bounded(MAX_MODELS), Bounded(MAX_SOURCES)
        self._handlers: dict[str, Callable[[EngineEvent], None]] = {
            "task.started": self._task_started,
            "stage.started": self._stage_started,
            "agent.output": self._agent_output,
            "stage.usage": self._usage,
            "stage.retrying": self._retrying,
            "task.budget_exceeded": self._budget,
            "task.recovered": self._recovered,
            "task.interrupted": self._forget,
            "source.polled": lambda e: self.counters.source_polls.labels(self.sources(e.data.get("source"))).inc(),
            "source.failed": self._source_error,
            "source.rate_limited": self._source_error,
        }
        for outcome in STAGE_OUTCOMES:
            self._handlers[f"stage.{outcome}"] = self._stage_ended
        for state in TERMINAL_TASK_STATES:
            self._handlers[f"task.{state}"] = self._task_ended

    def __call__(self, event: EngineEvent) -> None:
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(event)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()

    # -- what the labels need ------------------------------------------------------------

    def _task(self, task_id: int | None) -> TaskSeen:
        key = task_id or 0
        seen = self.tasks.get(key)
        if seen is None:
            if len(self.tasks) >= MAX_TASKS:  # ends never heard (a stop that left tasks running)
                del self.tasks[next(iter(self.tasks))]
            seen = self.tasks[key] = TaskSeen()
        return seen

    def _stage(self, event: EngineEvent) -> StageSeen:
        stages = self._task(event.task_id).stages
        seen = stages.get(event.stage or "")
        if seen is None:
            seen = stages[event.stage or ""] = StageSeen()
        return seen

    def _workflow(self, task_id: int | None) -> str | None:
        seen = self.tasks.get(task_id or 0)
        if seen is not None and seen.workflow:
            return seen.workflow
        run = self.coordinator.running.get(task_id or 0)
        return run.workflow.name if run is not None else None

    def _provider(self, event: EngineEvent) -> str:
        seen = self._stage(event)
        if seen.provider is None:  # a daughter re-adopted after a restart: its provider is the engine's
            run = self.coordinator.running.get(event.task_id or 0)
            adopted = run.adopted.get(event.stage or "") if run is not None else None
            seen.provider = adopted[1] if adopted else None
        return self.providers(seen.provider)

    def _model(self, event: EngineEvent, seen: StageSeen) -> str:
        if seen.model is None:  # the agent named none (yet): the stage's own `model:`, the provider's default
            run = self.coordinator.running.get(event.task_id or 0)
            spec_model = next((s.model for s in run.workflow.stages if s.name == event.stage), None) if run else None
            provider = self.coordinator.providers.get(seen.provider or "")
            return self.models(spec_model or getattr(provider, "default_model", None))
        return self.models(seen.model)

    # -- the handlers --------------------------------------------------------------------

    def _task_started(self, event: EngineEvent) -> None:
        self._task(event.task_id).workflow = event.data.get("workflow")

    def _recovered(self, event: EngineEvent) -> None:
        adopted = event.data.get("adopted") or []
        if adopted:
            self.counters.readoptions.inc(len(adopted))
        # Recovery hands the task to its runner right after this event: then the engine
        # says its workflow and the re-adopted daughters' providers (they get no stage.started).
        asyncio.get_running_loop().call_soon(self._learn_recovered, event.task_id)

    def _learn_recovered(self, task_id: int | None) -> None:
        run = self.coordinator.running.get(task_id or 0)
        if run is None:
            return
        seen = self._task(task_id)
        seen.workflow = run.workflow.name
        for stage, (_, provider) in run.adopted.items():
            seen.stages.setdefault(stage, StageSeen()).provider = provider

    def _stage_started(self, event: EngineEvent) -> None:
        """A new attempt may run elsewhere (a failover to the next candidate): its provider
        is this one, its model the one its agent names."""
        seen = self._stage(event)
        seen.provider = event.data.get("provider") or seen.provider
        seen.model = None

    def _agent_output(self, event: EngineEvent) -> None:
        seen = self._stage(event)
        for kind, data in reversed(event.data.get("events") or ()):
            if kind == "session" and isinstance(data, dict) and data.get("model"):
                seen.model = data["model"]
                return

    def _usage(self, event: EngineEvent) -> None:
        attempt = event.data.get("attempt")
        now, this = self._totals(event, attempt)
        if now is None:
            return
        seen = self._stage(event)
        if seen.attempt != attempt or seen.last is None:
            # The attempt's first usage: the stage's totals hold its earlier attempts too
            # (counted already, or before this process): those are the baseline, from the
            # engine when it runs the task, else as this tally last saw them.
            seen.attempt = attempt
            if this is not None:
                seen.last = tuple(max(0.0, n - m) for n, m in zip(now, this))  # type: ignore[assignment]
            elif seen.last is None:
                seen.last = ZERO
        assert seen.last is not None
        increase = [max(0.0, n - last) for n, last in zip(now, seen.last)]  # a counter never goes down
        # A stale total (an event older than the last one heard) lowers nothing: were it kept
        # as the baseline, the next event would count again what was counted already.
        seen.last = tuple(max(n, last) for n, last in zip(now, seen.last))  # type: ignore[assignment]
        provider, model = self._provider(event), self._model(event, seen)
        for kind, amount in zip(TOKEN_KINDS, increase):
            if amount:
                self.counters.tokens.labels(provider, model, kind).inc(amount)
        if increase[4]:
            self.counters.cost.labels(provider, model).inc(increase[4])

    def _totals(self, event: EngineEvent, attempt: Any) -> tuple[Totals | None, Totals | None]:
        """(the stage's totals, this attempt's), from the engine's running task, which set
        them just before publishing (exact dollars: the event's are rounded to 6 places);
        else the event's totals alone."""
        run = self.coordinator.running.get(event.task_id or 0)
        stage = run.stages.get(event.stage or "") if run is not None else None
        if stage is not None and attempt in stage.usage:
            return _figures(stage.total), _figures(stage.usage[attempt])
        tokens = event.data.get("tokens")
        try:
            return (*(float(tokens.get(k, 0)) for k in TOKEN_KINDS), float(event.data.get("cost_usd") or 0.0)), None  # type: ignore[union-attr, return-value]
        except (AttributeError, TypeError, ValueError):
            return None, None

    def _stage_ended(self, event: EngineEvent) -> None:
        outcome = event.kind.removeprefix("stage.")
        workflow, provider = self.workflows(self._workflow(event.task_id)), self._provider(event)
        self.counters.stage_runs.labels(workflow, provider, outcome).inc()
        duration = event.data.get("duration")
        if isinstance(duration, (int, float)) and duration >= 0:
            self.counters.stage_duration.labels(workflow, provider).observe(duration)
        if outcome == "timed_out":
            self.counters.timeouts.labels(workflow, provider).inc()

    def _retrying(self, event: EngineEvent) -> None:
        self.counters.retries.labels(self.workflows(self._workflow(event.task_id)), self._provider(event)).inc()

    def _budget(self, event: EngineEvent) -> None:
        self.counters.budget_stops.labels(self.workflows(self._workflow(event.task_id))).inc()

    def _task_ended(self, event: EngineEvent) -> None:
        state = event.kind.removeprefix("task.")
        workflow = self._workflow(event.task_id)
        self._forget(event)
        if workflow is not None or event.task_id is None:
            self.counters.tasks_ended.labels(self.workflows(workflow), state).inc()
            return
        # Never seen running (cancelled while queued, a workflow that no longer loads): read.
        if len(self.unlabelled) >= MAX_UNLABELLED and event.task_id not in self.unlabelled:
            self.counters.tasks_ended.labels(UNKNOWN, state).inc()  # the store is far behind: unlabelled
            return
        self.unlabelled.setdefault(event.task_id, []).append(state)
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(self._count_ends_later(), name="tacx-metrics-ends")

    async def _count_ends_later(self) -> None:
        while self.unlabelled:
            batch = dict(itertools.islice(self.unlabelled.items(), LOOKUP_BATCH))
            for task_id in batch:
                del self.unlabelled[task_id]
            try:
                workflows = await self.lookup_workflows(list(batch))
            except Exception as exc:  # noqa: BLE001 - the counts go on, unlabelled
                log.warning("metrics could not read %d ended tasks' workflows: %s", len(batch), exc)
                workflows = {}
            for task_id, states in batch.items():
                for state in states:
                    self.counters.tasks_ended.labels(self.workflows(workflows.get(task_id)), state).inc()

    def _forget(self, event: EngineEvent) -> None:
        self.tasks.pop(event.task_id or 0, None)

    def _source_error(self, event: EngineEvent) -> None:
        self.counters.source_errors.labels(self.sources(event.data.get("source"))).inc()
