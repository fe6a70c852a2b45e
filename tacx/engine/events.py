"""The engine's event bus: the one seam through which everything outside the engine hears
what happens in it. The headless reporter and the dashboard subscribe here; metrics and
notifications will too, without the engine knowing about any of them.

Events are published on the engine's loop, after the change they describe is committed.
A consumer is called synchronously, in order, and must not block; one that does slow work
(a webhook, a network push) subscribes with `subscribe_async` and gets its own bounded
queue and task, so it can fall behind without ever holding the engine up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

ASYNC_QUEUE_LIMIT = 10_000  # events an async consumer may fall behind before the oldest are dropped
DRAIN_SECONDS = 2.0  # how long shutdown waits for async consumers to catch up


@dataclass(frozen=True)
class EngineEvent:
    kind: str  # task.started, stage.started, stage.succeeded, provider.chosen, daughter.sample, ...
    task_id: int | None = None
    stage: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class EventConsumer(Protocol):
    """Hears engine events on the engine's loop; returns quickly."""

    def __call__(self, event: EngineEvent) -> None: ...


class AsyncEventConsumer(Protocol):
    """Hears engine events in its own task, one at a time, in order; may take its time."""

    async def handle(self, event: EngineEvent) -> None: ...


class _Kinds:
    """Which kinds a consumer wants: exact kinds ("task.failed") and families ("task.")."""

    __slots__ = ("exact", "families")

    def __init__(self, kinds: Iterable[str]) -> None:
        wanted = list(kinds)
        self.exact = frozenset(k for k in wanted if not k.endswith("."))
        self.families = tuple(k for k in wanted if k.endswith("."))

    def __contains__(self, kind: str) -> bool:
        return kind in self.exact or kind.startswith(self.families)


class QueuedConsumer:
    """An async consumer behind a bounded queue. The engine only appends (constant time);
    the consumer's task drains in order. When the consumer is more than `limit` events
    behind, the oldest are dropped and counted in `dropped`, never the engine slowed."""

    def __init__(self, consumer: AsyncEventConsumer, limit: int = ASYNC_QUEUE_LIMIT) -> None:
        if limit < 1:
            raise ValueError("an async consumer's queue holds at least one event")
        self.consumer = consumer
        self.limit = limit
        self.dropped = 0
        self._queue: deque[EngineEvent] = deque()
        self._ready = asyncio.Event()
        self._handling = False  # an event is taken and being handled
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def __call__(self, event: EngineEvent) -> None:
        if self._closed:  # after shutdown's drain: nobody would hear it
            return
        if len(self._queue) >= self.limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()
        if self._task is None:  # started by the first event, on the engine's loop
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"tacx-consumer-{type(self.consumer).__name__}")

    @property
    def behind(self) -> int:
        """Events not yet handled (the one being handled counts)."""
        return len(self._queue) + self._handling

    async def _drain(self) -> None:
        while True:
            await self._ready.wait()
            while self._queue:
                event = self._queue.popleft()
                self._handling = True
                try:
                    await self.consumer.handle(event)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("event consumer %s failed on %s", type(self.consumer).__name__, event.kind)
                finally:
                    self._handling = False
            self._ready.clear()

    async def close(self, timeout: float) -> None:
        """Let the consumer catch up (the event in hand too) for at most `timeout` seconds,
        then stop its task; later events are not queued."""
        self._closed = True
        if self._task is None:
            return
        deadline = time.monotonic() + timeout
        while self.behind and time.monotonic() < deadline and not self._task.done():
            await asyncio.sleep(0.01)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None


class Publish(Protocol):
    """How the coordinator's parts publish an event (Coordinator.publish)."""

    def __call__(self, kind: str, task_id: int | None = None, stage: str | None = None, **data: Any) -> None: ...


class EventBus:
    """Synchronous fan-out; a consumer that raises is logged, never breaks the engine."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[EventConsumer, _Kinds | None]] = []
        self._queued: list[QueuedConsumer] = []

    def subscribe(self, consumer: EventConsumer, *, kinds: Iterable[str] | None = None) -> Callable[[], None]:
        """Call `consumer` with every event, or with those of `kinds` (exact kinds, or
        families ending in a dot: "task."). Returns the way to unsubscribe."""
        entry = (consumer, None if kinds is None else _Kinds(kinds))
        self._subscribers.append(entry)
        return lambda: self._subscribers.remove(entry)

    def subscribe_async(
        self, consumer: AsyncEventConsumer, *, kinds: Iterable[str] | None = None, limit: int = ASYNC_QUEUE_LIMIT
    ) -> QueuedConsumer:
        """Give a slow consumer its own queue and task (see QueuedConsumer)."""
        queued = QueuedConsumer(consumer, limit)
        self._queued.append(queued)
        self.subscribe(queued, kinds=kinds)
        return queued

    def publish(self, event: EngineEvent) -> None:
        for consumer, kinds in list(self._subscribers):
            if kinds is not None and event.kind not in kinds:
                continue
            try:
                consumer(event)
            except Exception:
                log.exception("event subscriber failed on %s", event.kind)

    async def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """At shutdown: let async consumers hear the last events (bounded), then stop them."""
        await asyncio.gather(*(q.close(timeout) for q in self._queued))
