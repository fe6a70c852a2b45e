"""`tacx notify test`: a test message through every channel tacx.yaml's `notify:` names,
and what each did with it, so a webhook or a command is known to work before a task ends."""

from __future__ import annotations

import argparse
import asyncio

from tacx.cli.common import EXIT_FAILED, EXIT_OK, UsageError, project_settings
from tacx.home import Home


def cmd_notify(home: Home, args: argparse.Namespace) -> int:
    settings = project_settings(home)
    if not settings.notify:
        raise UsageError(f"{home.project_root / 'tacx.yaml'} has no notify: rules to test")
    return asyncio.run(_test_all(home, settings.notify))


async def _test_all(home: Home, rules: list) -> int:  # type: ignore[type-arg]
    from tacx.server.notify.message import Message
    from tacx.server.notify.notifier import build_channel
    from tacx.server.notify.terminal import stderr_terminal

    text = f"tacx test notification from {home.root}: notify works"
    failed = 0
    for i, rule in enumerate(rules):
        said: list[str] = []
        channel = build_channel(rule, home, said.append, stderr_terminal())
        where = f"notify[{i}] {rule.describe()}"
        if channel is None:
            print(f"{where}: skipped (stderr is not a terminal)")
            continue
        try:
            delivered = await channel.deliver(Message(text, [], {"test": 1}))
        finally:
            await channel.close()
        if delivered:
            print(f"{where}: delivered")
        else:
            failed += 1
            print(f"{where}: failed: {said[-1].removeprefix('notify: ') if said else 'not delivered'}")
    return EXIT_FAILED if failed else EXIT_OK
