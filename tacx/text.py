"""Text from daughters, agents and inputs made safe to show on a terminal: shared by the
headless reporter and the dashboard, so neither imports the other."""

from __future__ import annotations

_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9, 10)} | {127: "\\x7f"}


def printable(text: str) -> str:
    """Text with control characters (terminal escapes) made visible."""
    return text.translate(_CONTROL)
