"""The task facts a message names (workflow, cost, duration, source URL), read from the
store on a connection of the notifier's own, in a worker thread: the loop never waits on
SQLite, and the engine's writer is never asked."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tacx.agents.prices import Unpriced, models
from tacx.server.notify.message import Notice
from tacx.store.database import connect
from tacx.store.records import show_task

log = logging.getLogger(__name__)


class TaskFacts:
    """Fills in notices from the tasks' rows; a store that cannot be read leaves them as the
    events said (a notification without its cost beats none)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    async def fill(self, notices: list[Notice]) -> None:
        ids = sorted({n.task_id for n in notices if n.task_id is not None})
        if not ids:
            return
        try:
            tasks = await asyncio.to_thread(self._read, ids)
        except Exception as exc:  # a store that refuses the read (StoreError) only costs detail
            log.warning("notify: could not read the tasks' facts: %s", exc)
            return
        for n in notices:
            task = tasks.get(n.task_id) if n.task_id is not None else None
            if task is None:
                continue
            n.title = n.title or task["title"]
            n.workflow = task["workflow"]
            n.status = n.status or task["status"]
            n.error = n.error or task["error"]
            if n.cost_usd is None:
                n.cost_usd = task["cost_usd"]
            n.unpriced = task["unpriced"]
            if task["started_at"] and task["ended_at"]:
                n.duration_s = task["ended_at"] - task["started_at"]
            n.url = (task["source"] or {}).get("url")
            n.source = n.source or (task["source"] or {}).get("name")

    def _read(self, ids: list[int]) -> dict[int, dict]:
        conn = connect(self.db_path, create=False)
        try:
            tasks = {task_id: task for task_id in ids if (task := show_task(conn, task_id, events_limit=0)) is not None}
            found = Unpriced.of_tasks(conn, list(tasks))  # a cost of 0 is never said as $0.00 (as ls and show)
            for task_id, task in tasks.items():
                task["unpriced"] = models([u for u in found if u.task_id == task_id])
            return tasks
        finally:
            conn.close()
