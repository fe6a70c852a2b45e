"""The log panel's widget: StageLog following a file that grows, vanishes, is truncated or
floods, without holding the event loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from textual.app import App, ComposeResult

from tacx.ui import logview
from tacx.ui.logtail import MAX_LINES, LogFollower
from tacx.ui.logview import StageLog
from tests.test_ui_logformat import CLAUDE


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


async def test_a_flood_stays_bounded_and_the_app_responsive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "flood.1.log"
    path.write_bytes(b"start\n")
    line = b"%08d " + b"x" * 90 + b"\n"
    blob = b"".join(line % i for i in range(300_000))  # 30 MB
    burst_written, steady, done = threading.Event(), threading.Event(), threading.Event()
    # The burst lands between two polls, as a fast writer's does: a file grows page by page
    # during one write(), and on a loaded machine a poll in the middle of it read the burst
    # in pieces small enough to need no skip. No poll runs while the burst is written.
    between_polls = threading.Lock()
    poll = LogFollower.poll

    def one_poll(follower: LogFollower) -> Any:
        with between_polls:
            return poll(follower)

    monkeypatch.setattr(LogFollower, "poll", one_poll)

    def flood() -> None:
        with path.open("ab", buffering=0) as f:
            with between_polls:
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


async def test_switching_between_logs_of_the_same_size_lays_out_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(f"aaa {i:04d}\n" for i in range(300)))
    b.write_text("".join(f"bbb {i:04d}\n" for i in range(300)))
    app = Host()
    async with app.run_test(size=(60, 20)) as pilot:
        log = app.query_one(StageLog)
        log.show(a, None, "a")
        assert await wait_for(pilot, lambda: len(log.lines) == 300)
        await pilot.pause()
        layouts: list[bool] = []
        relayout = app.screen._refresh_layout

        def counted(*args: object, **kwargs: object) -> None:
            layouts.append(True)
            relayout(*args, **kwargs)  # type: ignore[arg-type]

        app.screen._refresh_layout = counted  # type: ignore[method-assign]
        log.show(b, None, "b")
        assert log.lines == []  # the old lines are gone at once
        assert await wait_for(pilot, lambda: len(log.lines) == 300 and log.lines[-1] == "bbb 0299")
        await pilot.pause()
        assert layouts == []
        assert screen_rows(log)[-1].strip() == "bbb 0299"  # following the new log's end
