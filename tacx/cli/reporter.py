"""Headless progress: one line per state change for people (state words in the dashboard's
colours on a terminal), one JSON event per line for machines, a live progress line at the
bottom when writing to a terminal, and a summary when the run ends."""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tacx.agents.prices import cost_text
from tacx.cli.colour import PLAIN, Palette
from tacx.cli.summary import summary_text, token_count
from tacx.engine.events import EngineEvent
from tacx.text import printable

_QUIET_KINDS = {"daughter.sample", "daughter.started", "provider.chosen", "stage.usage", "agent.output"}
_NOT_JSON_KINDS = {"agent.output"}  # what agents say stays in the logs (`tacx logs`)
_TOUCHING_KINDS = {"task.started", "task.recovered", "task.interrupted", "task.succeeded", "task.failed",
                   "task.timed_out", "task.cancelled"}


class QuietOnClose:
    """The reporter's stream. A reader that went away (`tacx --no-ui --json | head -1`)
    ends the output quietly, as SIGPIPE would end a plain filter, but the coordinator goes
    on: nothing more is written, and the stream's file descriptor is pointed at /dev/null
    so that no later write or Python's last flush raises either."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.closed = False

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False

    def write(self, text: str) -> None:
        if not self.closed:
            self._guard(lambda: self.stream.write(text))

    def flush(self) -> None:
        if not self.closed:
            self._guard(self.stream.flush)

    def _guard(self, act: Callable[[], object]) -> None:
        try:
            act()
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError) and exc.errno != errno.EPIPE:
                raise
            self.closed = True
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass


class ConsoleReporter:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        json_mode: bool = False,
        progress: bool | None = None,
        only_task: int | None = None,
    ) -> None:
        self.stream = QuietOnClose(stream or sys.stdout)
        self.json_mode = json_mode
        self.progress = (not json_mode and self.stream.isatty()) if progress is None else progress
        self.only_task = only_task
        self.palette = PLAIN if json_mode else Palette.for_stream(self.stream)
        self.touched: set[int] = set()  # the tasks this run started, resumed or ended (the summary's)
        self.counts = {"running": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "timed_out": 0}
        self.queued = 0
        self.running: int | None = None  # from the store, with queued; None: counted from events
        self.failures = 0
        self._routing: dict[tuple[int | None, str | None], str] = {}
        self._usage: dict[tuple[int | None, str | None], tuple[int, float]] = {}  # (tokens, USD) per stage
        self._task_cost: dict[int | None, tuple[int, float]] = {}
        self._unpriced: set[tuple[int | None, str | None]] = set()  # stages with tokens and no price
        self._status_shown = False
        self._last_draw = 0.0

    def __call__(self, event: EngineEvent) -> None:
        if self.only_task is not None and event.task_id not in (None, self.only_task):
            return
        self._count(event)
        if event.kind == "stage.usage":
            d = event.data
            self._usage[(event.task_id, event.stage)] = (sum(d["tokens"].values()), d["cost_usd"])
            self._task_cost[event.task_id] = (sum(d["task_tokens"].values()), d["task_cost_usd"])
            if sum(d["tokens"].values()) and not d["cost_usd"]:
                self._unpriced.add((event.task_id, event.stage))
            else:
                self._unpriced.discard((event.task_id, event.stage))
        if self.json_mode:
            if event.kind in _NOT_JSON_KINDS:
                return
            self.stream.write(json.dumps(event.as_json(), default=str) + "\n")
            self.stream.flush()
            return
        if event.kind == "provider.chosen":
            self._routing[(event.task_id, event.stage)] = f"{event.data['provider']}: {event.data['reason']}"
        line = None if event.kind in _QUIET_KINDS else self.format(event)
        if line is None and not (self.progress and event.kind == "daughter.sample"):
            return
        self._clear_status()
        if line is not None:
            self.stream.write(line + "\n")
        self._draw_status(force=line is not None)
        self.stream.flush()

    def _count(self, event: EngineEvent) -> None:
        kind = event.kind
        if event.task_id is not None and kind in _TOUCHING_KINDS:
            self.touched.add(event.task_id)
        if kind == "task.started" or kind == "task.recovered":
            self.counts["running"] += 1
            self._shift(queued=-1 if kind == "task.started" else 0, running=1)
        elif kind.startswith("task.") and kind[5:] in self.counts and kind != "task.started":
            self.counts[kind[5:]] += 1
            self.counts["running"] = max(0, self.counts["running"] - 1)
            self._shift(running=-1)
            if kind in ("task.failed", "task.timed_out"):
                self.failures += 1
        elif kind == "task.interrupted":
            self.counts["running"] = max(0, self.counts["running"] - 1)
            self._shift(running=-1)

    def _shift(self, queued: int = 0, running: int = 0) -> None:
        """Between two reads of the store, the events move tasks from queued to running to done."""
        self.queued = max(0, self.queued + queued)
        if self.running is not None:
            self.running = max(0, self.running + running)

    def format(self, event: EngineEvent) -> str | None:
        clock = time.strftime("%H:%M:%S", time.localtime(event.ts))
        d = event.data
        who = f"task {event.task_id}" if event.task_id is not None else "tacx"
        kind = event.kind
        state: tuple[int, str, str] | None = None  # where the state word is, the word, its state's colour
        if kind == "task.waiting":
            text = f"{who} waits: {d.get('reason')}"
            state = (len(who) + 1, "waits", "queued")
        elif kind == "stage.waiting":
            text = f"{who} · {event.stage} waits: {d.get('reason')}"
            state = (len(f"{who} · {event.stage} "), "waits", "pending")
        elif kind == "task.started":
            text = f"{who} started: {d.get('title', '')} [{d.get('workflow', '')}]"
            state = (len(who) + 1, "started", "running")
        elif kind == "task.recovered":
            text = f"{who} recovered after a restart: re-adopted {d.get('adopted') or 'nothing'}, running again {d.get('rerun') or 'nothing'}"
        elif kind.startswith("task."):
            text = f"{who} {kind[5:].replace('_', ' ')}"
            state = (len(who) + 1, kind[5:].replace("_", " "), kind[5:])
            if kind in ("task.succeeded", "task.failed", "task.timed_out", "task.cancelled"):
                unpriced = {key for key in self._unpriced if key[0] == event.task_id}
                self._unpriced -= unpriced
                text += _spent(self._task_cost.pop(event.task_id, None), bool(unpriced))
            if d.get("error") and kind != "task.cancelled":
                text += f": {d['error']}"
        elif kind == "stage.started":
            route = self._routing.pop((event.task_id, event.stage), d.get("provider", ""))
            text = f"{who} · {event.stage}: running (attempt {d.get('attempt')}, {route})"
            state = (len(f"{who} · {event.stage}: "), "running", "running")
        elif kind in ("stage.retrying", "stage.loop"):
            text = f"{who} · {event.stage}: {d.get('reason')}"
        elif kind.startswith("stage."):
            text = f"{who} · {event.stage}: {kind[6:].replace('_', ' ')}"
            state = (len(f"{who} · {event.stage}: "), kind[6:].replace("_", " "), kind[6:])
            if d.get("duration") is not None:
                text += f" in {d['duration']:.2f}s"
            if kind in ("stage.succeeded", "stage.failed", "stage.timed_out", "stage.cancelled"):
                text += _spent(self._usage.pop((event.task_id, event.stage), None),
                               (event.task_id, event.stage) in self._unpriced)
            if d.get("error") and kind != "stage.succeeded":
                text += f": {d['error']}"
        elif kind == "provider.cooldown":
            until = time.strftime("%H:%M:%S", time.localtime(d.get("until", 0)))
            text = f"{d.get('provider')} cools down until {until}: {d.get('reason')}"
        elif kind in ("workspace.created", "workspace.reused"):
            text = f"{who} {'made' if kind == 'workspace.created' else 'reuses'} worktree {d.get('path')} on branch {d.get('branch')}"
        elif kind == "queue.waiting":
            text = f"queued tasks wait: {d.get('reason')}"
        elif kind == "coordinator.store_failed":
            text = f"the store refused a write ({d.get('what')}): {d.get('error')}; stopping"
        elif kind == "coordinator.stuck":
            text = f"nothing can run: {d.get('reason')}; stopping"
        elif kind == "recovery.stragglers_ended":
            text = f"ended {len(d.get('pids', []))} leftover process(es) from before the restart: {d.get('pids')}"
        elif kind == "coordinator.idle":
            text = "nothing left to run" + (" (paused)" if d.get("paused") else "") + ": exiting"
        elif kind in ("coordinator.paused", "coordinator.resumed"):
            text = kind.split(".")[1]
        elif kind == "source.polled" and d.get("made"):
            text = f"source {d.get('source')} made {d['made']} task(s)"
        elif kind == "source.failed":
            text = f"source {d.get('source')} failed ({d.get('failures')} in a row): {d.get('error')}"
        elif kind == "source.rate_limited":
            text = f"source {d.get('source')} rests {d.get('retry_after', 0):.0f}s: {d.get('error')}"
        elif kind == "source.rejected":
            text = f"source {d.get('source')}: {d.get('key')} not submitted: {d.get('error')}"
        else:
            return None
        if state is None:
            return f"{clock} {_indent(printable(text))}"
        at, word, colour = state
        end = at + len(word)
        return (f"{clock} {_indent(printable(text[:at]))}{self.palette.state(colour, word)}"
                f"{_indent(printable(text[end:]))}")

    # -- live status line (terminals only) -----------------------------------------------

    def _clear_status(self) -> None:
        if self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False

    def _draw_status(self, force: bool = False) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        c = self.counts
        done = c["succeeded"] + c["failed"] + c["cancelled"] + c["timed_out"]
        running = self.running if self.running is not None else c["running"]
        total = done + running + self.queued
        width = 24
        filled = int(width * done / total) if total else 0
        bar = "█" * filled + "░" * (width - filled)
        ok, failed = c["succeeded"], c["failed"] + c["timed_out"]
        self.stream.write(
            f"[{bar}] {done}/{total} done · {running} running · {self.queued} queued"
            f" · {self.palette.state('succeeded', f'{ok} ok') if ok else '0 ok'}"
            f" · {self.palette.state('failed', f'{failed} failed') if failed else '0 failed'}"
        )
        self._status_shown = True

    def set_queued(self, queued: int, running: int | None = None) -> None:
        """The queued and running tasks as the store has them, read together: counting the
        running ones from events as well would count a task that just started twice."""
        self.queued = queued
        self.running = running
        if self.progress:
            self._clear_status()
            self._draw_status(force=True)
            self.stream.flush()

    def summary(self, figures: dict[str, Any]) -> None:
        """The run's end (see tacx.cli.summary): one line for people, or a last JSON event
        of kind `summary` (task_id and stage null, the figures as its data)."""
        if self.json_mode:
            event = {"kind": "summary", "task_id": None, "stage": None, "data": figures, "ts": time.time()}
            self.stream.write(json.dumps(event) + "\n")
        else:
            self._clear_status()
            self.stream.write(summary_text(figures, self.palette) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._clear_status()
        self.stream.flush()


def _spent(figures: tuple[int, float] | None, unpriced: bool = False) -> str:
    """Tokens and cost; a stage whose tokens have no price is "unpriced", never $0, and a
    task with such a stage shows its known cost "+ unpriced"."""
    if not figures or not (figures[0] or figures[1]):
        return ""
    tokens, cost = figures
    return f" · {token_count(tokens)} tokens · {cost_text(cost, unpriced)}"


def _indent(text: str) -> str:
    return text.replace("\n", "\n         ")
