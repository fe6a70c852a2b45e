"""Which stage of the selected task the dashboard shows: one answer, asked by the stages
panel's cursor, the log panel and the full-screen log alike, so they never disagree."""

from __future__ import annotations

from tacx.ui.data import StageRow, TaskDetail

PICKS_KEPT = 200  # picks remembered (the oldest forgotten first): switching back finds one's pick


class StageSelection:
    """The stage a person picked in a task (kept per task), else the running one (the
    latest started if several run), else the last started, else the first."""

    def __init__(self) -> None:
        self._picked: dict[int, str] = {}

    def pick(self, task: int, stage: str) -> None:
        self._picked.pop(task, None)
        self._picked[task] = stage
        while len(self._picked) > PICKS_KEPT:
            del self._picked[next(iter(self._picked))]

    def forget(self, task: int) -> None:
        """Back to following the task's running stage (``enter`` on a running task)."""
        self._picked.pop(task, None)

    def picked(self, task: int) -> str | None:
        return self._picked.get(task)

    def of(self, detail: TaskDetail | None) -> StageRow | None:
        if detail is None or not detail.stages:
            return None
        name = self._picked.get(detail.task.id)
        chosen = next((s for s in detail.stages if s.name == name), None) if name else None
        if chosen is not None:
            return chosen
        started = sorted((s for s in detail.stages if s.started_at), key=lambda s: s.started_at or 0)
        running = [s for s in started if s.status == "running"]
        return (running or started or detail.stages[:1])[-1]
