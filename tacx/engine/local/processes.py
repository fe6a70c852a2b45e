"""Processes as tacx knows them: by pid and start time (a pid alone can be reused), by
the environment marker every daughter and its descendants carry, and by the status file
a daughter's end leaves beside its log. Blocking calls: the engine runs them in threads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable

import psutil

from tacx.engine.executor import ExitInfo
from tacx.engine.local.keeper import KEEPER_ENV

MARKER_ENV = "TACX_DAUGHTER"
# A process is known by its pid and its start time, in seconds after boot as the kernel
# counts it (/proc/<pid>/stat, in clock ticks): exact, and deaf to wall-clock steps.
CREATE_TIME_TOLERANCE = 0.005
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class MarkedProcess:
    pid: int
    create_time: float
    marker: str


def read_status_record(path: Path, *, pid: int | None = None, not_before: float = 0.0) -> dict[str, Any] | None:
    """The file a daughter's end leaves beside its log: the keeper's JSON (pid, exit code
    or signal, CPU, peak RSS, times), or the bare exit code a shell's EXIT trap writes.
    None when there is none, or it is not this daughter's: another `pid`, or written
    before `not_before` (an attempt's start: the file is some earlier store's)."""
    try:
        if not_before and path.stat().st_mtime < not_before - 1.0:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, int) and not isinstance(data, bool):
        return {"exit_code": data}
    if not isinstance(data, dict) or (data.get("exit_code") is None and data.get("signal") is None):
        return None
    if pid is not None and data.get("pid", pid) != pid:
        return None
    return data


def read_status(path: Path, *, pid: int | None = None) -> ExitInfo | None:
    """How a daughter ended, from its status file (None: no file, nothing in it, or
    another process's)."""
    data = read_status_record(path, pid=pid)
    if data is None:
        return None
    return ExitInfo(data.get("exit_code"), data.get("signal"), int(data.get("max_rss") or 0),
                    float(data.get("cpu_seconds") or 0.0))


def process_start(pid: int) -> float | None:
    """When pid started, in seconds after boot (None when there is no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / _CLOCK_TICKS
    except FileNotFoundError:
        return None
    except (OSError, IndexError, ValueError):  # no /proc here: psutil's wall-clock figure
        try:
            return psutil.Process(pid).create_time()
        except psutil.Error:
            return None


def is_process(proc: psutil.Process, create_time: float) -> bool:
    start = process_start(proc.pid)
    return start is not None and abs(start - create_time) < CREATE_TIME_TOLERANCE


def same_process(pid: int, create_time: float) -> bool:
    """True if pid is alive (not a zombie) and is the very process that started then."""
    try:
        proc = psutil.Process(pid)
        return is_process(proc, create_time) and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when no process is left in it."""
    if pgid <= 1:  # an unknown pid (0 would be tacx's own group, -1 every process)
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def descendants(pid: int, create_time: float) -> list[psutil.Process]:
    if pid <= 1:
        return []
    try:
        proc = psutil.Process(pid)
        if not is_process(proc, create_time):
            return []
        return proc.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def any_alive(pgid: int | None, procs: Iterable[psutil.Process]) -> bool:
    if pgid is not None and signal_group(pgid, 0):
        return True
    return any(is_running(p) for p in procs)


def is_running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_procs(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            if proc.is_running():
                proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def scan_marked(match: Callable[[str], bool]) -> list[MarkedProcess]:
    """Every process whose environment carries a marker accepted by match (blocking: a thread)."""
    me = os.getpid()
    found: list[MarkedProcess] = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            marker = proc.environ().get(MARKER_ENV)
            if marker and match(marker):
                start = process_start(proc.pid)
                if start is not None:
                    found.append(MarkedProcess(proc.pid, start, marker))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def end_processes(targets: list[MarkedProcess], grace: float) -> list[int]:
    """SIGTERM, wait up to grace, SIGKILL (blocking: a thread). Returns the pids signalled."""
    procs: list[psutil.Process] = []
    for target in targets:
        try:
            proc = psutil.Process(target.pid)
            if is_process(proc, target.create_time):
                procs.append(proc)
        except psutil.NoSuchProcess:
            continue
    if not procs:
        return []
    kill_procs(procs, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    kill_procs(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=2)
    return [p.pid for p in procs]


def spawn_here(
    argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, mkdirs: tuple[Path, ...], files: dict[Path, str]
) -> tuple[subprocess.Popen[bytes], float, float]:
    """Start a daughter from tacx itself (when no keeper runs): folders, files, the log
    (attempts never reuse a log path), then the process (blocking: a thread)."""
    for folder in mkdirs:
        folder.mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        path.write_text(content)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd=cwd, env=env,
            start_new_session=True, close_fds=True,
        )
    finally:
        os.close(fd)
    started_at = time.time()
    return popen, started_at, process_start(popen.pid) or 0.0


def find_root(marker: str) -> tuple[int, float, list[str], float] | None:
    """The live daughter carrying exactly this marker: the marked process whose parent is
    not marked alike (pid, start after boot, argv, start as wall-clock time)."""
    found = scan_marked(lambda m: m == marker)
    pids = {p.pid for p in found}
    for target in sorted(found, key=lambda p: p.create_time):
        try:
            proc = psutil.Process(target.pid)
            if proc.ppid() not in pids:
                return target.pid, target.create_time, proc.cmdline(), proc.create_time()
        except psutil.Error:
            continue
    return None


def live_keepers(home_root: Path, besides: set[int]) -> list[tuple[int, float]]:
    """Keepers of this home other than `besides` (an earlier tacx's, still at work)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in besides:
            continue
        try:
            if proc.environ().get(KEEPER_ENV) == str(home_root):
                start = process_start(proc.pid)
                if start is not None:
                    found.append((proc.pid, start))
        except (psutil.Error, OSError):
            continue
    return found


def keeper_of(pid: int) -> tuple[int, float] | None:
    """The keeper that is pid's parent, if one is (it will write pid's status file)."""
    try:
        parent = psutil.Process(pid).parent()
        if parent is not None and KEEPER_ENV in parent.environ():
            start = process_start(parent.pid)
            return (parent.pid, start) if start is not None else None
    except (psutil.Error, OSError):
        pass
    return None
