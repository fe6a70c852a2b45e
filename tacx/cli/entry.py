"""The `tacx` command's entry point: small on purpose. A ^C while Python is still
importing tacx ends the command with 130, as a ^C later does, instead of a traceback
(tacx/cli/interrupts.py: SIGINT is held from here until the command's modules are in)."""

from __future__ import annotations

import sys

from tacx.cli import interrupts

EXIT_INTERRUPTED = 130  # cli.codes', written here: the entry point imports as little as it can


def main() -> int:
    interrupts.hold()
    try:
        from tacx.cli.main import main as run
    except KeyboardInterrupt:  # no mask to hold it with (not the main thread, say)
        return _interrupted()
    # main lets the ^C in once the command's modules are imported; a command that ends
    # before that (--help, bad usage) exits with it still held, and it is dropped.
    return run()


def _interrupted() -> int:
    sys.stderr.write("\n")
    return EXIT_INTERRUPTED
