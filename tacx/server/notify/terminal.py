"""The terminal channel: a bell and a desktop notification by escape sequence, OSC 9
(iTerm2, WezTerm, Windows Terminal, kitty, foot) and OSC 777 (rxvt, VTE terminals such as
GNOME Terminal). The text is plain first: a hostile title cannot smuggle a sequence in."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tacx.server.notify.message import Message, plain

BODY_LIMIT = 240
TITLE = "tacx"


def sequences(text: str) -> str:
    """OSC 9 and OSC 777 for ``text``, which is made plain (no ESC, BEL, C1, newline) and
    loses its semicolons (OSC 777 separates its fields with them)."""
    body = plain(text, BODY_LIMIT).replace(";", ",")
    return f"\x1b]9;{TITLE}: {body}\x07\x1b]777;notify;{TITLE};{body}\x07"


class TerminalChannel:
    """Handed how to ring, write raw sequences and (in the dashboard) show a toast."""

    def __init__(self, write: Callable[[str], None], bell: Callable[[], None],
                 toast: Callable[[str], None] | None = None) -> None:
        self.write = write
        self.bell = bell
        self.toast = toast

    async def deliver(self, msg: Message) -> bool:
        self.bell()
        self.write(sequences(msg.text))
        if self.toast is not None:
            self.toast(plain(msg.text, 2000))
        return True

    async def close(self) -> None:
        return None


def stderr_terminal() -> TerminalChannel | None:
    """Headless: stderr when it is a terminal; None when it is a file or a pipe (a log
    would only collect escape sequences)."""
    try:
        if not sys.stderr.isatty():
            return None
    except (AttributeError, ValueError):
        return None

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    return TerminalChannel(write, lambda: write("\a"))
