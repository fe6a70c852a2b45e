"""What the commands share: exit codes, the usage error, the project's settings and a
reader of its store."""

from __future__ import annotations

import sqlite3

from tacx.agents.prices import PriceTable
from tacx.agents.registry import configured_providers, provider_kinds
from tacx.home import Home
from tacx.settings import Settings, SettingsError, load_settings
from tacx.store.database import connect, connect_reader

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad usage or invalid input: exit 2, nothing written."""


def project_settings(home: Home) -> Settings:
    """tacx.yaml, its price table checked too (a bad one is a usage error, not a crash later)."""
    settings = load_settings(home.project_root)
    try:
        PriceTable.load(settings.prices)
    except ValueError as exc:
        raise SettingsError(f"{home.project_root / 'tacx.yaml'}: prices: {exc}") from None
    return settings


def project_provider_kinds(home: Home) -> dict[str, str]:
    """Every provider a workflow here may name: built in, and defined in tacx.yaml."""
    return provider_kinds(configured_providers(project_settings(home)))


def reader(home: Home) -> sqlite3.Connection | None:
    """A connection for read-only commands; None when the home has no database yet."""
    return connect_reader(home.db_path)


def writer(home: Home) -> sqlite3.Connection:
    """A connection that changes tasks; a usage error when the home has no tasks yet."""
    try:
        return connect(home.db_path, create=False)
    except FileNotFoundError:
        raise UsageError(f"no tasks in {home.root}") from None
