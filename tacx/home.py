"""The home folder (`.tacx/`): where the database, logs and workspaces live, and its lock.

One coordinator per home: an OS lock (flock) on `lock`, released by the kernel when the
holder dies, so a crash never leaves a stale lock. The holder writes who it is into the
file so a second coordinator can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tacx.store.errors import explain

HOME_DIRNAME = ".tacx"
HOME_GITIGNORE = "# tacx's home: the store, logs and task workspaces; never committed\n*\n"


def make_home_dir(root: Path) -> None:
    """Create the home folder (and its parents) with a `.gitignore` that ignores everything
    in it, itself too: a project's `git status` stays clean from tacx's first run. A folder
    that already exists is left as it is (`tacx init` adds the file to one)."""
    try:
        root.mkdir(parents=True)
    except FileExistsError:
        return
    write_home_gitignore(root)


def write_home_gitignore(root: Path) -> Path:
    """The home's `.gitignore`, made unless one is there; returns its path."""
    path = root / ".gitignore"
    try:
        with path.open("x") as fh:
            fh.write(HOME_GITIGNORE)
    except FileExistsError:
        pass
    return path


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "tacx.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def trees(self) -> Path:
        return self.root / "trees"

    @property
    def lock_path(self) -> Path:
        return self.root / "lock"

    @property
    def project_root(self) -> Path:
        """The folder the home belongs to: where `tacx.yaml` and `workflows/` live."""
        return self.root.parent

    @property
    def marker_prefix(self) -> str:
        """Prefix of the environment marker every daughter of this home carries."""
        return f"{self.root}#"

    def stage_log(self, task_id: int, stage: str, attempt: int) -> Path:
        return self.logs / str(task_id) / f"{stage}.{attempt}.log"


def resolve_home(arg: str | None = None) -> Home:
    """--home, else $TACX_HOME, else the nearest `.tacx/` above the cwd, else ./.tacx."""
    chosen = arg or os.environ.get("TACX_HOME")
    if chosen:
        return Home(Path(chosen).expanduser().resolve())
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / HOME_DIRNAME).is_dir():
            return Home(folder / HOME_DIRNAME)
    return Home(cwd / HOME_DIRNAME)


class LockHeld(Exception):
    """Another coordinator holds the home."""

    def __init__(self, home: Home, holder: dict[str, object] | None) -> None:
        self.home = home
        self.holder = holder or {}
        super().__init__(self.describe())

    def describe(self) -> str:
        h = self.holder
        if not h:
            return (
                f"another tacx coordinator holds {self.home.root} (it has not said who it is yet); "
                "read-only commands (ls, show, logs) and submit/cancel/retry work meanwhile"
            )
        who = f"pid {h.get('pid', '?')}"
        if h.get("host") and h.get("host") != socket.gethostname():
            who += f" on {h['host']}"
        if h.get("command"):
            who += f", `{h['command']}`"
        if isinstance(h.get("started_at"), (int, float)):
            who += ", started " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["started_at"]))
        return (
            f"another tacx coordinator holds {self.home.root} ({who}); "
            "read-only commands (ls, show, logs) and submit/cancel/retry work meanwhile"
        )


class CoordinatorLock:
    """flock on the home's lock file, with the holder's identity written inside."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self, patience: float = 1.0) -> None:
        """Take the lock, or raise LockHeld naming the holder. A read-only command probing
        the lock holds it for an instant: that is waited out for up to `patience` seconds."""
        try:
            make_home_dir(self.home.root)
            fd = os.open(self.home.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a file where the home should be, a read-only folder, a full disk
            raise explain(exc, self.home.db_path) from exc
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = read_holder(self.home)
                if holder or time.monotonic() >= deadline:  # a coordinator writes who it is
                    os.close(fd)
                    raise LockHeld(self.home, holder) from None
                time.sleep(0.02)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(["tacx", *sys.argv[1:]]),
            "started_at": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_holder(home: Home) -> dict[str, object] | None:
    try:
        return json.loads(home.lock_path.read_text() or "null")
    except (OSError, ValueError):
        return None


def coordinator_running(home: Home) -> bool:
    """True when some process holds the coordinator lock (a probe that takes and drops it)."""
    try:
        fd = os.open(home.lock_path, os.O_RDONLY)  # flock needs no write access: a read-only home works
    except OSError:  # none there (or not ours to open): no coordinator runs in this home
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
