"""The provider interface: how a stage becomes a daughter process and how its output is read.

Script providers (shell, bash, python) and the agent CLIs (a later addition) implement the
same three things: whether they can run here, the argv and environment of the daughter,
and a parser that turns the daughter's output into events and a final outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tacx.workflow import StageSpec

ProviderKind = Literal["script", "agent"]

# The final text kept as a stage's result (the handoff to later stages) is bounded.
RESULT_LIMIT = 64 * 1024


@dataclass(frozen=True)
class StageContext:
    """What a provider may know when it builds a daughter's command."""

    task_id: int
    trace_id: str
    stage: str
    attempt: int
    workspace: Path
    prompt: str | None
    script_path: Path  # where a provider may write the stage's script, beside its log


@dataclass
class Launch:
    """A daughter to start: argv (never a shell string built from inputs) and extra env."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)  # written before the daughter starts


@dataclass
class ParsedEvent:
    """Something a parser read in a daughter's output (a message, a tool call, usage)."""

    kind: str
    data: dict[str, Any]


@dataclass
class Outcome:
    """What a parser concluded when the daughter ended."""

    result: str | None = None
    error: str | None = None


class OutputParser:
    """Reads a daughter's output. Non-streaming parsers see only the end of the log."""

    streaming: bool = False

    def feed(self, line: bytes) -> list[ParsedEvent]:
        return []

    def finish(self, tail: bytes) -> Outcome:
        return Outcome(result=last_line(tail))


class Provider:
    """Base for providers; subclasses set name, kind and build the launch."""

    name: str = ""
    kind: ProviderKind = "script"

    def availability(self) -> str | None:
        """None when the provider can run here, else why not (shown as a wait reason)."""
        return None

    def launch(self, spec: StageSpec, ctx: StageContext) -> Launch:
        raise NotImplementedError

    def parser(self) -> OutputParser:
        return OutputParser()


def last_line(tail: bytes) -> str | None:
    """The last non-empty line of output, decoded leniently and bounded."""
    lines = tail.rstrip(b"\r\n").rsplit(b"\n", 1)
    line = lines[-1].rstrip(b"\r").strip()
    if not line:
        return None
    return line[-RESULT_LIMIT:].decode("utf-8", errors="replace")
