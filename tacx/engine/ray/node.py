"""The node side of the Ray executor: one Ray job runs one daughter through this runner, started as
`python3 -c "$TACX_RAY_RUNNER"` (this file's text) on nodes without tacx: standard library only.
TACX_RAY_SPEC: base64 (urlsafe; standard is read too) of zlib-compressed UTF-8 JSON. Ray writes
stdout, stderr and its own lines into the job log, so stdout carries only frames, each one line
written by one os.write, `\\x1etacx <nonce> <kind> <payload>\\n`, kind: s {"pid", "host", "ip",
"cwd", "started_at"} once the daughter started; o base64 (standard) of up to 48 KiB of its output
(stdout+stderr, one pipe); n {"text"} a note; x {"exit_code", "signal", "peak_rss", "cpu_seconds",
"ended_at", "error", "pushed", "push_error", "leftovers"}, always last, once; p {"rss",
"cpu_seconds", "children", "at"} every SAMPLE_SECONDS while it runs. Exit code: the
daughter's; 128+signal if it died of one (or a stop came before it started); 127 (126) when its
program is missing (not executable), x's exit_code too; 1 on the runner's own error (x's `error`
set, exit_code null). An unreadable spec gets no frame (no nonce), only a line on stderr."""

from __future__ import annotations

import base64, errno, json, os, re, selectors, shutil, signal, socket, subprocess, sys, tempfile, time, zlib  # noqa: E401

SPEC_ENV, RUNNER_ENV, MARKER_ENV = "TACX_RAY_SPEC", "TACX_RAY_RUNNER", "TACX_DAUGHTER"
ENTRYPOINT = 'python3 -c "$TACX_RAY_RUNNER"'
SPEC_VERSION = 1
FRAME_LEAD = "\x1etacx "
FRAME_START, FRAME_OUTPUT, FRAME_NOTE, FRAME_EXIT, FRAME_SAMPLE = "s", "o", "n", "x", "p"
FRAME_KINDS = frozenset((FRAME_START, FRAME_OUTPUT, FRAME_NOTE, FRAME_EXIT, FRAME_SAMPLE))
SAMPLE_SECONDS = 2.0  # between p frames: the daughter's process group's RSS and CPU, live
CHUNK_BYTES = 48 * 1024
DEFAULT_GRACE, DRAIN_SECONDS, KILL_WAIT_SECONDS = 5.0, 2.0, 5.0
_NONCE = re.compile(r"[0-9A-Za-z]{1,128}")


def decode_spec(text: str) -> dict:
    """The spec in a TACX_RAY_SPEC value (either base64 alphabet); ValueError when it is not one."""
    try:
        cleaned = "".join(text.split())
        raw = zlib.decompress(base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4)))
        spec = json.loads(raw.decode("utf-8"))
    except (ValueError, zlib.error) as e:  # binascii, JSON and Unicode errors are ValueErrors
        raise ValueError(f"{SPEC_ENV} is not a tacx Ray job spec ({e})") from None
    if not isinstance(spec, dict) or spec.get("v") != SPEC_VERSION:
        raise ValueError(f"{SPEC_ENV} is not a version {SPEC_VERSION} tacx Ray job spec")
    return spec


def format_frame(nonce: str, kind: str, payload: str) -> bytes:
    return f"{FRAME_LEAD}{nonce} {kind} {payload}\n".encode("utf-8")


class _Abort(Exception):
    """The runner's own failure (or a git command's): one line for the x frame's `error`."""


class _Signals:
    """Signals become a flag plus a byte on a pipe (set_wakeup_fd) the relay loop selects on: no
    handler raises mid-write, and SIGCHLD tells of the daughter's end even while its pipe stays open."""

    def __init__(self) -> None:
        self.stop, (self.wake_r, wake_w) = 0, os.pipe()
        for fd in (self.wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # Ray blocks SIGINT; the daughter would inherit it

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop = self.stop or signum

    def drain(self) -> None:
        _quietly(os.read, self.wake_r, 4096)  # what is left wakes the next select


def _quietly(call, *args) -> None:
    """Signal or chmod, where the target being gone already is fine."""
    try:
        call(*args)
    except OSError:
        pass


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, process group, start time in ticks) of pid, from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode("ascii", "replace"), int(fields[1]), int(fields[2]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def group_usage(group: int) -> tuple[int, float, int]:
    """(RSS bytes, CPU seconds, processes) of a process group, summed from /proc/*/stat."""
    rss, ticks, count = 0, 0, 0
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) == group:
                rss, ticks, count = rss + int(fields[21]), ticks + int(fields[11]) + int(fields[12]), count + 1
        except (OSError, IndexError, ValueError):
            continue
    return rss * os.sysconf("SC_PAGE_SIZE"), ticks / os.sysconf("SC_CLK_TCK"), count


def _ancestors() -> set[int]:
    """This runner and the processes above it: never ended by a sweep, whatever they carry."""
    found: set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        pid = (_proc_stat(pid) or ("", 0))[1]
    return found


def find_marked(marker: str, group: int | None = None, skip: set[int] | frozenset = frozenset()) -> dict[int, int]:
    """Live processes (pid -> start ticks) whose environment holds exactly MARKER_ENV=marker,
    or whose process group is `group`; zombies left out (they are already dead)."""
    entry = f"{MARKER_ENV}={marker}".encode("utf-8", "surrogateescape")
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return {}
    found = {}
    for pid in pids:
        stat = None if pid in skip else _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        if group is not None and stat[2] == group:
            found[pid] = stat[3]
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if entry in f.read().split(b"\0"):
                    found[pid] = stat[3]
        except OSError:
            pass
    return found


def _send(pid: int, start: int, sig: int) -> None:
    """Signal pid unless it has ended or its number now belongs to another process."""
    stat = _proc_stat(pid)
    if stat is not None and stat[3] == start and stat[0] not in ("Z", "X"):
        _quietly(os.kill, pid, sig)


def _parent_death_hook():
    """A preexec_fn making Linux SIGKILL the daughter when the runner dies; None without prctl."""
    try:
        import ctypes
        prctl, ulong = ctypes.CDLL(None, use_errno=True).prctl, ctypes.c_ulong
    except Exception:  # not Linux, or no ctypes
        return None
    parent = os.getpid()

    def hook() -> None:
        try:
            prctl(1, ulong(signal.SIGKILL), ulong(0), ulong(0), ulong(0))  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the runner died before the request took hold
                os.kill(os.getpid(), signal.SIGKILL)
        except Exception:
            pass

    return hook if sys.platform.startswith("linux") else None


def _node_ip() -> str:
    """This node's address toward the outside (a UDP connect sends nothing); "" without a route."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
    except OSError:
        return ""


def _remove_tree(path: str) -> None:
    """Remove a temp dir even where the daughter left read-only folders in it."""
    for root, dirs, _files in os.walk(path):
        for child in [os.path.join(root, name) for name in dirs if not os.path.islink(os.path.join(root, name))]:
            _quietly(os.chmod, child, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _git_failure(stderr: bytes) -> str:
    """git's last stderr line that is not a hint, after the rejected ref's line if any."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("hint:")] or ["git failed without a message"]
    rejected = [ln for ln in lines if "[rejected]" in ln or "[remote rejected]" in ln]
    return f"{rejected[-1]}: {lines[-1]}" if rejected and rejected[-1] != lines[-1] else lines[-1]


class Runner:
    """One daughter's life on this node: workspace, files, start, relay, end, sweep, push."""

    def __init__(self, spec: dict, signals: _Signals) -> None:
        self.spec, self.signals = spec, signals
        self.nonce, self.marker = str(spec["nonce"]), str(spec.get("marker") or "")
        self.grace = max(0.0, float(spec.get("grace", DEFAULT_GRACE)))
        self.host, self.skip = socket.gethostname(), _ancestors()
        self.selector = selectors.DefaultSelector()
        self.selector.register(signals.wake_r, selectors.EVENT_READ)
        self.proc: subprocess.Popen | None = None
        self.out_r: int | None = None  # the daughter's output pipe, until its end
        self.status: int | None = None  # the daughter's wait status, once reaped
        self.temp_dirs: list[str] = []
        self.rusage = self.clone_root = self.remote_start = None  # remote_start: the branch's commit there, before
        self.watch_w: int | None = None  # the watcher's pipe
        self.stdout_gone, self.finishing, self.stopped_by, self.leftovers = False, False, 0, 0
        self.exit_code: int | None = None  # x frame fields, kept as they become known
        self.error = self.pushed = self.push_error = None
        self.base_env = {k: v for k, v in os.environ.items() if k not in (SPEC_ENV, RUNNER_ENV, MARKER_ENV)}
        self.git_env = dict(self.base_env, GIT_TERMINAL_PROMPT="0")

    def emit(self, kind: str, payload: str) -> None:
        data = format_frame(self.nonce, kind, payload)
        try:
            while data and not self.stdout_gone:  # one write; looping only finishes one a signal cut short
                data = data[os.write(1, data):]
        except OSError:
            self.stdout_gone = True

    def note(self, text: str) -> None:
        self.emit(FRAME_NOTE, json.dumps({"text": text}))

    def run(self) -> int:
        try:
            self.execute()
        except _Abort as e:
            self.error = str(e)
        except Exception as e:  # never a traceback: the x frame says what broke
            self.error = f"the tacx Ray runner failed: {type(e).__name__}: {e}"
        try:
            if self.proc is not None and self.status is None:
                self.stop_tree()
        except Exception as e:
            self.error = self.error or f"the tacx Ray runner failed ending the daughter: {e}"
        for path in self.temp_dirs:
            _remove_tree(path)
        if self.watch_w is not None:
            _quietly(os.write, self.watch_w, b"done")  # the watcher goes without a sweep
        self.write_exit()
        if self.error:
            sys.stderr.write(f"tacx ray runner on {self.host}: {self.error}\n")
        return self.runner_exit_code()

    def execute(self) -> None:
        argv = self.spec.get("argv")
        if not self.marker or not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise _Abort("the spec needs a marker and an argv: a non-empty list of strings")
        if earlier := self.end_processes(group=None):
            self.note(f"ended {len(earlier)} processes left by an earlier runner of this attempt")
        self.check_stop()
        cwd = self.prepare_workspace(self.spec.get("workspace") or {})
        self.check_stop()
        moved = self.write_files(cwd)
        self.start([self.moved_path(a, moved) for a in argv], self.daughter_env(cwd, moved), cwd)
        self.relay()
        self.stopped_by = self.stopped_by or self.signals.stop  # Ray's SIGTERM may have ended the daughter first
        if self.clone_root is not None and (not self.stopped_by or self.spec.get("push_on_stop")):
            self.finish_clone()

    def check_stop(self) -> None:
        if self.signals.stop:
            self.stopped_by = self.signals.stop
            raise _Abort(f"stopped by signal {self.stopped_by} before the daughter started")

    def runner_exit_code(self) -> int:
        if self.exit_code is not None:
            return self.exit_code
        if self.status is not None and os.WIFSIGNALED(self.status):
            return 128 + os.WTERMSIG(self.status)
        return 128 + self.stopped_by if self.stopped_by and self.proc is None else 1

    def write_exit(self) -> None:
        died_of, ru = None, self.rusage
        if self.status is not None and os.WIFEXITED(self.status):
            self.exit_code = os.WEXITSTATUS(self.status)
        elif self.status is not None and os.WIFSIGNALED(self.status):
            died_of = os.WTERMSIG(self.status)
        self.emit(FRAME_EXIT, json.dumps({
            "exit_code": self.exit_code, "signal": died_of, "peak_rss": int(ru.ru_maxrss) * 1024 if ru else 0,
            "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3) if ru else 0.0, "ended_at": time.time(),
            "error": self.error, "pushed": self.pushed, "push_error": self.push_error, "leftovers": self.leftovers}))

    def prepare_workspace(self, workspace: dict) -> str:
        kind = workspace.get("kind")
        if kind == "shared":
            path = str(workspace.get("path") or "")
            if not path or not os.path.isdir(path):
                raise _Abort(f"the workspace {path} does not exist on this node ({self.host}): executor ray "
                             "needs a filesystem shared with the control machine for this stage's workspace")
            return path
        if kind == "scratch":
            return self.temp_dir("tacx-scratch-")
        if kind == "clone":
            return self.prepare_clone(workspace)
        raise _Abort(f"unknown workspace kind {kind!r} in the spec")

    def temp_dir(self, prefix: str) -> str:
        self.temp_dirs.append(tempfile.mkdtemp(prefix=prefix))
        return self.temp_dirs[-1]

    def write_files(self, cwd: str) -> dict[str, str]:
        """Create `mkdirs`, write `files` (relative: in the workspace). A folder that cannot be made here
        moves to a private temp dir; returns the moves (control path -> node path), path_map's included."""
        moved = {str(k): str(v) for k, v in (self.spec.get("path_map") or {}).items() if v}
        spare: list[str] = []

        def make_dir(path: str) -> str:
            target = self.moved_path(path, moved)
            try:
                os.makedirs(target, exist_ok=True)
                return target
            except OSError:
                spare[:] = spare or [self.temp_dir("tacx-files-")]
                relocated = os.path.join(spare[0], f"{len(moved)}-{os.path.basename(path.rstrip('/')) or 'dir'}")
                os.makedirs(relocated, exist_ok=True)
                moved[path.rstrip("/") or path] = relocated
                return relocated

        for path in sorted(os.path.join(cwd, str(d)) for d in (self.spec.get("mkdirs") or [])):
            make_dir(path)
        for path, content in sorted((self.spec.get("files") or {}).items()):
            path, content = os.path.join(cwd, str(path)), str(content)
            target = os.path.join(make_dir(os.path.dirname(path)), os.path.basename(path))
            with open(target, "wb") as f:
                f.write(content.encode("utf-8"))
            os.chmod(target, 0o755 if content.startswith("#!") else 0o644)
        if spare:
            self.note("moved: " + ", ".join(f"{k} -> {v}" for k, v in sorted(moved.items()) if v.startswith(spare[0])))
        return moved

    @staticmethod
    def moved_path(value: str, moved: dict[str, str]) -> str:
        """`value` at its new place when it is a moved path or lies under a moved folder."""
        if value in moved:
            return moved[value]
        for old in sorted(moved, key=len, reverse=True):
            if value.startswith(old.rstrip("/") + "/"):
                return moved[old] + value[len(old.rstrip("/")):]
        return value

    def daughter_env(self, cwd: str, moved: dict[str, str]) -> dict[str, str]:
        """The node's environment, the spec's overlay on top (None unsets), the marker."""
        env, overlay = dict(self.base_env), self.spec.get("env") or {}
        env.update({str(k): None if v is None else self.moved_path(str(v), moved) for k, v in overlay.items()})
        env = {k: v for k, v in env.items() if v is not None}
        if (self.spec.get("workspace") or {}).get("kind") in ("clone", "scratch") and "TACX_WORKSPACE" in overlay:
            env["TACX_WORKSPACE"] = cwd
        env[MARKER_ENV] = self.marker
        return env

    def git(self, *args: str, cwd: str | None = None, check: bool = True) -> str:
        """git's stdout; _Abort on failure. A stop signal ends it, except when finishing (commit, push)."""
        try:
            proc = subprocess.Popen(["git", *args], cwd=cwd, env=self.git_env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise _Abort(f"cannot run git on {self.host}: {e.strerror}") from None
        while True:
            try:
                out, err = proc.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                if self.signals.stop and not self.finishing:
                    _quietly(os.killpg, proc.pid, signal.SIGKILL)
                    proc.communicate()
                    self.stopped_by = self.signals.stop
                    raise _Abort(f"stopped by signal {self.stopped_by} during git {args[0]}") from None
        if proc.returncode != 0 and check:
            raise _Abort(_git_failure(err))
        return out.decode("utf-8", "replace").strip()

    def rev(self, ref: str) -> str | None:
        return self.git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", cwd=self.clone_root, check=False) or None

    def prepare_clone(self, workspace: dict) -> str:
        url, branch = str(workspace.get("remote") or ""), str(workspace.get("branch") or "")
        base = workspace.get("base")
        if not url or url.startswith("-"):
            raise _Abort(f"the clone workspace has no usable remote ({url!r})")
        if not self.git("check-ref-format", "--branch", branch, check=False):  # it prints the name when valid
            raise _Abort(f"{branch!r} is not a valid branch name")
        root = self.temp_dir("tacx-clone-")
        try:
            self.git("clone", "--quiet", "--", url, root)
        except _Abort as e:
            raise _Abort(f"cannot clone {url} on {self.host}: {e}") from None
        self.clone_root = root
        self.remote_start = self.rev(f"refs/remotes/origin/{branch}")
        if base and not self.remote_start and (str(base).startswith("-") or not self.rev(str(base))):
            raise _Abort(f"the base {base} of branch {branch} is not in {url}")
        start = self.remote_start or (str(base) if base else None) or self.rev("HEAD")
        if start:
            self.git("checkout", "--quiet", "-B", branch, start, cwd=root)
        else:  # an empty remote: the branch starts unborn
            self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=root)
        self.check_stop()
        sha = self.rev("HEAD")
        origin = "the remote's branch" if self.remote_start else ("base" if base else "the default HEAD")
        self.note(f"cloned {url} at {branch} ({sha[:12] if sha else 'no commit yet'}, from {origin}) on {self.host}")
        return root

    def finish_clone(self) -> None:
        """Commit what the daughter left, then push the branch when it moved."""
        self.finishing = True
        workspace, root = self.spec["workspace"], self.clone_root
        match = re.fullmatch(r"\s*(.*?)\s*<([^>]*)>\s*", str(workspace.get("author") or ""))
        name, email = (match.group(1) or "tacx", match.group(2)) if match else ("tacx", "tacx@localhost")
        who = ("-c", f"user.name={name}", "-c", f"user.email={email}", "-c", "commit.gpgsign=false")
        try:
            if self.git("status", "--porcelain", cwd=root):
                self.git("add", "-A", cwd=root)
                self.git(*who, "commit", "-q", "--no-verify", "-m", str(workspace.get("message") or "tacx"), cwd=root)
        except _Abort as e:
            self.push_error = f"commit failed: {e}"
            return
        head, branch = self.rev("HEAD"), workspace["branch"]
        for tries_left in (2, 1, 0) if head and head != self.remote_start else ():
            try:
                self.git("push", "--quiet", str(workspace["remote"]), f"HEAD:refs/heads/{branch}", cwd=root)
                self.pushed, self.push_error = self.rev("HEAD"), None
                return self.note(f"pushed {self.pushed[:12]} to {branch}")
            except _Abort as e:
                self.push_error = str(e)
                if not tries_left or not self.replay(who, str(workspace["remote"]), branch):
                    return

    def replay(self, who: tuple, remote: str, branch: str) -> bool:
        """A side-by-side stage pushed the branch first: this attempt's commits go on top of it."""
        try:
            return self.git(*who, "pull", "--quiet", "--rebase", remote, branch, cwd=self.clone_root) is not None
        except _Abort as e:
            self.git("rebase", "--abort", cwd=self.clone_root, check=False)
            self.push_error = f"{self.push_error} (nor could its commits go on top of the branch's: {e})"
            return False

    def watch_over(self) -> None:
        """Fork a watcher out of this runner's tree (Ray signals it on a stop, SIGKILLs it RAY_JOB_STOP_WAIT_TIME_S
        later): if the runner dies without a word, it ends the marked processes and removes the temp dirs."""
        read_end, self.watch_w = os.pipe()
        pid = os.fork()
        if pid:
            os.close(read_end)
            os.waitpid(pid, 0)
            return
        try:
            os.setsid()
            if os.fork() == 0:  # the grandchild, orphaned at once: no longer under the runner
                os.close(self.watch_w)
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                for fd in (0, 1, 2):  # let go of the job log
                    os.dup2(os.open(os.devnull, os.O_RDWR), fd)
                said = b"".join(iter(lambda: os.read(read_end, 16), b""))  # until the runner has gone
                if said != b"done":
                    self.selector, self.stdout_gone, self.skip = selectors.DefaultSelector(), True, {os.getpid()}
                    self.end_processes(group=None)
                    for path in self.temp_dirs:
                        _remove_tree(path)
        finally:
            os._exit(0)

    def start(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.watch_over()
        out_r, out_w = os.pipe()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, env=env,
                                         cwd=cwd, start_new_session=True, preexec_fn=_parent_death_hook())
        except OSError as e:
            os.close(out_r)
            self.exit_code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
            raise _Abort(f"cannot start {argv[0]}: {e.strerror}") from None
        finally:
            os.close(out_w)
        os.set_blocking(out_r, False)
        self.out_r = out_r
        self.selector.register(out_r, selectors.EVENT_READ)
        self.emit(FRAME_START, json.dumps({"pid": self.proc.pid, "host": self.host, "ip": _node_ip(),
                                           "cwd": cwd, "started_at": time.time()}))

    def relay(self) -> None:
        """Relay output until the daughter ends (not its pipe: a double-forked grandchild may hold it) or a stop."""
        next_sample = time.monotonic() + SAMPLE_SECONDS
        while self.status is None:
            if self.signals.stop:
                return self.stop_tree()
            self.pump(0.5)
            self.reap()
            if self.status is None and time.monotonic() >= next_sample:
                next_sample, (rss, cpu, count) = time.monotonic() + SAMPLE_SECONDS, group_usage(self.proc.pid)
                self.emit(FRAME_SAMPLE, json.dumps({"rss": rss, "cpu_seconds": round(cpu, 3), "at": time.time(),
                                                    "children": max(0, count - 1)}))
        self.leftovers = len(self.end_processes(group=self.proc.pid))
        self.drain()

    def stop_tree(self) -> None:
        """On a stop signal (or the runner's failure): end the daughter, its group and the marked processes."""
        self.stopped_by = self.stopped_by or self.signals.stop
        if self.stopped_by:
            self.note(f"stopped by signal {self.stopped_by}: ending the daughter and its processes")
        ended = self.end_processes(group=self.proc.pid)
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while self.status is None and time.monotonic() < deadline:
            self.kill_group(signal.SIGKILL)
            self.pump(0.05)
            self.reap()
        if self.status is None:
            self.error = self.error or f"the daughter {self.proc.pid} did not end after SIGKILL"
        self.leftovers = len(ended - {self.proc.pid})
        self.drain()

    def kill_group(self, sig: int) -> None:
        """killpg the daughter's group, only while the daughter is unreaped: its number is ours."""
        if self.proc is not None and self.status is None:
            _quietly(os.killpg, self.proc.pid, sig)

    def end_processes(self, group: int | None) -> set[int]:
        """SIGTERM every marked process (or one in `group`), SIGKILL after `grace`; the pids it signalled."""
        seen: dict[int, int] = {}

        def sweep(sig: int, resend: bool) -> dict[int, int]:
            found = find_marked(self.marker, group, self.skip)
            for pid, start in found.items():
                if resend or pid not in seen:
                    _send(pid, start, sig)
            seen.update(found)
            return found

        found = sweep(signal.SIGTERM, resend=False)  # before killpg, to count what that ends
        self.kill_group(signal.SIGTERM)
        if found:
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline:
                self.pump(0.1)
                self.reap()
                if not sweep(signal.SIGTERM, resend=False):
                    break
            deadline = time.monotonic() + KILL_WAIT_SECONDS
            self.kill_group(signal.SIGKILL)
            while sweep(signal.SIGKILL, resend=True) and time.monotonic() < deadline:
                self.pump(0.05)
                self.reap()
        return set(seen)

    def reap(self) -> None:
        if self.proc is None or self.status is not None:
            return
        try:
            pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status, rusage = self.proc.pid, 255 << 8, None
        if pid:
            self.status, self.rusage = status, rusage
            self.proc.returncode = os.waitstatus_to_exitcode(status)

    def pump(self, timeout: float) -> None:
        """Wait up to `timeout` for output or a signal; relay one chunk if there is output."""
        for key, _ in self.selector.select(timeout):
            if key.fd == self.signals.wake_r:
                self.signals.drain()
                continue
            try:
                data = os.read(key.fd, CHUNK_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                self.emit(FRAME_OUTPUT, base64.b64encode(data).decode("ascii"))
            else:
                self.selector.unregister(key.fd)
                os.close(key.fd)
                self.out_r = None

    def drain(self) -> None:
        """Relay what is left in the pipe, until its end or DRAIN_SECONDS (an unseen process may hold it)."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.out_r is not None and time.monotonic() < deadline:
            self.pump(max(0.0, deadline - time.monotonic()))


def main() -> None:
    signals = _Signals()  # first of all: a stop signal before this would kill the runner outright
    try:
        spec = decode_spec(os.environ.get(SPEC_ENV, ""))
        if not _NONCE.fullmatch(str(spec.get("nonce", ""))):
            raise ValueError(f"{SPEC_ENV} has no usable nonce")
    except ValueError as e:
        sys.stderr.write(f"tacx ray runner: {e}\n")
        sys.exit(1)
    sys.exit(Runner(spec, signals).run())


if __name__ == "__main__":
    main()
