"""The log panel's rendering: agent events for people, other lines as they are, and every
shown character printable."""

from __future__ import annotations

from tacx.agents.base import ParsedEvent
from tacx.ui import logformat
from tacx.ui.logformat import LINE_CHARS, display_parser, raw_line, render_event, render_lines
from tests.streams import CLAUDE_SAMPLE as CLAUDE
from tests.streams import CODEX_SAMPLE as CODEX


def plain(lines: bytes, kind: str | None) -> list[str]:
    return [t.plain for t in render_lines(lines.splitlines(), display_parser(kind))]


def assert_printable(text: str) -> None:
    bad = [c for c in text if ord(c) < 32 and c != "\t" or 0x7F <= ord(c) < 0xA0]
    assert not bad, f"control characters reach the screen: {bad!r} in {text!r}"


def test_claude_reference_stream_rendered_for_people() -> None:
    assert plain(CLAUDE, "claude-stream-json") == [
        "session 8d45… · claude-sonnet-4-5",
        "● I'll run the tests.",
        "⚙ Bash: pytest -q",
        "  ↳ 3 passed in 0.41s",
        "↻ API retry 1 (529): server_error, waiting 2.0s",
        "✓ result: All 3 tests pass. (2 turns)",
    ]


def test_claude_styles_mark_results_and_errors() -> None:
    shown = render_lines(CLAUDE.splitlines(), display_parser("claude-stream-json"))
    tool_result = next(t for t in shown if "↳" in t.plain)
    assert tool_result.style.dim
    failed = render_event(ParsedEvent("tool_result", {"output": "boom\ntrace", "is_error": True}))
    assert failed is not None and failed[0].plain == "  ↳ ✗ boom (+1 line)"
    assert failed[0].style.color is not None and failed[0].style.color.name == "red"
    result = next(t for t in shown if t.plain.startswith("✓"))
    assert result.style.color.name == "green"


def test_codex_stream_rendered() -> None:
    assert plain(CODEX, "codex-json") == [
        "session 0199…",
        "∴ **Searching for README files**",
        "⚙ command: bash -lc ls",
        "  ↳ AGENTS.md (+1 line)",
        "● Yes, README.md is in the root.",
        "✓ result: Yes, README.md is in the root. (1 turn)",
    ]


def test_event_kinds() -> None:
    assert render_event(ParsedEvent("usage", {"input": 3})) is None
    error = render_event(ParsedEvent("error", {"message": "Not logged in · Please run /login"}))
    assert [t.plain for t in error or []] == ["✗ error: Not logged in · Please run /login"]
    failed = render_event(ParsedEvent("result", {"subtype": "error_max_turns", "is_error": True, "turns": 5}))
    assert [t.plain for t in failed or []] == ["✗ result: error_max_turns (5 turns)"]
    limited = render_event(ParsedEvent("rate_limit", {"status": "rejected", "resets_at": None, "detail": ""}))
    assert [t.plain for t in limited or []] == ["⏳ rate limit rejected"]
    long_text = "\n".join(f"para {i}" for i in range(20))
    text = [t.plain for t in render_event(ParsedEvent("text", {"text": long_text})) or []]
    assert text[0] == "● para 0" and text[1] == "  para 1"
    assert text[-1] == f"  … {20 - logformat.TEXT_LINES} more lines" and len(text) == logformat.TEXT_LINES + 1
    assert render_event(ParsedEvent("text", {"text": "   "})) is None
    assert [t.plain for t in render_event(ParsedEvent("tool_result", {"output": "", "is_error": False})) or []] == [
        "  ↳ (no output)"
    ]


def test_non_json_lines_shown_dimmed_and_silent_json_hidden() -> None:
    lines = [
        b"Warning: no stdin data received in 3s",
        b'{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}',  # routine: nothing
        b'{"type":"some_future_event","x":1}',  # unknown: nothing
        b"",
        b"   ",
        b"Traceback (most recent call last):",
    ]
    shown = render_lines(lines, display_parser("claude-stream-json"))
    assert [t.plain for t in shown] == ["Warning: no stdin data received in 3s", "Traceback (most recent call last):"]
    assert all(t.style.dim for t in shown)


def test_aider_text_shown_as_text() -> None:
    lines = [b"Model: gpt-4o with diff edit format", b"Applied edit to app.py",
             b"Tokens: 2.1k sent, 300 received. Cost: $0.01 message, $0.05 session."]
    shown = render_lines(lines, display_parser("aider-text"))
    texts = [t.plain for t in shown]
    assert "session · gpt-4o" in texts
    assert "Applied edit to app.py" in texts and not next(t for t in shown if t.plain.startswith("Applied")).style.dim
    assert any(t.startswith("Tokens: 2.1k sent") for t in texts)


def test_scripts_and_plain_are_raw() -> None:
    assert display_parser(None) is None and display_parser("plain") is None
    assert plain(b'{"type":"result"}\nhello\n', None) == ['{"type":"result"}', "hello"]


def test_escape_sequences_made_visible() -> None:
    nasty = b"\x1b[2J\x1b]0;owned\x07red \x1b[31mtext\x1b[0m \x08\x7f \xc2\x9b31m tab\there\r"
    line = raw_line(nasty).plain
    assert_printable(line)
    assert "\\x1b[2J" in line and "\\x07" in line and "\\x9b" in line and "\\x7f" in line
    assert "tab" in line and "here" in line
    text = render_event(ParsedEvent("text", {"text": "look \x1b[5mblink\x1b[0m"})) or []
    assert_printable(text[0].plain)
    assert text[0].plain == "● look \\x1b[5mblink\\x1b[0m"
    tool = render_event(ParsedEvent("tool_use", {"name": "Bash\x1b[1m", "input": "echo \x1b]52;c;AAAA\x07"})) or []
    assert_printable(tool[0].plain)


def test_long_lines_truncated_and_invalid_utf8_replaced() -> None:
    line = raw_line(b"x" * 100_000).plain
    assert len(line) == LINE_CHARS and line.endswith("…")
    escapes = raw_line(b"\x1b" * 10_000).plain
    assert len(escapes) == LINE_CHARS
    text = render_event(ParsedEvent("text", {"text": "y" * 5000})) or []
    assert len(text[0].plain) == LINE_CHARS
    assert raw_line(b"caf\xc3\xa9 \xff\xfe ok").plain == "café \ufffd\ufffd ok"

