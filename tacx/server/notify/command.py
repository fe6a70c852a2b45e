"""The command channel: the rule's argv run as given (no shell, stdin closed), the message's
facts in TACX_* environment variables, never in argv: titles come from GitHub issues. Bounded
in time: a command that overruns is killed with all it started; what a command that has
exited leaves running is its own."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

from tacx.server.notify.message import Message, plain

log = logging.getLogger(__name__)

STDERR_KEPT = 2000  # bytes of a failing command's stderr said in its log line
ENV_VALUE_LIMIT = 4000
EVENTS_JSON_LIMIT = 100_000  # below Linux's 128 KiB for one environment string


def facts_env(msg: Message) -> dict[str, str]:
    """TACX_* variables: the message, and the facts of its first (or only) event."""
    first = msg.notices[0] if msg.notices else None
    env = {"TACX_EVENT": msg.event, "TACX_MESSAGE": plain(msg.text, ENV_VALUE_LIMIT), "TACX_COUNT": str(msg.count)}
    if first is not None:
        values = {
            "TACX_TASK_ID": first.task_id, "TACX_TASK_STATUS": first.status, "TACX_TASK_TITLE": first.title,
            "TACX_WORKFLOW": first.workflow, "TACX_ERROR": first.error, "TACX_URL": first.url,
            "TACX_COST_USD": None if first.cost_usd is None else f"{first.cost_usd:.6f}",
        }
        env |= {name: plain(value, ENV_VALUE_LIMIT) for name, value in values.items() if value is not None}
    events = [n.as_json() for n in msg.notices]
    text = json.dumps(events)
    while len(text) > EVENTS_JSON_LIMIT and events:  # the first ones matter most
        events = events[: len(events) // 2]
        text = json.dumps(events)
    env["TACX_EVENTS_JSON"] = text
    return env


FACT_NAMES = ("TACX_EVENT", "TACX_MESSAGE", "TACX_COUNT", "TACX_TASK_ID", "TACX_TASK_STATUS", "TACX_TASK_TITLE",
              "TACX_WORKFLOW", "TACX_COST_USD", "TACX_ERROR", "TACX_URL", "TACX_EVENTS_JSON")


def _environment(msg: Message) -> dict[str, str]:
    """tacx's environment with this message's facts; a fact the message lacks is absent,
    never one inherited from whoever started tacx."""
    return {**{k: v for k, v in os.environ.items() if k not in FACT_NAMES}, **facts_env(msg)}


class CommandChannel:
    """Run in ``cwd``, the project's folder, where tacx.yaml is: `command: [./notify.sh]`
    means the project's script wherever tacx was started (a subfolder finds the home too)."""

    def __init__(self, argv: list[str], timeout: float, report: Callable[[str], None], cwd: Path | None = None) -> None:
        self.argv = argv
        self.timeout = timeout
        self.report = report
        self.cwd = cwd

    async def deliver(self, msg: Message) -> bool:
        """Its stderr goes to a file, not a pipe: a child the command leaves running (`cmd &`)
        keeps a pipe open, so tacx waited out the bound and said the command was killed,
        and a child in a session of its own kept the pipe past the loop's end (a traceback)."""
        try:
            stderr = tempfile.TemporaryFile()
        except OSError as exc:  # the temp folder is full, read-only or gone
            self.report(f"notify: command {self.argv[0]} could not start: no temporary file for its stderr:"
                        f" {exc.strerror or exc}")
            return False
        with stderr:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                    stderr=stderr, env=_environment(msg), start_new_session=True, cwd=self.cwd,
                )
            except OSError as exc:
                self.report(f"notify: command {self.argv[0]} could not start: {exc.strerror or exc}")
                return False
            try:
                async with asyncio.timeout(self.timeout):
                    code = await proc.wait()
            except TimeoutError:
                _kill(proc)
                await proc.wait()
                self.report(f"notify: command {self.argv[0]} was killed after {self.timeout:g}s")
                return False
            except asyncio.CancelledError:
                _kill(proc)
                raise
            if code == 0:
                return True
            stderr.seek(0)
            said = stderr.read(STDERR_KEPT)
        detail = plain(said.decode("utf-8", "replace"), 300)
        self.report(f"notify: command {self.argv[0]} exited {code}" + (f": {detail}" if detail else ""))
        return False

    async def close(self) -> None:
        return None


def _kill(proc: asyncio.subprocess.Process) -> None:
    """The command's whole session: what it started dies with it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
