"""What `tacx providers` reports: which CLIs are installed, their versions and limits, and
how every provider has done so far (from the store)."""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tacx.agents.base import Provider
from tacx.agents.health import ProviderHealth, Trouble
from tacx.agents.login import Login, Where
from tacx.agents.prices import Unpriced, models
from tacx.settings import Settings
from tacx.agents.spending import Cooldowns

VERSION_TIMEOUT = 5.0
FINISHED = ("succeeded", "failed", "timed_out", "cancelled")


def read_version(argv: list[str], timeout: float = VERSION_TIMEOUT) -> str:
    """The first line a CLI prints for --version; a hang or a crash is reported, not fatal."""
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=timeout, start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        return f"(no answer to --version within {timeout:g}s)"
    except OSError as exc:
        return f"(cannot run: {exc.strerror})"
    text = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    if proc.returncode != 0:
        return f"(--version exited {proc.returncode}{': ' + text[0][:80] if text else ''})"
    return text[0][:120] if text else "(no version printed)"


def _usage(conn: sqlite3.Connection | None) -> dict[str, dict[str, Any]]:
    if conn is None:
        return {}
    marks = ", ".join("?" for _ in FINISHED)
    rows = conn.execute(
        "SELECT provider, status, ended_at - started_at AS took, input_tokens, output_tokens,"
        f" cache_read_tokens, cache_write_tokens, cost_usd FROM stages WHERE provider IS NOT NULL"
        f" AND status IN ({marks}) AND started_at IS NOT NULL",
        FINISHED,
    )
    stats: dict[str, dict[str, Any]] = {}
    durations: dict[str, list[float]] = {}
    for r in rows:
        s = stats.setdefault(
            r["provider"],
            {"stages": 0, "succeeded": 0, "failed": 0, "cancelled": 0,
             "tokens": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}, "cost_usd": 0.0},
        )
        s["stages"] += 1
        key = "succeeded" if r["status"] == "succeeded" else "cancelled" if r["status"] == "cancelled" else "failed"
        s[key] += 1
        for field, column in (("input", "input_tokens"), ("output", "output_tokens"),
                              ("cache_read", "cache_read_tokens"), ("cache_write", "cache_write_tokens")):
            s["tokens"][field] += r[column]
        s["cost_usd"] += r["cost_usd"]
        if r["took"] is not None:
            durations.setdefault(r["provider"], []).append(r["took"])
    found = Unpriced.find(conn, f"s.provider IS NOT NULL AND s.status IN ({marks}) AND s.started_at IS NOT NULL", FINISHED)
    for name, s in stats.items():
        s["unpriced"] = models([u for u in found if u.provider == name])  # no price known: not $0
        decided = s["succeeded"] + s["failed"]
        s["success_rate"] = round(s["succeeded"] / decided, 3) if decided else None
        s["median_seconds"] = round(statistics.median(durations[name]), 3) if durations.get(name) else None
        s["cost_usd"] = round(s["cost_usd"], 6)
    return stats


def _running(conn: sqlite3.Connection | None) -> dict[str, list[dict[str, Any]]]:
    """Each provider's daughters running now, and where: this machine or a cluster's node."""
    if conn is None:
        return {}
    try:
        rows = conn.execute(
            "SELECT s.provider, d.task_id, d.stage, d.executor, d.node FROM daughters d"
            " JOIN stages s ON s.id = d.stage_id WHERE d.ended_at IS NULL ORDER BY d.id"
        ).fetchall()
    except sqlite3.OperationalError:  # a store from before executors were recorded
        return {}
    running: dict[str, list[dict[str, Any]]] = {}
    for provider, task, stage, executor, node in rows:
        running.setdefault(provider or "", []).append(
            {"task": task, "stage": stage, "executor": executor, "node": node or (None if executor != "local" else "")}
        )
    return running


def _cooldowns(settings: Settings, conn: sqlite3.Connection | None) -> dict[str, dict[str, Any]]:
    """Rate-limit rests still running, as the coordinator recorded them."""
    if conn is None:
        return {}
    cooldowns = Cooldowns(settings)
    cooldowns.restore(conn)
    return {name: {"until": until, "reason": why} for name, (until, why) in cooldowns.active().items()}


def _troubles(conn: sqlite3.Connection | None) -> ProviderHealth:
    health = ProviderHealth()
    if conn is not None:
        health.restore(conn)
    return health


def health(installed: str | None, login: Login | None, cooling: dict[str, Any] | None,
           trouble: Trouble | None) -> dict[str, Any]:
    """Whether a provider can work now, in one state: not installed, not logged in, resting
    (until), failing on auth or cannot reach its API (since), else ready."""
    if installed is not None:
        return {"state": "not installed", "detail": installed}
    if login is not None and login.state == "no":
        return {"state": "not logged in", "detail": login.how}
    if cooling is not None:
        return {"state": "resting", "detail": cooling["reason"], "until": cooling["until"]}
    if trouble is not None:
        state = "failing on auth" if trouble.kind == "auth" else "unreachable"
        return {"state": state, "detail": trouble.detail, "since": trouble.since, "last": trouble.last}
    return {"state": "ready", "detail": login.how if login is not None else None}


def report(providers: dict[str, Provider], settings: Settings, conn: sqlite3.Connection | None,
           project: Path | None = None) -> list[dict[str, Any]]:
    """One entry per provider: installed?, version, login, health, limit, cooldown, and
    usage so far."""
    usage = _usage(conn)
    running = _running(conn)
    cooling = _cooldowns(settings, conn)
    troubles = _troubles(conn)
    where = Where.here(project)
    names = sorted(providers, key=lambda n: (providers[n].kind != "agent", n))
    problems = {name: providers[name].availability() for name in names}
    asks = {name: providers[name].version_argv() for name in names if problems[name] is None}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(asks)))) as pool:
        versions = dict(zip(asks, pool.map(lambda a: read_version(a) if a else None, asks.values())))
    entries = []
    for name in names:
        provider = providers[name]
        argv = asks.get(name)
        login = provider.login(where) if problems[name] is None else None
        if login is not None and login.state == "no" and not settings.checks_login(name):
            login = Login("unknown", f"{login.how} (not held back: check_login: false in tacx.yaml)")
        entries.append({
            "name": name,
            "kind": provider.kind,
            "installed": problems[name] is None,
            "path": argv[0] if argv else None,
            "problem": problems[name],
            "version": versions.get(name),
            "limit": settings.provider_limit(name),
            "cooldown_seconds": settings.cooldown(name) if provider.kind == "agent" else None,
            "cooling_down": cooling.get(name),
            "login": {"state": login.state, "how": login.how} if login is not None else None,
            "health": health(problems[name], login, cooling.get(name), troubles.trouble(name)),
            "defined_in": "tacx.yaml" if name in settings.providers and settings.providers[name].argv else "tacx",
            "running": running.get(name, []),
            "usage": usage.get(name, {
                "stages": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "success_rate": None,
                "median_seconds": None, "tokens": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0},
                "cost_usd": 0.0, "unpriced": [],
            }),
        })
    return entries


def _cost(usd: float, unpriced: list[str]) -> str:
    known = "$" + format(usd, ".4f")
    return known if not unpriced else "unpriced" if not usd else known + "+"


def _when(ts: float) -> str:
    return time.strftime("%H:%M" if time.time() - ts < 86400 else "%Y-%m-%d %H:%M", time.localtime(ts))


def health_words(h: dict[str, Any]) -> str:
    """A provider's health in a few words: "ready", "not logged in", "resting until 14:05",
    "failing on auth since 13:58", "cannot reach its API since 13:58"."""
    state = h["state"]
    if state == "resting":
        return f"resting until {_when(h['until'])}"
    if state == "failing on auth":
        return f"failing on auth since {_when(h['since'])}"
    if state == "unreachable":
        return f"cannot reach its API since {_when(h['since'])}"
    return state


def _placed(r: dict[str, Any]) -> str:
    """"task 12 build here", "task 13 plan on node-a (ray)", "task 14 test on ray, not placed yet"."""
    where = "here" if r["executor"] == "local" else f"on {r['node']} ({r['executor']})" if r["node"] else \
        f"on {r['executor']}, not placed yet"
    return f"task {r['task']} {r['stage']} {where}"


def render_text(entries: list[dict[str, Any]]) -> str:
    lines = [f"{'provider':<10} {'kind':<6} {'version':<26} {'health':<30} {'limit':>5} {'stages':>6} {'ok':>5}"
             f" {'median':>8} {'tokens':>9} {'cost':>9}"]
    for e in entries:
        u = e["usage"]
        if e["installed"]:
            version = e["version"] or ("built in" if e["kind"] == "script" or e["name"] == "mock" else "yes")
        else:
            version = "-"
        rate = f"{u['success_rate'] * 100:.0f}%" if u["success_rate"] is not None else "-"
        median = f"{u['median_seconds']:.1f}s" if u["median_seconds"] is not None else "-"
        tokens = sum(u["tokens"].values())
        lines.append(
            f"{e['name']:<10} {e['kind']:<6} {version[:26]:<26} {health_words(e['health'])[:30]:<30}"
            f" {e['limit'] or '-':>5} {u['stages']:>6} {rate:>5} {median:>8} {tokens:>9,}"
            f" {_cost(u['cost_usd'], u['unpriced']):>9}"
        )
        h, login = e["health"], e["login"]
        if h["state"] != "ready" and h.get("detail"):
            lines.append(f"{'':<10} {h['detail']}")
        elif login is not None and login["state"] != "no":
            lines.append(f"{'':<10} login: {login['how']}" if login["state"] == "yes"
                         else f"{'':<10} login unknown: {login['how']}")
        if e.get("running"):
            lines.append(f"{'':<10} running: " + ", ".join(_placed(r) for r in e["running"]))
        if u["unpriced"]:
            lines.append(f"{'':<10} unpriced (no price known, not counted in the cost): {', '.join(u['unpriced'])}")
        if e["cooling_down"] and h["state"] != "resting":
            left = e["cooling_down"]["until"] - time.time()
            lines.append(f"{'':<10} cooling down {left:.0f}s more: {e['cooling_down']['reason']}")
    return "\n".join(lines)
