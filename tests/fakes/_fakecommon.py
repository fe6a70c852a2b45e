"""Shared helpers of the fake agent CLIs in this folder (stdlib only, test-only).

Environment variables understood by every fake:

* ``FAKE_ARGV_FILE``: append one JSON object per run: ``{"tool", "argv", "cwd",
  "stdin_isatty", "stdin_kind", "stdin_readable_bytes", "stdin_eof"}``. ``argv`` excludes
  the program name. ``stdin_kind`` is one of closed, devnull, pipe, file, tty, socket, other;
  ``stdin_readable_bytes`` is how many bytes could be read at once within 50 ms (0 for an
  open pipe nobody writes to); ``stdin_eof`` is true when stdin was at end of file (devnull,
  closed pipe, closed fd).
* ``FAKE_SCENARIO``: which stream to print (see each script's docstring); default ``sample``.
  ``FAKE_SCENARIO_CLAUDE`` (``_CODEX``, ``_GEMINI``, ``_AIDER``) sets it for one fake only.
* ``FAKE_WRITE``: comma-separated paths (relative to cwd) to create, with a line naming the
  tool and the cwd, so tests can see which workspace the agent ran in.
* ``FAKE_SLEEP``: seconds to sleep before printing anything (default 0).
"""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
import time


def stdin_info() -> dict:
    info: dict = {"stdin_isatty": False, "stdin_kind": "other", "stdin_readable_bytes": None, "stdin_eof": None}
    try:
        st = os.fstat(0)
    except OSError:
        info.update(stdin_kind="closed", stdin_readable_bytes=0, stdin_eof=True)
        return info
    try:
        info["stdin_isatty"] = os.isatty(0)
    except OSError:
        pass
    mode = st.st_mode
    if info["stdin_isatty"]:
        info["stdin_kind"] = "tty"
        return info  # never read a terminal
    if stat.S_ISCHR(mode):
        try:
            null = os.stat(os.devnull)
            info["stdin_kind"] = "devnull" if st.st_rdev == null.st_rdev else "other"
        except OSError:
            pass
    elif stat.S_ISFIFO(mode):
        info["stdin_kind"] = "pipe"
    elif stat.S_ISREG(mode):
        info["stdin_kind"] = "file"
    elif stat.S_ISSOCK(mode):
        info["stdin_kind"] = "socket"
    try:
        ready, _, _ = select.select([0], [], [], 0.05)
    except (OSError, ValueError):
        return info
    if ready:
        try:
            data = os.read(0, 65536)
        except OSError:
            return info
        info["stdin_readable_bytes"] = len(data)
        info["stdin_eof"] = len(data) == 0
    else:
        info["stdin_readable_bytes"] = 0
        info["stdin_eof"] = False
    return info


def record_argv(tool: str, argv: list[str]) -> None:
    path = os.environ.get("FAKE_ARGV_FILE")
    if not path:
        return
    entry = {"tool": tool, "argv": argv, "cwd": os.getcwd(), **stdin_info()}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def block_on_open_stdin() -> None:
    """Like recent claude: read stdin to EOF when it is not a terminal (blocks on an open pipe)."""
    try:
        if os.isatty(0):
            return
        while os.read(0, 65536):
            pass
    except OSError:
        pass


def do_writes(tool: str) -> None:
    spec = os.environ.get("FAKE_WRITE", "")
    for name in (p.strip() for p in spec.split(",")):
        if not name:
            continue
        parent = os.path.dirname(os.path.abspath(name))
        os.makedirs(parent, exist_ok=True)
        with open(name, "w", encoding="utf-8") as f:
            f.write(f"written by fake {tool} in {os.getcwd()}\n")


def pre_sleep() -> None:
    s = float(os.environ.get("FAKE_SLEEP", "0") or 0)
    if s > 0:
        time.sleep(s)


def scenario() -> str:
    """FAKE_SCENARIO_<TOOL> (FAKE_SCENARIO_CLAUDE ...) for this fake alone, else FAKE_SCENARIO."""
    tool = os.path.basename(sys.argv[0]).upper()
    return os.environ.get(f"FAKE_SCENARIO_{tool}", "") or os.environ.get("FAKE_SCENARIO", "") or "sample"


def emit(line: str | dict | bytes) -> None:
    """One stdout line, flushed. str lines are printed verbatim, dicts as compact JSON."""
    out = sys.stdout.buffer
    if isinstance(line, dict):
        line = json.dumps(line, separators=(",", ":"), ensure_ascii=False)
    if isinstance(line, str):
        line = line.encode("utf-8")
    try:
        out.write(line + b"\n")
        out.flush()
    except BrokenPipeError:  # the reader went away: leave quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        except OSError:
            pass
        sys.exit(1)


def emit_all(lines: list, delay: float = 0.0) -> None:
    for line in lines:
        emit(line)
        if delay:
            time.sleep(delay)


def spawn_grandchild(pid_file: str) -> int:
    """`sleep 600` in its own session (escapes the process group), stdio on /dev/null."""
    proc = subprocess.Popen(
        ["sleep", "600"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    with open(pid_file, "w", encoding="utf-8") as f:
        f.write(f"{proc.pid}\n")
    return proc.pid


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


def unknown_scenario(tool: str, name: str, known: list[str]) -> int:
    sys.stderr.write(f"fake {tool}: unknown FAKE_SCENARIO {name!r} (known: {', '.join(known)})\n")
    return 2


def option_value(argv: list[str], *names: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` (last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "=") and name.startswith("--"):
                value = arg[len(name) + 1:]
    return value
