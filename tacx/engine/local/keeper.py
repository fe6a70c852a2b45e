"""The keeper: a small process that starts tacx's daughters and is their parent.

Why a separate process: a daughter's exit status can be read only by its parent. When
tacx is the parent and is killed, a daughter that ends meanwhile takes its status with
it (a script ending in `exec prog`, `os._exit`, a signal), and the next start cannot
tell a stage that finished from one that never ran. The keeper outlives tacx: it reaps
every daughter it started and tells tacx how it ended; once tacx is gone it writes that
into the status file beside the daughter's log (atomically), for every end tacx had not
yet said it stored and every end from then on, and leaves when its last daughter has
ended. While tacx listens, no file is written: the daughter's end reaches the store with
the stage's new state, and tacx says so ("stored").

A coordinator starts a keeper per core (no process per daughter: trivial stages stay
cheap), each spawning one daughter at a time. tacx sends a message, the keeper creates
the log (and folders), spawns with posix_spawn in a new session, stdin on /dev/null and
stdout/stderr appended to the log, and answers with the pid. Where cgroup v2 is writable, each daughter starts inside a cgroup of its own (the
keeper steps into it for the spawn, so the child is born there: no window in which a
grandchild could be forked outside it), and a stage's whole tree is ended with
`cgroup.kill`, as systemd's KillMode=control-group does.

Run as `python -I -S keeper.py`: standard library only, no tacx import, fast to start.
Protocol, one marshalled dict per message each way (see `frame`):
  tacx -> keeper  {"op": "spawn", "id", "argv", "env", "cwd", "log", "status",
                   "mkdirs", "files", "cgroup"}
                  {"op": "stored", "ids": [...]}  (those ends are in tacx's store)
  keeper -> tacx  {"op": "hello", "pid", "cgroup": base or null, "why": reason}
                  {"op": "started", "id", "pid", "start", "cgroup"}
                  {"op": "failed", "id", "error"}
                  {"op": "exited", "id", "pid", "exit_code", "signal", "cpu_seconds",
                   "max_rss", "populated", "tail"}  (tail: a small log whole, or None)
"""

from __future__ import annotations

import errno
import marshal
import os
import resource
import select
import signal
import stat
import sys
import time
from collections.abc import Callable

KEEPER_ENV = "TACX_KEEPER"  # names the home: a restarted tacx finds a keeper still at work
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KILL_WAIT = 5.0  # how long an orphaned stage's leftovers may take to die after cgroup.kill
SMALL_LOG = 8 * 1024  # a log this small is sent whole with its daughter's exit; tacx reads larger ones


def frame(message: dict) -> bytes:
    """One message on the line: its length, then marshal's bytes (built in, so the keeper
    imports nothing to speak; both ends are the same Python)."""
    data = marshal.dumps(message)
    return len(data).to_bytes(4, "little") + data


def log_tail(path: str) -> bytes | None:
    """A small log whole (at most SMALL_LOG bytes), read here so that tacx need not read
    it (a thread hop per stage on its side); None when it is larger or is not a regular
    file (a daughter may have put a FIFO or a link in its place: never block on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > SMALL_LOG:
            return None
        return os.pread(fd, SMALL_LOG + 1, 0) if info.st_size else b""
    except OSError:
        return None
    finally:
        os.close(fd)


def process_start(pid: int) -> float:
    """When pid started, in seconds after boot (as tacx's supervisor counts it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / _CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def write_status(path: str, info: dict) -> None:
    """Write how a daughter ended, atomically: a reader never sees half a file. (JSON, for
    people too; imported only when tacx is gone, to keep the keeper's start quick.)"""
    import json

    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(info))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


# Every signal a daughter gets back to its default: the keeper ignores the terminal's,
# Python ignores SIGPIPE and SIGXFSZ, and tacx's own parent may have ignored others.
_DEFAULT_SIGNALS = tuple(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})


def _resolve(program: str, env: dict) -> str:
    """posix_spawn takes a path: a bare name is looked up on the daughter's own PATH, as
    subprocess does when it is given an environment."""
    if os.sep in program:
        return program
    for folder in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", program)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)


def populated(cgroup: str) -> bool:
    try:
        with open(os.path.join(cgroup, "cgroup.events")) as f:
            return "populated 1" in f.read()
    except OSError:
        return False


def cgroup2_mount() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (not always /sys/fs/cgroup)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split(" ")[4]
    except OSError:
        pass
    return None


def cgroup_of(pid: int | str = "self") -> str | None:
    """The cgroup v2 folder a process is in, found through /proc."""
    mount = cgroup2_mount()
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            path = next((ln[3:].strip() for ln in f if ln.startswith("0::")), None)
    except OSError:
        return None
    if mount is None or path is None:
        return None
    return os.path.normpath(mount + "/" + path.lstrip("/"))


PARENTS_FILE = "cgroups"  # in the home: every folder a keeper of this home made cgroups in


def note_parent(home_root: str, parent: str) -> None:
    """Remember where this home's daughters' cgroups are made: a tacx started later from
    another cgroup (another terminal scope, a service) still finds them."""
    path = os.path.join(home_root, PARENTS_FILE)
    try:
        with open(path, "a+") as f:
            f.seek(0)
            if parent not in f.read().splitlines():
                f.write(parent + "\n")
    except OSError:
        pass


def remove_cgroup(cgroup: str) -> bool:
    """rmdir an emptied cgroup; True once it is gone (False: still populated, or busy)."""
    try:
        os.rmdir(cgroup)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def kill_cgroup(cgroup: str) -> bool:
    """SIGKILL everything in the cgroup at once (cgroup.kill); False when there is none."""
    try:
        with open(os.path.join(cgroup, "cgroup.kill"), "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def enter_cgroup(cgroup: str) -> None:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def probe_cgroups(parent: str | None, keep: bool = True) -> tuple[str | None, str]:
    """Can daughters get cgroups of their own here, under `parent` beside this process's
    own cgroup? Tried for real (make one, step in and out, remove it): (folder, why).
    Without `keep`, the parent folder is removed again when empty."""
    if parent is None:
        return None, "cgroups are off in tacx.yaml (cgroups: off): process groups and the marker sweep"
    home = cgroup_of()
    if home is None:
        return None, "no cgroup v2 hierarchy is mounted: process groups and the marker sweep"
    base = os.path.join(home, parent)
    probe = os.path.join(base, f"probe-{os.getpid()}")
    try:
        for attempt in range(3):
            os.makedirs(base, exist_ok=True)
            try:
                os.mkdir(probe)
                break
            except FileNotFoundError:  # an earlier keeper, leaving, removed the parent just now
                if attempt == 2:
                    raise
        try:
            if not os.path.exists(os.path.join(probe, "cgroup.kill")):
                return None, "cgroup v2 here has no cgroup.kill (Linux 5.14 and newer): process groups and the marker sweep"
            enter_cgroup(probe)
            enter_cgroup(home)
        finally:
            os.rmdir(probe)
            if not keep:
                remove_cgroup(base)
    except OSError as exc:
        return None, f"cgroup v2 at {home} is not writable here ({exc.strerror}): process groups and the marker sweep"
    return base, f"cgroup v2: each daughter in a cgroup of its own under {base}, ended with cgroup.kill"


class Keeper:
    def __init__(self, fd: int, cgroup_parent: str | None) -> None:
        self.fd = fd
        self.connected = True
        self.buffer = b""
        self.children: dict[int, tuple[int, str, str | None, float]] = {}  # pid -> (request, status, cgroup, started)
        self.dying: dict[str, float] = {}  # cgroups killed after tacx left -> when
        # Ends told to tacx and not yet in its store (it says "stored"): written to status
        # files only if tacx goes away meanwhile. While it listens, no file is written.
        self.unstored: dict[int, tuple[str, dict, str | None]] = {}
        self.home_cgroup = cgroup_of()
        self.cgroup_parent, self.why = probe_cgroups(cgroup_parent)

    # -- cgroups -------------------------------------------------------------------------

    def _spawn_in(self, cgroup: str, spawn: Callable[[], int]) -> int:
        """Step into the daughter's cgroup for the spawn, so it is born there, then back."""
        for _ in range(3):
            try:
                os.mkdir(cgroup)
                break
            except FileExistsError:  # a leftover of an earlier run: reused only when empty
                if populated(cgroup):
                    raise
                break
            except FileNotFoundError:  # an earlier keeper, leaving, removed the shared parent
                os.makedirs(os.path.dirname(cgroup), exist_ok=True)
        try:
            enter_cgroup(cgroup)
            try:
                pid = spawn()
            except BaseException:
                self._leave()
                raise
        except BaseException:
            remove_cgroup(cgroup)
            raise
        self._leave()  # the daughter exists: whatever happens now, it is registered
        return pid

    def _leave(self) -> None:
        """Back to the keeper's own cgroup; if that fails, no more cgroups from here on
        (a keeper inside a daughter's cgroup would die with it)."""
        try:
            assert self.home_cgroup is not None
            enter_cgroup(self.home_cgroup)
        except (OSError, AssertionError) as exc:
            print(f"tacx keeper: cannot step back into {self.home_cgroup} ({exc}): cgroups off", file=sys.stderr)
            self.cgroup_parent = None

    # -- requests from tacx ------------------------------------------------------------------

    def send(self, message: dict) -> None:
        if not self.connected:
            return
        data = frame(message)
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            self.hung_up()

    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, 1 << 20)
        except OSError:
            data = b""
        if not data:
            self.hung_up()
            return
        self.buffer += data
        while len(self.buffer) >= 4:
            size = int.from_bytes(self.buffer[:4], "little")
            if len(self.buffer) < 4 + size:
                break
            message, self.buffer = marshal.loads(self.buffer[4:4 + size]), self.buffer[4 + size:]
            self.handle(message)

    def handle(self, request: dict) -> None:
        if request.get("op") == "stored":  # tacx has these ends in its store
            for request_id in request.get("ids", ()):
                self.unstored.pop(request_id, None)
        elif request.get("op") == "spawn":
            try:
                self.spawn(request)
            except OSError as exc:
                self.send({"op": "failed", "id": request["id"], "errno": exc.errno,
                           "error": exc.strerror or str(exc), "filename": exc.filename})
            except Exception as exc:  # a bad request must not end the keeper
                self.send({"op": "failed", "id": request["id"], "errno": None, "error": str(exc) or repr(exc),
                           "filename": None})

    def spawn(self, r: dict) -> None:
        for folder in r.get("mkdirs", ()):
            os.makedirs(folder, exist_ok=True)
        for path, content in r.get("files", {}).items():
            with open(path, "w") as f:
                f.write(content)
        log = os.open(r["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.chdir(r["cwd"])
            argv = [_resolve(r["argv"][0], r["env"]), *r["argv"][1:]]

            def start() -> int:
                return os.posix_spawn(
                    argv[0], argv, r["env"],
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, log, 1),
                        (os.POSIX_SPAWN_DUP2, log, 2),
                    ],
                    setsid=True,
                    setsigmask=(),  # nothing blocked, whatever tacx's parent blocked
                    setsigdef=_DEFAULT_SIGNALS,
                )

            cgroup = None
            if r.get("cgroup") and self.cgroup_parent:
                cgroup = os.path.join(self.cgroup_parent, r["cgroup"])
                pid = self._spawn_in(cgroup, start)
            else:
                pid = start()
        finally:
            os.close(log)
            os.chdir("/")
        self.children[pid] = (r["id"], r["status"], cgroup, time.time(), r["log"])
        self.send({"op": "started", "id": r["id"], "pid": pid, "start": process_start(pid), "cgroup": cgroup})

    # -- ends ------------------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            known = self.children.pop(pid, None)
            if known is None:
                continue
            request_id, status_path, cgroup, started, log_path = known
            code = os.waitstatus_to_exitcode(status)
            info = {
                "pid": pid,
                "exit_code": code if code >= 0 else None,
                "signal": -code if code < 0 else None,
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 6),
                # ru_maxrss also counts the keeper's own pages the child shared until its
                # exec: it speaks for the daughter only when it exceeds the keeper's own.
                "max_rss": usage.ru_maxrss * 1024 if usage.ru_maxrss > self.own_max_rss() else 0,
                "started_at": started,
                "ended_at": time.time(),
            }
            left = bool(cgroup) and populated(cgroup)
            if cgroup and not left:
                remove_cgroup(cgroup)
            if self.connected:
                self.unstored[request_id] = (status_path, info, cgroup if left else None)
                # What leftovers write later is read by tacx once they are gone: no tail then.
                tail = None if left else log_tail(log_path)
                self.send({"op": "exited", "id": request_id, **info, "populated": left, "tail": tail})
            else:
                write_status(status_path, info)
                if left:
                    self._kill(cgroup)  # nobody watches this stage any more: its leftovers go with it

    def hung_up(self) -> None:
        """tacx is gone. Ends it heard of but had not stored yet go into status files,
        newest first, and their leftovers are ended: nobody will watch those stages now."""
        if not self.connected:
            return
        self.connected = False
        self.reap()
        for status_path, info, cgroup in reversed(list(self.unstored.values())):
            write_status(status_path, info)
            if cgroup and populated(cgroup):
                self._kill(cgroup)
        self.unstored.clear()

    @staticmethod
    def own_max_rss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def _kill(self, cgroup: str) -> None:
        if kill_cgroup(cgroup):
            self.dying[cgroup] = time.monotonic()

    def tidy(self) -> None:
        """Remove killed cgroups once empty (or give up on them after KILL_WAIT)."""
        for cgroup, since in list(self.dying.items()):
            if (not populated(cgroup) and remove_cgroup(cgroup)) or time.monotonic() - since > KILL_WAIT:
                del self.dying[cgroup]

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        if self.cgroup_parent and os.environ.get(KEEPER_ENV):
            note_parent(os.environ[KEEPER_ENV], self.cgroup_parent)
        self.send({"op": "hello", "pid": os.getpid(), "cgroup": self.cgroup_parent, "why": self.why})
        while self.connected or self.children or self.dying:
            readers = [wake_r] + ([self.fd] if self.connected else [])
            try:
                ready, _, _ = select.select(readers, [], [], 0.1 if self.dying else 1.0)
            except InterruptedError:
                ready = []
            if self.fd in ready:
                self.on_readable()
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            self.reap()
            if self.dying:
                self.tidy()
        if self.cgroup_parent:
            remove_cgroup(self.cgroup_parent)  # last one out: another keeper of this home may still use it


def main() -> None:
    fd = int(sys.argv[1])
    cgroup_parent = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)  # a terminal's ^C reaches tacx, not its keeper
    os.chdir("/")
    os.set_inheritable(fd, False)  # daughters never hold tacx's line
    Keeper(fd, cgroup_parent).run()


if __name__ == "__main__":
    main()
