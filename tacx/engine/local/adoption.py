"""Daughters an earlier tacx started (it crashed, or left them running): watched again
when alive, their end read from the status file their keeper wrote when not, and one
started but never recorded found by its marker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from tacx.engine.executor import ExitInfo
from tacx.engine.local import cgroups
from tacx.engine.local.daughter import LocalDaughter
from tacx.engine.local.processes import find_root, keeper_of, live_keepers, read_status, read_status_record, same_process

STATUS_WAIT = 2.0  # how long an earlier keeper may take to write a status file it owes


class Adoption:
    """Re-adopts daughters into the local executor's `daughters`, handed how it watches
    a live one (`watch`) and concludes an ended one (`finished`)."""

    def __init__(
        self,
        daughters: dict[int, LocalDaughter],
        *,
        watch: Callable[[LocalDaughter], None],
        finished: Callable[[LocalDaughter], None],
        home_root: Path | None,
        own_keepers: Callable[[], set[int]],
    ) -> None:
        self.daughters = daughters
        self._watch = watch
        self._finished = finished
        self._home_root = home_root
        self._own_keepers = own_keepers

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
        d = LocalDaughter(
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
    ) -> LocalDaughter | None:
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
            own = self._own_keepers()
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

    async def conclude(self, d: LocalDaughter) -> None:
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
