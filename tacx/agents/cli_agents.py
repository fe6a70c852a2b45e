"""The agent CLIs (claude, codex, gemini, aider), the shipped simulator (mock) and agents
defined in tacx.yaml.

Each builds an argv from the stage: the prompt is one argv element and nothing goes
through a shell. Agents run under a small /bin/sh wrapper that records their exit status
beside the log ("$@" passes the argv through untouched), so a tacx restarted after a crash
learns how an agent that ended meanwhile ended. Output is parsed line by line as it is
written (tacx.agents.parsers).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

from tacx.agents.base import Launch, OutputParser, Provider, StageContext
from tacx.workflow.model import StageSpec
from tacx.workflow.templates import render, template_names

# The agent's exit status goes to $TACX_STATUS_FILE; $0 names the wrapper in `ps`. The
# wrapper outlives a SIGTERM to the group (the agent has its grace period to end, and its
# real status is written), then ends by the agent's signal so tacx sees the same thing.
_STATUS_WRAPPER = (
    'trap : TERM INT HUP; "$@"; s=$?; echo $s > "$TACX_STATUS_FILE"; '
    'if [ $s -gt 128 ]; then trap - TERM INT HUP; kill -$((s - 128)) $$; fi; exit $s'
)
RESUME_NOTE = "You were interrupted; continue where you left off. The task was:\n\n"


# One stage may route to several agents (`provider: [claude, codex]`), so each agent reads
# the others' names for the same permission: claude's modes, codex's sandboxes, gemini's
# approval modes. A name an agent has no equivalent for is passed through as written.
PERMISSIONS = {
    "claude": {"read-only": "plan", "workspace-write": "acceptEdits", "danger-full-access": "bypassPermissions",
               "auto_edit": "acceptEdits", "yolo": "bypassPermissions"},
    "codex": {"plan": "read-only", "default": "read-only", "acceptEdits": "workspace-write",
              "bypassPermissions": "danger-full-access", "auto_edit": "workspace-write", "yolo": "danger-full-access"},
    "gemini": {"acceptEdits": "auto_edit", "bypassPermissions": "yolo", "workspace-write": "auto_edit",
               "danger-full-access": "yolo", "read-only": "default", "plan": "default"},
}


def permission(agent: str, mode: str) -> str:
    return PERMISSIONS[agent].get(mode, mode)


def wrapped(argv: list[str]) -> list[str]:
    return ["/bin/sh", "-c", _STATUS_WRAPPER, "tacx-agent", *argv]


class AgentProvider(Provider):
    """An agent CLI found on PATH, whose stream a parser of ``parser_kind`` reads."""

    kind = "agent"
    executable = ""
    parser_kind = "plain"
    default_model: str | None = None  # what usage is priced with when the stage names no model
    resumable = False  # can continue an interrupted session by its id (`resume: true`)

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

    def parser(
        self, *, model: str | None = None, prices: Any = None, sidecar: Path | None = None, display: bool = True
    ) -> OutputParser:
        from tacx.agents.parsers import make_parser  # the parsers are needed only when agents run

        return make_parser(self.parser_kind, model=model or self.default_model, prices=prices,
                           analytics_path=sidecar, display=display)

    def launch(self, spec: StageSpec, ctx: StageContext) -> Launch:
        program = self._path() or self.executable
        return Launch(argv=wrapped([program, *self.arguments(spec, ctx)]))

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def prompt(ctx: StageContext) -> str:
        assert ctx.prompt is not None
        return RESUME_NOTE + ctx.prompt if ctx.resume_session else ctx.prompt


class ClaudeProvider(AgentProvider):
    """Claude Code: `claude -p PROMPT --output-format stream-json --verbose ...`."""

    name = executable = "claude"
    parser_kind = "claude-stream-json"
    resumable = True

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        return self.claude_options(spec, ctx) + list(spec.extra_args)

    def claude_options(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        args = ["-p", self.prompt(ctx), "--output-format", "stream-json", "--verbose"]
        if spec.model:
            args += ["--model", spec.model]
        if spec.max_turns:
            args += ["--max-turns", str(spec.max_turns)]
        if spec.allowed_tools:
            args += ["--allowedTools", ",".join(spec.allowed_tools)]
        if spec.permission_mode:
            args += ["--permission-mode", permission("claude", spec.permission_mode)]
        if ctx.resume_session:
            args += ["--resume", ctx.resume_session]
        return args


class MockProvider(ClaudeProvider):
    """The shipped simulator: speaks Claude's stream-json, needs nothing installed."""

    name = "mock"
    executable = sys.executable
    default_model = "mock-sonnet"

    def _path(self) -> str | None:
        return sys.executable

    def version_argv(self) -> list[str] | None:
        return None

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        simulator = str(Path(__file__).resolve().parent / "mock_agent.py")
        writes = [arg for path in spec.expects for arg in ("--write", path)]  # what the stage expects
        return [simulator, *self.claude_options(spec, ctx), *writes, *spec.extra_args]


class CodexProvider(AgentProvider):
    """Codex CLI: `codex exec --json [-m M] [-s MODE] -C DIR PROMPT`; resume by thread id."""

    name = executable = "codex"
    parser_kind = "codex-json"
    resumable = True
    default_model = "gpt-5-codex"
    SANDBOXES = ("read-only", "workspace-write", "danger-full-access")

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        args = ["exec", "--json", "-C", str(ctx.workspace), "--skip-git-repo-check"]
        if spec.model:
            args += ["-m", spec.model]
        if spec.permission_mode:
            sandbox = permission("codex", spec.permission_mode)
            if sandbox not in self.SANDBOXES:
                raise ValueError(
                    f"codex takes permission_mode {', '.join(self.SANDBOXES)} (its -s sandbox) or claude's"
                    f" plan, acceptEdits, bypassPermissions; not {spec.permission_mode!r}"
                )
            args += ["-s", sandbox]
        args += list(spec.extra_args)
        if ctx.resume_session:
            args += ["resume", ctx.resume_session]
        return args + [self.prompt(ctx)]


class GeminiProvider(AgentProvider):
    """Gemini CLI: `gemini -p PROMPT -o stream-json [-m M] [--approval-mode MODE]`."""

    name = executable = "gemini"
    parser_kind = "gemini-stream-json"
    resumable = True
    default_model = "gemini-2.5-pro"

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        args = ["-p", self.prompt(ctx), "-o", "stream-json"]
        if spec.model:
            args += ["-m", spec.model]
        if spec.permission_mode:
            args += ["--approval-mode", permission("gemini", spec.permission_mode)]
        if spec.allowed_tools:
            args += ["--allowed-tools", ",".join(spec.allowed_tools)]
        if ctx.resume_session:
            args += ["--resume", ctx.resume_session]
        return args + list(spec.extra_args)


class AiderProvider(AgentProvider):
    """Aider: one message, no prompts, no commits; exact figures from its analytics log."""

    name = executable = "aider"
    parser_kind = "aider-text"

    def sidecar(self, log_path: Path) -> Path | None:
        return log_path.with_suffix(".analytics.jsonl")

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        args = ["--message", self.prompt(ctx), "--yes-always", "--no-auto-commits", "--no-pretty", "--no-stream"]
        args += ["--analytics-log", str(self.sidecar(ctx.script_path)), "--no-analytics"]
        if spec.model:
            args += ["--model", spec.model]
        return args + list(spec.extra_args)


_ONLY_TEMPLATE = re.compile(r"\s*\{\{\s*[A-Za-z_][A-Za-z0-9_.-]*\s*\}\}\s*")
CUSTOM_TEMPLATE_NAMES = ("prompt", "model", "workspace", "session_id", "max_turns", "permission_mode", "task.id", "stage")


class CustomProvider(AgentProvider):
    """An agent defined in tacx.yaml: an argv template and the parser that reads it."""

    def __init__(self, name: str, argv: list[str | list[str]], parser: str, model: str | None, env: dict[str, str]) -> None:
        super().__init__(name)
        self.template = argv
        self.executable = argv[0] if isinstance(argv[0], str) else ""
        self.parser_kind = parser
        self.default_model = model
        self.extra_env = dict(env)
        self.resumable = any(
            "session_id" in template_names(part) for item in argv for part in ([item] if isinstance(item, str) else item)
        )

    def _path(self) -> str | None:
        if "/" in self.executable:
            path = Path(self.executable).expanduser()
            return str(path) if path.is_file() else None
        return shutil.which(self.executable)

    def launch(self, spec: StageSpec, ctx: StageContext) -> Launch:
        values = {
            "prompt": self.prompt(ctx),
            "model": spec.model or self.default_model or "",
            "workspace": str(ctx.workspace),
            "session_id": ctx.resume_session or "",
            "max_turns": str(spec.max_turns or ""),
            "permission_mode": spec.permission_mode or "",
            "task.id": str(ctx.task_id),
            "stage": ctx.stage,
        }
        argv: list[str] = [self._path() or self.executable]
        for item in self.template[1:]:
            group = [item] if isinstance(item, str) else list(item)
            rendered = [render(part, values) for part in group]
            if isinstance(item, str) and _ONLY_TEMPLATE.fullmatch(item) and not rendered[0]:
                continue  # an optional value not given: leave the item out
            if isinstance(item, list) and any(
                template_names(part) and not value for part, value in zip(group, rendered)
            ):
                continue
            argv += rendered
        return Launch(argv=wrapped(argv + list(spec.extra_args)), env=dict(self.extra_env))


def check_custom_argv(argv: list[str | list[str]]) -> None:
    """Raise ValueError for a template name a custom provider cannot fill."""
    for item in argv:
        for part in [item] if isinstance(item, str) else item:
            for name in template_names(part):
                if name not in CUSTOM_TEMPLATE_NAMES:
                    raise ValueError(f"unknown name {name!r} in argv; known: {', '.join(CUSTOM_TEMPLATE_NAMES)}")
