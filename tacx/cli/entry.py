"""The `tacx` command's entry point: small on purpose. A ^C while Python is still
importing tacx ends the command with 130, as a ^C later does, instead of a traceback.

The ^C is held back (SIGINT blocked) while tacx imports and raised once the imports are
done. Let loose inside an import, it can land in a native extension (pydantic-core builds
its schemas through the C API) that wraps it in another error, or trips CPython's
"unhandled KeyboardInterrupt" flag so the process dies by the signal at exit even though
the interrupt was caught here: an exit status of -2 or 1 instead of 130."""

from __future__ import annotations

import signal
import sys

EXIT_INTERRUPTED = 130  # cli.common's, written here: importing it would pull in the rest of tacx


def main() -> int:
    held = _hold_interrupts()
    try:
        from tacx.cli.main import main as run
    except KeyboardInterrupt:  # no mask to hold it with (not the main thread, say)
        return _interrupted()
    try:
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a held ^C is raised here
    except KeyboardInterrupt:
        return _interrupted()
    return run()


def _hold_interrupts() -> bool:
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _interrupted() -> int:
    sys.stderr.write("\n")
    return EXIT_INTERRUPTED
