"""GET /metrics and GET /health as modules: a real coordinator on a real store runs real
tasks (shell, bash, the mock agent), and the Prometheus text is parsed back with the client
library's own parser and checked against figures worked out by hand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tacx
from tacx.engine.coordinator import Coordinator
from tacx.home import Home
from tacx.server import metrics as metrics_module
from tacx.server import tally as tally_module
from tacx.server.health import HEARTBEAT_KEY, coordinator_running, health_report
from tacx.server.metrics import CONTENT_TYPE, EngineMetrics
from tacx.settings import Settings
from tacx.store import records
from tacx.store.database import connect, transaction
from tacx.store.errors import StoreError
from tacx.store.writer import Store
from tacx.workflow.loader import load_workflow_text

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# The mock agent with --seed 7 --turns 1 says (two messages, then its result):
#   msg 1: input 23, cache_write 6471, cache_read 3617,  output 186
#   msg 2: input 9,  cache_write 785,  cache_read 14997, output 448
#   total: input 32, cache_write 7256, cache_read 18614, output 634
#   USD at its Sonnet prices (3, 15, 0.30, 3.75 per million):
#   (32*3 + 634*15 + 18614*0.30 + 7256*3.75) / 1e6 = (96 + 9510 + 5584.2 + 27210) / 1e6 = 0.0424002
MOCK = "extra_args: [--think, '0', --turns, '1', --seed, '7']"
TITLE = "SECRET-TITLE-do-not-label"


def queue(home: Home, text: str, count: int = 1, title: str = TITLE) -> list[int]:
    """Tasks straight into the store, as `tacx submit` makes them, each titled `title`."""
    wf = load_workflow_text(text, "test.yaml")
    conn = connect(home.db_path)
    with transaction(conn):
        ids = records.queue_workflow(conn, wf, path="test.yaml", text=text, project_root=str(home.project_root),
                                     inputs=[{}] * count, titles=[title] * count)
    conn.close()
    return ids


def parse(text: bytes) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def L(**labels: str) -> frozenset[tuple[str, str]]:  # noqa: N802 - reads as a label set
    return frozenset(labels.items())


async def until(predicate, what: str, limit: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for a state nothing announces (polling the coordinator's attributes)."""
    for _ in range(int(limit / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def attached(tmp_path: Path) -> AsyncIterator[tuple[Home, Coordinator, EngineMetrics]]:
    """A coordinator on a new store (not running: its events are published by hand) and
    metrics attached to it."""
    home = Home(tmp_path / ".tacx")
    store = await Store(home.db_path).open()
    try:
        coordinator = Coordinator(home, store)
        metrics = EngineMetrics(coordinator)
        metrics.attach()
        yield home, coordinator, metrics
        metrics.detach()
    finally:
        await store.close()


async def test_real_tasks_are_counted_by_hand_and_no_label_names_a_task(tmp_path: Path) -> None:
    home = Home(tmp_path / ".tacx")
    ids = queue(home, "name: ok\nstages:\n  - {name: a, provider: shell, run: 'true'}\n", 2)
    ids += queue(home, "name: bad\nstages:\n  - {name: b, provider: shell, run: 'exit 3', retries: 1, backoff: 0.05s}\n")
    ids += queue(home, "name: slow\nstages:\n  - {name: c, provider: bash, run: 'sleep 30', timeout: 1s}\n")
    ids += queue(home, f"name: agent\nstages:\n  - {{name: think, provider: mock, prompt: count, {MOCK}}}\n")
    # Fails after its normal result, twice: both attempts' tokens count, the first not twice.
    ids += queue(home, "name: flaky\nstages:\n  - {name: think, provider: mock, prompt: count, model: mock-flaky,"
                       " retries: 1, backoff: 0.05s, extra_args: [--think, '0', --turns, '1', --seed, '7',"
                       " --exit-code, '1']}\n")
    ids += queue(home, "name: capped\nbudget: {usd: 0.01}\nstages:\n"
                       "  - {name: think, provider: mock, prompt: count, model: mock-capped, " + MOCK[:-1] + "]}\n")
    store = await Store(home.db_path).open()
    try:
        coordinator = Coordinator(home, store, Settings(sample_interval=0.2), exit_when_idle=True, max_workers=3)
        metrics = EngineMetrics(coordinator)
        metrics.attach()
        await asyncio.wait_for(coordinator.run(), 60)
        text = await metrics.exposition()
        status, body = await health_report(coordinator, store)
    finally:
        await store.close()
    got = parse(text)

    assert series(got, "tacx_tasks_ended_total") == {
        L(workflow="ok", state="succeeded"): 2, L(workflow="bad", state="failed"): 1,
        L(workflow="slow", state="timed_out"): 1, L(workflow="agent", state="succeeded"): 1,
        L(workflow="flaky", state="failed"): 1, L(workflow="capped", state="failed"): 1,
    }
    runs = series(got, "tacx_stage_runs_total")
    assert {k: v for k, v in runs.items() if ("workflow", "capped") not in k} == {
        L(workflow="ok", provider="shell", outcome="succeeded"): 2,
        L(workflow="bad", provider="shell", outcome="failed"): 2,
        L(workflow="slow", provider="bash", outcome="timed_out"): 1,
        L(workflow="agent", provider="mock", outcome="succeeded"): 1,
        L(workflow="flaky", provider="mock", outcome="failed"): 2,
    }
    assert value(got, "tacx_stage_duration_seconds_count", workflow="bad", provider="shell") == 2
    assert value(got, "tacx_stage_duration_seconds_bucket", workflow="slow", provider="bash", le="0.5") == 0
    assert value(got, "tacx_stage_duration_seconds_bucket", workflow="slow", provider="bash", le="+Inf") == 1
    assert value(got, "tacx_stage_duration_seconds_bucket", workflow="ok", provider="shell", le="+Inf") == 2
    assert series(got, "tacx_stage_retries_total") == {L(workflow="bad", provider="shell"): 1,
                                                       L(workflow="flaky", provider="mock"): 1}
    assert series(got, "tacx_stage_timeouts_total") == {L(workflow="slow", provider="bash"): 1}
    assert series(got, "tacx_budget_stops_total") == {L(workflow="capped"): 1}
    assert value(got, "tacx_readoptions_total") == 0

    tokens = {k: v for k, v in series(got, "tacx_tokens_total").items() if ("model", "mock-capped") not in k}
    assert tokens == {
        L(provider="mock", model="mock-sonnet", kind="input"): 32,
        L(provider="mock", model="mock-sonnet", kind="output"): 634,
        L(provider="mock", model="mock-sonnet", kind="cache_read"): 18614,
        L(provider="mock", model="mock-sonnet", kind="cache_write"): 7256,
        L(provider="mock", model="mock-flaky", kind="input"): 64,
        L(provider="mock", model="mock-flaky", kind="output"): 1268,
        L(provider="mock", model="mock-flaky", kind="cache_read"): 37228,
        L(provider="mock", model="mock-flaky", kind="cache_write"): 14512,
    }
    assert value(got, "tacx_cost_usd_total", provider="mock", model="mock-sonnet") == pytest.approx(0.0424002, abs=1e-12)
    assert value(got, "tacx_cost_usd_total", provider="mock", model="mock-flaky") == pytest.approx(0.0848004, abs=1e-12)
    assert (value(got, "tacx_cost_usd_total", provider="mock", model="mock-capped") or 0) > 0.01

    assert series(got, "tacx_tasks") == {
        L(state="queued"): 0, L(state="running"): 0, L(state="succeeded"): 3, L(state="failed"): 3,
        L(state="cancelled"): 0, L(state="timed_out"): 1,
    }
    assert value(got, "tacx_queue_depth") == 0
    assert value(got, "tacx_workers_max") == 3 and value(got, "tacx_workers_busy") == 0
    assert value(got, "tacx_running_daughters") == 0 and value(got, "tacx_paused") == 0
    assert value(got, "tacx_up") == 0  # it ended when idle
    (build,) = series(got, "tacx_build_info")
    assert dict(build)["version"] == tacx.__version__
    assert CONTENT_TYPE.startswith("text/plain; version=")

    labels = {v for (_, ls) in got for _, v in ls}
    assert not [v for v in labels if TITLE in v or v.isdigit() or v in {str(i) for i in ids}]
    # Ended when idle: its engine no longer runs, though its store is writable.
    assert status == 503 and body["status"] == "failing"
    assert body["coordinator"]["running"] is False and body["store"]["writable"] is True


async def test_health_while_running_paused_and_after_the_store_refuses(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(metrics_module, "CACHE_SECONDS", 0.0)
    home = Home(tmp_path / ".tacx")
    store = await Store(home.db_path).open()
    coordinator = Coordinator(home, store, Settings(sample_interval=0.2))
    metrics = EngineMetrics(coordinator)
    metrics.attach()
    running = asyncio.create_task(coordinator.run())
    try:
        await until(lambda: coordinator_running(coordinator), "the coordinator runs")
        status, body = await health_report(coordinator, store)
        assert status == 200 and body["status"] == "ok" and body["version"] == tacx.__version__
        assert body["coordinator"] == {"running": True, "paused": False, "stopping": None, "workers_busy": 0,
                                       "max_workers": 4, "tasks_running": 0}
        assert body["store"]["writable"] is True and body["store"]["error"] is None and body["sources"] == []
        beat = await store.read(lambda c: c.execute("SELECT value FROM meta WHERE key = ?", (HEARTBEAT_KEY,)).fetchone())
        assert beat is not None  # the writer really committed

        await coordinator.set_paused(True)
        status, body = await health_report(coordinator, store)
        assert status == 200 and body["coordinator"]["paused"] is True  # reported, not a failure
        (task,) = queue(home, "name: later\nstages:\n  - {name: a, provider: shell, run: 'true'}\n")
        got = parse(await metrics.exposition())
        assert value(got, "tacx_paused") == 1 and value(got, "tacx_up") == 1
        assert value(got, "tacx_queue_depth") == 1 and value(got, "tacx_tasks", state="queued") == 1
        # Cancelled while queued: never seen running, its workflow is read once from the store.
        assert await coordinator.cancel_task(task) == "cancelled"
        assert metrics.tally.reader is not None
        await metrics.tally.reader
        got = parse(await metrics.exposition())
        assert series(got, "tacx_tasks_ended_total") == {L(workflow="later", state="cancelled"): 1}
        assert value(got, "tacx_tasks", state="cancelled") == 1 and value(got, "tacx_queue_depth") == 0

        # The disk refuses a write (the file may not grow): the store is not writable.
        pages = await store.read(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.read(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
        with pytest.raises(StoreError):
            await store.write(lambda c: c.execute("INSERT INTO meta VALUES ('big', zeroblob(200000))"))
        await store.read(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        status, body = await health_report(coordinator, store)
        assert status == 503 and body["status"] == "failing" and body["coordinator"]["running"] is True
        assert body["store"]["writable"] is False and "cannot grow" in body["store"]["error"]
    finally:
        coordinator.stop()
        await asyncio.wait_for(running, 30)
        status, body = await health_report(coordinator, store)
        await store.close()
    assert status == 503 and body["coordinator"]["running"] is False and body["coordinator"]["stopping"] == "stop"


async def test_a_daughter_readopted_after_a_restart_is_counted_with_its_provider(tmp_path: Path) -> None:
    home = Home(tmp_path / ".tacx")
    gate = tmp_path / "gate"
    queue(home, f"name: g\nstages:\n  - {{name: s, provider: bash, run: 'while [ ! -e {gate} ]; do sleep 0.05; done'}}\n")
    store = await Store(home.db_path).open()
    try:
        first = Coordinator(home, store)
        running = asyncio.create_task(first.run())
        await until(lambda: first.supervisor.daughters, "the daughter starts")
        first.stop("leave")  # quit, leaving it running for the next start
        await asyncio.wait_for(running, 30)
        second = Coordinator(home, store, exit_when_idle=True)
        metrics = EngineMetrics(second)
        metrics.attach()  # before run: recovery's events are heard
        running = asyncio.create_task(second.run())
        await until(lambda: second.recovered, "recovery ends")
        gate.touch()
        await asyncio.wait_for(running, 30)
        got = parse(await metrics.exposition())
    finally:
        await store.close()
    assert value(got, "tacx_readoptions_total") == 1
    assert series(got, "tacx_stage_runs_total") == {L(workflow="g", provider="bash", outcome="succeeded"): 1}
    assert series(got, "tacx_tasks_ended_total") == {L(workflow="g", state="succeeded"): 1}


async def test_memory_stays_bounded_over_many_events_and_labels_stay_few(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """60,000 events of 5,000 tasks through the real bus: every task's entries go at its
    end, a label takes at most its bound of values, and tasks whose end is never
    heard are forgotten past MAX_TASKS."""
    async with attached(tmp_path) as (_, coordinator, metrics):
        publish = coordinator.publish
        for task in range(1, 5001):
            workflow = f"wf{task % 150}"  # 150 names: 30 kept, the rest "other"
            publish("task.started", task, title=f"{TITLE}{task}", workflow=workflow)
            publish("stage.started", task, "s", attempt=1, provider="mock")
            publish("agent.output", task, "s", attempt=1, events=[("session", {"session_id": "x", "model": "m1"})])
            for step in (1, 2, 3):  # cumulative totals: 10, 20, 30 input tokens; $0.25 a step
                publish("stage.usage", task, "s", attempt=1, tokens={"input": 10 * step, "output": step},
                        cost_usd=0.25 * step)
            publish("stage.failed", task, "s", attempt=1, duration=2.0)
            publish("stage.retrying", task, "s", delay=0.1)
            publish("stage.started", task, "s", attempt=2, provider="mock")
            publish("agent.output", task, "s", attempt=2, events=[("session", {"session_id": "y", "model": "m1"})])
            publish("stage.usage", task, "s", attempt=2, tokens={"input": 35, "output": 4}, cost_usd=1.0)
            publish("stage.succeeded", task, "s", attempt=2, duration=1.0)
            publish("task.succeeded", task, title=f"{TITLE}{task}")
        assert metrics.tally.tasks == {}
        got = parse(await metrics.exposition())
        # Per task: attempt 1 counts 30 input, 3 output, $0.75; attempt 2 only what it added
        # over the stage's 30/3/$0.75: 5 input, 1 output, $0.25.
        assert series(got, "tacx_tokens_total") == {L(provider="mock", model="m1", kind="input"): 5000 * 35,
                                                    L(provider="mock", model="m1", kind="output"): 5000 * 4}
        assert value(got, "tacx_cost_usd_total", provider="mock", model="m1") == 5000 * 1.0
        # Tasks 1-30 name wf1-wf30 first: those are kept (wf1 is tasks 1, 151, ..., 4951: 34;
        # so is wf30: 30, ..., 4980). wf0 (150, ..., 4950) and wf31-wf149 are "other":
        # 5000 - 30 * 34 = 3980 tasks.
        ended = series(got, "tacx_tasks_ended_total")
        assert len(ended) == 31 and ended[L(workflow="other", state="succeeded")] == 3980
        assert ended[L(workflow="wf1", state="succeeded")] == 34 and ended[L(workflow="wf30", state="succeeded")] == 34
        assert L(workflow="wf0", state="succeeded") not in ended and L(workflow="wf31", state="succeeded") not in ended
        assert value(got, "tacx_stage_duration_seconds_count", workflow="wf1", provider="mock") == 68
        labels = {v for (_, ls) in got for _, v in ls}
        assert not [v for v in labels if TITLE in v or v.isdigit()]

        monkeypatch.setattr(tally_module, "MAX_TASKS", 100)
        for task in range(10_001, 10_301):  # started, never heard to end
            publish("task.started", task, workflow="wf1")
        assert len(metrics.tally.tasks) == 100 and 10_300 in metrics.tally.tasks
        metrics.detach()
        publish("task.succeeded", 10_300)
        assert metrics.tally.tasks  # detached: it hears nothing more


async def test_a_scrape_survives_a_store_it_cannot_read(tmp_path: Path) -> None:
    """The store's counts are left out (said in the log), the rest is served."""
    home = Home(tmp_path / ".tacx")
    store = await Store(home.db_path).open()
    try:
        metrics = EngineMetrics(Coordinator(home, store))
        metrics.store_counts.path = tmp_path / "elsewhere" / "gone.db"
        got = parse(await metrics.exposition())
        assert series(got, "tacx_tasks") == {} and value(got, "tacx_workers_max") == 4
    finally:
        await store.close()


class Flaky:
    """A source whose far side fails once, then answers with nothing to do."""

    name, interval = "tracker", 60.0

    def __init__(self) -> None:
        self.polls = 0

    async def poll(self) -> list[object]:
        self.polls += 1
        if self.polls == 1:
            raise ConnectionError("tracker.example: connection refused")
        return []

    async def task_ended(self, end: object) -> None:
        return None


async def test_source_polls_and_errors_are_counted_and_health_says_each_state(tmp_path: Path) -> None:
    home = Home(tmp_path / ".tacx")
    store = await Store(home.db_path).open()
    try:
        source = Flaky()
        coordinator = Coordinator(home, store, sources=[source])
        metrics = EngineMetrics(coordinator)
        metrics.attach()
        (entry,) = (await health_report(coordinator, store))[1]["sources"]
        assert entry["name"] == "tracker" and entry["state"] == "waiting"
        await coordinator.sources.poll_once(source)
        (entry,) = (await health_report(coordinator, store))[1]["sources"]
        assert entry["state"] == "failing" and entry["failures"] == 1
        assert entry["last_error"] == "tracker.example: connection refused"
        await coordinator.sources.poll_once(source)
        (entry,) = (await health_report(coordinator, store))[1]["sources"]
        assert entry["state"] == "ok" and isinstance(entry["last_poll"], float)
        got = parse(await metrics.exposition())
        assert series(got, "tacx_source_polls_total") == {L(source="tracker"): 1}
        assert series(got, "tacx_source_errors_total") == {L(source="tracker"): 1}
    finally:
        await store.close()


async def test_a_writer_that_cannot_commit_is_not_writable(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Another connection holds the write lock: the heartbeat does not commit in time."""
    from tacx.server import health

    monkeypatch.setattr(health, "HEARTBEAT_SECONDS", 0.0)
    monkeypatch.setattr(health, "HEARTBEAT_TIMEOUT", 0.3)
    home = Home(tmp_path / ".tacx")
    store = await Store(home.db_path).open()
    holder = connect(home.db_path)
    try:
        coordinator = Coordinator(home, store)
        assert (await health_report(coordinator, store))[1]["store"]["writable"] is True
        holder.execute("BEGIN IMMEDIATE")
        status, body = await health_report(coordinator, store)
        assert status == 503 and body["store"]["writable"] is False
        assert "did not commit within 0.3s" in body["store"]["error"]
        holder.execute("COMMIT")
        await store.flush()  # the heartbeat left waiting commits now
        assert (await health_report(coordinator, store))[1]["store"]["writable"] is True
        # Heartbeats an hour apart: one that commits late clears its error at once, not an
        # hour later (a busy writer is not a failing store; a probe would restart tacx).
        monkeypatch.setattr(health, "HEARTBEAT_SECONDS", 3600.0)
        health._beats.clear()
        holder.execute("BEGIN IMMEDIATE")
        assert (await health_report(coordinator, store))[1]["store"]["writable"] is False
        holder.execute("COMMIT")
        await store.flush()
        status, body = await health_report(coordinator, store)
        assert body["store"]["writable"] is True and body["store"]["error"] is None
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        await store.close()


async def test_a_stale_usage_total_is_not_counted_again(tmp_path: Path) -> None:
    """Cumulative totals of one attempt heard as 30, then a stale 10, then 30: 30 tokens and
    $3 in all, not 50 and $5 (the stale total must not become the baseline)."""
    async with attached(tmp_path) as (_, coordinator, metrics):
        coordinator.publish("task.started", 1, workflow="w")
        coordinator.publish("stage.started", 1, "s", attempt=1, provider="mock")
        coordinator.publish("agent.output", 1, "s", attempt=1, events=[("session", {"model": "m1"})])
        for total in (30, 10, 30):
            coordinator.publish("stage.usage", 1, "s", attempt=1, tokens={"input": total}, cost_usd=total / 10)
        got = parse(await metrics.exposition())
    assert series(got, "tacx_tokens_total") == {L(provider="mock", model="m1", kind="input"): 30}
    assert value(got, "tacx_cost_usd_total", provider="mock", model="m1") == 3.0


async def test_many_ends_of_tasks_never_seen_running_are_read_in_batches(tmp_path: Path) -> None:
    """3,000 queued tasks cancelled at once (as `tacx cancel` does): their workflows are read
    by one reader in a few batches, not by a task and a thread hop per end (at 100,000 that
    was 500 MB and seconds of the engine's loop); every end is counted under its workflow."""
    async with attached(tmp_path) as (home, coordinator, metrics):
        ids = queue(home, "name: bulk\nstages:\n  - {name: a, provider: shell, run: 'true'}\n", count=3000)
        before = len(asyncio.all_tasks())
        for task_id in ids:
            coordinator.publish("task.cancelled", task_id)
        assert len(asyncio.all_tasks()) - before == 1
        assert metrics.tally.reader is not None
        await metrics.tally.reader
        got = parse(await metrics.exposition())
    assert series(got, "tacx_tasks_ended_total") == {L(workflow="bulk", state="cancelled"): 3000}
