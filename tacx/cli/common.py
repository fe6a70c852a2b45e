"""What the commands share: exit codes, the usage error, the project's settings and a
reader of its store."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from tacx.home import Home
from tacx.cli.codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError  # noqa: F401 - the commands import them from here
from tacx.store import removal
from tacx.store.database import connect, connect_reader


if TYPE_CHECKING:
    from tacx.settings import Settings

# The settings, the prices and the agents are imported by the commands that read them, not
# by every command: `tacx ls` starts in half the time (bench/cli.py).


def project_settings(home: Home) -> Settings:
    """tacx.yaml, its price table checked too (a bad one is a usage error, not a crash later)."""
    from tacx.agents.prices import PriceTable
    from tacx.settings import SettingsError, load_settings

    settings = load_settings(home.project_root)
    try:
        PriceTable.load(settings.prices)
    except ValueError as exc:
        raise SettingsError(f"{home.project_root / 'tacx.yaml'}: prices: {exc}") from None
    return settings


def project_provider_kinds(home: Home) -> dict[str, str]:
    """Every provider a workflow here may name: built in, and defined in tacx.yaml."""
    from tacx.agents.registry import configured_providers, provider_kinds

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


def known_tasks(conn: sqlite3.Connection, ids: list[int], consequence: str) -> list[sqlite3.Row]:
    """The tasks named, in the order given, each once. An id with no task is bad input: a
    usage error naming at most a dozen of them, then how many in all (`tacx rm $(seq 1
    40000)` on a home of 100 tasks says one line, not 39,900 numbers), ending `consequence`."""
    ids = list(dict.fromkeys(ids))
    found = removal.tasks_by_id(conn, ids)
    if missing := [i for i in ids if i not in found]:
        named = ", ".join(str(i) for i in missing[:12])
        more = f" … ({len(missing):,} ids in all)" if len(missing) > 12 else ""
        raise UsageError(f"no task {named}{more}; {consequence}")
    return [found[i] for i in ids]


def exit_for_refusals(refused: int, of: int) -> int:
    """For a command acting on several tasks: 0 when none was refused, 2 when every one was
    (nothing changed), 1 when some were and the others went through."""
    if not refused:
        return EXIT_OK
    return EXIT_USAGE if refused == of else EXIT_FAILED
