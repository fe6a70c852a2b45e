"""The dashboard's log panel: one stage's log, tailed live, rendered for people.

Daughters append to ``.tacx/logs/<task>/<stage>.<attempt>.log`` at any rate, with any
bytes and any line length. The panel never touches that file on the event loop: a thread
worker opens it, reads its last TAIL_BYTES, then follows it (a pread from the offset a few
times a second), splits complete lines, renders them and hands bounded batches to the
widget. The widget keeps at most MAX_LINES lines and draws only the rows on screen (a
Line API ``ScrollView``), so a daughter writing megabytes a second costs the loop a few
list appends and a repaint five times a second.

Two modes: **pretty** (agents) turns each line into the agent's events with
``tacx.agents.parsers`` and shows them as short lines (``● text``, ``⚙ Bash: pytest -q``,
``↳ 3 passed``, ``✓ result: ...``); **raw** shows the file's lines as they are. Every shown
character is printable: terminal escapes and control characters are made visible.

The pure parts (``tail_lines``, ``LogFollower``, ``render_event``, ``render_lines``) have no
Textual in them and are tested on their own; ``StageLog`` is the widget.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.content import Content
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import Worker, get_current_worker

from tacx.agents.aider import AiderParser
from tacx.agents.registry import make_parser
from tacx.agents.prices import PriceTable
from tacx.agents.base import OutputParser, ParsedEvent
from tacx.text import printable

log = logging.getLogger(__name__)

TAIL_BYTES = 256 * 1024  # read from the end of a log when it is opened (and after a jump)
MAX_LINES = 2000  # lines the widget holds
LINE_CHARS = 1000  # a shown line is cut to this many characters
MAX_LINE_BYTES = 1 << 20  # a longer line is cut (its first MiB is kept, enough to show it)
JUMP_BYTES = 4 << 20  # more new bytes than this since the last read: skip to the tail
READ_CHUNK = 1 << 20  # one pread
POLL_SECONDS = 0.2  # how often the file is looked at
FLUSH_POLLS = 5  # an unterminated last line is shown once the file stood still this many polls
TEXT_LINES = 8  # lines of an agent's message shown before "… N more lines"

AGENT_KINDS = frozenset({"claude-stream-json", "codex-json", "gemini-stream-json", "aider-text"})

# Control characters (C0, DEL) become \xNN via tacx.cli.reporter.printable; C1 too (U+009B is
# a one-character CSI on some terminals).
_C1 = {c: f"\\x{c:02x}" for c in range(0x80, 0xA0)}
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")

S_PLAIN = Style()
S_DIM = Style(dim=True)
S_NOTE = Style(dim=True, italic=True)
S_THINK = Style(dim=True, italic=True)
S_TOOL = Style(color="yellow", bold=True)
S_OK = Style(color="green")
S_ERROR = Style(color="red")
S_WARN = Style(color="yellow")
S_META = Style(color="cyan", dim=True)


def clean(text: str, limit: int = LINE_CHARS) -> str:
    """One line of text fit for the screen: tabs expanded, control characters and escapes
    made visible (``\\x1b``), cut to ``limit`` characters (a cut ends with "…")."""
    if len(text) > limit * 4:  # each character may grow to four: no need to look further
        text = text[: limit * 4]
    if "\t" in text:
        text = text.expandtabs(4)
    if _UNPRINTABLE.search(text) is not None:  # translating is slow: only when needed
        text = printable(text).translate(_C1).replace("\n", "\\x0a")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1 << 20:
        return f"{size / 1024:.1f} KiB"
    if size < 1 << 30:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size / (1 << 30):.2f} GiB"


# -- reading: no Textual, runs in a thread ------------------------------------------------------


def _last_lines(data: bytes, begin: int, end: int, keep: int | None) -> int:
    """Where the last ``keep`` lines of ``data[begin:end]`` start (``end`` is a newline)."""
    if keep is None:
        return begin
    p = end
    for _ in range(keep):
        q = data.rfind(b"\n", begin, p)
        if q < 0:
            return begin
        p = q
    return p + 1


def _tail_fd(fd: int, size: int, max_bytes: int, keep: int | None, partial: bool) -> tuple[list[bytes], int]:
    start = max(0, size - max_bytes)
    mid_line = False
    if start > 0:  # did the window begin at a line's start? look at the byte before it
        data = os.pread(fd, size - start + 1, start - 1)
        mid_line = data[:1] != b"\n"
        data = data[1:]
    else:
        data = os.pread(fd, size, 0)
    size = start + len(data)  # the file may have shrunk under us
    begin = 0
    if mid_line:
        first = data.find(b"\n")
        if first < 0:  # the window is inside one line: nothing complete, resume at the end
            return [], size
        begin = first + 1
    last = data.rfind(b"\n")
    lines: list[bytes] = []
    offset = start + begin
    if last >= begin:
        cut = _last_lines(data, begin, last, keep)
        lines = [piece[:MAX_LINE_BYTES] for piece in data[cut:last].split(b"\n")]
        offset = start + last + 1
    if partial and offset < size:
        lines.append(data[offset - start : offset - start + MAX_LINE_BYTES])
        offset = size
        if keep is not None and len(lines) > keep:
            del lines[: len(lines) - keep]
    return lines, offset


def tail_lines(path: Path, max_bytes: int = TAIL_BYTES, *, max_lines: int | None = None,
               partial: bool = False) -> tuple[list[bytes], int]:
    """The complete lines in the last ``max_bytes`` of a file (without their newlines) and
    the offset just after the last of them, where following the file goes on.

    A line cut by the window's start is left out; so is an unterminated last line unless
    ``partial`` (then the offset is the end of the file). ``max_lines`` keeps only the
    newest lines. Lines are bytes as written (decode them with errors="replace"); a line
    longer than MAX_LINE_BYTES is cut. Raises OSError (FileNotFoundError) like ``open``.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return _tail_fd(fd, size, max_bytes, max_lines, partial)
    finally:
        os.close(fd)


@dataclass
class Chunk:
    """What one look at the file brought."""

    lines: list[bytes] = field(default_factory=list)
    reset: bool = False  # the reading started (over): what was shown before is gone
    replaced: bool = False  # ... because the file was truncated or replaced
    skipped: int = 0  # bytes jumped over: written faster than worth showing
    exists: bool = True
    size: int = 0


class LogFollower:
    """Follows one log file from a thread: ``poll()`` returns the complete lines written
    since the last call. Memory stays bounded whatever is written: after a jump of more
    than ``jump_bytes`` only the last ``tail_bytes`` are read, a poll keeps only the newest
    ``keep_lines`` lines, and a line is cut at MAX_LINE_BYTES."""

    def __init__(self, path: Path, *, tail_bytes: int = TAIL_BYTES, jump_bytes: int = JUMP_BYTES,
                 keep_lines: int = MAX_LINES, flush_polls: int = FLUSH_POLLS) -> None:
        self.path = path
        self.tail_bytes = tail_bytes
        self.jump_bytes = max(jump_bytes, tail_bytes)
        self.keep_lines = keep_lines
        self.flush_polls = flush_polls
        self.offset = 0
        self.seen = False  # the file existed at some point
        self._identity: tuple[int, int] | None = None
        self._partial = bytearray()
        self._skipping = False  # inside a line whose start was not read: drop until its end
        self._idle = 0

    def poll(self) -> Chunk:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return Chunk(exists=False)
        try:
            st = os.fstat(fd)
            identity = (st.st_dev, st.st_ino)
            size = st.st_size
            if identity != self._identity or size < self.offset:
                replaced = self._identity is not None
                self._identity, self.seen = identity, True
                return Chunk(self._start(fd, size), reset=True, replaced=replaced, size=size)
            pending = size - self.offset
            if pending > self.jump_bytes:
                skipped = max(0, size - self.tail_bytes - self.offset)
                return Chunk(self._start(fd, size), skipped=skipped, size=size)
            return Chunk(self._read(fd, size), size=size)
        finally:
            os.close(fd)

    def _start(self, fd: int, size: int) -> list[bytes]:
        lines, self.offset = _tail_fd(fd, size, self.tail_bytes, self.keep_lines, False)
        self._partial.clear()
        self._idle = 0
        # Resuming in the middle of a line (the window held no newline): skip to its end.
        self._skipping = self.offset > 0 and os.pread(fd, 1, self.offset - 1) != b"\n"
        return lines

    def _read(self, fd: int, size: int) -> list[bytes]:
        out: deque[bytes] = deque(maxlen=self.keep_lines)
        if self.offset >= size:
            self._idle += 1
            if self._partial and self._idle == self.flush_polls:  # the writer stopped mid-line
                out.append(bytes(self._partial))
                self._partial.clear()
            return list(out)
        self._idle = 0
        while self.offset < size:
            data = os.pread(fd, min(READ_CHUNK, size - self.offset), self.offset)
            if not data:
                break
            self.offset += len(data)
            self._split(data, out)
        return list(out)

    def _split(self, data: bytes, out: deque[bytes]) -> None:
        first = data.find(b"\n")
        if first < 0:
            self._keep(data)
            return
        if self._skipping:
            self._skipping = False
        else:
            self._keep(data[:first])
            out.append(bytes(self._partial))
            self._partial.clear()
        last = data.rfind(b"\n")
        if last > first:
            cut = _last_lines(data, first + 1, last, self.keep_lines)
            out.extend(piece[:MAX_LINE_BYTES] for piece in data[cut:last].split(b"\n"))
        self._keep(data[last + 1 :])

    def _keep(self, data: bytes) -> None:
        """Add to the unterminated line, up to MAX_LINE_BYTES."""
        if self._skipping or not data:
            return
        room = MAX_LINE_BYTES - len(self._partial)
        if room > 0:
            self._partial += data[:room]


# -- rendering: no Textual --------------------------------------------------------------------


class LogLine:
    """One shown line: printable text in styled parts. Lighter than rich.text.Text, which
    matters when a thread builds thousands a second."""

    __slots__ = ("_cells", "parts", "plain")

    def __init__(self, text: str = "", style: Style = S_PLAIN) -> None:
        self.parts: list[tuple[str, Style]] = [(text, style)] if text else []
        self.plain = text
        self._cells: int | None = None

    def append(self, text: str, style: Style = S_PLAIN) -> LogLine:
        self.parts.append((text, style))
        self.plain += text
        self._cells = None
        return self

    @property
    def style(self) -> Style:
        """The style of the line (of its first part)."""
        return self.parts[0][1] if self.parts else S_PLAIN

    @property
    def cell_len(self) -> int:
        if self._cells is None:
            self._cells = len(self.plain) if self.plain.isascii() else cell_len(self.plain)
        return self._cells

    def segments(self, base: Style) -> list[Segment]:
        return [Segment(text, base + style) for text, style in self.parts]

    def __repr__(self) -> str:
        return f"LogLine({self.plain!r})"


def raw_line(line: bytes, style: Style = S_PLAIN) -> LogLine:
    """A line of the file as it is (decoded leniently, made printable, cut)."""
    text = line[: LINE_CHARS * 4].decode("utf-8", errors="replace").rstrip("\r\n")
    return LogLine(clean(text), style)


def _text_lines(value: object) -> list[str]:
    if not isinstance(value, str) or not value:
        return []
    return [line for line in value.strip().splitlines() if line.strip()]


def _line(text: str, style: Style = S_PLAIN) -> LogLine:
    return LogLine(clean(text), style)


def _more(count: int) -> str:
    return f" (+{count} line{'s' if count != 1 else ''})" if count > 0 else ""


def _model_name(model: object) -> str:
    name = str(model) if model else ""
    head, _, tail = name.rpartition("-")
    return head if head and len(tail) == 8 and tail.isdigit() else name  # drop a -YYYYMMDD


def render_event(event: ParsedEvent) -> list[LogLine] | None:
    """An agent event as one or a few short lines for people, or None for events the log
    panel does not show (usage: the tokens panel shows it)."""
    kind, data = event.kind, event.data
    if kind == "usage":
        return None
    if kind == "text":
        lines = _text_lines(data.get("text"))
        if not lines:
            return None
        shown = [_line("● " + lines[0])] + [_line("  " + line) for line in lines[1:TEXT_LINES]]
        if len(lines) > TEXT_LINES:
            shown.append(_line(f"  … {len(lines) - TEXT_LINES} more lines", S_NOTE))
        return shown
    if kind == "thinking":
        lines = _text_lines(data.get("text"))
        return [_line("∴ " + lines[0] + _more(len(lines) - 1), S_THINK)] if lines else None
    if kind == "tool_use":
        name = clean(str(data.get("name") or "tool"), 80)
        summary = _text_lines(data.get("input"))
        text = LogLine("⚙ ", S_WARN)
        text.append(name, S_TOOL)
        if summary:
            text.append(": " + clean(summary[0], LINE_CHARS - len(name) - 4))
        return [text]
    if kind == "tool_result":
        lines = _text_lines(data.get("output"))
        first = lines[0] if lines else "(no output)"
        if data.get("is_error"):
            return [_line("  ↳ ✗ " + first + _more(len(lines) - 1), S_ERROR)]
        return [_line("  ↳ " + first + _more(len(lines) - 1), S_DIM)]
    if kind == "retry":
        text = "↻ API retry"
        if data.get("attempt") is not None:
            text += f" {data['attempt']}"
        if data.get("status") is not None:
            text += f" ({data['status']})"
        details = _text_lines(data.get("error"))[:1]
        delay = data.get("delay_ms")
        if isinstance(delay, (int, float)) and not isinstance(delay, bool):
            details.append(f"waiting {delay / 1000:.1f}s")
        if details:
            text += ": " + ", ".join(details)
        return [_line(text, S_WARN)]
    if kind == "rate_limit":
        status = str(data.get("status") or "")
        text = f"⏳ rate limit {status}".rstrip()
        resets = data.get("resets_at")
        if isinstance(resets, (int, float)) and not isinstance(resets, bool):
            try:
                text += ", resets " + time.strftime("%H:%M", time.localtime(resets))
            except (OverflowError, OSError, ValueError):
                pass
        if data.get("detail"):
            text += f" · {data['detail']}"
        return [_line(text, S_WARN if status.startswith("allowed") else S_ERROR)]
    if kind == "result":
        turns = data.get("turns")
        count = f" ({turns} turn{'s' if turns != 1 else ''})" if isinstance(turns, int) and turns else ""
        if data.get("is_error"):
            return [_line(f"✗ result: {data.get('subtype') or 'failed'}{count}", S_ERROR)]
        lines = _text_lines(data.get("text"))
        if not lines:
            return [_line(f"✓ done{count}", S_OK)]
        return [_line(f"✓ result: {lines[0]}{_more(len(lines) - 1)}{count}", S_OK)]
    if kind == "error":
        lines = _text_lines(data.get("message")) or ["(no message)"]
        return [_line(f"✗ error: {lines[0]}{_more(len(lines) - 1)}", S_ERROR)]
    if kind == "session":
        sid = str(data.get("session_id") or "")
        text = "session" + (f" {clean(sid[:4], 8)}…" if sid else "")
        if data.get("model"):
            text += f" · {_model_name(data['model'])}"
        return [_line(text, S_META)]
    return [_line(f"· {kind}", S_DIM)]


def display_parser(kind: str | None) -> OutputParser | None:
    """A parser to render a log of ``kind`` for people, or None where the log is shown raw
    (scripts, plain output). Display only: it prices nothing and reads no file."""
    if kind not in AGENT_KINDS:
        return None
    return make_parser(kind, prices=PriceTable({}))  # type: ignore[arg-type]


def render_lines(lines: Iterable[bytes], parser: OutputParser | None, *,
                 dim_text: bool | None = None) -> list[LogLine]:
    """Lines of a log as shown: with a parser, each line's events rendered for people
    (JSON lines that carry nothing shown, like usage, vanish; other text, such as stderr
    or warnings, is shown as it is, dimmed unless ``dim_text`` is False: aider's output is
    its text); without one, the lines as they are."""
    if parser is None:
        return [raw_line(line) for line in lines]
    if dim_text is None:
        dim_text = not isinstance(parser, AiderParser)
    other = S_DIM if dim_text else S_PLAIN
    out: list[LogLine] = []
    for line in lines:
        try:
            events = parser.feed(line)
        except Exception:  # a parser bug: show the line as it is
            log.debug("display parser failed", exc_info=True)
            events = []
        shown = False
        for event in events:
            rendered = render_event(event)
            if rendered:
                out.extend(rendered)
                shown = True
        if shown or events:
            if not shown and not dim_text:
                out.append(raw_line(line, other))  # aider: a "Tokens:" line is its text too
            continue
        if line[:1] == b"{" or line.lstrip()[:1] == b"{":
            continue  # an agent event nobody needs to read
        if line.strip():
            out.append(raw_line(line, other))
    return out


# -- the widget -------------------------------------------------------------------------------


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
        self._clear_lines()
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
                self._clear_lines()
            self._state, self._file_size = batch.state, batch.size
            if batch.lines:
                self._append(batch.lines, batch.width)
            self._update_header()
            self.refresh()
        finally:
            batch.done.set()

    # -- lines and drawing ----------------------------------------------------------------------

    def _clear_lines(self) -> None:
        self._lines.clear()
        self._first = 0
        self._width = 0
        self._cache.clear()
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
            return "no stage selected"
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
