"""The colour of each task and stage state, one table for the dashboard and the CLI (rich
style names; nothing here imports Textual)."""

from __future__ import annotations

TASK_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")

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
