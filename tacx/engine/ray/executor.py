"""The Ray executor: each stage attempt is one Ray job on a cluster; tacx's store on this
machine stays the one source of truth, and Ray only runs daughters.

A job's `submission_id` comes from the daughter's marker (home, task, stage, attempt), so a
tacx restarted after a crash finds its jobs again. Its entrypoint is a fixed command that runs
tacx's node runner (node.py, handed over in the job's environment with the attempt's spec):
the runner starts the daughter in its own session with the marker, relays its output in
framed lines, ends its whole tree on stop (Ray's own stop leaves a double-forked grandchild
running), and writes how it ended. Here, the job's log is followed (Ray's tail) into the
stage's log file, so parsers, usage, budgets, idle timeouts, the dashboard and `tacx logs`
work as for a local daughter. A follower that loses the cluster for `lost_after` fails its
stage, saying so; the workflow's retries apply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import shlex
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tacx.engine.executor import Daughter, ExitInfo, Placement
from tacx.engine.ray import frames, node
from tacx.engine.ray.node import RUNNER_ENV, SPEC_ENV, SPEC_VERSION
from tacx.engine.ray.config import RaySettings
from tacx.engine.ray.ids import home_prefix, submission_id  # noqa: F401 - submission_id: tacx's name for a job
from tacx.engine.ray.jobs import JobExists, JobServer, RayUnreachable
from tacx.workspace import remote as git_remote
from tacx.workspace.worktree import WorkspaceError

log = logging.getLogger(__name__)

# Ray ends a stopped job's entrypoint this long after its SIGTERM; the runner needs its grace
# and a little more to end the daughter's tree itself first.
STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"
RETRY_PAUSE = 1.0
RAY_MONITOR_PERIOD = 1.0  # Ray's JobManager.JOB_MONITOR_LOOP_PERIOD_S
STRAGGLER_SWEEP_EVERY = 60.0
SYNC_KEY = "tacx_sync"  # job metadata: where a worktree stage's work comes back (read again after a crash)


@dataclass(eq=False)
class RayDaughter(Daughter):
    """A daughter running as a Ray job."""

    submission_id: str = ""
    nonce: str = ""
    remote_pid: int = 0
    written: int = 0  # its output bytes in the local log file (a re-read of the job's log skips them)
    sampled_at: float = 0.0  # the node's time of the last sample
    sync: tuple[Path, str, str] | None = None  # the local worktree, remote URL and branch it brings back
    _log: IO[bytes] | None = None


class RayExecutor:
    """Runs daughters as Ray jobs on the cluster `settings` names."""

    name = "ray"
    remote = True

    def __init__(
        self,
        settings: RaySettings | None,
        *,
        marker_prefix: str,
        grace: float = 5.0,
        sample_interval: float = 1.0,
        on_sample: Callable[[Sequence[Daughter]], None] | None = None,
    ) -> None:
        self.settings = settings or RaySettings()
        self.configured = settings is not None
        self.grace = grace
        self.sample_interval = sample_interval
        self.on_sample = on_sample
        self.jobs = JobServer(self.settings.job_server())
        self.daughters: dict[int, RayDaughter] = {}
        self._marker_prefix = marker_prefix
        self._followers: set[asyncio.Task[None]] = set()
        self._sampler: asyncio.Task[None] | None = None
        self._used = False
        self._last_sweep = float("-inf")  # the first sweep runs, however long the machine has been up
        self._unanswered_until = 0.0  # is_running asks nothing before this (monotonic)
        self._runner_source = Path(node.__file__).read_text(encoding="utf-8")

    # -- starting ----------------------------------------------------------------------

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
    ) -> RayDaughter:
        """Submit the attempt as a Ray job: OSError when the cluster cannot take it, and
        WorkspaceError or ValueError when its workspace cannot reach a node."""
        self._used = True
        await asyncio.to_thread(self.jobs.connect)
        workspace, sync = await asyncio.to_thread(self._workspace, cwd, placement, marker)
        await asyncio.to_thread(_prepare_log, log_path, tuple(mkdirs))
        sid, nonce, now = submission_id(marker), secrets.token_hex(8), time.time()
        argv = [self.settings.python if a == sys.executable else a for a in argv]  # this machine's path
        spec = {
            "v": SPEC_VERSION, "nonce": nonce, "marker": marker, "argv": argv, "env": env,
            "files": {str(k): v for k, v in (files or {}).items()}, "mkdirs": [],
            "workspace": workspace, "grace": self.grace,
        }
        d = RayDaughter(
            pid=self._key(sid), create_time=now, argv=list(argv), command=list(command or argv), log_path=log_path,
            status_path=status_path, marker=marker, started_at=now, last_output_at=now, executor=self.name,
            submission_id=sid, nonce=nonce, sync=sync,
        )
        provider = placement.provider if placement is not None else ""
        submit = asyncio.ensure_future(asyncio.to_thread(
            self._submit,
            entrypoint=f'{shlex.quote(self.settings.python)} -c "${RUNNER_ENV}"',
            submission_id=sid,
            runtime_env={"env_vars": {
                RUNNER_ENV: self._runner_source, SPEC_ENV: frames.encode_spec(spec),
                STOP_WAIT_ENV: str(int(self.grace + 10)),
            }},
            metadata={"tacx_nonce": nonce, "tacx_marker": marker[-200:],
                      **({SYNC_KEY: json.dumps([str(sync[0]), sync[1], sync[2]])} if sync else {})},
            **self.settings.resources_for(provider).submit_args(),
        ))
        self.daughters[d.pid] = d  # before the job exists: a sweep never takes it for a straggler
        try:
            await asyncio.shield(submit)
        except asyncio.CancelledError:
            # It is submitted all the same: follow it so it ends (or is stopped) as tacx's.
            self._follow_when_submitted(d, submit)
            raise
        except BaseException:
            self.daughters.pop(d.pid, None)
            raise
        self._follow(d)
        return d

    def _submit(self, **job: Any) -> None:
        """Submit; a job Ray still keeps under the same id is from an earlier life of this
        home (its store restored from a backup, say): nothing of tacx's follows it any more,
        so it is ended, forgotten, and the id used again."""
        try:
            self.jobs.submit(**job)
            return
        except JobExists:
            pass
        sid = job["submission_id"]
        log.warning("Ray already has a job %s from an earlier life of this home: ending and deleting it", sid)
        self.jobs.stop(sid)
        deadline = time.monotonic() + self.grace + 20
        while (old := self.jobs.job(sid)) is not None and old.live and time.monotonic() < deadline:
            time.sleep(0.5)
        # Ray's monitor of the old job looks at the id's record once a second until it sees the
        # old supervisor gone: a job submitted under the id before then is marked FAILED by it
        # ("Job supervisor actor died"), though it runs.
        time.sleep(RAY_MONITOR_PERIOD * 3)
        self.jobs.delete(sid)
        self.jobs.submit(**job)

    def _follow_when_submitted(self, d: RayDaughter, submit: asyncio.Future[Any]) -> None:
        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                self.daughters.pop(d.pid, None)
            else:
                self._follow(d)

        submit.add_done_callback(done)

    def _key(self, sid: str) -> int:
        """The daughter's key where tacx keys daughters by pid: negative, so never a local
        process's, and the same for the same job."""
        key = -1 - (zlib.crc32(sid.encode()) & 0x3FFFFFFF)
        while key in self.daughters:
            key -= 1
        return key

    def _workspace(self, cwd: Path, placement: Placement | None, marker: str) -> tuple[dict[str, Any], Any]:
        """Where the daughter works on its node: a clone of the task's branch (a worktree
        stage, sent out first), or the same path on a shared filesystem."""
        kind = placement.workspace if placement is not None else "none"
        if kind == "worktree" and placement is not None and placement.branch:
            url = git_remote.remote_url(placement.project_root, self.settings.remote)
            stage = marker.rpartition("#")[2]
            base = git_remote.send_branch(cwd, url, placement.branch, stage)
            return ({"kind": "clone", "remote": url, "branch": placement.branch, "base": base,
                     "author": "{} <{}>".format(*git_remote.AUTHOR), "message": f"tacx: {stage}"},
                    (cwd, url, placement.branch))
        if not self.settings.shared_filesystem:
            raise ValueError(
                f"a stage with workspace '{kind}' runs in {cwd}, which a Ray node sees only on a filesystem it "
                "shares with this machine: set executors.ray.shared_filesystem: true in tacx.yaml if every node "
                "mounts it at the same path, or use workspace: worktree (the node clones the task's branch)"
            )
        return {"kind": "shared", "path": str(cwd)}, None

    # -- following a job ---------------------------------------------------------------

    def _follow(self, d: RayDaughter) -> None:
        task = asyncio.ensure_future(self._follow_job(d))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow_job(self, d: RayDaughter) -> None:
        """Read the job's log into the stage's log until its end frame. A broken stream is
        read again from the start, skipping what the log file already has; a cluster that
        does not answer for `lost_after` loses the daughter."""
        failing_since: float | None = None
        try:
            while not d.exited.done():
                try:
                    ended = await self._read_log(d)
                    failing_since = None
                    if not ended:
                        await self._without_end_frame(d)
                except RayUnreachable as exc:
                    if await self._ended_unread(d):
                        return
                    now = time.time()
                    failing_since = failing_since or now
                    if now - failing_since >= self.settings.lost_after:
                        self._lose(d, f"{exc} (for {now - failing_since:.0f} s; lost_after)")
                        return
                    await asyncio.sleep(RETRY_PAUSE)
                except LookupError:  # Ray has no such job: it never ran, or was lost
                    # Adopted, it ended unseen while tacx was away: it runs again. Followed
                    # since its submit, Ray forgot it (its head restarted): the attempt fails,
                    # and retries and backoff apply (an interruption would run it again at once).
                    self._lose(d, None if d.adopted else f"Ray no longer has job {d.submission_id} (its head "
                                                         "restarted, or the job was deleted)")
        except Exception as exc:  # a follower must never leave a daughter unended
            log.exception("following Ray job %s failed", d.submission_id)
            self._lose(d, f"tacx could not follow Ray job {d.submission_id}: {exc!r}")
        finally:
            if d._log is not None:
                d._log.close()
                d._log = None

    async def _ended_unread(self, d: RayDaughter) -> bool:
        """The log could not be read, yet the job server answers: a job that ended (its node
        died, taking its log along) is concluded from what Ray says of it."""
        try:
            job = await asyncio.to_thread(self.jobs.job, d.submission_id)
        except RayUnreachable:
            return False
        if job is None or job.live:
            return False
        await self._without_end_frame(d)
        return d.exited.done()

    async def _read_log(self, d: RayDaughter) -> bool:
        """One pass over the job's log: True when its end frame was read (and handled)."""
        if not d.nonce:
            job = await asyncio.to_thread(self.jobs.job, d.submission_id)
            if job is None:
                raise LookupError(d.submission_id)
            d.nonce = job.metadata.get("tacx_nonce", "")
            d.sync = d.sync or _sync_of(job.metadata)  # adopted after a crash: its work still comes back
        seen, pending = 0, ""
        async with contextlib.aclosing(self._tail(d)) as chunks:
            async for chunk in chunks:
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    frame = frames.parse_frame(line, d.nonce)
                    if frame is None:
                        continue
                    kind, payload = frame
                    if kind == "o":
                        seen = self._output(d, payload, seen)
                    elif kind == "s":
                        self._started(d, payload)
                    elif kind == "p":
                        self._sampled(d, payload)
                    elif kind == "x":
                        await self._ended(d, payload)
                        return True
        return False

    async def _tail(self, d: RayDaughter) -> AsyncIterator[str]:
        """The job's log as Ray's tail gives it. Ray's websocket waits for its next message
        without end, so a head that stops answering (frozen, or cut off without a reset) would
        hold the follower forever: a tail quiet for `lost_after` asks the job server about the
        job (RayUnreachable when it does not answer), and one whose job has ended meanwhile is
        given up after a second quiet spell (the job's end is then read from Ray)."""
        chunks = self.jobs.tail(d.submission_id).__aiter__()
        quiet_after_end = 0
        following: asyncio.Future[str] | None = None
        try:
            while True:
                following = asyncio.ensure_future(chunks.__anext__())
                while not (await asyncio.wait({following}, timeout=max(self.settings.lost_after, 1.0)))[0]:
                    job = await asyncio.to_thread(self.jobs.job, d.submission_id)
                    if job is None:
                        raise LookupError(d.submission_id)
                    quiet_after_end = 0 if job.live else quiet_after_end + 1
                    if quiet_after_end >= 2:
                        return
                try:
                    chunk = following.result()
                except StopAsyncIteration:
                    return
                quiet_after_end = 0
                yield chunk
        finally:
            if following is not None and not following.done():
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)

    def _output(self, d: RayDaughter, payload: str, seen: int) -> int:
        """Append a chunk of output the log file does not have yet; the bytes seen so far."""
        try:
            data = base64.b64decode(payload)
        except (binascii.Error, ValueError):
            return seen
        new = data[max(0, d.written - seen):]
        seen += len(data)
        if new:
            if d._log is None:
                d._log = open(d.log_path, "ab", buffering=0)
            d._log.write(new)
            d.written += len(new)
            d.log_size = d.written
            d.last_output_at = time.time()
        return seen

    @staticmethod
    def _started(d: RayDaughter, payload: str) -> None:
        info = _json(payload)
        d.node = str(info.get("host") or info.get("ip") or "")
        if not d.remote_pid:  # its idle clock starts when it starts (not at a re-read)
            d.last_output_at = time.time()
        d.remote_pid = int(info.get("pid") or 0)

    @staticmethod
    def _sampled(d: RayDaughter, payload: str) -> None:
        """The runner's sample of the daughter's process group on its node: live figures for
        the dashboard and the store, as the local sampler keeps them (CPU% between two samples,
        by the node's clock, so a re-read of the log gives the same)."""
        sample = _json(payload)
        cpu, at = float(sample.get("cpu_seconds") or 0.0), float(sample.get("at") or 0.0)
        if d.sampled_at and at > d.sampled_at:
            d.cpu_percent = max(0.0, (cpu - d.cpu_seconds) / (at - d.sampled_at) * 100)
        d.sampled_at, d.rss, d.children = at, int(sample.get("rss") or 0), int(sample.get("children") or 0)
        d.peak_rss, d.cpu_seconds = max(d.peak_rss, d.rss), max(d.cpu_seconds, cpu)

    async def _ended(self, d: RayDaughter, payload: str) -> None:
        end = _json(payload)
        failure = end.get("error") or None
        if failure and d.node:
            failure = f"on node {d.node}: {failure}"
        if d.sync is not None and not failure:
            tree, url, branch = d.sync
            if end.get("push_error"):
                where = f"node {d.node}" if d.node else "node"
                failure = f"the {where} could not push branch {branch} back: {end['push_error']}"
            elif end.get("pushed"):
                try:
                    await asyncio.to_thread(git_remote.take_back, tree, url, branch, str(end["pushed"]))
                except WorkspaceError as exc:
                    failure = str(exc)  # here, in the local worktree: not the node's doing
        peak, cpu = max(d.peak_rss, int(end.get("peak_rss") or 0)), max(d.cpu_seconds, float(end.get("cpu_seconds") or 0))
        self._finish(d, ExitInfo(end.get("exit_code"), end.get("signal"), peak, cpu), failure)

    async def _without_end_frame(self, d: RayDaughter) -> None:
        """The log ended without the runner's last frame: Ray says how the job ended (its
        runner was killed, its node died), or it runs on and the log is read again."""
        job = await asyncio.to_thread(self.jobs.job, d.submission_id)
        if job is None:
            raise LookupError(d.submission_id)
        if job.live:
            await asyncio.sleep(RETRY_PAUSE)
            return
        why = f"Ray job {d.submission_id} ended {job.status} without its runner's report"
        if job.message:
            why += f": {job.message.splitlines()[0][:300]}"
        if job.exit_code is None and d.adopted:
            self._lose(d, None)  # lost while tacx was away (its supervisor or node died): it runs again
            return
        code = job.exit_code
        info = ExitInfo(None, -code, 0, 0.0) if code is not None and code < 0 else ExitInfo(code, None, 0, 0.0)
        self._finish(d, info, why)

    def _lose(self, d: RayDaughter, why: str | None) -> None:
        """Its end cannot be known: with a reason the attempt fails; without (Ray has no such
        job) it ran nowhere, and the stage runs again."""
        self._finish(d, ExitInfo(None, None, 0, 0.0), why)

    def _finish(self, d: RayDaughter, info: ExitInfo, failure: str | None) -> None:
        if d.exited.done():
            return
        d.failure = failure
        d.ended_at = d.ended_at or time.time()
        self.daughters.pop(d.pid, None)
        d.exited.set_result(info)

    # -- ending ------------------------------------------------------------------------

    async def terminate(self, d: Daughter, reason: str, grace: float | None = None) -> ExitInfo:
        """Stop the job: its runner ends the daughter's whole tree (SIGTERM, grace, SIGKILL,
        and a sweep of its marker) and reports how it ended."""
        assert isinstance(d, RayDaughter)
        if d.kill_reason is None:
            d.kill_reason = reason
        if not d.done:
            try:
                await asyncio.to_thread(self.jobs.stop, d.submission_id)
                if not d.remote_pid:
                    await self._end_if_unplaced(d)
            except RayUnreachable as exc:
                log.warning("could not stop Ray job %s: %s", d.submission_id, exc)
            try:
                await asyncio.wait_for(asyncio.shield(d.exited), timeout=(grace or self.grace) + 30)
            except asyncio.TimeoutError:
                self._lose(d, f"Ray did not end job {d.submission_id} within {(grace or self.grace) + 30:.0f} s "
                              "of being asked to stop it")
        return d.exited.result()

    async def _end_if_unplaced(self, d: RayDaughter) -> None:
        """A job Ray has not placed yet (no node has its resources free) cannot be stopped:
        Ray holds the stop until it starts, and then it ends at once. Its daughter never ran."""
        job = await asyncio.to_thread(self.jobs.job, d.submission_id)
        if job is not None and job.status == "PENDING" and not d.remote_pid:
            self._lose(d, None)

    async def clean_after_exit(self, d: Daughter) -> None:
        """Nothing left to do: the runner ended what the daughter left behind on its node."""

    def stored(self, d: Daughter) -> None:
        """Ray keeps the job's record (its dashboard shows it): nothing to release."""

    # -- after a crash -----------------------------------------------------------------

    def is_running(self, pid: int, create_time: float, marker: str) -> bool:
        """Whether its job is live. A job server that did not answer is not asked again for
        a while: a restart asks about each open daughter in turn, and a head that never
        answers costs each question its whole timeout (the followers find out the rest)."""
        if time.monotonic() < self._unanswered_until:
            return False
        try:
            job = self.jobs.job(submission_id(marker))
        except RayUnreachable:
            self._unanswered_until = time.monotonic() + STRAGGLER_SWEEP_EVERY
            return False
        except ValueError:
            return False
        return job is not None and job.live

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
    ) -> RayDaughter:
        """Follow again a job an earlier tacx submitted: its log from where the stage's log
        file ends; a job that ended meanwhile is concluded from its log's end frame."""
        self._used = True
        try:
            written = log_path.stat().st_size
        except OSError:
            written = 0
        d = RayDaughter(
            pid=pid, create_time=create_time, argv=list(argv), log_path=log_path, status_path=status_path,
            marker=marker, started_at=started_at, last_output_at=time.time(), adopted=True, ended_at=ended_at,
            executor=self.name, submission_id=submission_id(marker), written=written, log_size=written,
        )
        self.daughters[d.pid] = d
        self._follow(d)
        return d

    async def find_unrecorded(
        self, marker: str, log_path: Path, status_path: Path, not_before: float
    ) -> RayDaughter | None:
        """A job submitted just before tacx died, before its row: found by its id."""
        try:
            job = await asyncio.to_thread(self.jobs.job, submission_id(marker))
        except RayUnreachable:
            return None
        if job is None:
            return None
        return self.adopt(pid=self._key(submission_id(marker)), create_time=not_before, argv=[],
                          log_path=log_path, status_path=status_path, marker=marker, started_at=not_before)

    async def sweep_stragglers(self, prefix: str, live: Callable[[], set[str]]) -> list[int]:
        """Stop this home's jobs that still run but belong to no live daughter (at most once
        a minute: it lists the cluster's jobs)."""
        if not (self._used or self.configured) or time.monotonic() - self._last_sweep < STRAGGLER_SWEEP_EVERY:
            return []
        self._last_sweep = time.monotonic()
        try:
            jobs = await asyncio.to_thread(self.jobs.jobs)
        except RayUnreachable as exc:
            if self._used:
                log.info("could not list Ray jobs for the sweep: %s", exc)
            return []
        # The home's jobs, or one task's.
        ours = home_prefix(self._marker_prefix) + prefix.rpartition("#")[2].replace("/", "-")
        keep = {submission_id(m) for m in live() if m.startswith(prefix)}
        keep |= {d.submission_id for d in self.daughters.values()}
        stale = [j for j in jobs if j.live and j.submission_id.startswith(ours) and j.submission_id not in keep]
        for job in stale:
            log.info("stopping Ray job %s: no live daughter of this home is its", job.submission_id)
            try:
                await asyncio.to_thread(self.jobs.stop, job.submission_id)
            except RayUnreachable:
                break
        return []

    async def sweep_leftovers(self) -> None:
        """Nothing: each runner sweeps its own marker on its node."""

    # -- sampling ----------------------------------------------------------------------

    def start(self) -> None:
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_loop(), name="tacx-ray-sampler")

    async def _sample_loop(self) -> None:
        """Hand the live daughters to the sampler's callback: idle timeouts read their last
        output, and the dashboard and the store the figures their runners' samples brought."""
        while True:
            await asyncio.sleep(self.sample_interval)
            live = [d for d in self.daughters.values() if not d.done]
            for d in live:
                if not d.remote_pid:  # waiting for a node (or its workspace): not an agent gone quiet
                    d.last_output_at = time.time()
            if live and self.on_sample is not None:
                try:
                    self.on_sample(live)
                except Exception:
                    log.exception("sampling Ray daughters failed")

    async def stop(self) -> None:
        """Stop following; jobs left running stay (the next start re-adopts them)."""
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None
        for task in list(self._followers):
            task.cancel()
        await asyncio.gather(*self._followers, return_exceptions=True)


def _prepare_log(log_path: Path, mkdirs: tuple[Path, ...]) -> None:
    for folder in (*mkdirs, log_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
    log_path.touch()


def _sync_of(metadata: dict[str, str]) -> tuple[Path, str, str] | None:
    """The local worktree, remote URL and branch a job's work comes back to, as spawn noted it."""
    try:
        tree, url, branch = json.loads(metadata[SYNC_KEY])
    except (KeyError, ValueError, TypeError):
        return None
    return Path(tree), str(url), str(branch)


def _json(payload: str) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
