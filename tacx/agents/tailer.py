"""Tails the logs of streaming daughters (agents) and feeds their lines to parsers.

Daughters write straight to their log file; one thread reads every watched log a few
times a second from where it stopped, splits complete lines and feeds them to the
stage's parser. What the parser found is handed to the event loop as one bounded Batch
per log and round, so the loop never reads a file or parses JSON. Memory is bounded
whatever the daughter writes and however far behind the reading is: a line longer than
MAX_LINE is skipped (it stays in the log), a round reads at most ROUND_BYTES per log, and
a batch keeps every usage increment (one per message, each of which costs money) but only
the last SHOWN_EVENTS of what the agent said.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tacx.agents.base import AgentState, Outcome, OutputParser, ParsedEvent

log = logging.getLogger(__name__)

CHUNK = 1 << 20
ROUND_BYTES = 16 << 20
MAX_LINE = 16 << 20
SHOWN_EVENTS = 200  # what the agent said and did, kept per batch for the dashboard (the newest)
NOTABLE_EVENTS = 50  # session, retry, rate_limit, result, error kept per batch to store (the first)
NOTABLE_KINDS = frozenset({"session", "retry", "rate_limit", "result", "error"})


@dataclass
class Batch:
    """What one round (or the end) of a log brought, bounded whatever its size."""

    usage: list[ParsedEvent] = field(default_factory=list)
    notable: list[ParsedEvent] = field(default_factory=list)
    shown: deque[ParsedEvent] = field(default_factory=lambda: deque(maxlen=SHOWN_EVENTS))
    dropped: int = 0  # events not kept (their lines are in the log)

    def add(self, events: list[ParsedEvent]) -> None:
        for event in events:
            if event.kind == "usage":
                self.usage.append(event)
                continue
            if event.kind in NOTABLE_KINDS and len(self.notable) < NOTABLE_EVENTS:
                self.notable.append(event)  # to be stored
            if len(self.shown) == SHOWN_EVENTS:
                self.dropped += 1
            self.shown.append(event)  # to be shown, in order

    def __bool__(self) -> bool:
        return bool(self.usage or self.notable or self.shown)


Deliver = Callable[["Tail", Batch, AgentState], None]


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

    def read(self, batch: Batch, limit: int | None = ROUND_BYTES) -> None:
        """Read what was written since the last call (at most ``limit`` bytes) and parse
        the complete lines into ``batch``. Called with ``lock`` held."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
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
                self._split(data, batch)
        finally:
            os.close(fd)

    def _split(self, data: bytes, batch: Batch) -> None:
        start = 0
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
            elif len(self.partial) + end - start > MAX_LINE:
                self.partial.clear()
                self.skipped_lines += 1
            elif self.partial:
                self.partial += data[start:end]
                line = bytes(self.partial)
                self.partial.clear()
                self._feed(line, batch)
            else:
                self._feed(data[start:end], batch)
            start = end + 1

    def _feed(self, line: bytes, batch: Batch) -> None:
        self.lines += 1
        try:
            found = self.parser.feed(line)
        except Exception:  # a parser bug must not stop the stage: the line stays in the log
            log.exception("parser failed on line %d of %s", self.lines, self.path)
            return
        if found:
            batch.add(found)

    def finish(self) -> tuple[Batch, Outcome]:
        """Read to the end, parse a last unterminated line, and conclude."""
        with self.lock:
            self.closed = True
            batch = Batch()
            self.read(batch, limit=None)
            if self.partial and not self.skipping:
                line = bytes(self.partial)
                self.partial.clear()
                self._feed(line, batch)
            try:
                outcome = self.parser.finish(b"")
                batch.add(self.parser.final_events())
            except Exception as exc:
                log.exception("parser failed to conclude on %s", self.path)
                outcome = Outcome(error=f"tacx could not read the agent's output: {exc!r}")
            return batch, outcome


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
        # Reading a long backlog at a stage's end must not hold up spawns on the default pool.
        self._finisher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tacx-tail-end")

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
        batch, outcome = await asyncio.get_running_loop().run_in_executor(self._finisher, tail.finish)
        tail.deliver(tail, batch, copy.deepcopy(tail.parser.state))
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
        self._finisher.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._guard:
                tails = list(self._tails)
            for tail in tails:
                try:
                    self._round(tail)
                except Exception:  # one unreadable log (EIO, ESTALE) must not stop the others
                    log.exception("tailing %s failed", tail.path)

    def _round(self, tail: Tail) -> None:
        with tail.lock:  # held while scheduling too: deliveries reach the loop in order
            if tail.closed:
                return
            before = tail.offset
            batch = Batch()
            tail.read(batch)
            if tail.offset == before:
                return
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(tail.deliver, tail, batch, copy.deepcopy(tail.parser.state))
            except RuntimeError:  # the loop closed meanwhile
                pass
