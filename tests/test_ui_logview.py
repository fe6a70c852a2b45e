"""The log panel: rendering agent events for people, tailing a file off the event loop,
and the StageLog widget following a file that grows, vanishes, is truncated or floods."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
from textual.app import App, ComposeResult

from tacx.agents.base import ParsedEvent
from tacx.ui import logview
from tacx.ui.logview import (
    LINE_CHARS,
    MAX_LINES,
    LogFollower,
    StageLog,
    display_parser,
    raw_line,
    render_event,
    render_lines,
    tail_lines,
)

CLAUDE = b"""\
{"type":"system","subtype":"init","cwd":"/repo","session_id":"8d45afe0-771b-4803-8379-491dd9455365","tools":["Bash","Edit","Read"],"model":"claude-sonnet-4-5-20250929","permissionMode":"acceptEdits"}
{"type":"assistant","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"I'll run the tests."}],"usage":{"input_tokens":3,"cache_creation_input_tokens":12000,"cache_read_input_tokens":14000,"output_tokens":8}},"session_id":"8d45afe0-771b-4803-8379-491dd9455365","request_id":"req_01A"}
{"type":"assistant","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"toolu_01X","name":"Bash","input":{"command":"pytest -q"}}],"usage":{"input_tokens":3,"cache_creation_input_tokens":12000,"cache_read_input_tokens":14000,"output_tokens":8}},"session_id":"8d45afe0-771b-4803-8379-491dd9455365","request_id":"req_01A"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01X","type":"tool_result","content":"3 passed in 0.41s","is_error":false}]},"session_id":"8d45afe0-771b-4803-8379-491dd9455365"}
{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":2000,"error_status":529,"error":"server_error","session_id":"8d45afe0-771b-4803-8379-491dd9455365"}
{"type":"result","subtype":"success","is_error":false,"duration_ms":9120,"num_turns":2,"result":"All 3 tests pass.","session_id":"8d45afe0-771b-4803-8379-491dd9455365","total_cost_usd":0.063399,"usage":{"input_tokens":8,"cache_creation_input_tokens":12600,"cache_read_input_tokens":40000,"output_tokens":275},"modelUsage":{"claude-sonnet-4-5-20250929":{"inputTokens":8,"outputTokens":275,"cacheReadInputTokens":40000,"cacheCreationInputTokens":12600,"costUSD":0.063399}}}
"""

CODEX = b"""\
{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Searching for README files**"}}
{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"","exit_code":null,"status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"AGENTS.md\\nREADME.md\\n","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"Yes, README.md is in the root."}}
{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}
"""


def plain(lines: bytes, kind: str | None) -> list[str]:
    return [t.plain for t in render_lines(lines.splitlines(), display_parser(kind))]


def assert_printable(text: str) -> None:
    bad = [c for c in text if ord(c) < 32 and c != "\t" or 0x7F <= ord(c) < 0xA0]
    assert not bad, f"control characters reach the screen: {bad!r} in {text!r}"


# -- rendering ---------------------------------------------------------------------------------


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
    assert text[-1] == f"  … {20 - logview.TEXT_LINES} more lines" and len(text) == logview.TEXT_LINES + 1
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


# -- tail_lines and the follower ----------------------------------------------------------------


def test_tail_lines_small_file_and_no_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\nthr")
    assert tail_lines(path, 1024) == ([b"one", b"two"], 8)
    assert tail_lines(path, 1024, partial=True) == ([b"one", b"two", b"thr"], 11)
    path.write_bytes(b"")
    assert tail_lines(path, 1024) == ([], 0)
    path.write_bytes(b"no newline at all")
    assert tail_lines(path, 1024) == ([], 0)
    with pytest.raises(FileNotFoundError):
        tail_lines(tmp_path / "missing.log", 1024)


def test_tail_lines_skips_the_partial_first_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    body = b"".join(b"line %05d\n" % i for i in range(10_000))  # 11 bytes a line
    path.write_bytes(body)
    lines, offset = tail_lines(path, 1000)
    assert lines[-1] == b"line 09999" and offset == len(body)
    assert all(len(line) == 10 and line.startswith(b"line ") for line in lines)
    assert len(lines) == 1000 // 11  # the cut first line is left out
    lines, _ = tail_lines(path, 1000, max_lines=5)
    assert lines == [b"line %05d" % i for i in range(9995, 10_000)]
    # a window that starts exactly at a line's start keeps that line
    lines, _ = tail_lines(path, 11 * 3)
    assert lines == [b"line 09997", b"line 09998", b"line 09999"]


def test_tail_lines_huge_last_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    huge = b"z" * (3 << 20)
    path.write_bytes(b"before\n" + huge + b"\n")
    lines, offset = tail_lines(path, 64 * 1024)
    assert lines == [] and offset == path.stat().st_size  # cut by the window: not shown
    path.write_bytes(b"before\n" + huge + b"\nafter\n")
    assert tail_lines(path, 64 * 1024) == ([b"after"], path.stat().st_size)
    path.write_bytes(b"before\n" + huge)  # unterminated, bigger than the window
    lines, offset = tail_lines(path, 64 * 1024)
    assert lines == [] and offset == path.stat().st_size
    lines, offset = tail_lines(path, 8 << 20)  # the window holds it all: lines up to it
    assert lines == [b"before"] and offset == 7


def test_tail_lines_invalid_utf8_kept_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"\xff\xfe\x00bad\n\xc3\x28 also\n")
    lines, _ = tail_lines(path, 1024)
    assert lines == [b"\xff\xfe\x00bad", b"\xc3\x28 also"]
    shown = [raw_line(line).plain for line in lines]
    assert shown == ["\ufffd\ufffd\\x00bad", "\ufffd( also"]


def test_follower_follows_completes_lines_and_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    follower = LogFollower(path, flush_polls=2)
    chunk = follower.poll()
    assert not chunk.exists and not follower.seen
    path.write_bytes(b"a\nb\npart")
    chunk = follower.poll()
    assert chunk.reset and not chunk.replaced and chunk.lines == [b"a", b"b"]
    with path.open("ab") as f:
        f.write(b"ial\nc\n")
    assert follower.poll().lines == [b"partial", b"c"]
    with path.open("ab") as f:
        f.write(b"done without newline")
    assert follower.poll().lines == []
    assert follower.poll().lines == []
    assert follower.poll().lines == [b"done without newline"]  # the writer stopped: show it
    path.write_bytes(b"new\n")  # truncated (or replaced) and written again
    chunk = follower.poll()
    assert chunk.reset and chunk.replaced and chunk.lines == [b"new"]
    path.unlink()
    chunk = follower.poll()
    assert not chunk.exists and follower.seen


def test_follower_jump_reads_only_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"first\n")
    follower = LogFollower(path, tail_bytes=64 * 1024, jump_bytes=1 << 20)
    assert follower.poll().lines == [b"first"]
    with path.open("ab") as f:  # 50 MB at once (sparse: costs no disk)
        f.truncate(50 << 20)
        f.seek(0, os.SEEK_END)
        f.write(b"\nlast line\n")
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(logview.os, "pread", counting_pread)
    chunk = follower.poll()
    assert chunk.lines == [b"last line"]
    assert chunk.skipped > 49 << 20
    assert sum(reads) <= 64 * 1024 + 2  # never the backlog
    assert follower.offset == path.stat().st_size


def test_follower_bounds_lines_and_line_length(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"")
    follower = LogFollower(path, keep_lines=100)
    follower.poll()
    with path.open("ab") as f:
        f.write(b"x\n" * 500_000)  # 1 MB of tiny lines
        f.write(b"L" * (3 << 20) + b"\n")  # one line of 3 MiB
        f.write(b"end\n")
    lines = follower.poll().lines
    assert len(lines) == 100 and lines[-1] == b"end"
    assert len(lines[-2]) == logview.MAX_LINE_BYTES


# -- the widget ---------------------------------------------------------------------------------


class Host(App[None]):
    BINDINGS: ClassVar = [("x", "poke", "poke")]

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.kwargs = kwargs
        self.pokes = 0

    def compose(self) -> ComposeResult:
        yield StageLog(id="log", **self.kwargs)  # type: ignore[arg-type]

    def action_poke(self) -> None:
        self.pokes += 1


async def wait_for(pilot, condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await pilot.pause(0.05)
    return bool(condition())


def screen_rows(log: StageLog) -> list[str]:
    return [log.render_line(y).text for y in range(log.size.height)]


def append_lines(path: Path, count: int, seconds: float, prefix: str = "line") -> threading.Thread:
    def run() -> None:
        with path.open("ab", buffering=0) as f:
            for i in range(count):
                f.write(f"{prefix} {i}\n".encode())
                time.sleep(seconds / count)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def test_follows_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "build.1.log"
    path.write_bytes(b"already there\n")
    app = Host()
    async with app.run_test(size=(80, 20)) as pilot:
        log = app.query_one(StageLog)
        log.show(path, None, "build")
        writer = append_lines(path, 200, 1.0)
        assert await wait_for(pilot, lambda: log.lines[-1:] == ["line 199"])
        writer.join()
        assert log.lines[0] == "already there" and len(log.lines) == 201
        await pilot.pause()
        assert any(row.startswith("line 199") for row in screen_rows(log))  # scrolled to the end
        assert log.following and log.mode == "raw"
        assert log.title_text == "build · raw" and log.status_text.startswith("following · ")


async def test_toggle_raw_switches_rendering(tmp_path: Path) -> None:
    path = tmp_path / "plan.1.log"
    path.write_bytes(CLAUDE)
    app = Host()
    async with app.run_test(size=(100, 20)) as pilot:
        log = app.query_one(StageLog)
        log.show(path, "claude-stream-json", "plan")
        assert log.mode == "pretty" and log.title_text == "plan · pretty"
        assert await wait_for(pilot, lambda: "✓ result: All 3 tests pass. (2 turns)" in log.lines)
        assert "● I'll run the tests." in log.lines and "⚙ Bash: pytest -q" in log.lines
        log.toggle_raw()
        assert log.mode == "raw" and log.title_text == "plan · raw"
        assert await wait_for(pilot, lambda: len(log.lines) == 6 and log.lines[0].startswith('{"type":"system"'))
        log.toggle_raw()
        assert await wait_for(pilot, lambda: log.lines[:1] == ["session 8d45… · claude-sonnet-4-5"])
        assert log.mode == "pretty"


async def test_script_log_is_always_raw(tmp_path: Path) -> None:
    path = tmp_path / "test.1.log"
    path.write_bytes(b'{"type":"result","result":"x"}\nok\n')
    app = Host()
    async with app.run_test() as pilot:
        log = app.query_one(StageLog)
        log.show(path, None)
        assert await wait_for(pilot, lambda: log.lines == ['{"type":"result","result":"x"}', "ok"])
        log.toggle_raw()
        assert log.mode == "raw" and not log.pretty_available


async def test_show_none_clears_and_stops_reading(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"hello\n")
    app = Host()
    async with app.run_test() as pilot:
        log = app.query_one(StageLog)
        log.show(path, "plain")
        assert await wait_for(pilot, lambda: log.lines == ["hello"])
        log.show(None, None)
        assert log.lines == [] and log.status_text == "no stage selected"
        assert await wait_for(pilot, lambda: log._readers == 0)
        await pilot.pause(0.3)
        assert log.lines == []
        assert "no stage selected" in screen_rows(log)[0]


async def test_waits_for_a_file_that_does_not_exist_yet(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "7" / "review.1.log"
    app = Host()
    async with app.run_test() as pilot:
        log = app.query_one(StageLog)
        log.show(path, "claude-stream-json", "review")
        assert await wait_for(pilot, lambda: log.status_text == "waiting for output")
        assert "waiting for output" in screen_rows(log)[0]
        path.parent.mkdir(parents=True)
        path.write_bytes(CLAUDE[: CLAUDE.index(b"\n") + 1])
        assert await wait_for(pilot, lambda: log.lines == ["session 8d45… · claude-sonnet-4-5"])
        assert log.status_text.startswith("following")
        path.unlink()
        assert await wait_for(pilot, lambda: log.status_text == "the log was deleted")
        path.write_bytes(b"again\n")
        assert await wait_for(pilot, lambda: log.lines[-1:] == ["again"])


async def test_switching_logs_is_instant_and_drops_the_old_one(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"")
    b.write_bytes(b"bee\n")
    app = Host()
    async with app.run_test() as pilot:
        log = app.query_one(StageLog)
        log.show(a, None, "a")
        writer = append_lines(a, 400, 1.0, prefix="aaa")
        assert await wait_for(pilot, lambda: bool(log.lines))
        started = time.perf_counter()
        log.show(b, None, "b")
        assert time.perf_counter() - started < 0.05  # no I/O on the loop
        assert log.lines == [] and log.title_text == "b · raw"
        assert await wait_for(pilot, lambda: log.lines == ["bee"])
        await pilot.pause(0.5)
        assert log.lines == ["bee"]  # nothing from a's reader arrived after the switch
        assert await wait_for(pilot, lambda: log._readers == 1)
        log.show(b, None, "b again")  # the same log: only the title changes, no re-read
        assert log.lines == ["bee"] and log.title_text == "b again · raw" and log.title == "b again"
        writer.join()


async def test_a_flood_stays_bounded_and_the_app_responsive(tmp_path: Path) -> None:
    path = tmp_path / "flood.1.log"
    path.write_bytes(b"start\n")
    line = b"%08d " + b"x" * 90 + b"\n"
    blob = b"".join(line % i for i in range(300_000))  # 30 MB
    burst_written, steady, done = threading.Event(), threading.Event(), threading.Event()

    def flood() -> None:
        with path.open("ab", buffering=0) as f:
            f.write(blob)  # 30 MB at once
            burst_written.set()
            steady.wait(10)
            for i in range(50):  # then ~6 MB/s for a second
                f.write(b"".join(b"tail %d-%d\n" % (i, j) for j in range(10_000)))
                time.sleep(0.02)
            f.write(b"the end\n")
        done.set()

    app = Host()
    async with app.run_test() as pilot:
        log = app.query_one(StageLog)
        log.show(path, None, "flood")
        assert await wait_for(pilot, lambda: log.lines == ["start"])
        writer = threading.Thread(target=flood, daemon=True)
        writer.start()
        assert await wait_for(pilot, burst_written.is_set)
        # only the tail of the burst was read: the backlog is skipped, and said so
        assert await wait_for(pilot, lambda: log.lines[-1:] == [(line % 299_999).decode().rstrip()])
        assert any("skipped" in shown for shown in log.lines)
        assert len(log.lines) <= MAX_LINES
        steady.set()
        pressed = 0
        while not done.is_set():
            await pilot.press("x")
            pressed += 1
            assert len(log.lines) <= MAX_LINES
        assert app.pokes == pressed and pressed >= 1  # every key press handled while it wrote
        assert await wait_for(pilot, lambda: log.lines[-1:] == ["the end"], timeout=10)
        assert len(log.lines) <= MAX_LINES and log._first > 0
        writer.join()


async def test_scrolling_up_stops_following(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"".join(b"old %d\n" % i for i in range(100)))
    app = Host()
    async with app.run_test(size=(60, 12)) as pilot:
        log = app.query_one(StageLog)
        log.focus()
        log.show(path, None)
        assert await wait_for(pilot, lambda: len(log.lines) == 100)
        await pilot.pause()
        assert log.following and log.status_text.startswith("following")
        await pilot.press("home")
        assert await wait_for(pilot, lambda: not log.following)
        assert log.status_text.startswith("scrolled")
        with path.open("ab") as f:
            f.write(b"new line\n")
        assert await wait_for(pilot, lambda: log.lines[-1:] == ["new line"])
        assert log.scroll_offset.y == 0 and screen_rows(log)[0].startswith("old 0")
        await pilot.press("end")
        assert await wait_for(pilot, lambda: log.following)
        assert any(row.startswith("new line") for row in screen_rows(log))


async def test_given_at_construction_and_maximized(tmp_path: Path) -> None:
    path = tmp_path / "plan.1.log"
    path.write_bytes(CLAUDE)
    app = Host(path=path, parser_kind="claude-stream-json", title="plan")
    async with app.run_test(size=(100, 30)) as pilot:
        log = app.query_one(StageLog)
        assert await wait_for(pilot, lambda: "⚙ Bash: pytest -q" in log.lines)
        assert app.screen.maximize(log)  # the app's full-screen log
        await pilot.pause()
        assert log.size.height >= 26
        await pilot.press("escape")
        assert app.screen.maximized is None


async def test_a_reader_bug_is_shown_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"x\n")

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise ValueError("boom")

    monkeypatch.setattr(logview, "render_lines", broken)
    app = Host()
    async with app.run_test() as pilot:
        log = app.query_one(StageLog)
        log.show(path, None)
        assert await wait_for(pilot, lambda: any("reader failed" in line for line in log.lines))
