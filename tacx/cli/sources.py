"""`tacx sources`: each source tacx.yaml names (GitHub repositories), and its state as the
coordinator last recorded it: last and next poll, issues seen and taken, tasks made, the
rate limit left, the last error."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from tacx.cli.common import EXIT_OK, project_settings, reader
from tacx.home import Home, coordinator_running
from tacx.text import printable


def _recorded(home: Home) -> dict[str, dict[str, Any]]:
    conn = reader(home)
    if conn is None:
        return {}
    try:
        rows = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'source:%'").fetchall()
    finally:
        conn.close()
    found = {}
    for key, value in rows:
        try:
            found[key.removeprefix("source:")] = json.loads(value)
        except ValueError:
            continue
    return found


def _when(ts: Any, now: float) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    delta = ts - now
    words = f"{abs(delta):.0f}s" if abs(delta) < 120 else f"{abs(delta) / 60:.0f}m"
    return f"in {words}" if delta > 0 else f"{words} ago"


def cmd_sources(home: Home, args: argparse.Namespace) -> int:
    settings = project_settings(home)
    recorded = _recorded(home)
    running = coordinator_running(home)
    entries = []
    for conf in settings.sources:
        state = recorded.get(conf.source_name)
        entries.append({"name": conf.source_name, "github": conf.github, "label": conf.label, "workflow": conf.workflow,
                        "poll_seconds": conf.poll, "coordinator_running": running, "state": state})
    if args.json:
        print(json.dumps(entries))
        return EXIT_OK
    if not entries:
        print("no sources: add one to tacx.yaml (sources: - github: owner/repo), see README \"GitHub issues\"")
        return EXIT_OK
    now = time.time()
    for e in entries:
        print(printable(f"{e['name']}  label {e['label']!r} -> workflow {e['workflow']}, every {e['poll_seconds']:g}s"))
        s = e["state"]
        if s is None:
            print("  not polled yet" + ("" if running else ": no coordinator runs here (start `tacx --no-ui` or `tacx`)"))
            continue
        rate = s.get("rate_limit_left")
        print(f"  last poll {_when(s.get('last_poll'), now)} · next poll {_when(s.get('next_poll'), now)}"
              + ("" if running else " (no coordinator runs now)"))
        print(f"  issues seen {s.get('issues_seen', 0)} · taken {s.get('issues_taken', 0)}"
              f" · tasks made {s.get('made', 0)} · requests {s.get('requests', 0)}"
              + (f" · rate limit left {rate}" if rate is not None else ""))
        if s.get("rate_limited_until") and s["rate_limited_until"] > now:
            print(f"  rate limited: polling again {_when(s['rate_limited_until'], now)}")
        if s.get("last_error"):
            print(printable(f"  last error: {s['last_error']}"))
        if s.get("last_issue_error"):  # one issue that could not be taken (locked, moved); the others go on
            print(printable(f"  last issue error: {s['last_issue_error']}"))
    return EXIT_OK
