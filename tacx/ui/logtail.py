"""Reading a log that daughters append to at any rate, from a thread: its last lines
(``tail_lines``), then what is written next (``LogFollower``), with memory bounded whatever
is written (a jump skips to the tail, a line is cut at MAX_LINE_BYTES). No Textual here."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

TAIL_BYTES = 256 * 1024  # read from the end of a log when it is opened (and after a jump)
MAX_LINES = 2000  # lines the widget holds
MAX_LINE_BYTES = 1 << 20  # a longer line is cut (its first MiB is kept, enough to show it)
JUMP_BYTES = 4 << 20  # more new bytes than this since the last read: skip to the tail
READ_CHUNK = 1 << 20  # one pread
FLUSH_POLLS = 5  # an unterminated last line is shown once the file stood still this many polls


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
