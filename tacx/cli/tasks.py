"""Reading tasks: `tacx ls`, `tacx show` and `tacx logs` (which follows a stage's log while
it runs). They read the store and write nothing."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from typing import Any

from tacx.agents.prices import cost_text, note_unpriced
from tacx.cli.colour import Palette
from tacx.cli.common import EXIT_OK, UsageError, reader
from tacx.home import Home, coordinator_running
from tacx.store import records
from tacx.text import fit, printable


def cmd_ls(home: Home, args: argparse.Namespace) -> int:
    conn = reader(home)
    since = time.time() - args.since if args.since is not None else None
    tasks = records.list_tasks(conn, status=args.status, workflow=args.workflow, limit=args.limit,
                               source=args.source, since=since, newest_first=True) if conn else []
    if conn:
        note_unpriced(conn, tasks)
        conn.close()
    if args.json:
        print(json.dumps(tasks))
        return EXIT_OK
    if not tasks:
        print("no tasks")
        return EXIT_OK
    running = coordinator_running(home)
    palette = Palette.for_stream(sys.stdout)
    print(f"{'ID':>5}  {'STATUS':<10} {'PRI':>3}  {'WORKFLOW':<18} {'TIME':>7} {'TOKENS':>7} {'COST':>9}  TITLE")
    for t in tasks:
        note = ""
        if t["status"] == "queued":
            note = t["wait_reason"] if running and t["wait_reason"] else ("" if running else "no coordinator is running")
        elif t["status"] in ("failed", "timed_out") and t["error"]:
            note = _gist(t["error"])
        # Each cell is padded, then painted: escape codes never count as width.
        status = palette.state(t["status"], f"{t['status']:<10}")
        cost = _cost_short(t)
        cost = palette.paint(f"{cost:>9}", "yellow" if t.get("unpriced") else "")
        print(
            f"{t['id']:>5}  {status} {t['priority']:>3}  " + fit(t['workflow'], 18)
            + f" {_elapsed(t):>7} {_tokens_short(sum(t['tokens'].values())):>7} {cost}  "
            + printable(f"{t['title'][:60]}" + (f"  — {note}" if note else ""))
        )
    return EXIT_OK


def _gist(error: str) -> str:
    """One line of an error for a listing: what happened, and the last line of output."""
    head, _, output = error.partition("; last output:\n")
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return head.splitlines()[0] + (f": {lines[-1].strip()[:120]}" if lines else "")


def _tokens_short(n: int) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _cost_short(t: dict[str, Any]) -> str:
    if t.get("unpriced"):
        return "unpriced" if not t["cost_usd"] else f"${t['cost_usd']:.2f}+"
    return f"${t['cost_usd']:.4f}" if t["cost_usd"] else "-"


def _elapsed(t: dict[str, Any]) -> str:
    if not t["started_at"]:
        return "-"
    return _duration((t["ended_at"] or time.time()) - t["started_at"])


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def cmd_show(home: Home, args: argparse.Namespace) -> int:
    conn = reader(home)
    task = records.show_task(conn, args.id) if conn else None
    if conn:
        if task is not None:
            note_unpriced(conn, [task])
        conn.close()
    if task is None:
        raise UsageError(f"no task {args.id}")
    if args.json:
        print(json.dumps(task))
        return EXIT_OK
    palette = Palette.for_stream(sys.stdout)
    print(printable(f"task {task['id']}: {task['title']}"))
    print(f"  workflow {task['workflow']} · status {palette.state(task['status'])} · priority {task['priority']} · trace {task['trace_id']}")
    if task["status"] == "queued" and task["wait_reason"]:
        print(f"  waiting: {task['wait_reason']}")
    if task["error"]:
        print(printable("  error: " + task["error"].replace("\n", "\n    ")))
    if task["source"]:
        print(printable(f"  from {task['source']['name']}" + (f": {task['source']['url']}" if task["source"]["url"] else "")))
    if task["inputs"]:
        print("  inputs: " + ", ".join(f"{k}={v!r}" for k, v in task["inputs"].items()))
    if task["workspace"]:
        print(f"  workspace: {task['workspace']}" + (f" (branch {task['branch']})" if task["branch"] else ""))
    if any(task["tokens"].values()) or task["cost_usd"]:
        print(f"  tokens: {_token_text(task['tokens'])} · cost {cost_text(task['cost_usd'], task['unpriced'])}")
    print("  stages:")
    for s in task["stages"]:
        took = _duration(s["ended_at"] - s["started_at"]) if s["started_at"] and s["ended_at"] else ""
        line = printable(f"    {s['name']:<16} ") + palette.state(s["status"], f"{s['status']:<10}") + f" attempt {s['attempt']}  {s['provider'] or '':<8} {took}"
        if s["exit_code"] is not None:
            line += f"  exit {s['exit_code']}"
        if any(s["tokens"].values()) or s["cost_usd"]:
            line += f"  {_token_text(s['tokens'])} {cost_text(s['cost_usd'], s['unpriced'])}"
        print(line.rstrip())
        if s["session_id"]:
            agent = f"      session {s['session_id']}" + (f" · {s['model']}" if s["model"] else "")
            agent += f" · {s['turns']} turns" if s["turns"] else ""
            agent += f" · {s['api_retries']} API retries" if s["api_retries"] else ""
            agent += f" · {s['rate_limits']} rate-limit events" if s["rate_limits"] else ""
            print(printable(agent))
        if s["wait_reason"] and s["status"] == "pending":
            print(f"      waiting: {s['wait_reason']}")
        if s["error"]:
            print(printable("      " + s["error"].replace("\n", "\n        ")))
        for d in s["daughters"]:
            end = f"exit {d['exit_code']}" if d["exit_code"] is not None else (f"signal {d['signal']}" if d["signal"] else "running" if not d["ended_at"] else "ended")
            rss = f"{d['peak_rss'] / 2**20:.1f} MB" if d["peak_rss"] else "not sampled"
            cpu = f"{d['cpu_seconds']:.2f}s cpu" if d["cpu_seconds"] is not None else ""
            print(f"      pid {d['pid']} (attempt {d['attempt']}): {end}, peak {rss}, {cpu}".rstrip(", "))
            print(printable(f"        {_command_line(d['argv'])}"))
    print("  events:")
    for e in task["events"][-20:]:
        clock = time.strftime("%H:%M:%S", time.localtime(e["ts"]))
        data = ", ".join(f"{k}={v}" for k, v in e["data"].items() if k != "error")
        print(f"    {clock} {e['kind']:<22} {e['stage'] or '':<12} {data}"[:160])
    return EXIT_OK


def _command_line(argv: list[str], width: int = 150) -> str:
    """A daughter's command (what the workflow asked for) on one line, as a shell would
    read it; a script of several lines shows its first."""
    line = shlex.join(argv)
    if "\n" in line:
        line = line.split("\n", 1)[0] + " …"
    return line if len(line) <= width else line[: width - 1] + "…"


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def _token_text(tokens: dict[str, int]) -> str:
    return (
        f"in {_count(tokens['input'])} · out {_count(tokens['output'])} · "
        f"cache r {_count(tokens['cache_read'])} w {_count(tokens['cache_write'])}"
    )


