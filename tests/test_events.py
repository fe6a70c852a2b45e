"""The event bus as a seam: consumers by kind, slow consumers behind their own queue."""

from __future__ import annotations

import asyncio

import pytest

from tacx.engine.events import EngineEvent, EventBus


def test_a_consumer_hears_the_kinds_it_asked_for_and_a_failing_one_breaks_nothing() -> None:
    bus = EventBus()
    everything: list[str] = []
    tasks_and_one: list[str] = []
    bus.subscribe(lambda e: everything.append(e.kind))
    bus.subscribe(lambda e: tasks_and_one.append(e.kind), kinds=["task.", "stage.failed"])

    def broken(event: EngineEvent) -> None:
        raise RuntimeError("a consumer's bug")

    unsubscribe = bus.subscribe(broken)
    for kind in ("task.started", "stage.started", "stage.failed", "taskish.other", "task.failed"):
        bus.publish(EngineEvent(kind, 1))
    assert everything == ["task.started", "stage.started", "stage.failed", "taskish.other", "task.failed"]
    assert tasks_and_one == ["task.started", "stage.failed", "task.failed"]
    unsubscribe()
    bus.publish(EngineEvent("task.succeeded", 2))
    assert everything[-1] == "task.succeeded"


class Slow:
    def __init__(self) -> None:
        self.heard: list[int] = []
        self.gate = asyncio.Event()

    async def handle(self, event: EngineEvent) -> None:
        await self.gate.wait()
        if event.task_id == 3:
            raise ValueError("a webhook said no")
        self.heard.append(event.task_id or 0)


async def test_a_slow_consumer_falls_behind_without_holding_the_engine_and_drops_the_oldest() -> None:
    bus = EventBus()
    slow = Slow()
    queued = bus.subscribe_async(slow, kinds=["task."], limit=4)
    for i in range(1, 9):
        bus.publish(EngineEvent("task.started", i))  # returns at once: nothing awaits the consumer
        bus.publish(EngineEvent("stage.started", i))  # not its kind: never queued
    await asyncio.sleep(0)
    assert slow.heard == [] and queued.dropped == 4
    slow.gate.set()
    await bus.drain(timeout=5)
    assert slow.heard == [5, 6, 7, 8]  # the newest four
    assert queued.behind == 0


async def test_drain_stops_a_consumer_that_never_catches_up() -> None:
    bus = EventBus()
    stuck = Slow()  # its gate never opens
    queued = bus.subscribe_async(stuck)
    bus.publish(EngineEvent("task.started", 1))
    bus.publish(EngineEvent("task.started", 2))
    await asyncio.wait_for(bus.drain(timeout=0.2), 5)
    assert stuck.heard == [] and queued.behind == 1


async def test_a_failing_async_consumer_goes_on_with_the_next_event() -> None:
    bus = EventBus()
    slow = Slow()
    slow.gate.set()
    bus.subscribe_async(slow)
    for i in (2, 3, 4):
        bus.publish(EngineEvent("task.started", i))
    await bus.drain(timeout=5)
    assert slow.heard == [2, 4]


class Steady:
    def __init__(self) -> None:
        self.heard: list[int] = []

    async def handle(self, event: EngineEvent) -> None:
        await asyncio.sleep(0.2)
        self.heard.append(event.task_id or 0)


async def test_drain_waits_for_the_event_in_hand_and_nothing_is_queued_after_it() -> None:
    bus = EventBus()
    steady = Steady()
    queued = bus.subscribe_async(steady)
    bus.publish(EngineEvent("task.succeeded", 1))  # the last event before shutdown
    await asyncio.sleep(0.05)  # taken from the queue: being handled
    await bus.drain(timeout=5)
    assert steady.heard == [1]
    bus.publish(EngineEvent("task.started", 2))  # after the drain: not queued, no task started
    assert queued.behind == 0 and queued._task is None
    with pytest.raises(ValueError):
        bus.subscribe_async(steady, limit=0)
