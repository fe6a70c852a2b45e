"""Finished tasks announced in the dashboard: each on its own, or, when many finish together,
one notification that counts them. No Textual: it is handed ``notify`` and a timer."""

from __future__ import annotations

from collections.abc import Callable

from tacx.engine.events import EngineEvent

NOTIFY_SECONDS = 0.5  # finished tasks are announced together within this
NOTIFY_EACH_UP_TO = 3
FINISHED_KINDS = {"task.succeeded": "information", "task.failed": "error", "task.timed_out": "error",
                  "task.cancelled": "warning"}


class FinishedNotices:
    """Gathers the finished tasks' events for NOTIFY_SECONDS, then announces them."""

    def __init__(self, notify: Callable[..., object], set_timer: Callable[[float, Callable[[], None]], object]) -> None:
        self.notify = notify
        self.set_timer = set_timer
        self._finished: list[EngineEvent] = []

    def add(self, event: EngineEvent) -> None:
        """An event of FINISHED_KINDS: announced with those of the next NOTIFY_SECONDS."""
        if not self._finished:
            self.set_timer(NOTIFY_SECONDS, self._announce)
        self._finished.append(event)

    def _announce(self) -> None:
        """A finished task raises a notification; many at once raise one that counts them."""
        finished, self._finished = self._finished, []
        if len(finished) > NOTIFY_EACH_UP_TO:
            counts: dict[str, int] = {}
            for event in finished:
                counts[event.kind[5:].replace("_", " ")] = counts.get(event.kind[5:].replace("_", " "), 0) + 1
            failed = any(FINISHED_KINDS[e.kind] == "error" for e in finished)
            text = f"{len(finished)} tasks finished: " + ", ".join(f"{n} {k}" for k, n in counts.items())
            self.notify(text, severity="error" if failed else "information", timeout=8, markup=False)
            return
        for event in finished:
            title = event.data.get("title") or ""
            text = f"task {event.task_id} {event.kind[5:].replace('_', ' ')}" + (f": {title}" if title else "")
            if event.data.get("error") and event.kind != "task.cancelled":
                text += f"\n{str(event.data['error']).splitlines()[0][:200]}"
            self.notify(text, severity=FINISHED_KINDS[event.kind], timeout=8, markup=False)  # a title is not markup
