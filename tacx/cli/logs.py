"""`tacx logs`: a stage's output. An agent's stream is shown for people, as the dashboard
shows it (what it said, its tools and their results, errors); `--raw` gives the bytes as
written. A script's output is its bytes either way. `-f` follows the task: each attempt of
each stage as it starts, until the task ends (or, with a stage named, until it ends)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tacx.agents.base import OutputParser
from tacx.agents.registry import builtin_providers, configured_providers
from tacx.cli.common import EXIT_OK, UsageError, project_settings, reader
from tacx.home import Home
from tacx.settings import SettingsError
from tacx.store import records
from tacx.ui.logformat import LogLine, display_parser, render_lines

FOLLOW_SECONDS = 0.2
CHUNK = 1 << 20


class LogWriter:
    """Copies a log to the terminal from an offset, as bytes or rendered; a rendered log
    keeps its parser (state across chunks) and its unfinished last line."""

    def __init__(self, out: BinaryIO, parser: OutputParser | None, styled: bool) -> None:
        self.out = out
        self.parser = parser
        self.styled = styled
        self.partial = b""

    def copy(self, path: Path, offset: int) -> int:
        """Write what the log holds past `offset`; the new offset."""
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                while chunk := f.read(CHUNK):
                    offset += len(chunk)
                    self._write(chunk)
        except FileNotFoundError:
            pass
        self.out.flush()
        return offset

    def end(self) -> None:
        """The log is complete: its unfinished last line too."""
        if self.partial:
            self._show([self.partial])
            self.partial = b""
        self.out.flush()

    def _write(self, chunk: bytes) -> None:
        if self.parser is None:
            self.out.write(chunk)
            return
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        self._show(lines)

    def _show(self, lines: list[bytes]) -> None:
        assert self.parser is not None
        for line in render_lines(lines, self.parser):
            self.out.write(_ansi(line) if self.styled else line.plain.encode() + b"\n")


def _ansi(line: LogLine) -> bytes:
    """A rendered line with its styles, for a terminal."""
    text = "".join(style.render(part) if style else part for part, style in line.parts)
    return text.encode() + b"\n"


def _parser_kinds(home: Home) -> dict[str, str | None]:
    """Provider name -> parser kind of its stream (None: a script, shown as its bytes)."""
    try:
        providers = configured_providers(project_settings(home))
    except SettingsError:  # a broken tacx.yaml must not hide the logs
        providers = builtin_providers()
    return {name: getattr(p, "parser_kind", None) if p.kind == "agent" else None for name, p in providers.items()}


def cmd_logs(home: Home, args: argparse.Namespace) -> int:
    conn = reader(home)
    if conn is None:
        raise UsageError(f"no task {args.id}")
    try:
        stages = _stages(conn, args.id)
        if not stages:
            raise UsageError(f"no task {args.id}")
        if args.stage:
            chosen = [s for s in stages if s["name"] == args.stage]
            if not chosen:
                raise UsageError(f"task {args.id} has no stage {args.stage!r}; stages: {', '.join(s['name'] for s in stages)}")
            stage = chosen[0]
        else:
            started = [s for s in stages if s["attempt"] > 0]
            if not started:
                raise UsageError(f"no stage of task {args.id} has started yet")
            stage = started[-1]
        attempt = args.attempt or stage["attempt"]
        if attempt == 0 or attempt > stage["attempt"]:
            raise UsageError(f"stage {stage['name']} has no attempt {attempt} (it has run {stage['attempt']} time(s))")
        kinds = {} if args.raw else _parser_kinds(home)
        out = sys.stdout.buffer
        styled = out.isatty()

        def writer_for(row: sqlite3.Row) -> LogWriter:
            return LogWriter(out, None if args.raw else display_parser(kinds.get(row["provider"] or "")), styled)

        if not args.follow:
            writer = writer_for(stage)
            writer.copy(home.stage_log(args.id, stage["name"], attempt), 0)
            writer.end()
            return EXIT_OK
        _follow(conn, home, args.id, stage, attempt, only_stage=bool(args.stage), writer_for=writer_for, out=out)
        return EXIT_OK
    finally:
        conn.close()


def _stages(conn: sqlite3.Connection, task_id: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT id, name, status, attempt, provider FROM stages WHERE task_id = ?"
        " ORDER BY COALESCE(started_at, 0), position",
        (task_id,),
    ).fetchall()


def _follow(conn: sqlite3.Connection, home: Home, task_id: int, stage: sqlite3.Row, attempt: int, *,
            only_stage: bool, writer_for: Callable[[sqlite3.Row], LogWriter], out: BinaryIO) -> None:
    """Print each attempt as it grows; when one ends, go on with the next attempt (of this
    stage, or of any stage of the task) until nothing more can start."""
    # Attempts that began before we looked are history: only the one asked for, and what
    # starts from now on, is followed.
    shown: dict[str, int] = {row["name"]: row["attempt"] for row in _stages(conn, task_id)}
    shown[stage["name"]] = attempt
    current, writer, offset = stage, writer_for(stage), 0
    while True:
        path = home.stage_log(task_id, current["name"], attempt)
        offset = writer.copy(path, offset)
        row = conn.execute("SELECT status, attempt FROM stages WHERE id = ?", (current["id"],)).fetchone()
        if row is None:  # the task was deleted meanwhile (`tacx rm` from another terminal)
            writer.end()
            _deleted(task_id)
            return
        if row["status"] == "running" and row["attempt"] == attempt:
            time.sleep(FOLLOW_SECONDS)
            continue
        writer.copy(path, offset)
        writer.end()
        following = _next_attempt(conn, task_id, shown, current["name"] if only_stage else None)
        while following is None:
            status = records.task_status(conn, task_id)
            if status is None:
                _deleted(task_id)
                return
            if status in records.TERMINAL_TASK_STATES or (only_stage and _stage_over(conn, current["id"])):
                return
            time.sleep(FOLLOW_SECONDS)
            following = _next_attempt(conn, task_id, shown, current["name"] if only_stage else None)
        current, attempt = following
        shown[current["name"]] = attempt
        out.write(f"── {current['name']} · attempt {attempt} ──\n".encode())
        writer, offset = writer_for(current), 0


def _next_attempt(conn: sqlite3.Connection, task_id: int, shown: dict[str, int],
                  only: str | None) -> tuple[sqlite3.Row, int] | None:
    """The first attempt, in the order stages started, that has begun and was not shown."""
    for row in _stages(conn, task_id):
        if only is not None and row["name"] != only:
            continue
        seen = shown.get(row["name"], 0)
        if row["attempt"] > seen:
            return row, seen + 1
    return None


def _stage_over(conn: sqlite3.Connection, stage_id: int) -> bool:
    row = conn.execute("SELECT status FROM stages WHERE id = ?", (stage_id,)).fetchone()
    return row is None or row[0] in records.FINISHED_STAGE_STATES


def _deleted(task_id: int) -> None:
    print(f"tacx: task {task_id} was deleted (tacx rm) while it was followed", file=sys.stderr)
