"""Submitting tasks, shared by the command line and the dashboard: finding a workflow in the
project's, the home's and the shipped folders, loading it, preparing inputs, title and dedupe
key, and queueing one task or many in one transaction."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from tacx import bounds
from tacx.home import Home
from tacx.store import records
from tacx.store.database import connect, transaction
from tacx.userfiles import EACH_FILE_LIMIT, FileRefused, read_text_file
from tacx.workflow.model import Workflow, resolve_inputs
from tacx.workflow.loader import load_workflow_text, read_workflow
from tacx.workflow.templates import render
from tacx.workspace import worktree


class SubmissionError(Exception):
    """Invalid input for a task: nothing is written (the command line exits 2)."""


def shipped_workflows_dir() -> Path:
    return Path(str(resources.files("tacx.workflows")))


def workflow_dirs(home: Home) -> list[Path]:
    """Where workflows are found by name, the first folder winning a name clash."""
    return [home.project_root / "workflows", home.root / "workflows", shipped_workflows_dir()]


def names_a_file(name: str) -> bool:
    """A workflow given as a file (a path, or a name ending .yaml), not one to look up."""
    return Path(name).suffix in (".yaml", ".yml") or os.sep in name


def find_workflow(home: Home, name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path.resolve()
    if names_a_file(name):
        raise SubmissionError(f"no workflow file {name}")
    return named_workflow(home, name, SubmissionError)


def named_workflow(home: Home, name: str, missing: type[Exception]) -> Path:
    """The workflow file of that name in the workflow folders (the project's, the home's,
    the shipped ones), or `missing` raised with the names there are."""
    for folder in workflow_dirs(home):
        for ext in (".yaml", ".yml"):
            candidate = folder / f"{name}{ext}"
            if candidate.is_file():
                return candidate.resolve()
    known = sorted({p.stem for folder in workflow_dirs(home) if folder.is_dir() for p in folder.glob("*.y*ml")})
    raise missing(f"no workflow named {name!r}; known: {', '.join(known) or 'none'}")


def load_workflow_file(path: Path, kinds: dict[str, str]) -> tuple[Workflow, str]:
    """The workflow and its text, read once: the text validated is the text stored.
    Reads a file: call it from a thread in the dashboard."""
    text = read_workflow(path)
    return load_workflow_text(text, str(path), kinds), text


def load_named_workflow(home: Home, name: str, kinds: Callable[[], dict[str, str]]) -> tuple[Workflow, Path, str]:
    """A workflow file or name, loaded and checked to run in this project (a worktree
    workspace needs a git repository). ``kinds`` is asked once the file is read, so a
    missing or unreadable workflow is reported before a broken tacx.yaml."""
    path = find_workflow(home, name)
    if problem := bounds.unusable_text(str(path)):  # the path is stored with the task
        raise SubmissionError(f"the workflow's path {problem}; rename the file")
    text = read_workflow(path)  # read once: the text validated is the text stored
    wf = load_workflow_text(text, str(path), kinds())
    if wf.workspace == "worktree":
        try:
            worktree.require_git_repo(home.project_root)
        except worktree.WorkspaceError as exc:
            raise SubmissionError(f"{path}: workspace: worktree: {exc}") from None
    return wf, path, text


def _parse_pairs(pairs: list[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SubmissionError(f"-i takes NAME=VALUE, got {pair!r}")
        given[name] = value
    return given


def prepare_inputs(wf: Workflow, given: dict[str, Any], title: str | None, where: str = "") -> tuple[dict[str, str], str]:
    try:
        inputs = resolve_inputs(wf, given)
    except ValueError as exc:
        raise SubmissionError(f"{where}{exc}") from None
    for key, value in inputs.items():
        if problem := bounds.text_value_problem(value):
            raise SubmissionError(f"{where}input {key} {problem}")
    values = {f"inputs.{k}": v for k, v in inputs.items()} | {"workflow.name": wf.name}
    if title is None:
        if wf.title:
            title = render(wf.title, values)
        elif "title" in inputs and inputs["title"]:
            title = inputs["title"]
        else:
            title = wf.name
    return inputs, title.strip().splitlines()[0][:200] if title.strip() else wf.name


def dedupe_key_for(wf: Workflow, inputs: dict[str, str], explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if wf.dedupe_key:
        return f"{wf.name}:" + render(wf.dedupe_key, {f"inputs.{k}": v for k, v in inputs.items()} | {"workflow.name": wf.name})
    return None


Prepared = tuple[Workflow, Path, str, list[tuple[dict[str, str], str, str | None]]]


def prepare_tasks(home: Home, kinds: Callable[[], dict[str, str]], name: str, *, pairs: list[str], each: str | None,
                  title: str | None, dedupe_key: str | None) -> Prepared:
    """Load the workflow and check every task's inputs (``pairs`` of NAME=VALUE for one
    task, or ``each``: a file with a JSON object of inputs a line); raises before anything
    is written."""
    wf, path, text = load_named_workflow(home, name, kinds)
    batches: list[tuple[dict[str, str], str, str | None]] = []
    if each:
        if pairs:
            raise SubmissionError("--each and -i do not go together: put every input in the JSON lines")
        each_path = Path(each)
        try:
            lines = read_text_file(each_path, EACH_FILE_LIMIT, "an --each file").split("\n")  # not splitlines: JSON may hold U+2028
        except FileRefused as exc:
            raise SubmissionError(str(exc)) from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{each_path}:{number}: "
            try:
                given = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SubmissionError(f"{each_path}:{number}:{exc.colno}: not JSON: {exc.msg}") from None
            if not isinstance(given, dict):
                raise SubmissionError(f"{where}each line must be a JSON object of inputs")
            inputs, task_title = prepare_inputs(wf, given, title, where)
            batches.append((inputs, task_title, dedupe_key_for(wf, inputs, dedupe_key)))
        if not batches:
            raise SubmissionError(f"{each_path} has no lines of inputs")
    else:
        inputs, task_title = prepare_inputs(wf, _parse_pairs(pairs), title)
        batches.append((inputs, task_title, dedupe_key_for(wf, inputs, dedupe_key)))
    return wf, path, text, batches


def task_fields(project_root: Path, wf: Workflow, path: Path, text: str, *, inputs: dict[str, str], title: str,
                priority: int, dedupe_key: str | None) -> dict[str, Any]:
    """One task as ``records.insert_task`` (and ``Coordinator.submit``) take it."""
    return dict(workflow=wf, workflow_path=str(path), workflow_text=text, title=title, inputs=inputs,
                priority=priority, dedupe_key=dedupe_key, project_root=str(project_root))


def submit_tasks(home: Home, prepared: Prepared, priority: int) -> list[tuple[int, bool]]:
    """Queue all prepared tasks in one transaction (all or nothing). Returns (id, created)."""
    wf, path, text, batches = prepared
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            return [
                records.insert_task(conn, **task_fields(home.project_root, wf, path, text, inputs=inputs, title=title,
                                                        priority=priority, dedupe_key=key))
                for inputs, title, key in batches
            ]
    finally:
        conn.close()
