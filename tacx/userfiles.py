"""Files a user points tacx at — workflows, ``tacx.yaml``, ``--each`` lines — read once,
bounded, and YAML composed with a bound on nesting.

Why a module of its own: every such file used to be read with ``Path.read_text()``, and
each call site met a FIFO (a hang), ``/dev/zero`` (MemoryError), a 50 MB file (stored with
every task), bytes that are not UTF-8 and YAML nested thousands deep (RecursionError) in
its own way, or not at all. Here they are refused in one way: a ``FileRefused`` naming
``file:line:col`` and why, which each caller turns into its own error (exit 2).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "EACH_FILE_LIMIT",
    "MAX_DEPTH",
    "SETTINGS_FILE_LIMIT",
    "WORKFLOW_FILE_LIMIT",
    "FileRefused",
    "TooDeep",
    "compose_yaml",
    "load_yaml",
    "read_text_file",
]

WORKFLOW_FILE_LIMIT = 1 << 20
"""A workflow is stored with every task it runs; real ones are a few kB."""
SETTINGS_FILE_LIMIT = 1 << 20
EACH_FILE_LIMIT = 16 << 20
"""``--each`` lines are all checked before one transaction queues them, so all are in memory."""
MAX_DEPTH = 64
"""Mappings and lists nested deeper than this are refused: far beyond any real file, far
below the depth at which PyYAML's recursive composer exhausts Python's stack."""

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class FileRefused(Exception):
    """A file tacx will not read as text; ``str()`` is ``file:line:col: message``."""

    def __init__(self, path: str | Path, message: str, line: int = 1, col: int = 1) -> None:
        self.path, self.message, self.line, self.col = str(path), message, line, col
        super().__init__(f"{self.path}:{line}:{col}: {message}")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 10_000_000 else f"{n:,} bytes"


def _limit(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n:,} bytes"


def read_text_file(path: str | Path, limit: int, what: str) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; FileRefused otherwise.

    ``what`` names the file in the size message ("a workflow file"). Opened non-blocking,
    so a FIFO is refused instead of waiting for a writer; the size is checked before
    reading and again while reading (the file may grow meanwhile).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise FileRefused(path, f"cannot read the file: {err.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise FileRefused(path, f"is {kind}, not a regular file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise FileRefused(path, f"is {_size(info.st_size)}; {what} may be at most {_limit(limit)}")
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise FileRefused(path, f"cannot read the file: {err.strerror}") from None
    if len(data) > limit:
        raise FileRefused(path, f"is over {_limit(limit)}; {what} may be at most {_limit(limit)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        col = len(data[line_start : err.start].decode("utf-8", errors="replace")) + 1
        raise FileRefused(
            path, f"not UTF-8 text ({err.reason}, byte 0x{data[err.start]:02x}); save the file as UTF-8", line, col
        ) from None


class TooDeep(yaml.MarkedYAMLError):
    """Collections nested more than MAX_DEPTH deep; ``problem_mark`` is where it crosses."""


class _DepthBound:
    """Counts open mappings and lists as the composer descends, and stops at MAX_DEPTH
    before the composer's recursion (three Python frames a level) can exhaust the stack."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent):  # type: ignore[attr-defined]
            return super().compose_node(parent, index)  # type: ignore[misc]
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[attr-defined]
            raise TooDeep(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1


class _BoundedSafeLoader(_DepthBound, yaml.SafeLoader):
    pass


def compose_yaml(text: str) -> yaml.Node | None:
    """``yaml.compose`` with the safe loader, raising TooDeep past MAX_DEPTH."""
    return yaml.compose(text, Loader=_BoundedSafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` raising TooDeep past MAX_DEPTH."""
    return yaml.load(text, Loader=_BoundedSafeLoader)
