"""A daughter as the local executor holds it (its process, its keeper, its cgroup), and
how its live figures are read from the process table (in the sampler's thread)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import psutil

from tacx.engine.executor import Daughter
from tacx.engine.local.keeper_client import KeeperClient
from tacx.engine.local.processes import is_process


@dataclass
class LocalDaughter(Daughter):
    popen: subprocess.Popen[bytes] | None = None
    cgroup: str | None = None  # its own cgroup, where containment by cgroup is in force
    leftovers: bool = False  # processes were left in its cgroup when it ended
    keeper: tuple[int, float] | None = None  # an earlier tacx's keeper, which will write its status
    keeper_request: int | None = None  # its number with the keeper, to say its end is stored
    kept_by: KeeperClient | None = None  # the keeper that started it, and reports its end
    _proc: psutil.Process | None = None
    _sampled_at: float = 0.0

    @property
    def pgid(self) -> int:
        return self.pid


def own(d: Daughter) -> LocalDaughter:
    """A daughter the engine hands back: one this executor started or adopted."""
    assert isinstance(d, LocalDaughter), f"pid {d.pid} is not a local daughter"
    return d


@dataclass
class Sample:
    pid: int
    alive: bool
    rss: int = 0
    cpu_seconds: float = 0.0
    children: int = 0
    log_size: int = 0


def read_sample(d: LocalDaughter) -> Sample:
    """Tree RSS, CPU seconds and children of one daughter, plus its log size (a thread)."""
    try:
        proc = d._proc
        if proc is None:
            proc = psutil.Process(d.pid)
            if not is_process(proc, d.create_time):
                return Sample(d.pid, alive=False)
            d._proc = proc
        with proc.oneshot():
            times = proc.cpu_times()
            rss = proc.memory_info().rss
        cpu = times.user + times.system + times.children_user + times.children_system
        kids = proc.children(recursive=True)
        for kid in kids:
            try:
                with kid.oneshot():
                    kid_times = kid.cpu_times()
                    rss += kid.memory_info().rss
                cpu += kid_times.user + kid_times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return Sample(d.pid, alive=False)
    try:
        size = os.stat(d.log_path).st_size
    except OSError:
        size = d.log_size
    return Sample(d.pid, True, rss, cpu, len(kids), size)
