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

from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style

from tacx.states import STATUS_STYLE


def colour_wanted(stream: TextIO) -> bool:
    """Whether text for this stream may carry colour."""
    if os.environ.get("NO_COLOR", ""):
        return False
    console = Console(file=stream)
    return console.is_terminal and not console.is_dumb_terminal and console.color_system is not None


@lru_cache(maxsize=64)
def _style(style: str) -> Style:
    return Style.parse(style)


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
        return _style(style).render(text, color_system=ColorSystem.STANDARD)

    def state(self, state: str, text: str | None = None) -> str:
        """`text` (the state's own word by default) in the colour of `state`."""
        return self.paint(state if text is None else text, STATUS_STYLE.get(state, ""))


PLAIN = Palette(False)
