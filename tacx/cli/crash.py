"""The last resort: a traceback is for the people fixing tacx, not for its users.

An exception that escapes a command is a bug in tacx. The user sees one line saying so and
where the details are; the traceback is appended to `crash.log` in the home (or in the temp
folder when the home is unusable). Exit code 70 is sysexits' EX_SOFTWARE: unlike 2 it does
not promise that nothing was written, and a script can tell a bug from bad input.
Tracebacks the engine logs (a task that failed inside tacx) go to the same file.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tacx import __version__
from tacx.home import Home

EXIT_INTERNAL = 70
_MAX_LOGGED = 20
_FORMAT = "tacx: %(levelname)s %(name)s: %(message)s"


def crash_log(home: Home | None) -> Path:
    """The home's crash.log when the home is a folder already (a crash never creates
    one), else one per user in the temp folder."""
    if home is not None and home.root.is_dir() and os.access(home.root, os.W_OK):
        return home.root / "crash.log"
    return Path(tempfile.gettempdir()) / f"tacx-crash-{os.getuid()}.log"


def report(exc: BaseException, home: Home | None) -> int:
    """Say in one line that tacx failed, keep the traceback in crash.log; the exit code."""
    text = "".join(traceback.format_exception(exc))
    where = _append(home, f"{_stamp()} tacx {__version__}: {' '.join(['tacx', *sys.argv[1:]])}\n{text}\n")
    if where is None:  # nowhere to keep it: the terminal is the last place left
        print(text, file=sys.stderr, end="")
        where_text = "printed above (no file could be written)"
    else:
        where_text = f"in {where}"
    print(f"tacx: internal error (a bug in tacx): {_one_line(exc)}; the details are {where_text}", file=sys.stderr)
    return EXIT_INTERNAL


def configure_logging(verbose: bool, home: Home | None) -> None:
    """Log lines on stderr stay one line each; a logged traceback goes to crash.log."""
    crashes = _CrashFile(home)  # first: the console line names the file it wrote
    crashes.setLevel(logging.ERROR)
    console = logging.StreamHandler()
    console.setFormatter(_OneLine(_FORMAT, home))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[crashes, console], force=True)


class _OneLine(logging.Formatter):
    def __init__(self, fmt: str, home: Home | None) -> None:
        super().__init__(fmt)
        self.home = home

    def format(self, record: logging.LogRecord) -> str:
        if not record.exc_info:
            return super().format(record)
        plain = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        where = getattr(record, "tacx_crash_log", None) or crash_log(self.home)
        return f"{super().format(plain)} ({_one_line(record.exc_info[1])}; the details are in {where})"


class _CrashFile(logging.Handler):
    """Appends records that carry a traceback; opens the file only then. A failure the
    engine meets again and again (a retried claim) is written once, and at most
    _MAX_LOGGED tracebacks per process: crash.log must never fill the disk itself."""

    def __init__(self, home: Home | None) -> None:
        super().__init__()
        self.home = home
        self.setFormatter(logging.Formatter(f"%(asctime)s {_FORMAT}"))
        self._seen: set[tuple[str, str, str]] = set()
        self._where: Path | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not record.exc_info:
            return
        key = (record.name, str(record.msg), _one_line(record.exc_info[1]))
        if key not in self._seen and len(self._seen) < _MAX_LOGGED:
            self._seen.add(key)
            self._where = _append(self.home, self.format(record) + "\n\n")
        record.tacx_crash_log = self._where


def _append(home: Home | None, text: str) -> Path | None:
    for path in dict.fromkeys([crash_log(home), crash_log(None)]):
        try:
            with open(path, "a", encoding="utf-8", errors="replace") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return None


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0][:500]}" if message else type(exc).__name__


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
