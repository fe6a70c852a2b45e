"""tacx's side of the keeper (tacx/engine/local/keeper.py): start it, ask it for daughters, hear of ends.

The keeper runs as its own small process so that every daughter's exit status survives a
`kill -9` of tacx. Talking to it costs a short message each way on a socket that the event
loop reads: no thread and no fork in tacx per daughter.
"""

from __future__ import annotations

import asyncio
import itertools
import marshal
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Callable

from tacx.engine.local.keeper import KEEPER_ENV, frame

log = logging.getLogger(__name__)
T = TypeVar("T")

KEEPER_PATH = Path(__file__).with_name("keeper.py")
# Imported as a module, not run as a script: its compiled form in __pycache__ is used (a
# script is compiled anew at every start), and it stays standard library only (-I -S).
_BOOT = "import sys; sys.path.append(sys.argv.pop(1)); import keeper; keeper.main()"
HELLO_TIMEOUT = 10.0


async def _receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    """One message from the keeper (see keeper.frame)."""
    size = int.from_bytes(await reader.readexactly(4), "little")
    message = marshal.loads(await reader.readexactly(size))
    if not isinstance(message, dict):
        raise ValueError("not a message")
    return message


class KeeperGone(OSError):
    """The keeper ended or cannot be reached: daughters are started by tacx itself."""


@dataclass(frozen=True)
class Spawned:
    request_id: int
    pid: int
    create_time: float
    cgroup: str | None


class KeeperClient:
    """One keeper process and the line to it.

    ``on_exit(message)`` hears of every daughter's end (pid, exit_code, signal,
    cpu_seconds, max_rss, populated); ``on_lost()`` once, if the keeper goes away while
    tacx still runs."""

    def __init__(self, home_root: Path, cgroup_parent: str | None,
                 on_exit: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]) -> None:
        self.home_root = home_root
        self.cgroup_parent = cgroup_parent
        self.on_exit = on_exit
        self.on_lost = on_lost
        self.pid: int | None = None
        self.cgroups: str | None = None  # the folder daughters' cgroups are made in, if any
        self.containment = "not started"
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], Callable[[Spawned], Any]]] = {}
        self._stored: list[int] = []
        self._popen: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def alive(self) -> bool:
        return self._writer is not None and not self._closing

    async def start(self) -> None:
        """Start the keeper and wait for its hello (which says what containment it has)."""
        self._closing = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._popen = await asyncio.to_thread(self._launch, theirs)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        try:
            hello = await asyncio.wait_for(_receive(reader), HELLO_TIMEOUT)
        except (TimeoutError, ValueError, EOFError, ConnectionError, asyncio.IncompleteReadError):
            hello = None
        if not isinstance(hello, dict) or hello.get("op") != "hello":
            writer.close()
            await self._abandon()
            raise KeeperGone("the keeper process did not start")
        self.pid, self.cgroups, self.containment = hello["pid"], hello["cgroup"], hello["why"]
        self._writer = writer  # only now may requests be sent
        self._reader_task = asyncio.create_task(self._read(reader), name="tacx-keeper-reader")

    def _launch(self, sock: socket.socket) -> subprocess.Popen[bytes]:
        env = {**os.environ, KEEPER_ENV: str(self.home_root)}
        try:  # what the keeper itself might say (a bug): kept in the home, never on the terminal
            errors = os.open(self.home_root / "keeper.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError:
            errors = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            return subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, str(KEEPER_PATH.parent), str(sock.fileno()),
                 self.cgroup_parent or ""],
                pass_fds=(sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,  # a terminal's ^C is for tacx; the keeper outlives it
                env=env,
                cwd="/",
            )
        finally:
            os.close(errors)

    def spawn(self, request: dict[str, Any], on_started: Callable[[Spawned], T]) -> asyncio.Future[T]:
        """Ask for a daughter. ``on_started`` runs as the answer is read, before any later
        message (so an end is never heard of before its start); the future gives its
        result, or OSError as subprocess would raise it (missing program or cwd), or
        KeeperGone. Shield it: a daughter asked for starts whether anyone still waits."""
        if not self.alive:
            raise KeeperGone("the keeper is not running")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, on_started)
        assert self._writer is not None
        self._writer.write(frame({"op": "spawn", "id": request_id, **request}))
        return future

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await _receive(reader)
                try:
                    self._dispatch(message)
                except Exception:  # one bad message must not deafen tacx to the rest
                    log.exception("keeper message not understood: %r", str(message)[:200])
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, EOFError, TypeError):
            pass
        finally:
            self._lost()

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "exited":
            self.on_exit(message)
            return
        if op == "failed" and message.get("errno") is None:  # not the system's refusal: say it as it is
            message["error"] = ValueError(message["error"])
        pending = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
        if pending is None:
            return
        future, on_started = pending
        if op == "started":
            result = on_started(Spawned(message["id"], message["pid"], message["start"], message["cgroup"]))
            if not future.done():
                future.set_result(result)
        elif op == "failed":
            if not future.done():
                error = message["error"]
                future.set_exception(error if isinstance(error, Exception)
                                     else OSError(message["errno"], error, message["filename"]))

    def stored(self, request_id: int) -> None:
        """Tell the keeper this daughter's end is in the store (it need not write a
        status file for it should tacx die). Told in batches, once per loop turn."""
        if not self.alive:
            return
        if not self._stored:
            asyncio.get_running_loop().call_soon(self._send_stored)
        self._stored.append(request_id)

    def _send_stored(self) -> None:
        ids, self._stored = self._stored, []
        if self._writer is not None and ids:
            self._writer.write(frame({"op": "stored", "ids": ids}))

    def _lost(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.close()  # a keeper still alive (a message not understood) hangs up too
        if self._popen is not None:
            self._popen.poll()  # a dead keeper is reaped, not left a zombie
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(KeeperGone("the keeper ended before it answered"))
        self._pending.clear()
        if not self._closing:
            log.warning("the keeper (pid %s) ended; tacx starts daughters itself until it restarts", self.pid)
            self.on_lost()

    async def close(self, wait: bool) -> None:
        """Hang up. The keeper leaves by itself once its daughters have ended; with
        ``wait`` (no daughter left running) it is reaped here, so no zombie stays."""
        self._closing = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if wait and self._popen is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._popen.wait), 5)
            except TimeoutError:
                log.warning("the keeper (pid %s) is still running", self.pid)

    async def _abandon(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(KeeperGone("the keeper did not start"))
        self._pending.clear()
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()
            await asyncio.to_thread(self._popen.wait)
