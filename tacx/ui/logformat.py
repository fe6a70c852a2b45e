"""Log lines rendered for people, for the log panel: **pretty** turns an agent's lines into
its events with ``tacx.agents.parsers`` and shows them as short lines (``● text``,
``⚙ Bash: pytest -q``, ``↳ 3 passed``, ``✓ result: ...``); **raw** shows a file's lines as
they are. Every shown character is printable: terminal escapes and control characters are
made visible. No Textual here: a reader thread renders, the widget only draws."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style

from tacx.agents.aider import AiderParser
from tacx.agents.registry import make_parser
from tacx.agents.prices import PriceTable
from tacx.agents.base import OutputParser, ParsedEvent
from tacx.text import printable

log = logging.getLogger(__name__)

LINE_CHARS = 1000  # a shown line is cut to this many characters
TEXT_LINES = 8  # lines of an agent's message shown before "… N more lines"

AGENT_KINDS = frozenset({"claude-stream-json", "codex-json", "gemini-stream-json", "aider-text"})

# Control characters (C0, DEL) become \xNN via tacx.text.printable; C1 too (U+009B is
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
