"""Tailing a log off the event loop: the last lines of a file, then what is written next,
with memory bounded whatever a daughter writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tacx.ui import logtail
from tacx.ui.logformat import raw_line
from tacx.ui.logtail import LogFollower, tail_lines


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

    monkeypatch.setattr(logtail.os, "pread", counting_pread)
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
    assert len(lines[-2]) == logtail.MAX_LINE_BYTES

