"""POST /tasks: a task submitted over HTTP, validated as `tacx submit` validates it.

Which workflow a remote caller may name is narrower than on the command line, on purpose:
whoever holds the token must not be able to make tacx read any file on the machine.
- A name (`fix-issue`) is looked up only in the workflow folders (the project's
  `workflows/`, the home's, the shipped ones; the first wins, as for `tacx submit`), never
  in the server's working directory.
- A path (`workflows/team/fix.yaml`, relative to the project root, or absolute) is taken
  only when, symbolic links followed, it is a .yaml/.yml file inside the project's
  `workflows/` folder. Anything else is a 400 that says so.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from tacx import bounds
from tacx.agents.registry import provider_kinds
from tacx.home import Home
from tacx.submission import (
    SubmissionError, dedupe_key_for, load_named_workflow, named_workflow, names_a_file, prepare_inputs, task_fields,
)
from tacx.server.context import fail
from tacx.workflow.loader import WorkflowError

FIELDS = {"workflow", "inputs", "priority", "title", "dedupe_key"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class Refused(Exception):
    """A submission refused: the sentence, and the validation messages (file:line:col)."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


def workflow_file(home: Home, given: str) -> Path:
    """The file a remote caller's workflow (a name or a path) stands for, or Refused."""
    if not names_a_file(given):
        if not _NAME.fullmatch(given):
            raise Refused(f"{given[:100]!r} is not a workflow name (letters, digits, '.', '_', '-')")
        return named_workflow(home, given, Refused)
    allowed = (home.project_root / "workflows").resolve()
    path = Path(given)
    resolved = (path if path.is_absolute() else home.project_root / path).resolve()
    if not resolved.is_relative_to(allowed) or resolved.suffix not in (".yaml", ".yml"):
        raise Refused(f"{given[:200]!r}: over the API a workflow file must be a .yaml file in {allowed};"
                      " name a workflow, or put the file there")
    if not resolved.is_file():
        raise Refused(f"no workflow file {given[:200]!r} in {allowed}")
    return resolved


def _checked(body: dict[str, Any]) -> tuple[str, dict[str, Any], int, str | None, str | None]:
    if unknown := sorted(set(body) - FIELDS):
        fail(400, f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))};"
                  f" a task takes {', '.join(sorted(FIELDS))}")
    workflow = body.get("workflow")
    if not isinstance(workflow, str) or not workflow.strip():
        fail(400, "workflow must be a workflow's name or a path in the project's workflows/ (a string)")
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        fail(400, f"inputs must be a JSON object of NAME: VALUE, got {type(inputs).__name__}")
    priority = body.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not bounds.SQLITE_INT_MIN <= priority <= bounds.SQLITE_INT_MAX:
        fail(400, "priority must be a whole number (higher runs first)")
    texts = {}
    for name in ("title", "dedupe_key"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or bounds.unusable_text(value)):
            fail(400, f"{name} must be text" + (f": it {bounds.unusable_text(value)}" if isinstance(value, str) else ""))
        texts[name] = value
    if problem := bounds.unusable_text(workflow):
        fail(400, f"workflow {problem}")
    return workflow, inputs, priority, texts["title"], texts["dedupe_key"]


async def submit(coordinator: Any, home: Home, body: dict[str, Any]) -> tuple[int, bool]:
    """Queue the task the body asks for through the coordinator; (id, created). Refused with
    the messages a person reads, and nothing queued, when the workflow or inputs are bad."""
    workflow, given, priority, title, dedupe_key = _checked(body)
    kinds = provider_kinds(coordinator.providers)

    def load() -> tuple[Any, Path, str]:
        return load_named_workflow(home, str(workflow_file(home, workflow)), lambda: kinds)

    try:
        wf, path, text = await asyncio.to_thread(load)
        values, title = prepare_inputs(wf, given, title)
    except WorkflowError as exc:
        raise Refused(f"the workflow is not valid ({len(exc.issues)} problem{'s' if len(exc.issues) != 1 else ''})",
                      [str(issue) for issue in exc.issues]) from None
    except SubmissionError as exc:
        raise Refused(str(exc)) from None
    except OSError as exc:
        raise Refused(f"the workflow cannot be read: {exc.strerror or exc}") from None
    return await coordinator.submit(**task_fields(
        home.project_root, wf, path, text, inputs=values, title=title, priority=priority,
        dedupe_key=dedupe_key_for(wf, values, dedupe_key),
    ))
