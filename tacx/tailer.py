"""Tails the logs of streaming daughters (agents) and feeds their lines to parsers.

Daughters write straight to their log file; one thread reads every watched log a few
times a second from where it stopped, splits complete lines and feeds them to the
stage's parser. What the parser found (events and its state) is handed to the event loop
in one call per log and round, so the loop never reads a file or parses JSON. Memory is
bounded whatever the daughter writes: a line longer than MAX_LINE is skipped (it stays
in the log) and each round reads at most ROUND_BYTES per log.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tacx.providers.base import AgentState, Outcome, OutputParser, ParsedEvent

log = logging.getLogger(__name__)

CHUNK = 1 << 20
ROUND_BYTES = 16 << 20
MAX_LINE = 16 << 20

Deliver = Callable[["Tail", list[ParsedEvent], AgentState], None]


@dataclass(eq=False)
class Tail:
    """One log being read: where the reading stopped and the partial line kept."""

    path: Path
    parser: OutputParser
    deliver: Deliver
    offset: int = 0
    partial: bytearray = field(default_factory=bytearray)
    skipping: bool = False  # inside a line longer than MAX_LINE: drop bytes until its end
    skipped_lines: int = 0
    lines: int = 0
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, limit: int | None = ROUND_BYTES) -> list[ParsedEvent]:
        """Read what was written since the last call (at most ``limit`` bytes) and parse
        the complete lines. Called with ``lock`` held."""
        events: list[ParsedEvent] = []
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return events
        try:
            budget = limit
            while budget is None or budget > 0:
                size = CHUNK if budget is None else min(CHUNK, budget)
                data = os.pread(fd, size, self.offset)
                if not data:
                    break
                self.offset += len(data)
                if budget is not None:
                    budget -= len(data)
                self._split(data, events)
        finally:
            os.close(fd)
        return events

    def _split(self, data: bytes, events: list[ParsedEvent]) -> None:
        start = 0
        feed = self.parser.feed
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                rest = data[start:]
                if self.skipping:
                    return
                if len(self.partial) + len(rest) > MAX_LINE:
                    self.partial.clear()
                    self.skipping = True
                    self.skipped_lines += 1
                else:
                    self.partial += rest
                return
            if self.skipping:
                self.skipping = False
            elif self.partial:
                self.partial += data[start:end]
                line = bytes(self.partial)
                self.partial.clear()
                self._feed(feed, line, events)
            else:
                self._feed(feed, data[start:end], events)
            start = end + 1

    def _feed(self, feed: Callable[[bytes], list[ParsedEvent]], line: bytes, events: list[ParsedEvent]) -> None:
        self.lines += 1
        try:
            found = feed(line)
        except Exception:  # a parser bug must not stop the stage: the line stays in the log
            log.exception("parser failed on line %d of %s", self.lines, self.path)
            return
        if found:
            events.extend(found)

    def finish(self) -> tuple[list[ParsedEvent], Outcome]:
        """Read to the end, parse a last unterminated line, and conclude."""
        with self.lock:
            self.closed = True
            events = self.read(limit=None)
            if self.partial and not self.skipping:
                line = bytes(self.partial)
                self.partial.clear()
                self._feed(self.parser.feed, line, events)
            try:
                outcome = self.parser.finish(b"")
                events.extend(self.parser.final_events())
            except Exception as exc:
                log.exception("parser failed to conclude on %s", self.path)
                outcome = Outcome(error=f"tacx could not read the agent's output: {exc!r}")
            return events, outcome


class Tailer:
    """One thread reading every watched log every ``interval`` seconds."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._tails: set[Tail] = set()
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="tacx-tailer", daemon=True)
        self._thread.start()

    def watch(self, path: Path, parser: OutputParser, deliver: Deliver) -> Tail:
        tail = Tail(path, parser, deliver)
        with self._guard:
            self._tails.add(tail)
        self._wake.set()
        return tail

    async def finish(self, tail: Tail) -> Outcome:
        """Stop watching; the rest of the log is parsed and delivered before this returns."""
        with self._guard:
            self._tails.discard(tail)
        events, outcome = await asyncio.to_thread(tail.finish)
        tail.deliver(tail, events, copy.deepcopy(tail.parser.state))
        return outcome

    def forget(self, tail: Tail) -> None:
        """Stop watching without concluding (tacx leaves the daughter running)."""
        with self._guard:
            self._tails.discard(tail)
        tail.closed = True

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._guard:
                tails = list(self._tails)
            for tail in tails:
                self._round(tail)

    def _round(self, tail: Tail) -> None:
        with tail.lock:  # held while scheduling too: deliveries reach the loop in order
            if tail.closed:
                return
            before = tail.offset
            events = tail.read()
            if tail.offset == before:
                return
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(tail.deliver, tail, events, copy.deepcopy(tail.parser.state))
            except RuntimeError:  # the loop closed meanwhile
                pass
