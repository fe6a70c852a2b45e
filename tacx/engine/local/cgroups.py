"""Containment by cgroup v2: ending a stage's whole tree, escapees included.

A process group and the environment marker miss a grandchild that starts a session of
its own with a clean environment (`setsid env -i ...`); a cgroup does not: every
descendant is born in its parent's cgroup and only a privileged process can leave it.
The keeper (tacx/engine/local/keeper.py) starts each daughter in a cgroup of its own; this module is
what tacx does with those cgroups afterwards, in worker threads (they touch files).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

from tacx.engine.local.keeper import PARENTS_FILE, cgroup_of, populated, probe_cgroups
from tacx.engine.local.keeper import kill_cgroup as kill

__all__ = ["cgroup_of", "containment", "kill", "parent_name", "populated", "remove", "signal_members", "stage_cgroup"]

PARENT_PREFIX = "tacx-"


def parent_name(home_root: Path) -> str:
    """The folder, beside tacx's own cgroup, that holds one home's daughters' cgroups."""
    return PARENT_PREFIX + hashlib.sha1(str(home_root).encode()).hexdigest()[:12]


def stage_cgroup(marker: str) -> str:
    """A daughter's cgroup name from its marker (`<home>#<task>/<stage>/<attempt>`)."""
    name = marker.rpartition("#")[2].replace("/", ".")
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:200] or "daughter"


def stage_cgroup_of(pid: int) -> str | None:
    """The cgroup a live process is in, when it is one tacx made for a daughter."""
    path = cgroup_of(pid)
    if path and os.path.basename(os.path.dirname(path)).startswith(PARENT_PREFIX):
        return path
    return None


def containment(home_root: Path, enabled: bool) -> tuple[bool, str]:
    """Whether daughters of this home get cgroups, and why (for `tacx doctor`)."""
    base, why = probe_cgroups(parent_name(home_root) if enabled else None, keep=False)
    return base is not None, why


def signal_members(cgroup: str, sig: int) -> int:
    """Send sig to every process in the cgroup and the cgroups below it; how many."""
    sent = 0
    for folder, _, _ in os.walk(cgroup):
        try:
            with open(os.path.join(folder, "cgroup.procs")) as f:
                pids = [int(line) for line in f if line.strip()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            if pid <= 1:  # 0: a process outside this pid namespace (os.kill(0) is our own group)
                continue
            try:
                os.kill(pid, sig)
                sent += 1
            except (ProcessLookupError, PermissionError):
                continue
    return sent


def remove(cgroup: str, wait: float = 2.0) -> bool:
    """Remove an emptied cgroup and any below it (a nested tacx makes its own), deepest
    first, waiting up to `wait` for their last processes to go."""
    deadline = time.monotonic() + wait
    while True:
        try:
            for folder, _, _ in sorted(os.walk(cgroup), key=lambda entry: -entry[0].count(os.sep)):
                os.rmdir(folder)
            return True
        except FileNotFoundError:
            if not os.path.exists(cgroup):
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def end(cgroup: str, grace: float) -> int:
    """SIGTERM every member, up to `grace` for them to go, then cgroup.kill; remove it.
    Returns how many processes were signalled (blocking: a thread)."""
    return end_all([cgroup], grace)


def end_all(paths: list[str], grace: float) -> int:
    """`end` for many cgroups at once: one grace period for all of them."""
    sent = sum(signal_members(path, signal.SIGTERM) for path in paths)
    deadline = time.monotonic() + grace
    while any(populated(path) for path in paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    for path in paths:
        if populated(path):
            kill(path)
    for path in paths:
        remove(path)
    return sent




def home_cgroups(home_root: Path) -> list[str]:
    """The daughters' cgroups of one home, wherever its keepers made them."""
    parents = set()
    own = cgroup_of()
    if own is not None:
        parents.add(os.path.join(own, parent_name(home_root)))
    try:
        parents.update(ln for ln in (home_root / PARENTS_FILE).read_text().splitlines()
                       if os.path.basename(ln) == parent_name(home_root))
    except OSError:
        pass
    found = []
    for parent in sorted(parents):
        try:
            found += [os.path.join(parent, name) for name in os.listdir(parent)
                      if os.path.isdir(os.path.join(parent, name)) and not name.startswith("probe-")]
        except OSError:
            continue
    return found


def end_task(home_root: Path, task_id: int, grace: float) -> int:
    """End every cgroup of one task's daughters (a cancel with no coordinator running)."""
    return end_all([p for p in home_cgroups(home_root) if os.path.basename(p).startswith(f"{task_id}.")], grace)


def sweep_stale(home_root: Path, keep: set[str], grace: float) -> int:
    """At a restart: cgroups of daughters nobody watches any more (their daughter and its
    keeper both gone) are ended with whatever is left in them."""
    return end_all([p for p in home_cgroups(home_root) if p not in keep], grace)
