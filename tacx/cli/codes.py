"""Exit codes and the usage error: all the entry point needs before it knows the command,
so `tacx ls` does not import the engine, the agents or the workflow model to start."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad usage or invalid input: exit 2, nothing written."""
