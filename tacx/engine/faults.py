"""Fault injection for crash tests: `TACX_FAULT=NAME[:N]` kills tacx with SIGKILL the N-th
time (default: the first) it passes the point NAME, where nothing else could stop it.

Read once at import; a point costs one comparison when no fault is set."""

from __future__ import annotations

import os
import signal

_name, _, _count = os.environ.get("TACX_FAULT", "").partition(":")
_left = int(_count) if _count.isdigit() and int(_count) > 0 else 1


def point(name: str) -> None:
    """Die here, as `kill -9` would, when this is the chosen point and hit."""
    global _left
    if name != _name:
        return
    _left -= 1
    if _left == 0:
        os.kill(os.getpid(), signal.SIGKILL)
