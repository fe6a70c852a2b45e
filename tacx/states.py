"""The colour of each task and stage state, one table for the dashboard and the CLI (rich
style names; nothing here imports Textual)."""

from __future__ import annotations

STATUS_STYLE = {
    "queued": "yellow",
    "pending": "yellow",
    "running": "bold cyan",
    "succeeded": "green",
    "failed": "bold red",
    "timed_out": "bold red",
    "cancelled": "magenta",
    "skipped": "dim",
}
