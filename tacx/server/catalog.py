"""The workflow routes: what can be submitted (`GET /workflows`, as `tacx workflows` lists
them), a workflow's text checked (`POST /validate`, as `tacx validate`) and the schema of
workflow files (`GET /schema`, as `tacx schema`). Files are read and checked in a thread."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from tacx.agents.registry import provider_kinds
from tacx.home import Home
from tacx.server.context import body_text, context, fail
from tacx.submission import workflow_dirs
from tacx.workflow.loader import WorkflowError, load_workflow, load_workflow_text
from tacx.workflow.model import workflow_json_schema

routes = web.RouteTableDef()
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def list_workflows(home: Home, kinds: dict[str, str]) -> list[dict[str, Any]]:
    """Each workflow by name (the first folder wins, as a submit by name finds it): its
    description and inputs, or why it is invalid."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for folder in workflow_dirs(home):
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            if path.stem in seen or path.suffix not in (".yaml", ".yml"):
                continue
            seen.add(path.stem)
            entry: dict[str, Any] = {"name": path.stem, "path": str(path)}
            try:
                wf = load_workflow(path, kinds)
            except (WorkflowError, OSError) as exc:
                entry.update(valid=False, errors=[str(i) for i in getattr(exc, "issues", [])] or [str(exc)])
            else:
                entry.update(valid=True, description=wf.description.strip(), stages=[s.name for s in wf.stages],
                             inputs={name: spec.model_dump() for name, spec in wf.inputs.items()})
            found.append(entry)
    return found


@routes.get("/workflows")
async def workflows(request: web.Request) -> web.Response:
    ctx = context(request)
    kinds = provider_kinds(ctx.coordinator.providers)
    return web.json_response(await asyncio.to_thread(list_workflows, ctx.home, kinds))


@routes.post("/validate")
async def validate(request: web.Request) -> web.Response:
    """The body is a workflow's YAML; `?name=` names it in the messages (default: workflow)."""
    ctx = context(request)
    name = request.query.get("name") or "workflow"
    if not _SOURCE_NAME.fullmatch(name):
        fail(400, "name is a file name for the messages: letters, digits, '.', '_', '-'")
    text = await body_text(request)
    kinds = provider_kinds(ctx.coordinator.providers)
    try:
        wf = await asyncio.to_thread(load_workflow_text, text, name, kinds)
    except WorkflowError as exc:
        return web.json_response({"ok": False, "errors": [str(issue) for issue in exc.issues]})
    return web.json_response({"ok": True, "errors": [], "name": wf.name, "stages": [s.name for s in wf.stages]})


@routes.get("/schema")
async def schema(request: web.Request) -> web.Response:
    return web.json_response(workflow_json_schema())
