"""The provider registry: name -> Provider (built in, then those defined in tacx.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tacx.agents.cli_agents import (
    AiderProvider,
    ClaudeProvider,
    CodexProvider,
    CustomProvider,
    GeminiProvider,
    MockProvider,
)
from tacx.agents.base import Provider
from tacx.agents.scripts import BashProvider, PythonProvider, ShellProvider

if TYPE_CHECKING:
    from tacx.settings import Settings


def builtin_providers() -> dict[str, Provider]:
    providers: list[Provider] = [
        ShellProvider(),
        BashProvider(),
        PythonProvider(),
        ClaudeProvider(),
        CodexProvider(),
        GeminiProvider(),
        AiderProvider(),
        MockProvider(),
    ]
    return {p.name: p for p in providers}


def configured_providers(settings: Settings | None) -> dict[str, Provider]:
    """Built-in providers plus the agents tacx.yaml defines (an argv there replaces a
    built-in of the same name)."""
    providers = builtin_providers()
    for name, conf in (settings.providers if settings else {}).items():
        if conf.argv is not None:
            providers[name] = CustomProvider(name, conf.argv, conf.parser, conf.model, conf.env)
    return providers


def provider_kinds(providers: dict[str, Provider]) -> dict[str, str]:
    """name -> kind, what workflow validation needs."""
    return {name: p.kind for name, p in providers.items()}
