"""The executor seam: what the engine asks of whatever runs its daughters, and the words
both sides share (a `Daughter`, how it ended: `ExitInfo`).

The coordinator's parts talk to the daughter-running side only through `Executor`: the
local process executor (engine/local/supervisor.py) and the Ray executor (engine/ray/), which
runs each attempt as a Ray job on a cluster. `Executors` picks one per stage (its
`executor:` key) or per provider.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from collections.abc import Callable, Iterable, Mapping


@dataclass
class ExitInfo:
    """How a daughter ended. exit_code None with signal None means: unknown (ended unseen)."""

    exit_code: int | None
    signal: int | None
    peak_rss: int
    cpu_seconds: float

    @property
    def known(self) -> bool:
        return self.exit_code is not None or self.signal is not None


@dataclass
class Daughter:
    """One started stage attempt as the engine sees it, whichever executor runs it: who it
    is, where its output goes, how it ended (`exited`), and live figures from the sampler."""

    pid: int
    create_time: float
    argv: list[str]
    log_path: Path
    status_path: Path
    marker: str
    started_at: float
    adopted: bool = False
    # What the workflow asked for (argv may wrap it, e.g. in a status trap): what events, the
    # store and the dashboard show. Empty: argv itself.
    command: list[str] = field(default_factory=list)
    exited: asyncio.Future[ExitInfo] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    kill_reason: str | None = None
    ended_at: float = 0.0  # when its end was noticed (reaped, or found gone)
    # Live figures from the sampler.
    rss: int = 0
    peak_rss: int = 0
    cpu_percent: float = 0.0
    cpu_seconds: float = 0.0
    children: int = 0
    log_size: int = 0
    last_output_at: float = 0.0
    # Its whole log, when small and the executor read it as it saw the end, so the engine
    # need not read it again; None: the engine reads the log's end itself.
    tail: bytes | None = None
    # Which executor runs it ("local", "ray") and where: "" is this machine, else the node.
    executor: str = "local"
    node: str = ""
    # Why its executor could not run it to its end (a cluster that went away, a node that
    # could not clone its branch): the attempt fails saying so, and is retried by the
    # workflow's rules. None: it ended as `exited` says.
    failure: str | None = None

    def __post_init__(self) -> None:
        if not self.command:
            self.command = list(self.argv)

    @property
    def done(self) -> bool:
        return self.exited.done()


@dataclass(frozen=True)
class Placement:
    """What a stage's workspace is, for an executor that runs it elsewhere: the local one
    runs in `cwd` itself; a remote one clones `branch` of the project (a worktree) or
    needs `cwd` on a filesystem it shares (dir, none)."""

    workspace: str  # none | dir | worktree
    project_root: Path
    branch: str | None = None
    provider: str = ""  # whose resources a remote job asks for


class Executor(Protocol):
    """Starts daughters, learns their ends, ends their trees, samples them, and finds them
    again after a crash. Live figures are kept on each `Daughter` and handed, every sample,
    to the callback the executor was built with."""

    name: str
    # A remote executor's daughters take their environment from where they run: they are
    # handed only what tacx sets (never this machine's variables, credentials among them).
    remote: bool

    @property
    def daughters(self) -> Mapping[int, Daughter]:
        """The daughters it watches, by pid (what the dashboard and the sweeps look at)."""
        ...

    def start(self) -> None:
        """Begin sampling, and whatever the executor needs to start daughters (not awaited)."""
        ...

    async def stop(self) -> None:
        """Stop sampling; daughters left running stay (the next start re-adopts them)."""
        ...

    async def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        status_path: Path,
        marker: str,
        mkdirs: Iterable[Path] = (),
        files: dict[Path, str] | None = None,
        command: list[str] | None = None,
        placement: Placement | None = None,
    ) -> Daughter:
        """Start a daughter; its end resolves `Daughter.exited`. OSError (or ValueError, with
        words for a person) when it cannot start. `command`: what the workflow asked for,
        when argv wraps it (kept as `Daughter.command`)."""
        ...

    async def clean_after_exit(self, d: Daughter) -> None:
        """A daughter that ended by itself may leave processes behind: end those too."""
        ...

    def stored(self, d: Daughter) -> None:
        """The daughter's end is committed: nothing need keep it any more."""
        ...

    async def terminate(self, d: Daughter, reason: str, grace: float | None = None) -> ExitInfo:
        """End a daughter's whole tree (SIGTERM, grace, SIGKILL)."""
        ...

    def is_running(self, pid: int, create_time: float, marker: str) -> bool:
        """Whether a recorded daughter still runs (blocking: called in a thread)."""
        ...

    def adopt(
        self,
        *,
        pid: int,
        create_time: float,
        argv: list[str],
        log_path: Path,
        status_path: Path,
        marker: str,
        started_at: float,
        ended_at: float = 0.0,
    ) -> Daughter:
        """Watch again a daughter an earlier tacx started (after a crash); argv as recorded
        (the command the workflow asked for)."""
        ...

    async def find_unrecorded(
        self, marker: str, log_path: Path, status_path: Path, not_before: float
    ) -> Daughter | None:
        """A daughter started but never recorded (tacx died in between); None if it never ran."""
        ...

    async def sweep_stragglers(self, prefix: str, live: Callable[[], set[str]]) -> list[int]:
        """End processes whose marker starts with prefix and belongs to no live daughter."""
        ...

    async def sweep_leftovers(self) -> None:
        """After a restart's recovery: what daughters nobody watches any more left behind goes."""
        ...


class Executors:
    """Which executor runs a stage's daughter: the one its `executor:` key names, else its
    provider's (the default, local one unless a provider is given another)."""

    def __init__(
        self,
        default: Executor,
        by_provider: Mapping[str, Executor] | None = None,
        named: Mapping[str, Executor] | None = None,
    ) -> None:
        self.default = default
        self.by_provider: dict[str, Executor] = dict(by_provider or {})
        self.named: dict[str, Executor] = {default.name: default, **(named or {})}
        for executor in self.by_provider.values():
            self.named.setdefault(executor.name, executor)

    def for_provider(self, provider: str | None) -> Executor:
        return self.by_provider.get(provider or "", self.default)

    def for_stage(self, executor: str | None, provider: str | None) -> Executor:
        """A stage's: `executor: ray` names one; local (the default) leaves it to the provider."""
        if executor and executor != self.default.name:
            return self.named[executor]
        return self.for_provider(provider)

    def recorded(self, name: str | None, provider: str | None) -> Executor:
        """The executor a daughter's record names, else its provider's."""
        return self.named.get(name or "") or self.for_provider(provider)

    def of(self, d: Daughter) -> Executor:
        """The executor that runs (or ran) a daughter."""
        return self.recorded(d.executor, None)

    def all(self) -> list[Executor]:
        """Each executor once, the default first."""
        seen = [self.default]
        for executor in (*self.by_provider.values(), *self.named.values()):
            if all(executor is not s for s in seen):
                seen.append(executor)
        return seen
