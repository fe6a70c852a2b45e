"""The provider registry: name -> Provider (built in, then those defined in tacx.yaml) and
parser kind -> parser. A new agent is one module of its own and one line in AGENTS."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tacx.agents.agent import AgentProvider
from tacx.agents.aider import AiderProvider
from tacx.agents.base import OutputParser, Provider
from tacx.agents.claude import ClaudeProvider
from tacx.agents.codex import CodexProvider
from tacx.agents.custom import CustomProvider
from tacx.agents.login import Where
from tacx.agents.gemini import GeminiProvider
from tacx.agents.mock import MockProvider
from tacx.agents.prices import PriceTable
from tacx.agents.scripts import BashProvider, PythonProvider, ShellProvider
from tacx.agents.stream import StreamParser
from tacx.workflow.model import StageSpec

if TYPE_CHECKING:
    from tacx.settings import Settings

SCRIPTS: tuple[type[Provider], ...] = (ShellProvider, BashProvider, PythonProvider)
AGENTS: tuple[type[AgentProvider], ...] = (ClaudeProvider, CodexProvider, GeminiProvider, AiderProvider, MockProvider)

# Parser kind -> the parser of the agent that speaks it (mock speaks claude's); "plain" is
# the OutputParser itself, for agents defined in tacx.yaml whose output has no format.
PARSERS: dict[str, type[StreamParser]] = {
    agent.parser_kind: agent.parser_class for agent in AGENTS if agent.parser_class is not None
}
PARSER_KINDS = (*PARSERS, "plain")


def make_parser(kind: str, *, model: str | None = None, prices: PriceTable | None = None,
                analytics_path: Path | None = None, display: bool = True) -> OutputParser:
    """A fresh parser of ``kind`` for one attempt. ``model`` prices usage the agent does not
    name (codex); ``prices`` defaults to the shipped table (a tacx.yaml ``prices:`` mapping
    is accepted too); ``analytics_path`` is aider's --analytics-log file."""
    if kind == "plain":
        return OutputParser()
    cls = PARSERS.get(kind)
    if cls is None:
        raise ValueError(f"unknown parser {kind!r} (known: {', '.join(PARSER_KINDS)})")
    return cls(model=model, prices=prices, analytics_path=analytics_path, display=display)


def builtin_providers() -> dict[str, Provider]:
    providers = [cls() for cls in (*SCRIPTS, *AGENTS)]
    return {p.name: p for p in providers}


def configured_providers(settings: Settings | None) -> dict[str, Provider]:
    """Built-in providers plus the agents tacx.yaml defines (an argv there replaces a
    built-in of the same name)."""
    providers = builtin_providers()
    for name, conf in (settings.providers if settings else {}).items():
        if conf.argv is not None:
            providers[name] = CustomProvider(name, conf.argv, conf.parser, PARSERS.get(conf.parser), conf.model, conf.env)
    return providers


def provider_kinds(providers: dict[str, Provider]) -> dict[str, str]:
    """name -> kind, what workflow validation needs: "script" stages need ``run:``, "agent"
    stages need ``prompt:``."""
    return {name: p.kind for name, p in providers.items()}


def builtin_provider_kinds() -> dict[str, str]:
    """The kinds of the built-in providers: what a workflow is checked against when no
    tacx.yaml is in play."""
    return {cls.name: cls.kind for cls in (*SCRIPTS, *AGENTS)}


def why_not(name: str, provider: Provider, *, check_login: bool, project: Path | None,
            env: Mapping[str, str] | None = None) -> tuple[str | None, bool]:
    """Why ``provider`` cannot run here (not installed, or surely logged out, judged with a
    stage's ``env`` over tacx's own), and whether that is its login; (None, False) if it can."""
    problem = provider.availability()
    if problem is not None or not check_login:
        return problem, False
    login = provider.login(Where.here(project).with_env(env))
    return (f"{name}: {login.problem}", True) if login is not None and login.problem else (None, False)


def never_starts(stages: Iterable[StageSpec], providers: dict[str, Provider], checks_login: Callable[[str], bool],
                 project: Path | None) -> str | None:
    """Why a workflow's task could never start here: a stage none of whose candidates is
    installed (or logged in), each said; None when every stage has one that can run. A
    key in the stage's `env:` counts, as when the stage is scheduled."""
    found = []
    for stage in stages:
        reasons = []
        for name in stage.provider:
            provider = providers.get(name)
            problem = f"{name} is not a known provider" if provider is None else why_not(
                name, provider, check_login=checks_login(name), project=project, env=stage.env)[0]
            if problem is None:
                break
            reasons.append(problem)
        else:
            found.append(f"stage {stage.name} can never start here: " + "; ".join(reasons))
    return "\n".join(found) or None
