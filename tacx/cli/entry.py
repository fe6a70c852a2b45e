"""The `tacx` command's entry point: small on purpose. A ^C while Python is still
importing tacx ends the command with 130, as a ^C later does, instead of a traceback."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # cli.common's, written here: importing it would pull in the rest of tacx


def main() -> int:
    try:
        from tacx.cli.main import main as run
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    return run()
