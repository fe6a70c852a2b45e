"""Colour for what the commands print for people: state words in the dashboard's colours
(tacx.states), on a terminal only.

rich decides, as it does for every rich program: colour when the stream is a terminal (or
FORCE_COLOR / TTY_COMPATIBLE=1 says to), none when it is piped or redirected or
TERM=dumb. NO_COLOR (any non-empty value, no-color.org) turns all styling off, also under
FORCE_COLOR. Text is padded before it is painted, so the escape codes never count as
width and columns stay aligned. JSON is never painted: its writers do not use a Palette.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TextIO

from tacx.states import STATUS_STYLE


def colour_wanted(stream: TextIO) -> bool:
    """Whether text for this stream may carry colour. rich is loaded only when it may:
    piped output (`tacx ls | grep`) does not pay for importing it."""
    env = os.environ
    if env.get("NO_COLOR", ""):
        return False
    if not env.get("FORCE_COLOR") and env.get("TTY_COMPATIBLE") != "1" and not _isatty(stream):
        return False  # what rich would decide too
    from rich.console import Console

    console = Console(file=stream)
    return console.is_terminal and not console.is_dumb_terminal and console.color_system is not None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


@lru_cache(maxsize=64)
def _ansi(style: str) -> tuple[str, str]:
    """The escape codes that open and close a rich style (standard colours: any terminal)."""
    from rich.color import ColorSystem
    from rich.style import Style

    marker = "\0"
    start, _, end = Style.parse(style).render(marker, color_system=ColorSystem.STANDARD).partition(marker)
    return start, end


class Palette:
    """Paints text with rich styles, or leaves it as it is when colour is off."""

    def __init__(self, on: bool) -> None:
        self.on = on

    @classmethod
    def for_stream(cls, stream: TextIO) -> Palette:
        return cls(colour_wanted(stream))

    def paint(self, text: str, style: str) -> str:
        if not self.on or not style or not text:
            return text
        start, end = _ansi(style)
        return f"{start}{text}{end}"

    def state(self, state: str, text: str | None = None) -> str:
        """`text` (the state's own word by default) in the colour of `state`."""
        return self.paint(state if text is None else text, STATUS_STYLE.get(state, ""))


PLAIN = Palette(False)
