"""Text from daughters, agents and inputs made safe to show on a terminal: shared by the
headless reporter and the dashboard, so neither imports the other."""

from __future__ import annotations

import unicodedata

_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9, 10)} | {127: "\\x7f"}
# C1 controls (0x9b is CSI: an escape sequence on terminals that read 8-bit controls) and the
# bidirectional overrides and isolates (U+202E shows the rest of a line reversed, and moves
# the columns after it on the dashboard), line and paragraph separators.
_CONTROL |= {c: f"\\x{c:02x}" for c in range(0x80, 0xA0)}
_CONTROL |= {c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                                          0x2028, 0x2029)}


def printable(text: str) -> str:
    """Text with control characters (terminal escapes) made visible."""
    return text.translate(_CONTROL)


def fit(text: str, width: int) -> str:
    """`text`, printable, cut and padded to `width` terminal columns: a wide (CJK) character
    takes two, a combining mark or format character none (len() counted each as one, and
    the columns after a wide workflow name in `tacx ls` moved right)."""
    out, used = [], 0
    for c in printable(text):
        cells = _cells(c)
        if used + cells > width:
            break
        out.append(c)
        used += cells
    return "".join(out) + " " * (width - used)


def _cells(c: str) -> int:
    if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
