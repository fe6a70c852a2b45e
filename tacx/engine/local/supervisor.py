"""The supervisor: starts daughters, learns how they end, samples them, kills whole trees.

A daughter runs in its own session (so its process group is its pid), with stdin closed
and stdout/stderr appended straight to its log file: no pipe can fill and the log
outlives tacx. It is started by the keeper (tacx/keeper.py), a small process outside
tacx that is its parent and reaps it; its end reaches tacx on a socket, and should tacx
be gone, a file beside its log, so its end is known even when tacx was killed meanwhile.
Where cgroup v2 is writable each daughter has a cgroup of its own, and a stage's tree is
ended with it; elsewhere by process group and a sweep for its environment marker
(`TACX_DAUGHTER=<home>#<task>/<stage>/<n>`), inherited by its descendants, which also
finds leftovers after tacx itself was killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable

import psutil

from tacx.engine.local import cgroups
from tacx.engine.local.keeper_client import KeeperClient, KeeperGone, Spawned
from tacx.engine.local.processes import (
    MARKER_ENV,
    ExitInfo,
    any_alive,
    descendants,
    end_processes,
    find_root,
    is_process,
    keeper_of,
    kill_procs,
    live_keepers,
    read_status,
    read_status_record,
    same_process,
    scan_marked,
    signal_group,
    spawn_here,
)

log = logging.getLogger(__name__)

@dataclass
class Daughter:
    pid: int
    create_time: float
    argv: list[str]
    log_path: Path
    status_path: Path
    marker: str
    started_at: float
    adopted: bool = False
    popen: subprocess.Popen[bytes] | None = None
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

    @property
    def done(self) -> bool:
        return self.exited.done()


@dataclass
class Sample:
    pid: int
    alive: bool
    rss: int = 0
    cpu_seconds: float = 0.0
    children: int = 0
    log_size: int = 0



def _sample(d: Daughter) -> Sample:
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


KEEPERS = max(1, min(4, os.cpu_count() or 1))
STATUS_WAIT = 2.0  # how long an earlier keeper may take to write a status file it owes


class Supervisor:
    """Owns the live daughters of one coordinator.

    With a home, daughters are started by the keeper (tacx/keeper.py), their parent
    outside tacx, which writes a daughter's end beside its log when tacx is not there to
    hear it: a tacx restarted after `kill -9` learns how each one ended. Without a home
    (or when the keeper cannot run), tacx starts them itself."""

    def __init__(
        self,
        *,
        grace: float = 5.0,
        sample_interval: float = 1.0,
        on_sample: Callable[[list[Daughter]], None] | None = None,
        home_root: Path | None = None,
        use_cgroups: bool = True,
    ) -> None:
        self.grace = grace
        self.sample_interval = sample_interval
        self.on_sample = on_sample
        self.daughters: dict[int, Daughter] = {}
        self._sampler: asyncio.Task[None] | None = None
        self._keepers: list[KeeperClient] = []
        self._keeper_starting: asyncio.Task[None] | None = None
        if home_root is not None:
            parent = cgroups.parent_name(home_root) if use_cgroups else None
            # Each keeper spawns one daughter at a time (a spawn waits for the child's exec):
            # one per core, so starts overlap as they did from tacx's threads.
            for _ in range(KEEPERS):
                keeper = KeeperClient(home_root, parent, self._on_keeper_exit, lambda: None)
                keeper.on_lost = lambda keeper=keeper: self._on_keeper_lost(keeper)
                self._keepers.append(keeper)
        self._conclusions: set[asyncio.Task[None]] = set()
        self._home_root = home_root

    @property
    def containment(self) -> str:
        """How a stage's whole tree is ended here, in words (for `tacx doctor`, events)."""
        for keeper in self._keepers:
            if keeper.alive:
                return keeper.containment
        return "process groups and the marker sweep (daughters started by tacx itself)"

    async def start_keeper(self) -> None:
        """Start the keepers; without one, tacx starts daughters itself (and says so)."""
        await asyncio.gather(*(self._start_one(k) for k in self._keepers if not k.alive))

    def start_keepers_soon(self) -> None:
        """Start the keepers while tacx goes on (recovery, the first claims): the first
        spawn waits for them."""
        if self._keeper_starting is None or self._keeper_starting.done():
            self._keeper_starting = asyncio.ensure_future(self.start_keeper())

    @staticmethod
    async def _start_one(keeper: KeeperClient) -> None:
        try:
            await keeper.start()
        except OSError as exc:
            log.warning("cannot start a keeper (%s): daughters started by tacx itself", exc)

    def _keeper(self) -> KeeperClient | None:
        """The live keeper with the fewest starts in flight."""
        alive = [k for k in self._keepers if k.alive]
        return min(alive, key=lambda k: k.in_flight) if alive else None

    # -- starting and adopting -------------------------------------------------

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
    ) -> Daughter:
        """Start a daughter appending to log_path (made here, with `mkdirs` and `files`).
        Raises OSError when it cannot start (missing program, missing cwd).

        Once asked for, a daughter is registered and watched even if the caller is
        cancelled meanwhile (its marker makes it findable in any case)."""
        env, mkdirs = {**env, MARKER_ENV: marker}, tuple(mkdirs)
        if self._keeper_starting is not None and not self._keeper_starting.done():
            await asyncio.shield(self._keeper_starting)
        keeper = self._keeper()
        if keeper is not None:
            request = {
                "argv": argv, "env": env, "cwd": str(cwd), "log": str(log_path), "status": str(status_path),
                "mkdirs": [str(m) for m in mkdirs], "files": {str(k): v for k, v in (files or {}).items()},
                "cgroup": cgroups.stage_cgroup(marker),
            }
            try:
                started = keeper.spawn(
                    request, lambda s: self._register_kept(keeper, s, argv, log_path, status_path, marker)
                )
            except KeeperGone:
                pass
            else:
                asked_at = time.time()
                try:
                    return await asyncio.shield(started)
                except KeeperGone:  # it ended before answering: did it start the daughter?
                    found = await self.find_unrecorded(marker, log_path, status_path, asked_at)
                    if found is not None:
                        return found
        job = asyncio.ensure_future(
            asyncio.to_thread(spawn_here, argv, env, cwd, log_path, mkdirs, dict(files or {}))
        )
        try:
            popen, started_at, start = await asyncio.shield(job)
        except asyncio.CancelledError:
            # It starts all the same: watch it so it is reaped (its marker makes it findable).
            if not job.cancelled() and (not job.done() or job.exception() is None):
                popen, started_at, start = await job
                self._register(popen, argv, log_path, status_path, marker, started_at, start)
            raise
        return self._register(popen, argv, log_path, status_path, marker, started_at, start)

    def _register_kept(
        self, keeper: KeeperClient, spawned: Spawned, argv: list[str], log_path: Path, status_path: Path, marker: str
    ) -> Daughter:
        """Called as the keeper's answer is read, before any later message: its end
        can never arrive for a daughter not yet known."""
        now = time.time()
        d = Daughter(
            pid=spawned.pid, create_time=spawned.create_time, argv=list(argv), log_path=log_path,
            status_path=status_path, marker=marker, started_at=now, last_output_at=now,
            cgroup=spawned.cgroup, keeper_request=spawned.request_id, kept_by=keeper,
        )
        self.daughters[d.pid] = d
        return d

    def _register(
        self,
        popen: subprocess.Popen[bytes],
        argv: list[str],
        log_path: Path,
        status_path: Path,
        marker: str,
        started_at: float,
        create_time: float,
    ) -> Daughter:
        d = Daughter(
            pid=popen.pid,
            create_time=create_time,
            argv=list(argv),
            log_path=log_path,
            status_path=status_path,
            marker=marker,
            started_at=started_at,
            popen=popen,
            last_output_at=started_at,
        )
        self.daughters[d.pid] = d
        self._watch(d)
        return d

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
        """Watch a daughter a previous tacx started. Its end is learnt from its status file."""
        d = Daughter(
            ended_at=ended_at,
            pid=pid,
            create_time=create_time,
            argv=argv,
            log_path=log_path,
            status_path=status_path,
            marker=marker,
            started_at=started_at,
            adopted=True,
            last_output_at=time.time(),
        )
        try:
            d.log_size = log_path.stat().st_size
        except OSError:
            pass
        self.daughters[d.pid] = d
        if same_process(pid, create_time):
            d.cgroup = cgroups.stage_cgroup_of(pid)
            d.keeper = keeper_of(pid)
            self._watch(d)
        else:
            self._finished(d)
        return d

    async def find_unrecorded(
        self, marker: str, log_path: Path, status_path: Path, not_before: float
    ) -> Daughter | None:
        """A daughter an earlier tacx started but never recorded: alive (found by its
        marker) or ended (its status file; an earlier keeper still at work writes it an
        instant after the end). None when nothing shows it ever ran. A status file older
        than `not_before` (the attempt's start) is some earlier store's, not this one's."""
        root = await asyncio.to_thread(find_root, marker)
        if root is not None:
            pid, create_time, argv, started_at = root
            return self.adopt(pid=pid, create_time=create_time, argv=argv, log_path=log_path,
                              status_path=status_path, marker=marker, started_at=started_at)
        def read() -> dict[str, Any] | None:
            return read_status_record(status_path, not_before=not_before)

        record = await asyncio.to_thread(read)
        if record is None and self._home_root is not None and log_path.exists():
            own = {k.pid for k in self._keepers if k.pid is not None}
            keepers = await asyncio.to_thread(live_keepers, self._home_root, own)
            deadline = time.monotonic() + STATUS_WAIT
            while record is None and keepers and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                record = await asyncio.to_thread(read)
        if record is None:
            return None
        now = time.time()
        return self.adopt(pid=int(record.get("pid") or 0), create_time=-1.0, argv=[], log_path=log_path,
                          status_path=status_path, marker=marker, started_at=record.get("started_at") or now,
                          ended_at=record.get("ended_at") or now)

    # -- noticing the end ------------------------------------------------------

    def _on_keeper_exit(self, message: dict[str, object]) -> None:
        d = self.daughters.get(message["pid"])  # type: ignore[call-overload]
        if d is None or d.kept_by is None or d.exited.done():
            return
        d.ended_at = time.time()
        d.leftovers = bool(message.get("populated"))
        self.daughters.pop(d.pid, None)
        d.exited.set_result(ExitInfo(
            message.get("exit_code"),  # type: ignore[arg-type]
            message.get("signal"),  # type: ignore[arg-type]
            max(d.peak_rss, int(message.get("max_rss") or 0)),  # type: ignore[call-overload]
            max(d.cpu_seconds, float(message.get("cpu_seconds") or 0.0)),  # type: ignore[arg-type]
        ))

    def stored(self, d: Daughter) -> None:
        """The daughter's end is committed: its keeper need not keep it for a status file."""
        if d.keeper_request is not None and d.kept_by is not None:
            d.kept_by.stored(d.keeper_request)

    def _on_keeper_lost(self, keeper: KeeperClient) -> None:
        """The keeper died (tacx goes on): its daughters are watched as adopted ones, and
        a new keeper is started for the next ones."""
        for d in list(self.daughters.values()):
            if d.kept_by is keeper and not d.done:
                d.adopted, d.keeper_request, d.kept_by = True, None, None
                if same_process(d.pid, d.create_time):
                    self._watch(d)
                else:
                    self._finished(d)
        self.start_keepers_soon()

    def _watch(self, d: Daughter) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(d.pid)
        except ProcessLookupError:
            self._finished(d)
            return
        except (AttributeError, OSError):  # no pidfd here (old kernel, not Linux)
            asyncio.ensure_future(self._poll_end(d))
            return
        loop.add_reader(pidfd, self._on_pidfd, d, pidfd)

    def _on_pidfd(self, d: Daughter, pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        self._finished(d)

    async def _poll_end(self, d: Daughter) -> None:
        """Fallback without pidfd: wait4 in a thread for our children, polling for adopted ones."""
        if d.popen is not None:
            await asyncio.to_thread(self._reap_blocking, d)
            self._finished(d)
            return
        while same_process(d.pid, d.create_time):
            await asyncio.sleep(0.2)
        self._finished(d)

    def _reap_blocking(self, d: Daughter) -> None:
        d._wait_result = os.wait4(d.pid, 0)  # type: ignore[attr-defined]

    def _finished(self, d: Daughter) -> None:
        if d.exited.done():
            return
        d.ended_at = d.ended_at or time.time()
        if d.popen is not None:
            self.daughters.pop(d.pid, None)
            d.exited.set_result(self._reap(d))
            return
        if d.kept_by is not None:
            return  # the keeper's message says how it ended
        task = asyncio.ensure_future(self._conclude_adopted(d))
        self._conclusions.add(task)
        task.add_done_callback(self._conclusions.discard)

    async def _conclude_adopted(self, d: Daughter) -> None:
        """An adopted daughter ended: its status file says how. An earlier keeper still
        alive writes it an instant after the end; it is waited for, briefly."""
        def read() -> ExitInfo | None:
            return read_status(d.status_path, pid=d.pid)

        info = await asyncio.to_thread(read)
        deadline = time.monotonic() + STATUS_WAIT
        while info is None and d.keeper is not None and time.monotonic() < deadline:
            if not await asyncio.to_thread(same_process, *d.keeper):
                info = await asyncio.to_thread(read)
                break
            await asyncio.sleep(0.02)
            info = await asyncio.to_thread(read)
        if info is None:
            info = ExitInfo(None, None, d.peak_rss, d.cpu_seconds)
        else:
            info = ExitInfo(info.exit_code, info.signal, max(d.peak_rss, info.peak_rss),
                            max(d.cpu_seconds, info.cpu_seconds))
        self.daughters.pop(d.pid, None)
        if not d.exited.done():
            d.exited.set_result(info)

    def _reap(self, d: Daughter) -> ExitInfo:
        assert d.popen is not None
        result = getattr(d, "_wait_result", None)
        if result is None:
            try:
                result = os.wait4(d.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: its status is lost
                d.popen.returncode = -1
                return ExitInfo(None, None, d.peak_rss, d.cpu_seconds)
        pid, status, usage = result
        if pid == 0:  # not ended after all (cannot happen after pidfd said so); never guess
            return ExitInfo(None, None, d.peak_rss, d.cpu_seconds)
        code = os.waitstatus_to_exitcode(status)
        d.popen.returncode = code  # Popen must never reap it again
        cpu = (usage.ru_utime + usage.ru_stime) if usage else d.cpu_seconds
        # ru_maxrss also counts the pages the child shared with tacx between fork and exec:
        # it speaks for the daughter only when it exceeds tacx's own high-water mark.
        child_max = usage.ru_maxrss if usage else 0
        own_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = max(d.peak_rss, child_max * 1024 if child_max > own_max else 0)
        if code < 0:
            return ExitInfo(None, -code, peak, max(cpu, d.cpu_seconds))
        return ExitInfo(code, None, peak, max(cpu, d.cpu_seconds))

    # -- killing ---------------------------------------------------------------

    async def terminate(self, d: Daughter, reason: str, grace: float | None = None) -> ExitInfo:
        """End a daughter's whole tree: SIGTERM, grace, SIGKILL; its cgroup where it has
        one, else a sweep by marker for descendants that left the group."""
        if d.kill_reason is None:
            d.kill_reason = reason
        grace = self.grace if grace is None else grace
        tree = await asyncio.to_thread(descendants, d.pid, d.create_time)
        # An adopted daughter that already ended no longer vouches for its group id.
        group = not (d.adopted and d.done)
        if group:
            signal_group(d.pgid, signal.SIGTERM)
        await asyncio.to_thread(kill_procs, tree, signal.SIGTERM)
        if d.cgroup:
            await asyncio.to_thread(cgroups.signal_members, d.cgroup, signal.SIGTERM)

        def alive() -> bool:
            return any_alive(d.pgid if group else None, tree) or bool(d.cgroup and cgroups.populated(d.cgroup))

        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if d.done and not await asyncio.to_thread(alive):
                break
            await asyncio.sleep(0.05)
        else:
            if not d.done or await asyncio.to_thread(alive):
                log.info("pid %s outlived %.1fs of grace: SIGKILL", d.pid, grace)
                if group:
                    signal_group(d.pgid, signal.SIGKILL)
                await asyncio.to_thread(kill_procs, tree, signal.SIGKILL)
                if d.cgroup:
                    await asyncio.to_thread(cgroups.kill, d.cgroup)
        info = await asyncio.wait_for(asyncio.shield(d.exited), timeout=30)
        if d.cgroup:
            await asyncio.to_thread(cgroups.remove, d.cgroup)
        else:
            await self.sweep_marker(d.marker)
        return info

    async def clean_after_exit(self, d: Daughter) -> None:
        """A daughter that ended by itself may leave processes behind: end those too.

        With a cgroup, the keeper says whether any are left (adopted ones are looked at).
        Without, descendants that left the group are looked for by marker right away
        when the daughter was seen with children or lived past a sample (a scan of every
        process costs milliseconds: not for each trivial task); the periodic sweep finds
        the rest."""
        if d.cgroup:
            if d.leftovers or (d.adopted and await asyncio.to_thread(cgroups.populated, d.cgroup)):
                await asyncio.to_thread(cgroups.end, d.cgroup, self.grace)
            elif d.adopted:
                await asyncio.to_thread(cgroups.remove, d.cgroup, 0)
            return
        if d.adopted or d.children or d.ended_at - d.started_at > self.sample_interval:
            await self.sweep_marker(d.marker)
        if not d.adopted and signal_group(d.pgid, 0):
            await self.terminate(d, "leftover processes after the daughter exited")

    async def sweep_marker(self, marker: str) -> list[int]:
        """End every process carrying exactly this daughter's marker (escaped descendants)."""
        found = await asyncio.to_thread(scan_marked, lambda m: m == marker)
        if not found:
            return []
        return await asyncio.to_thread(end_processes, found, self.grace)

    async def sweep_stragglers(self, prefix: str, live: Callable[[], set[str]]) -> list[int]:
        """End processes whose marker starts with prefix and belongs to no live daughter.

        `live` is asked after the scan, on the event loop: a daughter started while the
        scan ran is registered by then, so it is never mistaken for a straggler."""
        found = await asyncio.to_thread(scan_marked, lambda m: m.startswith(prefix))
        keep = live()
        found = [p for p in found if p.marker not in keep]
        if not found:
            return []
        log.info("ending %d straggler(s): %s", len(found), [p.pid for p in found])
        return await asyncio.to_thread(end_processes, found, self.grace)

    # -- sampling --------------------------------------------------------------

    def start(self) -> None:
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_loop(), name="tacx-sampler")

    async def stop(self) -> None:
        if self._keeper_starting is not None:
            await asyncio.gather(self._keeper_starting, return_exceptions=True)
        if self._sampler is not None:
            self._sampler.cancel()
            try:
                await self._sampler
            except asyncio.CancelledError:
                pass
            self._sampler = None
        await asyncio.gather(*self._conclusions, return_exceptions=True)
        # A keeper with daughters left running stays: it writes their ends, then leaves.
        await asyncio.gather(*(
            k.close(wait=not any(d.kept_by is k and not d.done for d in self.daughters.values()))
            for k in self._keepers
        ))

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sample_interval)
            try:
                await self.sample_once()
            except Exception:  # a sampler must never die
                log.exception("sampling failed")

    async def sample_once(self) -> None:
        live = [d for d in self.daughters.values() if not d.done]
        if not live:
            return
        samples = await asyncio.to_thread(lambda: [_sample(d) for d in live])
        now = time.time()
        for d, s in zip(live, samples):
            if not s.alive:
                continue
            if d._sampled_at:
                elapsed = max(now - d._sampled_at, 1e-6)
                d.cpu_percent = max(0.0, (s.cpu_seconds - d.cpu_seconds) / elapsed * 100)
            d._sampled_at = now
            d.rss = s.rss
            d.peak_rss = max(d.peak_rss, s.rss)
            d.cpu_seconds = max(d.cpu_seconds, s.cpu_seconds)
            d.children = s.children
            if s.log_size != d.log_size:
                d.log_size = s.log_size
                d.last_output_at = now
        if self.on_sample is not None:
            self.on_sample(live)

