"""A real local Ray head for tests: free ports, its own short temp dir, and a stop that ends
this head's processes only (never `ray stop`, which ends every Ray on the machine).

Every process of a head carries RAY_HEAD_MARK=<its temp dir> in its environment (inherited by
gcs_server, raylet, dashboard, agents, workers, job supervisors and entrypoints), so stop()
finds them even after Ray renames them (`ray::IDLE`, `ray::DashboardAgent`). A watchdog
process ends the head if the test session dies without stopping it (even by SIGKILL).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

MARK = "RAY_HEAD_MARK"
START_DEADLINE_S = 90.0
TERM_GRACE_S = 3.0
ERROR_LINE = re.compile(r"ERROR|FATAL|Check failed|[Ff]ailed to|already in use")

# `ray start` flags for every port Ray would otherwise pick itself (or take a fixed default
# that a second head on the machine would collide with). Worker ports are a range Ray
# allocates and retries itself, so they stay Ray's.
PINNED_PORT_FLAGS = (
    "--port",  # GCS
    "--dashboard-port",
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-grpc-port",
    "--dashboard-agent-listen-port",
    "--runtime-env-agent-port",
    "--ray-client-server-port",
)


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, distinct; held open together so the kernel cannot hand
    out the same one twice."""
    held = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def head_processes(temp_dir: str, exclude: set[int] = frozenset()) -> list[psutil.Process]:
    """Live processes of the head that lives in temp_dir: marked in their environment or
    naming the dir in their command line, and every descendant of those."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in exclude or proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if temp_dir in " ".join(proc.info["cmdline"] or ()) or proc.environ().get(MARK) == temp_dir:
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for proc in list(found.values()):
        try:
            for child in proc.children(recursive=True):
                if child.pid not in exclude and child.pid != os.getpid():
                    found.setdefault(child.pid, child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(found.values())


def end_head(temp_dir: str, exclude: set[int] = frozenset()) -> None:
    """SIGTERM every process of the head, SIGKILL what is left after a grace period; again
    until none is found (raylet may start a worker while the others are going)."""
    for _ in range(5):
        procs = head_processes(temp_dir, exclude)
        if not procs:
            return
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=TERM_GRACE_S)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=TERM_GRACE_S)


def _log_tail(temp_dir: str, lines: int = 8) -> str:
    """What Ray's own logs say about a head that never came up: their error lines (a crash's
    cause is at the top of a long stack) and the last lines of each."""
    logs = sorted(Path(temp_dir).glob("session_*/logs/*"), key=lambda p: p.stat().st_mtime)
    chunks = []
    for path in logs:
        if path.is_file() and path.suffix in (".out", ".err", ".log") and path.stat().st_size:
            text = path.read_text(errors="replace").splitlines()
            errors = [line for line in text if ERROR_LINE.search(line)][:5]
            chunks.append(f"--- {path.name}\n" + "\n".join(errors + ["..."] + text[-lines:]))
    return "\n".join(chunks[-6:]) or "(no Ray logs written)"


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


class RayHeadError(RuntimeError):
    """The head did not come up; the message carries Ray's own output."""

    def __init__(self, message: str, temp_dir: str) -> None:
        super().__init__(message)
        self.temp_dir = temp_dir


class RayHead:
    """One local Ray head on free ports, in its own temp dir under /tmp (Unix socket paths
    under it must stay below 107 characters)."""

    def __init__(self, num_cpus: int = 8, resources: dict[str, float] | None = None,
                 start_deadline: float = START_DEADLINE_S) -> None:
        self.num_cpus = num_cpus
        self.start_deadline = start_deadline
        self.resources = resources
        self.temp_dir: str | None = None
        self.ports: dict[str, int] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._registered = False

    @property
    def address(self) -> str:
        """The job server (dashboard) address, for JobSubmissionClient."""
        return f"http://127.0.0.1:{self.ports['--dashboard-port']}"

    @property
    def gcs_address(self) -> str:
        """Ray registers the node under the machine's address even when told 127.0.0.1
        (services.resolve_ip_for_localhost), but listens on every interface."""
        return f"127.0.0.1:{self.ports['--port']}"

    def env(self) -> dict[str, str]:
        """The environment `ray start` gets: this venv's bin first on PATH (so `python3` in a
        job's entrypoint is the venv's), no usage stats, the mark, no RAY_ADDRESS."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTEST_XDIST_WORKER")}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Unset, `ray start` turns token auth on whenever ~/.ray/auth_token exists (any
        # local ray.init() on the machine writes one), and clients without it get 401.
        env["RAY_AUTH_MODE"] = "disabled"
        env[MARK] = str(self.temp_dir)
        return env

    def start(self) -> "RayHead":
        if self.temp_dir is not None:
            raise RuntimeError("this head is already started; use restart() or a new RayHead")
        self.temp_dir = tempfile.mkdtemp(prefix="tr", dir="/tmp")
        self.ports = dict(zip(PINNED_PORT_FLAGS, free_ports(len(PINNED_PORT_FLAGS))))
        if not self._registered:
            atexit.register(self.stop)
            self._registered = True
        self._start_watchdog()
        argv = [str(Path(sys.executable).parent / "ray"), "start", "--head",
                "--node-ip-address", "127.0.0.1", "--temp-dir", self.temp_dir,
                "--num-cpus", str(self.num_cpus), "--include-dashboard", "true",
                "--dashboard-host", "127.0.0.1", "--disable-usage-stats"]
        for flag, port in self.ports.items():
            argv += [flag, str(port)]
        if self.resources:
            argv += ["--resources", json.dumps(self.resources)]
        deadline = time.monotonic() + self.start_deadline
        try:
            proc = subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=self.start_deadline)
        except subprocess.TimeoutExpired as exc:
            said = _text(exc.stdout)[-2000:] + _text(exc.stderr)[-3000:]
            self._fail(f"`ray start` did not return within {self.start_deadline:.0f} s:\n{said}")
        if proc.returncode != 0:
            self._fail(f"`ray start` exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
        self._wait_for_job_server(deadline)
        return self

    def _wait_for_job_server(self, deadline: float) -> None:
        from ray.exceptions import AuthenticationError
        from ray.job_submission import JobSubmissionClient

        last = ""
        while time.monotonic() < deadline:
            try:
                JobSubmissionClient(self.address).list_jobs()
                return
            except AuthenticationError as exc:
                self._fail(f"the job server at {self.address} wants a token: {exc}")
            except Exception as exc:  # the job server is not up yet: any error means "again"
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        self._fail(f"the job server at {self.address} did not answer within {self.start_deadline:.0f} s (last: {last})")

    def _fail(self, what: str) -> None:
        temp_dir = str(self.temp_dir)
        tail = _log_tail(temp_dir)
        self.stop()
        raise RayHeadError(f"Ray head in {temp_dir} did not start: {what}\nRay's logs:\n{tail}", temp_dir)

    def _start_watchdog(self) -> None:
        """A process in its own session that ends this head once the test process is gone,
        whatever way it went."""
        self._watchdog = subprocess.Popen(
            [sys.executable, __file__, "watchdog", str(os.getpid()), str(self.temp_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def processes(self) -> list[psutil.Process]:
        """This head's live processes (none before start or after stop)."""
        if self.temp_dir is None:
            return []
        return head_processes(self.temp_dir, self._exclude())

    def _exclude(self) -> set[int]:
        return {self._watchdog.pid} if self._watchdog is not None else set()

    def stop(self) -> None:
        """End every process of this head, remove its temp dir; safe to call twice, before
        start, or after a start that failed halfway."""
        if self.temp_dir is None:
            return
        end_head(self.temp_dir, self._exclude())
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.temp_dir = None

    def restart(self) -> "RayHead":
        """A fresh head: new temp dir, new ports (the old address is gone)."""
        self.stop()
        return self.start()

    def __enter__(self) -> "RayHead":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def require_ray() -> None:
    """Skip where Ray is not installed (a dev venv without the `ray` extra; CI installs it)."""
    pytest.importorskip("ray.job_submission", reason="Ray is not installed: pip install -e '.[ray]'")
    if not (Path(sys.executable).parent / "ray").exists():
        pytest.skip("the `ray` command is not in this venv: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """One real Ray head for a module's tests (the suite runs --dist loadfile: a file stays on one worker)."""
    require_ray()
    head = RayHead()
    try:
        head.start()
        yield head
    finally:
        head.stop()


def _watchdog(owner_pid: int, temp_dir: str) -> None:
    try:
        owner = psutil.Process(owner_pid)
        while owner.is_running() and owner.status() != psutil.STATUS_ZOMBIE:
            time.sleep(1)
    except psutil.NoSuchProcess:
        pass
    end_head(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "watchdog":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watchdog(int(sys.argv[2]), sys.argv[3])
