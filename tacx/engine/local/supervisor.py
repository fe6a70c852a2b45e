"""The local executor: starts daughters on this machine, learns how they end, samples
them, kills whole trees (re-adoption after a crash: adoption.py).

A daughter runs in its own session (so its process group is its pid), with stdin closed
and stdout/stderr appended straight to its log file: no pipe can fill and the log
outlives tacx. It is started by the keeper (tacx/engine/local/keeper.py), a small process outside
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
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence

from tacx.engine.executor import Daughter, ExitInfo, Placement
from tacx.engine.local import cgroups
from tacx.engine.local.adoption import Adoption
from tacx.engine.local.daughter import LocalDaughter, own, read_sample
from tacx.engine.local.keeper_client import KeeperClient, KeeperGone, Spawned
from tacx.engine.local.processes import (
    MARKER_ENV,
    any_alive,
    descendants,
    end_processes,
    kill_procs,
    same_process,
    scan_marked,
    signal_group,
    spawn_here,
)

log = logging.getLogger(__name__)

KEEPERS = max(1, min(4, os.cpu_count() or 1))


class LocalExecutor:
    """The executor of daughters on this machine; owns the live daughters of one coordinator.

    With a home, daughters are started by the keeper (tacx/engine/local/keeper.py), their parent
    outside tacx, which writes a daughter's end beside its log when tacx is not there to
    hear it: a tacx restarted after `kill -9` learns how each one ended. Without a home
    (or when the keeper cannot run), tacx starts them itself."""

    name = "local"
    remote = False

    def __init__(
        self,
        *,
        grace: float = 5.0,
        sample_interval: float = 1.0,
        on_sample: Callable[[Sequence[Daughter]], None] | None = None,
        home_root: Path | None = None,
        use_cgroups: bool = True,
    ) -> None:
        self.grace = grace
        self.sample_interval = sample_interval
        self.on_sample = on_sample
        self.daughters: dict[int, LocalDaughter] = {}
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
        self._adoption = Adoption(self.daughters, watch=self._watch, finished=self._finished, home_root=home_root,
                                  own_keepers=self._own_keepers)

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
        command: list[str] | None = None,
        placement: Placement | None = None,
    ) -> LocalDaughter:
        """Start a daughter appending to log_path (made here, with `mkdirs` and `files`).
        Raises OSError when it cannot start (missing program, missing cwd).

        Once asked for, a daughter is registered and watched even if the caller is
        cancelled meanwhile (its marker makes it findable in any case)."""
        env, mkdirs = {**env, MARKER_ENV: marker}, tuple(mkdirs)
        command = list(command or argv)
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
                    request, lambda s: self._register_kept(keeper, s, argv, command, log_path, status_path, marker)
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
                        found.command = command
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
                self._register(popen, argv, command, log_path, status_path, marker, started_at, start)
            raise
        return self._register(popen, argv, command, log_path, status_path, marker, started_at, start)

    def _register_kept(
        self, keeper: KeeperClient, spawned: Spawned, argv: list[str], command: list[str], log_path: Path,
        status_path: Path, marker: str,
    ) -> LocalDaughter:
        """Called as the keeper's answer is read, before any later message: its end
        can never arrive for a daughter not yet known."""
        now = time.time()
        d = LocalDaughter(
            pid=spawned.pid, create_time=spawned.create_time, argv=list(argv), command=command, log_path=log_path,
            status_path=status_path, marker=marker, started_at=now, last_output_at=now,
            cgroup=spawned.cgroup, keeper_request=spawned.request_id, kept_by=keeper,
        )
        self.daughters[d.pid] = d
        return d

    def _register(
        self,
        popen: subprocess.Popen[bytes],
        argv: list[str],
        command: list[str],
        log_path: Path,
        status_path: Path,
        marker: str,
        started_at: float,
        create_time: float,
    ) -> LocalDaughter:
        d = LocalDaughter(
            pid=popen.pid,
            create_time=create_time,
            argv=list(argv),
            command=command,
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
    ) -> LocalDaughter:
        """Watch a daughter a previous tacx started. Its end is learnt from its status file."""
        return self._adoption.adopt(pid=pid, create_time=create_time, argv=argv, log_path=log_path,
                                    status_path=status_path, marker=marker, started_at=started_at, ended_at=ended_at)

    async def find_unrecorded(
        self, marker: str, log_path: Path, status_path: Path, not_before: float
    ) -> LocalDaughter | None:
        """A daughter an earlier tacx started but never recorded (see Adoption)."""
        return await self._adoption.find_unrecorded(marker, log_path, status_path, not_before)

    @staticmethod
    def is_running(pid: int, create_time: float, marker: str = "") -> bool:
        """Whether a recorded daughter still runs (blocking: called in a thread)."""
        return same_process(pid, create_time)

    def _own_keepers(self) -> set[int]:
        return {k.pid for k in self._keepers if k.pid is not None}

    # -- noticing the end ------------------------------------------------------

    def _on_keeper_exit(self, message: dict[str, object]) -> None:
        d = self.daughters.get(message["pid"])  # type: ignore[call-overload]
        if d is None or d.kept_by is None or d.exited.done():
            return
        d.ended_at = time.time()
        d.leftovers = bool(message.get("populated"))
        # Whole when small. Only where a cgroup holds the stage: "no leftovers" is then
        # certain; elsewhere leftovers may still write, and the log is read after they end.
        tail = message.get("tail")
        d.tail = tail if isinstance(tail, bytes) and d.cgroup is not None else None
        self.daughters.pop(d.pid, None)
        d.exited.set_result(ExitInfo(
            message.get("exit_code"),  # type: ignore[arg-type]
            message.get("signal"),  # type: ignore[arg-type]
            max(d.peak_rss, int(message.get("max_rss") or 0)),  # type: ignore[call-overload]
            max(d.cpu_seconds, float(message.get("cpu_seconds") or 0.0)),  # type: ignore[arg-type]
        ))

    def stored(self, d: Daughter) -> None:
        """The daughter's end is committed: its keeper need not keep it for a status file."""
        d = own(d)
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

    def _watch(self, d: LocalDaughter) -> None:
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

    def _on_pidfd(self, d: LocalDaughter, pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        self._finished(d)

    async def _poll_end(self, d: LocalDaughter) -> None:
        """Fallback without pidfd: wait4 in a thread for our children, polling for adopted ones."""
        if d.popen is not None:
            await asyncio.to_thread(self._reap_blocking, d)
            self._finished(d)
            return
        while same_process(d.pid, d.create_time):
            await asyncio.sleep(0.2)
        self._finished(d)

    def _reap_blocking(self, d: LocalDaughter) -> None:
        d._wait_result = os.wait4(d.pid, 0)  # type: ignore[attr-defined]

    def _finished(self, d: LocalDaughter) -> None:
        if d.exited.done():
            return
        d.ended_at = d.ended_at or time.time()
        if d.popen is not None:
            self.daughters.pop(d.pid, None)
            d.exited.set_result(self._reap(d))
            return
        if d.kept_by is not None:
            return  # the keeper's message says how it ended
        task = asyncio.ensure_future(self._adoption.conclude(d))
        self._conclusions.add(task)
        task.add_done_callback(self._conclusions.discard)

    def _reap(self, d: LocalDaughter) -> ExitInfo:
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
        d = own(d)
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
        d = own(d)
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

    async def sweep_leftovers(self) -> None:
        """After a restart's recovery: cgroups whose daughter and keeper are both gone;
        whatever is left in them goes."""
        if self._home_root is None:
            return
        watched = {d.cgroup for d in self.daughters.values() if d.cgroup}
        await asyncio.to_thread(cgroups.sweep_stale, self._home_root, watched, self.grace)

    # -- sampling --------------------------------------------------------------

    def start(self) -> None:
        """Start sampling, and the keepers while tacx goes on (the first spawn waits for them)."""
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_loop(), name="tacx-sampler")
        self.start_keepers_soon()

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
        samples = await asyncio.to_thread(lambda: [read_sample(d) for d in live])
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

