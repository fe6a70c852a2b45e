"""One attempt of a stage: one daughter, from the transaction that marks it running to
the transaction that records its end. Between the two: its environment, its workspace (a
git worktree made or found), its start by the provider's executor, its output parsed as
it is written (usage, the budget, rate limits), and what may end it early (cancel,
shutdown, timeout, idle, budget, a kill).

Every transition is committed (through the store's one writer) before anything acts on
it: a stage is `running` in the store before its daughter starts (`start_tx`; for a
task's first stage, the claim commits it with the task's start), and its outcome is in
the store, in the same transaction as the daughter's exit status (`Outcomes.end_stage`),
before the next stage reads it back.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from collections.abc import Callable

from tacx.agents import spending
from tacx.agents.base import AgentState, Outcome, Provider, StageContext, Usage
from tacx.agents.errors import unreachable
from tacx.agents.prices import PriceTable
from tacx.agents.tailer import Batch, Tail, Tailer
from tacx.engine import faults
from tacx.engine.events import Publish
from tacx.engine.executor import Daughter, Executors, Placement
from tacx.engine.outcome import Outcomes
from tacx.engine.scheduler import Scheduler
from tacx.engine.state import Started, TaskRun, Watch, marker
from tacx.engine.sweeper import Sweeper
from tacx.home import Home
from tacx.settings import Settings
from tacx.store import records
from tacx.store.writer import Store
from tacx.workflow.model import SETUP_STAGE, Budget, StageSpec, input_env_name
from tacx.workflow.templates import render
from tacx.workspace import worktree

log = logging.getLogger(__name__)


class Attempts:
    """Starts, watches and ends the attempts of every stage (the slot each was granted is
    released here, on every path)."""

    def __init__(
        self,
        home: Home,
        store: Store,
        publish: Publish,
        settings: Settings,
        providers: dict[str, Provider],
        *,
        prices: PriceTable,
        tailer: Tailer,
        executors: Executors,
        scheduler: Scheduler,
        outcomes: Outcomes,
        sweeper: Sweeper,
        watched: dict[int, Watch],
    ) -> None:
        self.home = home
        self.store = store
        self.publish = publish
        self.settings = settings
        self.providers = providers
        self.prices = prices
        self.tailer = tailer
        self.executors = executors
        self.scheduler = scheduler
        self.outcomes = outcomes
        self.sweeper = sweeper
        self.watched = watched
        self._excluded_homes: set[Path] = set()
        # What every daughter inherits; TACX_* of an enclosing tacx never leaks in.
        self._base_env = {k: v for k, v in os.environ.items() if not k.startswith("TACX_")}

    def _values(self, run: TaskRun, results: dict[str, str | None]) -> dict[str, str]:
        values = {f"inputs.{k}": v for k, v in run.inputs.items()}
        values.update({f"stages.{k}.result": v or "" for k, v in results.items()})
        values.update(
            {
                "task.id": str(run.id),
                "task.title": run.title,
                "task.trace_id": run.trace_id,
                "workflow.name": run.workflow.name,
            }
        )
        return values

    def _env(
        self, run: TaskRun, name: str, attempt: int, spec: StageSpec, values: dict[str, str],
        results: dict[str, str | None], workspace: Path, status_path: Path, *, inherit: bool = True,
    ) -> dict[str, str]:
        """What the daughter's environment holds: this machine's (without `inherit`, for a
        remote executor, only what tacx sets: the node's own environment gives the rest,
        agents' credentials among it) and the task's, stage's and workflow's variables."""
        env = dict(self._base_env) if inherit else {}
        env.update(
            TACX_HOME=str(self.home.root),
            TACX_TASK_ID=str(run.id),
            TACX_TRACE_ID=run.trace_id,
            TACX_STAGE=name,
            TACX_ATTEMPT=str(attempt),
            TACX_WORKSPACE=str(workspace),
            TACX_PROJECT_ROOT=str(run.project_root),
            TACX_STATUS_FILE=str(status_path),
        )
        for key, value in run.inputs.items():
            env[input_env_name(key)] = value
        for stage, result in results.items():
            env["TACX_RESULT_" + stage.upper().replace("-", "_")] = result or ""
        for key, template in spec.env.items():
            env[key] = render(template, values)
        return env

    def start_tx(self, run: TaskRun, name: str, provider_name: str, reason: str) -> Callable[[sqlite3.Connection], Started]:
        """The transaction that marks an attempt running, before its daughter exists."""
        st = run.stages[name]
        spec = run.workflow.stage(name)
        attempt = st.attempt + 1
        workspace = str(run.folder(self.home.trees))
        record_workspace = run.recorded_workspace != workspace
        run.recorded_workspace = workspace
        log_path = str(self.home.stage_log(run.id, name, attempt))
        now = time.time()

        resumes = spec.resume and getattr(self.providers.get(provider_name), "resumable", False)

        def start(conn: sqlite3.Connection) -> Started:
            session, interrupted, last_provider = conn.execute(
                "SELECT session_id, interrupted, provider FROM stages WHERE id = ?", (st.id,)
            ).fetchone()
            # Only the interrupted attempt's own session, and only with the same agent.
            resume = session if resumes and interrupted and session and last_provider == provider_name else None
            conn.execute(
                "UPDATE stages SET status = 'running', attempt = ?, provider = ?, model = ?, started_at = ?,"
                " ended_at = NULL, exit_code = NULL, error = NULL, wait_reason = NULL, log_path = ?,"
                " interrupted = 0, turns = 0, api_retries = 0, rate_limits = 0, session_id = ? WHERE id = ?",
                (attempt, provider_name, spec.model, now, log_path, resume, st.id),
            )
            if record_workspace:
                conn.execute("UPDATE tasks SET workspace = ? WHERE id = ?", (workspace, run.id))
            records.add_event(
                conn, run.id, name, "provider.chosen",
                {"provider": provider_name, "candidates": spec.provider, "reason": reason, "trace_id": run.trace_id},
            )
            records.add_event(
                conn, run.id, name, "stage.started",
                {"attempt": attempt, "provider": provider_name, **({"resume_session": resume} if resume else {})},
            )
            # Earlier stages' results, read back from the store (lesson 3).
            results = dict(conn.execute("SELECT name, result FROM stages WHERE task_id = ?", (run.id,)).fetchall())
            return Started(results, resume)

        return start

    async def attempt(
        self,
        run: TaskRun,
        name: str,
        spec: StageSpec,
        provider_name: str,
        reason: str,
        started: Started | None = None,
    ) -> str:
        """Start one attempt of a stage (committed first, unless the claim did it), then
        watch it to its end. The slot taken for it is released on every path."""
        st = run.stages[name]
        attempt = st.attempt + 1
        workspace = run.folder(self.home.trees)
        log_path = self.home.stage_log(run.id, name, attempt)
        status_path = log_path.with_suffix(".status")
        mkdirs: tuple[Path, ...] = () if run.folders_made else (self.home.logs / str(run.id),)
        if not run.folders_made and run.workflow.workspace != "worktree":  # git makes the worktree
            mkdirs += (workspace,)
        if started is None:
            try:
                started = await self.store.write(self.start_tx(run, name, provider_name, reason))
            except BaseException:
                self.scheduler.release_slot(provider_name)
                raise
        results = started.results
        if started.resume_session:  # the session's earlier usage, for agents that report running totals
            run.baselines[(name, attempt)] = st.usage.get(attempt - 1, Usage()) + run.baselines.get(
                (name, attempt - 1), Usage()
            )
        st.status, st.attempt = "running", attempt
        self.publish("provider.chosen", run.id, name, provider=provider_name, reason=reason, trace_id=run.trace_id)
        self.publish("stage.started", run.id, name, attempt=attempt, provider=provider_name)
        try:
            if run.workflow.workspace == "worktree" and not run.workspace_ready:
                await self.prepare_worktree(run, workspace)
            values = self._values(run, results)
            ctx = StageContext(
                task_id=run.id,
                trace_id=run.trace_id,
                stage=name,
                attempt=attempt,
                workspace=workspace,
                prompt=render(spec.prompt, values) if spec.prompt else None,
                script_path=log_path.with_suffix(".script"),
                resume_session=started.resume_session,
            )
            launch = self.providers[provider_name].launch(spec, ctx)
            executor = self.executors.for_stage(spec.executor, provider_name)
            env = self._env(run, name, attempt, spec, values, results, workspace, status_path,
                            inherit=not executor.remote)
            env.update(launch.env)
            placement = Placement(run.workflow.workspace, run.project_root, run.branch, provider_name)
            daughter = await executor.spawn(
                launch.argv, env=env, cwd=workspace, log_path=log_path, status_path=status_path, command=launch.shown,
                marker=marker(self.home.marker_prefix, run.id, name, attempt), mkdirs=mkdirs, files=launch.files,
                placement=placement,
            )
            run.folders_made = True
        except worktree.WorkspaceError as exc:
            self.scheduler.release_slot(provider_name)
            self.outcomes.end_stage(run, name, None, "failed", f"could not prepare the task's git worktree: {exc}", None, None)
            return "failed"
        except (OSError, ValueError, KeyError) as exc:
            self.scheduler.release_slot(provider_name)
            why = f"could not start the {provider_name} daughter: {exc}"
            if isinstance(exc, OSError) and exc.errno == errno.E2BIG:
                why += (" (its prompt, environment or arguments are over the kernel's limits:"
                        " 128 KiB a value, about 2 MiB in all; a result or input handed on is too big)")
            self.outcomes.end_stage(run, name, None, "failed", why, None, None)
            return "failed"
        except BaseException:
            self.scheduler.release_slot(provider_name)
            raise
        faults.point("after-spawn")  # tests: a crash between the daughter's start and its row
        self.store.write_soon(lambda c: insert_daughter(c, run.id, st.id, name, attempt, daughter))
        self.publish("daughter.started", run.id, name, pid=daughter.pid, argv=daughter.command)
        return await self.finish_attempt(run, name, spec, daughter, provider_name)

    async def prepare_worktree(self, run: TaskRun, path: Path) -> None:
        """Create the task's git worktree on its own branch, or find it again on a resume
        (its work is kept as it is). Runs git in a thread."""
        branch = run.branch or worktree.branch_name(run.id, run.title)

        def make() -> worktree.Worktree:
            repo = worktree.require_git_repo(run.project_root)
            if repo not in self._excluded_homes:
                worktree.exclude_home(repo, self.home.root)  # the trees do not show in `git status`
                self._excluded_homes.add(repo)
            return worktree.ensure_worktree(repo, path, branch)

        tree = await asyncio.to_thread(make)
        run.workspace_ready, run.branch = True, tree.branch
        data = {"path": str(tree.path), "branch": tree.branch, "base": tree.base, "created": tree.created}
        setup = run.stages.get(SETUP_STAGE)
        redo_setup = tree.created and setup is not None and setup.status == "succeeded"
        if redo_setup:  # setup runs once per worktree: this one is new
            assert setup is not None
            setup.status = "pending"
            data["setup_again"] = True

        def note(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET branch = ?, base_commit = COALESCE(base_commit, ?) WHERE id = ?",
                (tree.branch, tree.base, run.id),
            )
            if redo_setup:
                conn.execute(
                    "UPDATE stages SET status = 'pending', ended_at = NULL,"
                    " wait_reason = 'the worktree was made anew: setup runs again' WHERE id = ?",
                    (setup.id,),
                )
            records.add_event(conn, run.id, None, "workspace.created" if tree.created else "workspace.reused", data)

        self.store.write_soon(note)
        self.publish("workspace.created" if tree.created else "workspace.reused", run.id, **data)

    async def finish_attempt(
        self, run: TaskRun, name: str, spec: StageSpec, d: Daughter, provider_name: str
    ) -> str:
        """Wait for the daughter's end, or for a reason to end it (cancel, shutdown,
        timeout, idle timeout: each settles `stop` with its cause), then record it."""
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[str | None] = loop.create_future()
        executor = self.executors.of(d)

        def settle(cause: str | None) -> None:
            if not stop.done():
                stop.set_result(cause)

        d.exited.add_done_callback(lambda _: settle(None))
        run.stoppers.add(settle)
        self.watched[d.pid] = (run, name, spec, settle)
        tail: Tail | None = None
        outcome: Outcome | None = None
        timer = None
        if spec.timeout:
            timer = loop.call_later(max(d.started_at + spec.timeout - time.time(), 0), settle, "timeout")
        if run.cancel.is_set():
            settle("cancel" if run.user_cancelled else "budget" if run.budget_error else "shutdown")
        try:
            tail = self._watch_output(run, name, spec, d, provider_name, settle)
            cause = await stop  # cancelled only when leaving daughters running for the next start
            if cause is None:
                await executor.clean_after_exit(d)
            else:
                await executor.terminate(d, cause)
            info = d.exited.result()
            if tail is not None:  # the rest of the output, parsed and its usage recorded
                try:
                    outcome = await self.tailer.finish(tail)
                except Exception as exc:  # concluding failed: the stage still ends, saying so
                    log.exception("reading the end of %s failed", d.log_path)
                    outcome = Outcome(error=f"tacx could not read the agent's output: {exc!r}")
        finally:
            if tail is not None and outcome is None:
                self.tailer.forget(tail)
            if timer is not None:
                timer.cancel()
            run.stoppers.discard(settle)
            self.watched.pop(d.pid, None)
            self.scheduler.release_slot(provider_name)
            self.sweeper.daughter_ended()
        status = await self.outcomes.classify(run, name, spec, d, info, cause, provider_name, outcome)
        if tail is not None and status == "failed" and tail.parser.state.rate_limited:
            state = tail.parser.state  # it gave up on a rate limit: rest the provider
            self.scheduler.note_rate_limit(run, name, run.stages[name].attempt, provider_name,
                                           state.error or "the agent ended rate limited", state.rate_limit_resets_at)
        return status

    def _watch_output(
        self, run: TaskRun, name: str, spec: StageSpec, d: Daughter, provider_name: str,
        settle: Callable[[str | None], None],
    ) -> Tail | None:
        """Agents' output is parsed as it is written (an adopted daughter's from the start:
        its usage rows are keyed by message, so nothing is counted twice). An agent that
        only reports that its API cannot be reached is ended after `unreachable_after`."""
        provider = self.providers.get(provider_name)
        if provider is None or provider.kind != "agent":
            return None
        # The engine needs the accounting; the log panel renders what the agent showed.
        parser = provider.parser(model=spec.model, prices=self.prices, sidecar=provider.sidecar(d.log_path),
                                 display=False)
        if not parser.streaming:
            return None
        attempt = run.stages[name].attempt
        if (name, attempt) in run.baselines:
            parser.resume_from(run.baselines[(name, attempt)])

        reach = Reachability(self.settings.unreachable_after)

        def deliver(tail: Tail, batch: Batch, state: AgentState) -> None:
            try:
                self._on_agent_output(run, name, attempt, provider_name, batch, state)
            except Exception:
                log.exception("recording the output of task %s stage %s failed", run.id, name)
            if (why := reach.note(batch, time.time())) is not None:
                settle(f"{UNREACHABLE}{why}")

        return self.tailer.watch(d.log_path, parser, deliver)

    def _on_agent_output(
        self, run: TaskRun, name: str, attempt: int, provider_name: str, batch: Batch, state: AgentState
    ) -> None:
        """Usage, session and what the agent said about itself reach the store (several
        times a second while it runs); the budget and rate limits are acted on here."""
        st = run.stages[name]
        st.usage[attempt] = state.usage
        self.store.write_soon(lambda c: spending.record_agent_output(
            c, task_id=run.id, stage_id=st.id, stage=name, attempt=attempt,
            usage=batch.usage, notable=batch.notable, state=state,
        ))
        if batch.shown:  # for the dashboard; a flood shows its last lines (all of it stays in the log)
            self.publish("agent.output", run.id, name, attempt=attempt,
                         events=[(e.kind, e.data) for e in batch.shown], skipped=batch.dropped)
        total, spent = st.total, run.spent()
        self.publish(
            "stage.usage", run.id, name, attempt=attempt, tokens=spending.tokens_json(total),
            cost_usd=round(total.cost_usd, 6), task_tokens=spending.tokens_json(spent),
            task_cost_usd=round(spent.cost_usd, 6), session_id=state.session_id,
        )
        limit = spending.rejected_limit(batch.notable)
        if limit:  # the agent hit a limit (a 429 it retried by itself rests nothing)
            self.scheduler.note_rate_limit(run, name, attempt, provider_name, limit, state.rate_limit_resets_at)
        self.check_budget(run)

    def _budget(self, run: TaskRun) -> Budget | None:
        return run.workflow.budget or self.settings.budget

    def check_budget(self, run: TaskRun) -> None:
        """A task that passed its budget stops: its running stages (whole trees) end and
        the task fails, saying which budget and by how much."""
        if run.budget_error:
            return
        exceeded = spending.budget_exceeded(self._budget(run), run.spent(), run.budget_base)
        if exceeded is None:
            return
        run.budget_error = exceeded["error"]
        self.store.write_soon(lambda c: records.add_event(c, run.id, None, "task.budget_exceeded", exceeded))
        self.publish("task.budget_exceeded", run.id, **exceeded)
        run.interrupt("budget")


UNREACHABLE = "unreachable: "  # the cause that ends an agent whose API never answers
PROGRESS_KINDS = frozenset({"text", "thinking", "tool_use", "tool_result", "result"})


class Reachability:
    """Whether an agent's API answers: how long it has reported only connection failures
    (retries with no HTTP status, "Reconnecting...", ECONNREFUSED) with no usage since,
    that is, no answer. Overloaded (529) and other statuses are answers: waited out."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.since: float | None = None  # the first failure after the last answer
        self.last = ""

    def note(self, batch: Batch, now: float) -> str | None:
        """Take a batch in, in order; why to end the attempt now, or None. Anything the
        agent did (said, thought, ran a tool) or was billed for is an answer."""
        if batch.usage:
            self.since = None
        for event in batch.shown:
            if (words := unreachable(event.kind, event.data)) is not None:
                self.last = words
                if self.since is None:
                    self.since = now
            elif event.kind in PROGRESS_KINDS:
                self.since = None
        if not self.limit or self.since is None or now - self.since < self.limit:
            return None
        return f"cannot reach the API: {self.last} (no answer for {now - self.since:.0f}s; unreachable_after)"


def insert_daughter(conn: sqlite3.Connection, task_id: int, stage_id: int, stage: str, attempt: int, d: Daughter) -> None:
    """The daughter's row; its argv is the command the workflow asked for, as people read it
    (tacx's status wrapper is how it runs, not what it is)."""
    conn.execute(
        "INSERT INTO daughters (task_id, stage_id, stage, attempt, pid, create_time, argv, log_path,"
        " status_path, started_at, executor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, stage_id, stage, attempt, d.pid, d.create_time, json.dumps(d.command),
         str(d.log_path), str(d.status_path), d.started_at, d.executor),
    )
