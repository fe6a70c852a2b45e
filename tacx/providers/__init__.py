"""The provider registry: name -> Provider."""

from __future__ import annotations

from tacx.providers.base import Provider
from tacx.providers.scripts import BashProvider, PythonProvider, ShellProvider


def builtin_providers() -> dict[str, Provider]:
    providers: list[Provider] = [ShellProvider(), BashProvider(), PythonProvider()]
    return {p.name: p for p in providers}


def provider_kinds(providers: dict[str, Provider]) -> dict[str, str]:
    """name -> kind, what workflow validation needs."""
    return {name: p.kind for name, p in providers.items()}
