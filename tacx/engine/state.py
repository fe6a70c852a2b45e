"""The run state the coordinator's parts share: a running task (`TaskRun`) and its stages,
a stage waiting for a worker, the grants that start one, whether the coordinator is
stopping (`Lifecycle`), and how a task's run state is loaded from its rows."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from collections.abc import Callable

from tacx.agents.base import Provider, Usage
from tacx.agents.registry import provider_kinds
from tacx.engine.events import Publish
from tacx.engine.executor import Daughter
from tacx.workflow.model import StageSpec, Workflow
from tacx.workflow.loader import load_workflow_text

log = logging.getLogger(__name__)

StopMode = Literal["stop", "leave"]


@dataclass
class Started:
    """What a start transaction read back: every stage's result (lesson 3) and the agent
    session an interrupted attempt of this stage left, when the stage resumes sessions."""

    results: dict[str, str | None]
    resume_session: str | None = None


Grant = tuple[str, str, str]  # (stage, provider, why that provider)
StartedGrant = tuple[str, str, str, Started]  # a grant whose start the claim already committed


@dataclass
class StageState:
    id: int
    name: str
    status: str
    attempt: int
    failures: int
    ended_at: float | None = None
    loops: int = 0  # times this stage's failure sent the task back to an earlier stage
    usage: dict[int, Usage] = field(default_factory=dict)  # attempt -> its tokens and cost
    trouble: tuple[str, str] | None = None  # the last attempt failed on access: (auth|network, what was said)

    @property
    def total(self) -> Usage:
        return sum(self.usage.values(), Usage())


@dataclass
class TaskRun:
    """A task this coordinator is running: its parsed workflow and its stages' states."""

    id: int
    trace_id: str
    priority: int
    title: str
    workflow: Workflow
    inputs: dict[str, str]
    project_root: Path
    workspace: Path | None
    stages: dict[str, StageState]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    user_cancelled: bool = False  # cancel asked by a person, not tacx stopping
    adopted: dict[str, tuple[Daughter, str]] = field(default_factory=dict)  # stage -> (daughter, provider)
    folders_made: bool = False
    recorded_workspace: str | None = None
    workspace_ready: bool = False  # the git worktree exists (made or found) in this run
    branch: str | None = None
    rate_noted: set[tuple[str, int]] = field(default_factory=set)  # (stage, attempt) already cooled down for
    budget_error: str | None = None  # set when the task passed its budget: why it stops
    budget_base: tuple[float, int] = (0.0, 0)  # (USD, tokens) spent before the last `tacx retry`
    baselines: dict[tuple[str, int], Usage] = field(default_factory=dict)  # resumed attempt -> its session's earlier usage

    def spent(self) -> Usage:
        return sum((st.total for st in self.stages.values()), Usage())

    # Each watched attempt registers how to stop it: settle("cancel"), settle("timeout"), ...
    stoppers: set[Callable[[str | None], None]] = field(default_factory=set)

    def request_cancel(self) -> None:
        self.user_cancelled = True
        self.interrupt("cancel")

    def interrupt(self, cause: str) -> None:
        self.cancel.set()
        for settle in list(self.stoppers):
            settle(cause)

    def folder(self, trees: Path) -> Path:
        """The task's working folder (created by the executor, off the event loop): its own
        under the home's `trees` for `dir` and `worktree` workspaces, else the project."""
        if self.workspace is None:
            if self.workflow.workspace in ("dir", "worktree"):
                self.workspace = trees / str(self.id)
            else:
                self.workspace = self.project_root
        return self.workspace


@dataclass
class SlotRequest:
    """A stage waiting for a worker; granted in order of task priority, then age."""

    run: TaskRun
    stage: str
    candidates: list[str]
    future: asyncio.Future[tuple[str, str]]
    reason: str | None = None
    passed: dict[str, str] = field(default_factory=dict)  # candidates that failed on access in this stage: why

    @property
    def key(self) -> tuple[int, int]:
        return (-self.run.priority, self.run.id)


# A daughter being watched, by pid: its task, stage, spec, and how to end it (settle(cause)).
Watch = tuple[TaskRun, str, StageSpec, Callable[[str | None], None]]


def marker(marker_prefix: str, task_id: int, stage: str, attempt: int) -> str:
    """The environment marker a daughter and all its descendants carry."""
    return f"{marker_prefix}{task_id}/{stage}/{attempt}"


class Lifecycle:
    """Whether the coordinator is stopping, and how: every part reads it, and the parts that
    find a reason to stop (nothing can run; the store failed) stop the coordinator here."""

    def __init__(self, publish: Publish) -> None:
        self.stopping: StopMode | None = None
        self.done = asyncio.Event()
        self._publish = publish

    def stop(self, mode: StopMode = "stop") -> None:
        if self.stopping is None:
            self.stopping = mode
            self.done.set()

    def store_failed(self, what: str, exc: BaseException | None) -> None:
        """The store refused a write nobody awaited (disk full, database locked too long):
        going on would show states that are not true. Stop; recovery repairs at next start."""
        log.error("%s failed: %s; stopping the coordinator", what, exc)
        self._publish("coordinator.store_failed", what=what, error=str(exc))
        self.stop("stop")


class TaskLoader:
    """Builds a `TaskRun` from a task's rows; each workflow is parsed once per hash."""

    def __init__(self, providers: dict[str, Provider]) -> None:
        self.providers = providers
        self._workflows: dict[str, Workflow] = {}

    def workflow(self, workflow_hash: str, text: str | None, source: str) -> Workflow | None:
        wf = self._workflows.get(workflow_hash)
        if wf is None and text is not None:
            wf = load_workflow_text(text, source, provider_kinds(self.providers))
            self._workflows[workflow_hash] = wf
        return wf

    def load_run(self, row: sqlite3.Row, stage_rows: list[sqlite3.Row], usage_rows: list[sqlite3.Row]) -> TaskRun:
        wf = self.workflow(row["workflow_hash"], row["workflow_text"], row["workflow_path"])
        assert wf is not None
        stages = {
            s["name"]: StageState(s["id"], s["name"], s["status"], s["attempt"], s["failures"], s["ended_at"], s["loops"])
            for s in stage_rows
        }
        by_id = {st.id: st for st in stages.values()}
        for u in usage_rows:
            by_id[u["stage_id"]].usage[u["attempt"]] = Usage(*u[2:])
        return TaskRun(
            id=row["id"],
            trace_id=row["trace_id"],
            priority=row["priority"],
            title=row["title"],
            workflow=wf,
            inputs=json.loads(row["inputs"]),
            project_root=Path(row["project_root"]),
            workspace=Path(row["workspace"]) if row["workspace"] else None,
            stages=stages,
            recorded_workspace=row["workspace"],
            branch=row["branch"],
            budget_base=(row["budget_base_usd"], row["budget_base_tokens"]),
        )


def stage_rows(conn: sqlite3.Connection, task_id: int) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
    """A task's stages, and the tokens and cost of each of their attempts."""
    stages = conn.execute(
        "SELECT id, name, status, attempt, failures, ended_at, loops FROM stages WHERE task_id = ?", (task_id,)
    ).fetchall()
    usage = conn.execute(
        "SELECT stage_id, attempt, SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),"
        " SUM(cache_write_tokens), SUM(cost_usd) FROM usage WHERE task_id = ? GROUP BY stage_id, attempt",
        (task_id,),
    ).fetchall()
    return stages, usage

