"""The server from the command line: `tacx token` and what `--listen` needs before the
coordinator starts (the address read, the socket bound, the token made), so a mistake is
one line and exit 2 with nothing started."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from tacx.cli.codes import EXIT_OK, UsageError
from tacx.home import Home, LockHeld

if TYPE_CHECKING:
    from tacx.cli.reporter import ConsoleReporter
    from tacx.engine.coordinator import Coordinator
    from tacx.server.address import Listener
    from tacx.server.app import ApiServer


def cmd_token(home: Home, args: argparse.Namespace) -> int:
    from tacx.server.token import TokenError, ensure_token, rotate_token

    try:
        token = rotate_token(home) if args.rotate else ensure_token(home)
    except TokenError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the token in {home.root}: {exc.strerror or exc}") from None
    print(token)
    if args.rotate:
        print("tacx: a new token; the old one no longer opens a running server", file=sys.stderr)
    return EXIT_OK


def listener(home: Home, text: str | None) -> Listener | None:
    """The socket `--listen` asks for, bound, and the home's token ready; None without it."""
    if text is None:
        return None
    from tacx.server.address import ListenError, listen
    from tacx.server.token import TokenError, ensure_token

    try:
        ensure_token(home)
        return listen(text)
    except (ListenError, TokenError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the token in {home.root}: {exc.strerror or exc}") from None


def refuse_in_viewer(held: LockHeld, text: str | None) -> None:
    if text is not None:
        raise UsageError(f"--listen serves this home's coordinator, which runs elsewhere: {held.describe()}")


async def serve(coordinator: Coordinator, found: Listener | None, reporter: ConsoleReporter) -> ApiServer | None:
    """Start the server (when --listen asked for one) and say where it listens: a line on
    stderr (after a loud warning when other machines can reach it), and a JSON event line
    in --json mode, where scripts read the port."""
    if found is None:
        return None
    from tacx.server.app import ApiServer, listening_line

    server = ApiServer(coordinator, found)
    await server.start()
    if warning := found.warning():
        print(f"tacx: {warning}", file=sys.stderr)
    print(f"tacx: {listening_line(server.url)}", file=sys.stderr, flush=True)
    if reporter.json_mode:
        reporter.stream.write(json.dumps({"kind": "server.listening", "url": server.url, "ts": time.time()}) + "\n")
        reporter.stream.flush()
    return server
