"""`tacx doctor`: what this machine and home give tacx, checked for real.

Each check says ok, warn (tacx works, with less) or fail (tacx cannot work as promised),
in words a user acts on. Containment is the one users most need to know: with cgroup v2
a stage's whole tree ends with it, escapees included; without, tacx ends process groups
and sweeps for its environment marker, which a grandchild started with `setsid env -i`
escapes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tacx.cli.colour import Palette
from tacx.engine.local import cgroups
from tacx.home import Home, coordinator_running, read_holder
from tacx.engine.local.keeper_client import KEEPER_PATH, KeeperClient
from tacx.agents.login import Where
from tacx.agents.registry import configured_providers
from tacx.settings import Settings
from tacx.store.errors import explain

Check = dict[str, Any]


def _check(name: str, status: str, detail: str) -> Check:
    return {"check": name, "status": status, "detail": detail}


def _home(home: Home) -> Check:
    if home.root.exists() and not home.root.is_dir():
        return _check("home", "fail", f"{home.root} is a file, not a folder: move it aside or pass --home DIR")
    folder = home.root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        return _check("home", "fail", f"{folder} is not writable: tacx cannot keep its store and logs there")
    state = "exists" if home.root.exists() else "is made at the first submit"
    return _check("home", "ok", f"{home.root} ({state})")


def _store(home: Home) -> Check:
    if not home.db_path.exists():
        return _check("store", "ok", f"{home.db_path} does not exist yet (made at the first submit)")
    try:
        conn = sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True, timeout=5)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tasks = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        return _check("store", "fail", str(explain(exc, home.db_path)))
    if verdict != "ok":
        return _check("store", "fail", f"{home.db_path} is damaged ({verdict}): move it aside or restore a backup")
    return _check("store", "ok", f"{home.db_path}: schema {version}, {tasks} task(s), quick_check ok")


def _coordinator(home: Home) -> Check:
    if not home.lock_path.exists() or not coordinator_running(home):
        return _check("coordinator", "ok", "none running on this home")
    holder = read_holder(home) or {}
    return _check("coordinator", "ok", f"running: pid {holder.get('pid', '?')}, `{holder.get('command', 'tacx')}`")


def _containment(home: Home, settings: Settings) -> Check:
    enabled, why = cgroups.containment(home.root, settings.cgroups != "off")
    return _check("containment", "ok" if enabled else "warn", why)


def _keeper(home: Home) -> Check:
    """Started for real and hung up on, as a coordinator would."""

    async def start() -> int | None:
        keeper = KeeperClient(home.root, None, lambda _: None, lambda: None)
        await keeper.start()
        await keeper.close(wait=True)
        return keeper.pid

    try:
        pid = asyncio.run(start()) if hasattr(os, "posix_spawn") else None
    except OSError as exc:
        pid, why = None, str(exc)
    else:
        why = "posix_spawn is missing"
    if pid is None:
        return _check("keeper", "warn", f"no keeper here ({why}): tacx is its daughters' parent, and an end "
                                        "while tacx is down is known only from a shell's EXIT trap")
    return _check("keeper", "ok", f"daughters are started by a keeper ({sys.executable} -I -S {KEEPER_PATH.name}), "
                                  "their parent, which records every end tacx does not hear of beside its log")


def _pidfd() -> Check:
    try:
        fd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError) as exc:
        return _check("pidfd", "warn", f"no pidfd ({exc}): ends of re-adopted daughters are polled")
    os.close(fd)
    return _check("pidfd", "ok", "ends of re-adopted daughters are noticed at once (pidfd)")


def _providers(settings: Settings, project: Path) -> list[Check]:
    checks = []
    where_from = Where.here(project)
    for name, provider in configured_providers(settings).items():
        problem = provider.availability()
        login = provider.login(where_from) if problem is None else None
        if problem is None and login is not None and login.problem:
            problem = f"{name}: {login.problem}"
        where = shutil.which(getattr(provider, "executable", "") or name) if provider.kind == "agent" else None
        detail = problem or (f"{name}: {where}" if where else f"{name}: available")
        if problem is None and login is not None and login.state == "unknown":
            detail += f" (login unknown: {login.how})"
        checks.append(_check(f"provider {name}", "ok" if problem is None else "warn", detail))
    return checks


def _ray(settings: Settings) -> list[Check]:
    """Where tacx.yaml names a Ray cluster: is Ray installed, and does its job server answer?"""
    ray = settings.executors.ray
    if ray is None:
        return []
    from tacx.engine.ray.jobs import JobServer, RayUnreachable

    server = JobServer(ray.job_server())
    try:
        server.connect()
        live = sum(1 for job in server.jobs() if job.live)
    except RayUnreachable as exc:
        return [_check("ray", "fail", f"{exc}: stages with executor: ray cannot run")]
    return [_check("ray", "ok", f"the job server at {server.address} answers ({live} job(s) pending or running);"
                   " nodes need python3, git (worktree stages) and the agents' CLIs and credentials")]


def report(home: Home, settings: Settings) -> list[Check]:
    return [_home(home), _store(home), _coordinator(home), _containment(home, settings), _keeper(home), _pidfd(),
            *_providers(settings, home.project_root), *_ray(settings)]


_MARKS = {"ok": ("ok  ", "succeeded"), "warn": ("warn", "queued"), "fail": ("FAIL", "failed")}  # word, state colour


def render(checks: list[Check], palette: Palette | None = None) -> str:
    """For people; the marks in the state colours when stdout is a terminal (tacx.cli.colour)."""
    palette = palette or Palette.for_stream(sys.stdout)
    return "\n".join(f"{palette.state(_MARKS[c['status']][1], _MARKS[c['status']][0])}  {c['check']:<16} {c['detail']}"
                     for c in checks)
