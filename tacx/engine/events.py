"""Typed engine events: what the coordinator publishes for reporters and the dashboard."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from collections.abc import Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineEvent:
    kind: str  # task.started, stage.started, stage.succeeded, provider.chosen, daughter.sample, ...
    task_id: int | None = None
    stage: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


Subscriber = Callable[[EngineEvent], None]


class Publish(Protocol):
    """How the coordinator's parts publish an event (Coordinator.publish)."""

    def __call__(self, kind: str, task_id: int | None = None, stage: str | None = None, **data: Any) -> None: ...


class EventBus:
    """Synchronous fan-out; a subscriber that raises is logged, never breaks the engine."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn)

    def publish(self, event: EngineEvent) -> None:
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber failed on %s", event.kind)
