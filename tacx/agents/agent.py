"""What every agent CLI shares: the AgentProvider base (found on PATH, run under a status
wrapper, its stream read by its agent's parser) and the wrapper itself.

Each agent builds an argv from the stage: the prompt is one argv element and nothing goes
through a shell. Agents run under a small /bin/sh wrapper that records their exit status
beside the log ("$@" passes the argv through untouched), so a tacx restarted after a crash
learns how an agent that ended meanwhile ended.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from tacx.agents.base import Launch, OutputParser, Provider, StageContext
from tacx.agents.login import Login, Where
from tacx.agents.stream import StreamParser
from tacx.workflow.model import StageSpec

# The agent's exit status goes to $TACX_STATUS_FILE; $0 names the wrapper in `ps`. The
# wrapper outlives a SIGTERM to the group (the agent has its grace period to end, and its
# real status is written), then ends by the agent's signal so tacx sees the same thing.
_STATUS_WRAPPER = (
    'trap : TERM INT HUP; "$@"; s=$?; echo $s > "$TACX_STATUS_FILE"; '
    'if [ $s -gt 128 ]; then trap - TERM INT HUP; kill -$((s - 128)) $$; fi; exit $s'
)
RESUME_NOTE = "You were interrupted; continue where you left off. The task was:\n\n"


def wrapped(argv: list[str]) -> list[str]:
    return ["/bin/sh", "-c", _STATUS_WRAPPER, "tacx-agent", *argv]


def unwrapped(argv: list[str]) -> list[str] | None:
    """The agent's own argv inside `wrapped(argv)`; None when argv is not so wrapped."""
    if argv[:4] == ["/bin/sh", "-c", _STATUS_WRAPPER, "tacx-agent"]:
        return argv[4:]
    return None


class AgentProvider(Provider):
    """An agent CLI found on PATH, whose stream a parser of ``parser_kind`` reads."""

    kind = "agent"
    executable = ""
    parser_kind = "plain"  # the name tacx.yaml's `parser:` and the dashboard's log view know it by
    parser_class: type[StreamParser] | None = None  # None: the plain parser (the last line is the result)
    default_model: str | None = None  # what usage is priced with when the stage names no model
    resumable = False  # can continue an interrupted session by its id (`resume: true`)
    auth_exit_codes: frozenset[int] = frozenset()  # exit codes that mean the agent's credentials failed
    error_lines: re.Pattern[str] | None = None  # an agent writing plain text: which of its lines are its errors
    # One stage may route to several agents (`provider: [claude, codex]`), so each agent reads
    # the others' names for the same permission: claude's modes, codex's sandboxes, gemini's
    # approval modes. A name an agent has no equivalent for is passed through as written.
    permission_modes: dict[str, str] = {}

    def __init__(self, name: str | None = None) -> None:
        if name:
            self.name = name

    def _path(self) -> str | None:
        return shutil.which(self.executable)

    def availability(self) -> str | None:
        if self._path() is None:
            return f"{self.name} is not installed (no `{self.executable}` on PATH)"
        return None

    def version_argv(self) -> list[str] | None:
        path = self._path()
        return [path, "--version"] if path else None

    def login(self, where: Where) -> Login:
        return Login("unknown", "tacx cannot tell how this agent logs in")

    def parser(
        self, *, model: str | None = None, prices: Any = None, sidecar: Path | None = None, display: bool = True
    ) -> OutputParser:
        if self.parser_class is None:
            return OutputParser()
        return self.parser_class(model=model or self.default_model, prices=prices,
                                 analytics_path=sidecar, display=display)

    def permission(self, mode: str) -> str:
        """A stage's permission_mode in this agent's words."""
        return self.permission_modes.get(mode, mode)

    def launch(self, spec: StageSpec, ctx: StageContext) -> Launch:
        program = self._path() or self.executable
        argv = [program, *self.arguments(spec, ctx)]
        return Launch(argv=wrapped(argv), command=argv)

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def prompt(ctx: StageContext) -> str:
        assert ctx.prompt is not None
        return RESUME_NOTE + ctx.prompt if ctx.resume_session else ctx.prompt

