"""The provider interface: how a stage becomes a daughter process and how its output is read.

Script providers (shell, bash, python) and the agent CLIs (a later addition) implement the
same three things: whether they can run here, the argv and environment of the daughter,
and a parser that turns the daughter's output into events and a final outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tacx.agents.login import Login, Where

if TYPE_CHECKING:  # the model is only named here; `tacx ls` (prices) need not build its schemas
    from tacx.workflow.model import StageSpec

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
    resume_session: str | None = None  # the agent session an interrupted attempt left, to resume


@dataclass
class Launch:
    """A daughter to start: argv (never a shell string built from inputs) and extra env.

    `argv` is what runs, tacx's status wrapper included; `command` is what the workflow
    asked for (the script, the agent's own argv): what people read in events, `tacx show`
    and the dashboard. None: argv itself (nothing wraps it)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)  # written before the daughter starts
    command: list[str] | None = None

    @property
    def shown(self) -> list[str]:
        return list(self.command if self.command is not None else self.argv)


@dataclass
class ParsedEvent:
    """Something a parser read in a daughter's output.

    Kinds: ``session`` {session_id, model}; ``text`` {text}; ``thinking`` {text};
    ``tool_use`` {id, name, input}; ``tool_result`` {id, output, is_error};
    ``usage`` {message_id, model, input, output, cache_read, cache_write, cost_usd} (an
    increment under an id of its own: a message's growth comes as ``<id>#n`` rows, the
    final figures as ``result:<model>`` rows, so a log parsed again counts nothing twice);
    ``retry`` {attempt, delay_ms, status, error};
    ``rate_limit`` {status, resets_at, detail}; ``result`` {subtype, is_error, text, turns,
    duration_ms}; ``error`` {message}. Text fields are bounded (EVENT_TEXT_LIMIT).
    """

    kind: str
    data: dict[str, Any]


EVENT_TEXT_LIMIT = 4096


@dataclass
class Usage:
    """Tokens and dollars, normalised across agents (input excludes cached input)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        """Every token the model processed: what a `budget: {tokens: N}` counts."""
        return self.input + self.output + self.cache_read + self.cache_write

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
            self.cost_usd + other.cost_usd,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.input - other.input,
            self.output - other.output,
            self.cache_read - other.cache_read,
            self.cache_write - other.cache_write,
            self.cost_usd - other.cost_usd,
        )


@dataclass
class AgentState:
    """What a parser knows about one attempt so far; read after every batch of lines."""

    session_id: str | None = None
    model: str | None = None
    turns: int = 0
    api_retries: int = 0
    rate_limits: int = 0
    usage: Usage = field(default_factory=Usage)  # live totals, then the agent's own final totals
    final: bool = False  # usage holds the totals of the agent's result
    cost_reported: bool = False  # cost_usd is the agent's own figure, not computed from prices
    unpriced_model: str | None = None  # a model with no price: its cost counts as 0
    result: str | None = None
    error: str | None = None  # the agent's own error, in its words
    rate_limited: bool = False  # the agent reported rate limiting (429, rejected, quota)
    rate_limit_resets_at: float | None = None  # Unix time, when the agent said


@dataclass
class Outcome:
    """What a parser concluded when the daughter ended."""

    result: str | None = None
    error: str | None = None
    failed: bool = False  # the agent reported failure even if it exited 0 (is_error, no result)


class OutputParser:
    """Reads a daughter's output. Non-streaming parsers see only the end of the log;
    streaming ones are fed every complete line (without its newline) as it is written."""

    streaming: bool = False

    def __init__(self) -> None:
        self.state = AgentState()

    def feed(self, line: bytes) -> list[ParsedEvent]:
        return []

    def finish(self, tail: bytes) -> Outcome:
        """The end: ``tail`` is the last bytes of the log (streaming parsers may ignore it)."""
        return Outcome(result=last_line(tail))

    def resume_from(self, previous: Usage) -> None:
        """This attempt continues an agent session that already used ``previous``: agents
        that report the session's running totals (codex) count only what is new."""

    def final_events(self) -> list[ParsedEvent]:
        """Events worked out by ``finish`` (read after it), e.g. the usage adjustment that
        brings the live increments to totals only known at the end (aider's analytics)."""
        return []


class Provider:
    """Base for providers; subclasses set name, kind and build the launch."""

    name: str = ""
    kind: ProviderKind = "script"

    def availability(self) -> str | None:
        """None when the provider can run here, else why not (shown as a wait reason)."""
        return None

    def launch(self, spec: StageSpec, ctx: StageContext) -> Launch:
        raise NotImplementedError

    def parser(
        self, *, model: str | None = None, prices: Any = None, sidecar: Path | None = None, display: bool = True
    ) -> OutputParser:
        """A fresh parser for one attempt. ``model`` prices usage the agent does not price
        itself; ``sidecar`` is a file beside the log an agent may write figures to;
        ``display=False`` wants only the accounting (lines only shown are skipped)."""
        return OutputParser()

    def sidecar(self, log_path: Path) -> Path | None:
        """A file beside the log the agent writes exact figures to (aider), if any."""
        return None

    def version_argv(self) -> list[str] | None:
        """How `tacx providers` asks for the version, if the provider is a CLI."""
        return None

    def login(self, where: Where) -> Login | None:
        """Whether the provider is logged in, from the files and environment its CLI reads
        (never by running it: `claude auth status` of an old claude, or `codex login
        status` of the old TypeScript codex, would start a session); None: no login needed."""
        return None


def last_line(tail: bytes) -> str | None:
    """The last non-empty line of output, decoded leniently and bounded."""
    lines = tail.rstrip(b"\r\n").rsplit(b"\n", 1)
    line = lines[-1].rstrip(b"\r").strip()
    if not line:
        return None
    return line[-RESULT_LIMIT:].decode("utf-8", errors="replace")
