"""What the dashboard changes (launch, cancel, retry, pause): through the coordinator it
hosts, or, in a viewer, written to the store, where the coordinator running elsewhere
notices it within a second. No Textual: each outcome is said through the ``notify`` given."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tacx.engine.coordinator import Coordinator
from tacx.home import Home
from tacx.store import records
from tacx.store.database import connect, transaction
from tacx.submission import dedupe_key_for, load_workflow_file, prepare_inputs, task_fields
from tacx.workflow.model import Workflow
from tacx.workspace import worktree

if TYPE_CHECKING:
    from tacx.ui.launch import LaunchRequest

Notify = Callable[..., object]  # App.notify: (message, *, severity=..., timeout=...)


class TaskControl:
    """Changes tasks for the dashboard; ``coordinator`` is set once the dashboard hosts one
    (None: a viewer). Never blocks the event loop: files, git and viewer writes go to threads."""

    def __init__(self, home: Home, kinds: dict[str, str], notify: Notify,
                 never_starts: Callable[[Workflow], str | None] | None = None) -> None:
        self.home = home
        self.kinds = kinds
        self.never_starts = never_starts  # why a workflow's task could never start here, or None
        self.notify = notify
        self.coordinator: Coordinator | None = None

    async def launch(self, request: LaunchRequest) -> int | None:
        """Queue the task a person asked for in the launch form: its id, or None (said why)."""
        try:
            wf, text = await asyncio.to_thread(load_workflow_file, request.path, self.kinds)  # bounded: 1 MiB, UTF-8
            problem = await asyncio.to_thread(self.never_starts, wf) if self.never_starts is not None else None
            if problem is not None:
                self.notify(f"cannot launch {request.name}: {problem}", severity="error", timeout=15)
                return None
            if wf.workspace == "worktree":
                await asyncio.to_thread(worktree.require_git_repo, self.home.project_root)
            inputs, title = prepare_inputs(wf, dict(request.inputs), request.title)
            task = task_fields(self.home.project_root, wf, request.path, text, inputs=inputs, title=title,
                               priority=request.priority, dedupe_key=dedupe_key_for(wf, inputs, None))
            if self.coordinator is not None:
                task_id, created = await self.coordinator.submit(**task)
            else:
                task_id, created = await asyncio.to_thread(self._write, lambda c: records.insert_task(c, **task))
        except Exception as exc:  # a file changed meanwhile, not a git repo, a NUL in an input, the store
            self.notify(f"cannot launch {request.name}: {exc}", severity="error", timeout=15)
            return None
        self.notify(f"task {task_id} queued: {title}" if created else f"task {task_id} is already live (same dedupe key)")
        return task_id

    async def cancel(self, task_id: int) -> bool:
        """Cancel a task (a running one ends within a second); False when it could not be."""
        try:
            if self.coordinator is not None:
                status = await self.coordinator.cancel_task(task_id)
            else:
                status = await asyncio.to_thread(self._write, lambda c: records.request_cancel(c, task_id))
        except Exception as exc:  # not cancellable, or the store refused: say so, go on
            self.notify(str(exc), severity="warning" if isinstance(exc, (LookupError, ValueError)) else "error")
            return False
        if status == "running":
            self.notify(f"task {task_id}: cancel requested")
        elif self.coordinator is None:  # the engine announces what it cancelled itself
            self.notify(f"task {task_id}: {status}")
        return True

    async def retry(self, task_id: int) -> bool:
        """Queue a failed, cancelled or timed-out task again; False when it could not be."""
        try:
            if self.coordinator is not None:
                await self.coordinator.retry_task(task_id)
            else:
                await asyncio.to_thread(self._write, lambda c: records.retry_task(c, task_id))
        except Exception as exc:  # not retryable, or the store refused: say so, go on
            self.notify(str(exc), severity="warning" if isinstance(exc, (LookupError, ValueError)) else "error")
            return False
        self.notify(f"task {task_id} queued again")
        return True

    async def set_paused(self, paused: bool) -> bool:
        """Pause (running stages go on, nothing new starts) or resume; False when refused."""
        try:
            if self.coordinator is not None:
                await self.coordinator.set_paused(paused)
            else:
                await asyncio.to_thread(self._write, lambda c: records.set_paused(c, paused))
        except Exception as exc:
            self.notify(f"cannot {'pause' if paused else 'resume'}: {exc}", severity="error")
            return False
        self.notify("paused: running stages go on, nothing new starts" if paused else "resumed: stages start again")
        return True

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """A write from a viewer (another coordinator notices it within a second)."""
        conn = connect(self.home.db_path)
        try:
            with transaction(conn):
                return fn(conn)
        finally:
            conn.close()
