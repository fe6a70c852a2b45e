"""The dashboard's log panel: one stage's log, tailed live, rendered for people.

Daughters append to ``.tacx/logs/<task>/<stage>.<attempt>.log`` at any rate, with any
bytes and any line length. The panel never touches that file on the event loop: a thread
worker follows it (``tacx.ui.logtail``), renders complete lines (``tacx.ui.logformat``) and
hands bounded batches to the widget. The widget keeps at most MAX_LINES lines and draws
only the rows on screen (a Line API ``ScrollView``), so a daughter writing megabytes a
second costs the loop a few list appends and a repaint five times a second. Two modes:
**pretty** (agents: their events rendered for people) and **raw** (the file's lines).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from textual.cache import LRUCache
from textual.content import Content
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import Worker, get_current_worker

from tacx.ui.logformat import AGENT_KINDS, S_ERROR, S_NOTE, LogLine, clean, display_parser, human_size, render_lines
from tacx.ui.logtail import JUMP_BYTES, MAX_LINES, TAIL_BYTES, Chunk, LogFollower

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often the file is looked at


class LogBatch(Message, bubble=False):
    """Rendered lines from the reader thread to the widget (internal)."""

    def __init__(self, generation: int, lines: list[LogLine], width: int, *, reset: bool,
                 state: str, size: int) -> None:
        super().__init__()
        self.generation = generation
        self.lines = lines
        self.width = width
        self.reset = reset
        self.state = state  # "ok" | "missing" | "deleted" | "error: ..."
        self.size = size
        self.done = threading.Event()  # set once handled: the reader waits (back pressure)


class StageLog(ScrollView, can_focus=True):
    """Tails one stage's log. ``show(path, parser_kind, title)`` switches logs (instantly:
    the reading happens in a thread worker of group "log"); ``toggle_raw()`` switches
    between events rendered for people and the raw lines. Holds at most ``max_lines``."""

    DEFAULT_CSS = """
    StageLog {
        height: 1fr;
        border: round $foreground 30%;
        border-title-align: left;
        border-subtitle-align: right;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        overflow-x: auto;
        overflow-y: auto;
        &:focus {
            border: round $accent;
            background-tint: $foreground 5%;
        }
    }
    """

    def __init__(self, path: Path | None = None, parser_kind: str | None = None, title: str = "", *,
                 max_lines: int = MAX_LINES, tail_bytes: int = TAIL_BYTES, jump_bytes: int = JUMP_BYTES,
                 poll_seconds: float = POLL_SECONDS, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.max_lines = max_lines
        self.tail_bytes = tail_bytes
        self.jump_bytes = jump_bytes
        self.poll_seconds = poll_seconds
        self._path: Path | None = Path(path) if path is not None else None
        self._kind = parser_kind
        self._title = title
        self._prefer_raw = False
        self._generation = 0
        self._lines: list[LogLine] = []
        self._first = 0  # absolute number of self._lines[0]: the key of the strip cache
        self._width = 0
        self._cache: LRUCache[int, Strip] = LRUCache(1024)
        self._state = "opening"
        self._file_size: int | None = None
        self._header = ("", "")
        self._readers = 0  # reader threads alive (old ones end within a poll)
        self._readers_lock = threading.Lock()
        self._worker: Worker[None] | None = None
        self._follow = True
        self._mounted = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def parser_kind(self) -> str | None:
        return self._kind

    @property
    def title(self) -> str:
        """The label given to ``show`` (the header adds the mode and the status to it)."""
        return self._title

    @property
    def pretty_available(self) -> bool:
        """The log is an agent's: its events can be rendered for people."""
        return self._kind in AGENT_KINDS

    @property
    def mode(self) -> str:
        """"pretty" or "raw"."""
        return "pretty" if self.pretty_available and not self._prefer_raw else "raw"

    @property
    def lines(self) -> list[str]:
        """The lines held (at most max_lines), as plain text."""
        return [line.plain for line in self._lines]

    @property
    def title_text(self) -> str:
        """The header's left part: stage and mode."""
        return self._header[0]

    @property
    def status_text(self) -> str:
        """The header's right part: following / scrolled and the size, or why empty."""
        return self._header[1]

    @property
    def following(self) -> bool:
        """New lines scroll into view: the view is at the end (scrolling up stops that,
        scrolling back to the end or ``end`` resumes it)."""
        return self._follow

    def show(self, path: Path | None, parser_kind: str | None = None, title: str = "") -> None:
        """Show another log (None: none). Cheap and without I/O: call it whenever the
        selection changes; showing the log already shown only updates the title."""
        path = Path(path) if path is not None else None
        same = path == self._path and parser_kind == self._kind
        self._title = title
        if same and self._generation and (path is None or self._reading()):
            self._update_header()
            return
        self._path, self._kind = path, parser_kind
        self._restart()

    def toggle_raw(self) -> None:
        """Switch between pretty and raw (a script's log is always raw). The choice stays
        for the next logs shown."""
        if not self.pretty_available:
            return
        self._prefer_raw = not self._prefer_raw
        self._restart()

    def action_toggle_raw(self) -> None:
        self.toggle_raw()

    def clear(self) -> None:
        """Forget the lines shown (the log goes on being followed)."""
        self._clear_lines()
        self.refresh()

    # -- reading ------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self._mounted = True
        self._restart()

    def _restart(self) -> None:
        self._generation += 1
        # The new log's first batch comes within a poll and sets the size: keeping the old
        # one meanwhile spares two layouts and scrollbar flips per switch (a key press).
        self._clear_lines(keep_size=self._path is not None)
        self._file_size = None
        self._state = "opening" if self._path is not None else "none"
        self._update_header()
        self.refresh()
        if not self._mounted:
            return  # on_mount starts the reading
        if self._path is None:
            self.workers.cancel_group(self, "log")
            return
        work = partial(self._read_loop, self._generation, self._path, self._kind, self.mode == "raw")
        self._worker = self.run_worker(work, name=f"log {self._path.name}", group="log", exclusive=True,
                                       thread=True, exit_on_error=False)

    def _reading(self) -> bool:
        worker = self._worker
        return worker is not None and not worker.is_cancelled and not worker.is_finished

    def _read_loop(self, generation: int, path: Path, kind: str | None, raw: bool) -> None:
        """The reader thread: follow the file, render, deliver; until cancelled."""
        stop = get_current_worker().cancelled_event
        with self._readers_lock:
            self._readers += 1
        try:
            follower = LogFollower(path, tail_bytes=self.tail_bytes, jump_bytes=self.jump_bytes,
                                   keep_lines=self.max_lines)
            parser = None if raw else display_parser(kind)
            last: tuple[str, int] | None = None
            first = True
            while not stop.is_set():
                try:
                    chunk = follower.poll()
                    state = "ok" if chunk.exists else "deleted" if follower.seen else "missing"
                except OSError as exc:
                    chunk, state = Chunk(), f"error: {exc.strerror or exc}"
                notes: list[LogLine] = []
                if chunk.reset and chunk.replaced:
                    notes.append(LogLine("— the log was truncated or replaced: reading it anew —", S_NOTE))
                if chunk.reset and not raw:
                    parser = display_parser(kind)
                if chunk.skipped:
                    notes.append(LogLine(f"… {human_size(chunk.skipped)} skipped (written faster than shown) …",
                                      S_NOTE))
                shown = render_lines(chunk.lines, parser) if chunk.lines else []
                room = max(0, self.max_lines - len(notes))
                items = notes + (shown[len(shown) - room :] if len(shown) > room else shown)
                status = (state, chunk.size)
                if items or first or chunk.reset or status != last:
                    width = max((item.cell_len for item in items), default=0)
                    batch = LogBatch(generation, items, width, reset=first or chunk.replaced,
                                     state=state, size=chunk.size)
                    if not self._deliver(batch, stop):
                        return
                    first, last = False, status
                stop.wait(self.poll_seconds)
        except Exception as exc:  # a bug: say so in the panel rather than freeze silently
            log.exception("the log reader of %s failed", path)
            note = LogLine(clean(f"— the log reader failed: {exc!r} —"), S_ERROR)
            self._deliver(LogBatch(generation, [note], note.cell_len, reset=False, state="error: reader failed",
                                   size=0), stop)
        finally:
            with self._readers_lock:
                self._readers -= 1

    def _deliver(self, batch: LogBatch, stop: threading.Event) -> bool:
        """Hand a batch to the widget and wait until it is shown, so the reader never runs
        ahead of the screen; False when the reading should end."""
        try:
            if not self.post_message(batch):
                return False
        except RuntimeError:  # the app's loop is gone
            return False
        while not batch.done.wait(0.1):
            if stop.is_set():
                return False
        return True

    def on_log_batch(self, batch: LogBatch) -> None:
        try:
            if batch.generation != self._generation:
                return  # from a log no longer shown
            if batch.reset:
                self._clear_lines(keep_size=bool(batch.lines))  # _append sets the new size
            self._state, self._file_size = batch.state, batch.size
            if batch.lines:
                self._append(batch.lines, batch.width)
            self._update_header()
            self.refresh()
        finally:
            batch.done.set()

    # -- lines and drawing ----------------------------------------------------------------------

    def _clear_lines(self, *, keep_size: bool = False) -> None:
        """Forget the lines; ``keep_size`` leaves the scrollable size (a change of it is a
        layout of the whole screen) to the lines about to come."""
        self._lines.clear()
        self._first = 0
        self._width = 0
        self._cache.clear()
        if not keep_size:
            self.virtual_size = Size(0, 0)
        self._follow = True
        if self._mounted:
            self.scroll_to(0, 0, animate=False, immediate=True)

    def _append(self, items: Sequence[LogLine], width: int) -> None:
        at_end = self._follow
        self._lines.extend(items)
        evicted = len(self._lines) - self.max_lines
        if evicted > 0:
            del self._lines[:evicted]
            self._first += evicted
        self._width = max(self._width, width)
        self.virtual_size = Size(self._width, len(self._lines))
        if at_end and not self.is_vertical_scrollbar_grabbed:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        elif evicted > 0:  # keep what the reader scrolled to in place
            self.scroll_to(y=max(0, self.scroll_offset.y - evicted), animate=False, force=True)

    def _placeholder(self) -> str:
        if self._state == "none":
            return "not started yet: no output" if self._title else "no stage selected"
        if self._state == "missing":
            return "waiting for output"
        if self._state == "deleted":
            return "the log was deleted"
        if self._state.startswith("error"):
            return f"cannot read the log: {self._state[7:]}"
        if self._state == "ok":
            return "no output yet"
        return ""

    def _update_header(self) -> None:
        name = self._title or (self._path.name if self._path is not None else "log")
        title = f"{name} · {self.mode}" if self._path is not None else name
        if self._state in ("none", "opening", "missing", "deleted") or self._state.startswith("error"):
            status = "" if self._state == "opening" else self._placeholder()
        else:
            where = "following" if self._follow else "scrolled"
            status = f"{where} · {human_size(self._file_size or 0)}"
        if (title, status) != self._header:
            self._header = (title, status)
            self.border_title = Content(title)
            self.border_subtitle = Content(status)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self.is_vertical_scroll_end:
            self._follow = True
        elif new_value < old_value:  # the reader scrolled up: stop following
            self._follow = False
        self._update_header()

    def on_resize(self) -> None:
        if self._follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if index >= len(self._lines):
            if index == 0 and not self._lines:
                text = self._placeholder()
                if text:
                    return Strip(LogLine(text, S_NOTE).segments(base)).crop_extend(0, width, base)
            return Strip.blank(width, base)
        key = self._first + index
        strip = self._cache.get(key)
        if strip is None:
            line = self._lines[index]
            strip = Strip(line.segments(base), line.cell_len)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, base)
