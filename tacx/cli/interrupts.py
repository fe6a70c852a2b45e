"""A ^C held back while tacx imports what a command needs, raised once it has.

Let loose inside an import, a ^C can land in a native extension (pydantic-core builds its
schemas through the C API) that wraps it in another error, or trips CPython's "unhandled
KeyboardInterrupt" flag so the process dies by the signal at exit even though tacx caught
the interrupt: an exit status of -2 or 1 instead of 130. The entry point holds SIGINT
blocked from its first line; the command line lets it in once the command's modules are
imported, just before the command runs (and before it starts any process, which would
inherit the mask)."""

from __future__ import annotations

import signal


def hold() -> None:
    """Block SIGINT in this (main) thread, where that can be done."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, OSError, ValueError):
        pass


def let_in() -> None:
    """Unblock SIGINT: a ^C held meanwhile is raised here, as KeyboardInterrupt."""
    try:
        held = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    except (AttributeError, OSError, ValueError):
        return
    if held:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
