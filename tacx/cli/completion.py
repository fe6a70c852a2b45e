"""Shell completion: `tacx completion bash|zsh|fish` prints a script that asks tacx itself,
through argcomplete, what may come next; so completions follow the parser as it is, task ids
included (read from the store)."""

from __future__ import annotations

import argparse
from typing import Any

from tacx.cli.common import EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["tacx"], shell=args.shell), end="")
    return EXIT_OK


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's question and exit (argcomplete does both); task ids come from the
    store of the home the command line names."""
    import argcomplete

    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for command in commands[0].choices.values() if commands else ():
        for action in command._actions:
            if action.dest in ("id", "ids"):
                action.completer = _task_ids  # type: ignore[attr-defined]
    argcomplete.autocomplete(parser, always_complete_options=False)  # options after a "-", as gh does


def _task_ids(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """The ids of the tasks in the home, newest first; none when it cannot be read."""
    from tacx.home import resolve_home
    from tacx.store.database import connect_reader

    try:
        conn = connect_reader(resolve_home(getattr(parsed_args, "home", None)).db_path)
        if conn is None:
            return []
        try:
            rows = conn.execute("SELECT id FROM tasks ORDER BY id DESC LIMIT 500").fetchall()
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 - a completion never breaks the shell
        return []
    return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]
