"""The task routes: list and show (the `ls --json` and `show --json` shapes, read on the
server's reader thread), submit, cancel, retry, pause and resume (through the coordinator's
verbs, as the dashboard does)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from aiohttp import web

from tacx import bounds
from tacx.agents.prices import note_unpriced
from tacx.durations import parse_duration
from tacx.server import submit
from tacx.server.context import DEFAULT_LIST, context, fail, json_object, path_id, query_int
from tacx.states import TASK_STATES
from tacx.store import records

routes = web.RouteTableDef()


@routes.get("/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    """`tacx ls --json`, newest first: ?status= &workflow= &source= &since=AGE &limit= &offset="""
    ctx = context(request)
    status = request.query.get("status") or None
    if status is not None and status not in TASK_STATES:
        fail(400, f"status is one of {', '.join(TASK_STATES)}, got {status[:40]!r}")
    workflow = request.query.get("workflow") or None
    if workflow is not None and (problem := bounds.unusable_text(workflow)):
        fail(400, f"workflow {problem}")
    source = request.query.get("source") or None  # a source's name, or "any"
    if source is not None and (problem := bounds.unusable_text(source)):
        fail(400, f"source {problem}")
    since = None
    if age := request.query.get("since"):
        try:
            since = time.time() - parse_duration(age)
        except ValueError as exc:
            fail(400, f"since is an age such as 30m, 2h or 7d: {exc}")
    limit = query_int(request, "limit", min(DEFAULT_LIST, ctx.limits.list), 1, ctx.limits.list)
    offset = query_int(request, "offset", 0, 0, 2**62)

    def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        tasks = records.list_tasks(conn, status=status, workflow=workflow, source=source, since=since, limit=limit,
                                   offset=offset, newest_first=True)
        note_unpriced(conn, tasks)
        return tasks

    return web.json_response(await ctx.reader.read(read))


@routes.get("/tasks/{id}")
async def show_task(request: web.Request) -> web.Response:
    ctx = context(request)
    task_id = path_id(request)

    def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
        task = records.show_task(conn, task_id)
        if task is not None:
            note_unpriced(conn, [task])
        return task

    task = await ctx.reader.read(read)
    if task is None:
        fail(404, f"no task {task_id}")
    return web.json_response(task)


@routes.post("/tasks")
async def submit_task(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await json_object(request)
    try:
        task_id, created = await submit.submit(ctx.coordinator, ctx.home, body)
    except submit.Refused as refused:
        return web.json_response({"error": str(refused), "errors": refused.errors}, status=400)
    return web.json_response({"id": task_id, "created": created, "url": f"/tasks/{task_id}"}, status=201 if created else 200)


@routes.post("/tasks/{id}/cancel")
async def cancel_task(request: web.Request) -> web.Response:
    ctx = context(request)
    task_id = path_id(request)
    try:
        status = await ctx.coordinator.cancel_task(task_id)
    except LookupError:
        fail(404, f"no task {task_id}")
    except ValueError as exc:
        fail(409, str(exc))
    return web.json_response({"id": task_id, "status": status,
                              "cancel_requested": status == "running"})


@routes.post("/tasks/{id}/retry")
async def retry_task(request: web.Request) -> web.Response:
    ctx = context(request)
    task_id = path_id(request)
    try:
        await ctx.coordinator.retry_task(task_id)
    except LookupError:
        fail(404, f"no task {task_id}")
    except ValueError as exc:
        fail(409, str(exc))
    return web.json_response({"id": task_id, "status": "queued"})


@routes.post("/pause")
async def pause(request: web.Request) -> web.Response:
    await context(request).coordinator.set_paused(True)
    return web.json_response({"paused": True})


@routes.post("/resume")
async def resume(request: web.Request) -> web.Response:
    await context(request).coordinator.set_paused(False)
    return web.json_response({"paused": False})
