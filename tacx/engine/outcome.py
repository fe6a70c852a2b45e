"""Where a stage's outcome is decided: how its daughter ended (and why it was ended, and
what its agent said) becomes the stage's state and an error a person can act on, recorded
with the daughter's end in one transaction."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from tacx.agents.base import Outcome, OutputParser, Provider, last_line
from tacx.agents.health import ProviderHealth, failure_kind
from tacx.bounds import handoff_text
from tacx.engine.events import Publish
from tacx.engine.executor import Daughter, Executor, Executors, ExitInfo
from tacx.engine.state import Lifecycle, TaskRun
from tacx.store import records
from tacx.store.writer import Store
from tacx.workflow.model import StageSpec

TAIL_BYTES = 64 * 1024
ERROR_TAIL_LINES = 8


class Outcomes:
    """Classifies how a stage's attempt ended, and records it."""

    def __init__(
        self,
        store: Store,
        publish: Publish,
        lifecycle: Lifecycle,
        providers: dict[str, Provider],
        executors: Executors,
        trees: Path,
        health: ProviderHealth,
    ) -> None:
        self.health = health
        self.store = store
        self.publish = publish
        self.lifecycle = lifecycle
        self.providers = providers
        self.executors = executors
        self.trees = trees

    async def classify(
        self,
        run: TaskRun,
        name: str,
        spec: StageSpec,
        d: Daughter,
        info: ExitInfo,
        cause: str | None,
        provider_name: str,
        parsed: Outcome | None = None,
    ) -> str:
        """Turn how the daughter ended into the stage's state and an error a person can act on.

        ``parsed`` is what a streaming parser concluded; others read the end of the log."""
        tail = d.tail if d.tail is not None else await asyncio.to_thread(_read_tail, d.log_path)
        provider = self.providers.get(provider_name)
        if parsed is not None:
            parser_outcome = parsed
        else:
            parser_outcome = provider.parser().finish(tail) if provider else Outcome(result=last_line(tail))
        error: str | None = None
        if cause is None and d.failure:
            status, error = "failed", d.failure
        elif cause == "shutdown" or (cause is None and not info.known):
            status = "interrupted"
        elif cause == "budget":
            status, error = "failed", f"stopped: {run.budget_error}"
        elif cause == "cancel":
            status, error = "cancelled", "cancelled"
        elif cause == "killed":
            status, error = "failed", "killed from the dashboard (its whole process tree)"
        elif cause is not None and cause.startswith("unreachable: "):
            status, error = "failed", cause.removeprefix("unreachable: ")
        elif cause == "timeout":
            status, error = "timed_out", f"timed out after {_fmt_duration(spec.timeout or 0)} (timeout)"
        elif cause == "idle":
            status, error = "timed_out", f"no output for {_fmt_duration(spec.idle_timeout or 0)} (idle_timeout)"
        elif info.signal is not None:
            status, error = "failed", f"killed by signal {_signal_name(info.signal)}"
        elif info.exit_code != 0:
            status, error = "failed", f"exited with code {info.exit_code}"
        else:
            missing = [p for p in spec.expects if not (run.folder(self.trees) / p).exists()]
            if parser_outcome.failed:
                status, error = "failed", f"exited 0, but {parser_outcome.error or 'the agent reported a failure'}"
            elif missing:
                status, error = "failed", "exited 0 but did not write " + ", ".join(missing) + " (expects)"
            else:
                status = "succeeded"
        if parser_outcome.error and status == "failed" and cause is None and info.exit_code != 0:
            error = f"{error}: {parser_outcome.error}"
        streams = provider is not None and provider.kind == "agent" and getattr(provider, "parser_class", None)
        if status in ("failed", "timed_out"):
            lines = _agent_words(tail, provider.parser(), ERROR_TAIL_LINES) if streams else _last_lines(tail, ERROR_TAIL_LINES)
            if lines:
                error = f"{error}; last output:\n{lines}"
        health = self._health(run, name, provider, provider_name, status, cause, info, parser_outcome, tail)
        self.end_stage(run, name, d, status, error, info, parser_outcome.result if status != "interrupted" else None,
                       executor=self.executors.of(d), health=health)
        return status

    def _health(self, run: TaskRun, name: str, provider: Provider | None, provider_name: str, status: str,
                cause: str | None, info: ExitInfo, parsed: Outcome, tail: bytes) -> dict[str, Any] | None:
        """Did the attempt fail on the agent's access (its credentials, its API out of reach)?
        The stage learns it (the runner tries the next candidate), and so does the agent's
        health: the returned `provider.health` event marks or clears it."""
        st = run.stages[name]
        st.trouble = None
        if provider is None or provider.kind != "agent":
            return None
        if status == "succeeded":
            return self.health.succeeded(provider_name)
        if status != "failed" or not (cause is None or cause.startswith("unreachable: ")):
            return None
        found = failure_kind(cause=cause, exit_code=info.exit_code, own_error=parsed.error,
                             cli_lines=_cli_lines(tail, provider, ERROR_TAIL_LINES),
                             auth_exit_codes=getattr(provider, "auth_exit_codes", frozenset()))
        if found is None:
            return None
        st.trouble = found
        return self.health.failed(provider_name, *found)

    def end_stage(
        self,
        run: TaskRun,
        name: str,
        d: Daughter | None,
        status: str,
        error: str | None,
        info: ExitInfo | None,
        result: str | None,
        *,
        executor: Executor | None = None,
        health: dict[str, Any] | None = None,
    ) -> None:
        """Record the daughter's end and the stage's new state in one transaction (lesson 2).

        Not awaited: the writer's FIFO order commits it before the next stage's start
        transaction, which is where that stage reads the results (lesson 3), and so
        before any later daughter starts. Listeners hear of it once it is committed; then
        the daughter's `executor` is told its end is stored."""
        st = run.stages[name]
        now = time.time()
        failed = status in ("failed", "timed_out")
        stage_status = "pending" if status == "interrupted" else status

        def end(conn: sqlite3.Connection) -> None:
            if d is not None and info is not None:
                close_daughter(conn, "pid = ? AND stage_id = ?", (d.pid, st.id), d.ended_at or now, info, d.node)
            conn.execute(
                "UPDATE stages SET status = ?, exit_code = ?, ended_at = ?, error = ?, result = COALESCE(?, result),"
                " failures = failures + ?, wait_reason = ?, interrupted = ? WHERE id = ?",
                (
                    stage_status,
                    info.exit_code if info else None,
                    None if status == "interrupted" else now,
                    error,
                    handoff_text(result),  # safe in an env var and argv: no NUL, encodable, bounded
                    1 if failed else 0,
                    "interrupted: runs again" if status == "interrupted" else None,
                    1 if status == "interrupted" else 0,
                    st.id,
                ),
            )
            data: dict[str, Any] = {"attempt": st.attempt}
            if info is not None:
                data.update(exit_code=info.exit_code, signal=info.signal)
            if error:
                data["error"] = error
            records.add_event(conn, run.id, name, f"stage.{status}", data)
            if health is not None:  # the agent's access failed, or works again
                records.add_event(conn, None, None, "provider.health", health)

        st.status = stage_status
        st.ended_at = now
        if failed:
            st.failures += 1
        event = dict(
            attempt=st.attempt,
            error=error,
            exit_code=info.exit_code if info else None,
            duration=round((d.ended_at or now) - d.started_at, 3) if d else None,
        )

        def committed(future: asyncio.Future[None]) -> None:
            if future.cancelled():
                return
            if future.exception() is not None:
                self.lifecycle.store_failed(f"recording the end of stage {name} of task {run.id}", future.exception())
                return
            if d is not None and executor is not None:
                executor.stored(d)
            self.publish(f"stage.{status}", run.id, name, **event)
            if health is not None:
                self.publish("provider.health", **health)

        self.store.write(end).add_done_callback(committed)


def close_daughter(
    conn: sqlite3.Connection, where: str, params: tuple[Any, ...], ended_at: float, info: ExitInfo, node: str = ""
) -> None:
    """Record how a daughter ended (its row is still open), and where it ran."""
    conn.execute(
        "UPDATE daughters SET ended_at = ?, exit_code = ?, signal = ?, peak_rss = ?, cpu_seconds = ?,"
        f" node = COALESCE(NULLIF(?, ''), node) WHERE {where} AND ended_at IS NULL",
        (ended_at, info.exit_code, info.signal, info.peak_rss or None, round(info.cpu_seconds, 3), node, *params),
    )


def _read_tail(path: Path) -> bytes:
    """The last 64 KiB of a log: bounded, whatever the daughter wrote."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            return f.read(TAIL_BYTES)
    except OSError:
        return b""


def _agent_words(tail: bytes, parser: OutputParser, n: int, width: int = 300) -> str:
    """The last output of an agent that streams JSON, for a person: what it said (its text,
    its errors) and every line that is not its stream (stderr). The raw stream stays one
    `tacx logs --raw` away."""
    raw = tail.splitlines()
    if len(tail) >= TAIL_BYTES and raw:
        raw = raw[1:]  # the cut may have fallen inside a line
    shown: list[str] = []
    for line in raw:
        text = line.strip()
        if not text:
            continue
        if not text.startswith(b"{"):
            shown.append(text.decode("utf-8", errors="replace"))
            continue
        for event in parser.feed(line):
            said = event.data.get("text") if event.kind == "text" else (
                event.data.get("message") if event.kind == "error" else None)
            if isinstance(said, str) and said.strip():
                shown.extend(part for part in said.strip().splitlines() if part.strip())
    return _cut(shown[-n:], width)


def _cli_lines(tail: bytes, provider: Provider, n: int) -> list[str]:
    """The last lines the CLI itself wrote outside its stream: for an agent that streams
    JSON, every other line (its stderr); for one that writes plain text (aider), only the
    lines its provider knows as its own errors (`error_lines`)."""
    lines = [ln.strip() for ln in tail.decode("utf-8", errors="replace").splitlines()]
    if len(tail) >= TAIL_BYTES and lines:
        lines = lines[1:]  # the cut may have fallen inside a line
    own = getattr(provider, "error_lines", None)
    if own is not None:
        return [ln for ln in lines if own.search(ln)][-n:]
    return [ln for ln in lines if ln and not ln.startswith("{")][-n:]


def _last_lines(tail: bytes, n: int, width: int = 300) -> str:
    lines = [ln for ln in tail.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return _cut(lines[-n:], width)


def _cut(lines: list[str], width: int) -> str:
    """Lines for an error message, each cut to `width` characters."""
    return "\n".join(ln if len(ln) <= width else ln[:width] + "…" for ln in lines)


def _signal_name(sig: int) -> str:
    try:
        return f"{signal.Signals(sig).name} ({sig})"
    except ValueError:
        return str(sig)


def _fmt_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
