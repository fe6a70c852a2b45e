"""Attacks on the Ray executor on a real local head: crashes at the worst moments, a head
that stops answering, a home made anew on a cluster that remembers the old one's jobs."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import Project, wait_for
from tests.test_ray import COUNTER, configure, git_project, job_of, log_of, stage

pytest.importorskip("ray.job_submission", reason="the ray extra is not installed")

from tests.rayhead import RayHead  # noqa: E402

def frozen_head_processes(head: RayHead) -> list:
    """The head's job server: the dashboard and its job module (what a frozen or cut-off head
    machine is, to a client: it holds the connection and never answers)."""
    found = []
    for proc in head.processes():
        try:
            line = " ".join(proc.cmdline())
        except Exception:
            continue
        if "dashboard/dashboard.py" in line or line.startswith("ray-dashboard-JobHead"):
            found.append(proc)
    return found


async def test_a_head_that_stops_answering_mid_run_loses_the_stage_after_lost_after(
    ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's log tail waits for its next message without end: a head that holds the
    connection and never answers must not hold the stage forever."""
    import asyncio
    import sys
    import time

    from tacx.engine.executor import Placement
    from tacx.engine.ray import jobs as ray_jobs
    from tacx.engine.ray.config import RaySettings
    from tacx.engine.ray.executor import RayExecutor

    executor = RayExecutor(RaySettings(address=ray_head.address, lost_after=2, shared_filesystem=True),
                           marker_prefix=f"{tmp_path}#", grace=1.0)
    script = "import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.3)\n"
    d = await executor.spawn([sys.executable, "-c", script], env={}, cwd=tmp_path, log_path=tmp_path / "a.log",
                             status_path=tmp_path / "a.status", marker=f"{tmp_path}#1/freeze/1",
                             placement=Placement("none", tmp_path))
    frozen = []
    try:
        deadline = time.monotonic() + 60
        while d.written < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert d.written >= 8, "the job's output never streamed"
        monkeypatch.setattr(ray_jobs, "REQUEST_TIMEOUT", 2.0)  # only now: a loaded machine may submit slowly
        frozen = frozen_head_processes(ray_head)
        assert len(frozen) >= 2, frozen
        for proc in frozen:
            proc.send_signal(signal.SIGSTOP)
        await asyncio.wait_for(asyncio.shield(d.exited), timeout=90)
        assert d.failure and "lost_after" in d.failure, d.failure
    finally:
        for proc in frozen:
            proc.send_signal(signal.SIGCONT)
        from ray.job_submission import JobSubmissionClient

        JobSubmissionClient(ray_head.address).stop_job(d.submission_id)
        await executor.stop()


ECHO = """
name: echo
workspace: none
defaults: {executor: ray, timeout: 120}
stages:
  - {name: say, provider: shell, run: "echo said by $TACX_TASK_ID"}
"""


def test_a_home_made_anew_at_the_same_path_does_not_meet_the_old_homes_jobs(
    project: Project, ray_head: RayHead
) -> None:
    """Ray keeps every job's record: a home deleted and made again (its task ids start at 1
    again) must neither collide with nor adopt the old home's jobs."""
    configure(project, ray_head, shared_filesystem=True)
    project.workflow("echo", ECHO)
    first = project.submit("echo.yaml")
    project.tacx("--no-ui", "--exit-when-idle", timeout=120)
    assert project.show(first)["status"] == "succeeded"
    shutil.rmtree(project.home)
    again = project.submit("echo.yaml")
    assert again == first
    project.tacx("--no-ui", "--exit-when-idle", timeout=120, check=None)
    shown = project.show(again)
    assert shown["status"] == "succeeded", shown["error"]
    assert stage(shown, "say")["attempt"] == 1


def test_a_job_server_refusal_says_what_it_refused_in_one_line(ray_head: RayHead) -> None:
    """Ray's job server answers a refused request with its own traceback: the user gets its
    last words, not `: .`, and not a claim that the cluster cannot be reached."""
    from tacx.engine.ray.jobs import JobExists, JobServer, RayUnreachable

    server = JobServer(ray_head.address)
    server.submit(entrypoint="sleep 30", submission_id="tacx-attack-twice")
    with pytest.raises(JobExists):  # the executor ends and forgets such a job, then submits again
        server.submit(entrypoint="true", submission_id="tacx-attack-twice")
    with pytest.raises(RayUnreachable) as refused:  # a job still running cannot be deleted
        server.delete("tacx-attack-twice")
    server.stop("tacx-attack-twice")
    text = str(refused.value)
    assert "\n" not in text and "Traceback" not in text, text
    assert "answered HTTP 500: Attempted to delete job" in text and "non-terminal state" in text, text
    assert "cannot reach" not in text, text


SIDE_BY_SIDE = """
name: side
workspace: worktree
defaults: {executor: ray, timeout: 120}
stages:
  - {name: left, provider: shell, needs: [], run: "echo left > left.txt"}
  - {name: right, provider: shell, needs: [], run: "echo right > right.txt"}
  - {name: both, provider: shell, needs: [left, right], executor: local, run: "cat left.txt right.txt"}
"""


def test_side_by_side_worktree_stages_on_ray_both_bring_their_work_back(
    project: Project, ray_head: RayHead, tmp_path: Path
) -> None:
    """Two stages of one worktree task running at once start from the same commit: the
    second node's push must not be refused for the first one's (a local pair shares one
    folder and never conflicts)."""
    git_project(project, tmp_path)
    configure(project, ray_head)
    project.workflow("side", SIDE_BY_SIDE)
    task_id = project.submit("side.yaml")
    project.tacx("--no-ui", "--exit-when-idle", timeout=180, check=None)
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown["error"]
    assert log_of(project, task_id, "both") == b"left\nright\n"
    assert stage(shown, "left")["attempt"] == 1 and stage(shown, "right")["attempt"] == 1


MIXED = """
name: mixed
workspace: worktree
defaults: {timeout: 120}
stages:
  - name: here
    provider: shell
    needs: []
    run: |
      sleep 1
      echo here > here.txt
      git add here.txt
      git -c user.name=t -c user.email=t@t commit --quiet --allow-empty -m "the local stage's own commit"
  - {name: there, provider: shell, needs: [], executor: ray, run: "sleep 2; echo there > there.txt"}
  - {name: both, provider: shell, needs: [here, there], run: "cat here.txt there.txt"}
"""


def test_a_ray_stage_beside_a_local_stage_that_commits_brings_its_work_back(
    project: Project, ray_head: RayHead, tmp_path: Path
) -> None:
    """A local stage may commit in the worktree while a Ray stage of the same task runs: the
    node's commit no longer fast-forwards the worktree, and is merged instead of failing."""
    git_project(project, tmp_path)
    configure(project, ray_head)
    project.workflow("mixed", MIXED)
    task_id = project.submit("mixed.yaml")
    project.tacx("--no-ui", "--exit-when-idle", timeout=180, check=None)
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown["error"]
    assert log_of(project, task_id, "both") == b"here\nthere\n"


@pytest.mark.parametrize("address", ["127.0.0.1:8265", "ray://head:10001", "head:6379", "auto"])
def test_an_address_that_is_not_the_job_servers_http_one_is_refused_in_tacx_yaml(
    project: Project, address: str
) -> None:
    """Ray's client takes a bare host:port for a GCS (it waits 40 s for one) and ray:// for Ray
    Client (it starts a driver, and prints to the terminal): tacx.yaml says what it wants."""
    (project.root / "tacx.yaml").write_text(f"executors:\n  ray:\n    address: {address!r}\n")
    shown = project.tacx("providers", check=2)
    text = shown.stdout + shown.stderr
    assert "Traceback" not in text and "http://" in text and address in text, text


def eight_counters() -> str:
    body = "    run: |\n      import time\n      for i in range(8):\n          print(f'line {i}', flush=True)\n" \
           "          time.sleep(0.3)\n"
    stages = "".join(f"  - name: c{n}\n    provider: python\n    needs: []\n{body}" for n in range(8))
    return f"name: eight\nworkspace: none\ndefaults: {{executor: ray, timeout: 240}}\nstages:\n{stages}"


def test_kill9_right_after_the_eighth_ray_submit_each_stage_runs_once_and_logs_whole(
    project: Project, ray_head: RayHead
) -> None:
    """tacx dies (kill -9) with seven Ray stages running and the eighth submitted but not yet
    recorded: after the restart each ran once, its log whole, and nothing is left open."""
    configure(project, ray_head, shared_filesystem=True)
    (project.root / "tacx.yaml").write_text((project.root / "tacx.yaml").read_text()
                                           + "providers:\n  python: {limit: 8}\n")
    project.workflow("eight", eight_counters())
    task_id = project.submit("eight.yaml")
    project.env["TACX_FAULT"] = "after-spawn:8"
    project.tacx("--no-ui", "--exit-when-idle", timeout=180, check=-signal.SIGKILL)
    del project.env["TACX_FAULT"]
    assert project.query("SELECT COUNT(*) FROM daughters")[0][0] <= 7
    project.tacx("--no-ui", "--exit-when-idle", timeout=240)
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown["error"]
    for n in range(8):
        assert stage(shown, f"c{n}")["attempt"] == 1, stage(shown, f"c{n}")
        assert log_of(project, task_id, f"c{n}").decode().splitlines() == [f"line {i}" for i in range(8)]
    assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0
    assert project.query("SELECT COUNT(*) FROM daughters")[0][0] == 8
    recovered = next(e for e in shown["events"] if e["kind"] == "task.recovered")["data"]
    assert recovered["found_without_row"], recovered  # the eighth at least (rows are written in batches)


def test_recovery_asks_a_head_that_never_answers_once_not_once_per_daughter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead head's machine (no reset, no answer) costs each request its whole timeout: a
    restart asking it about each open daughter in turn would wait that long for every one."""
    import socket
    import threading

    from tacx.engine.ray import jobs as ray_jobs
    from tacx.engine.ray.config import RaySettings
    from tacx.engine.ray.executor import RayExecutor

    monkeypatch.setattr(ray_jobs, "REQUEST_TIMEOUT", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held: list[socket.socket] = []

    def take() -> None:
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=take, daemon=True).start()
    try:
        executor = RayExecutor(RaySettings(address=f"http://127.0.0.1:{silent.getsockname()[1]}"),
                               marker_prefix=f"{tmp_path}#")
        running = [executor.is_running(-1 - n, 0.0, f"{tmp_path}#1/s{n}/1") for n in range(4)]
        assert running == [False] * 4
        assert len(held) == 1, f"{len(held)} connections to a head that never answers"
    finally:
        silent.close()
        for conn in held:
            conn.close()


def test_cancel_without_a_coordinator_stops_a_ray_job_tacx_died_before_recording(
    project: Project, ray_head: RayHead
) -> None:
    """tacx died right after submitting (no daughter row yet); `tacx cancel` with no
    coordinator must still stop the job, not leave it running until some later start."""
    configure(project, ray_head, shared_filesystem=True)
    project.workflow("counter", COUNTER.replace("range(12)", "range(600)"))
    task_id = project.submit("counter.yaml")
    project.env["TACX_FAULT"] = "after-spawn"
    project.tacx("--no-ui", "--exit-when-idle", timeout=120, check=-signal.SIGKILL)
    del project.env["TACX_FAULT"]
    sid = job_of(project, task_id, "count")
    said = project.tacx("cancel", str(task_id)).stdout
    assert f"stopped Ray jobs {sid}" in said, said
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head.address)
    wait_for(lambda: client.get_job_status(sid).is_terminal(), timeout=60, what="the Ray job stopped")
    wait_for(lambda: project.marked_processes() == [], timeout=30, what="the remote tree ended")
    project.tacx("--no-ui", "--exit-when-idle", timeout=60)
    shown = project.show(task_id)
    assert shown["status"] == "cancelled" and stage(shown, "count")["attempt"] == 1
    assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0


AHEAD = """
name: ahead
workspace: worktree
defaults: {timeout: 120}
stages:
  - name: lost
    provider: shell
    run: |
      # What an earlier Ray attempt leaves when its end never reached tacx (the head went away
      # after the node pushed): the branch at the remote has a commit the worktree lacks.
      echo pushed-by-a-lost-attempt > lost.txt
      git add lost.txt
      git -c user.name=t -c user.email=t@t commit --quiet -m "a lost attempt's work"
      git push --quiet origin "HEAD:refs/heads/$(git rev-parse --abbrev-ref HEAD)"
      git reset --quiet --hard HEAD~1
  - {name: next, provider: shell, executor: ray, run: "echo next > next.txt; ls"}
"""


def test_a_ray_stage_starts_when_the_remote_branch_has_a_lost_attempts_commit(
    project: Project, ray_head: RayHead, tmp_path: Path
) -> None:
    """A node pushed, then its end never reached tacx: every later Ray stage of the task
    had its branch push refused (non-fast-forward) and could never start again."""
    git_project(project, tmp_path)
    configure(project, ray_head)
    project.workflow("ahead", AHEAD)
    task_id = project.submit("ahead.yaml")
    project.tacx("--no-ui", "--exit-when-idle", timeout=120, check=None)
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown["error"]
    assert b"lost.txt" in log_of(project, task_id, "next")
    tree = Path(shown["workspace"])
    assert (tree / "next.txt").exists() and (tree / "lost.txt").exists()


async def test_one_homes_straggler_sweep_stops_its_own_jobs_only(ray_head: RayHead, tmp_path: Path) -> None:
    """Two homes share a cluster: a home's sweep stops its own jobs no live daughter owns,
    and never the other home's."""
    import asyncio

    from ray.job_submission import JobSubmissionClient

    from tacx.engine.executor import Placement
    from tacx.engine.ray.config import RaySettings
    from tacx.engine.ray.executor import RayExecutor

    def executor(home: Path) -> RayExecutor:
        home.mkdir(exist_ok=True)
        return RayExecutor(RaySettings(address=ray_head.address, shared_filesystem=True),
                           marker_prefix=f"{home}#", grace=1.0)

    first, second = tmp_path / "first", tmp_path / "second"
    running = executor(first)
    d = await running.spawn(["sleep", "120"], env={}, cwd=tmp_path, log_path=tmp_path / "s.log",
                            status_path=tmp_path / "s.status", marker=f"{first}#1/hold/1",
                            placement=Placement("none", tmp_path))
    client = JobSubmissionClient(ray_head.address)
    try:
        await executor(second).sweep_stragglers(f"{second}#", lambda: set())
        assert str(client.get_job_status(d.submission_id).value) in ("PENDING", "RUNNING")
        await running.stop()  # as a tacx that went away: its job runs on, nobody follows it
        await executor(first).sweep_stragglers(f"{first}#", lambda: set())
        for _ in range(600):
            if client.get_job_status(d.submission_id).is_terminal():
                break
            await asyncio.sleep(0.1)
        assert str(client.get_job_status(d.submission_id).value) == "STOPPED"
    finally:
        client.stop_job(d.submission_id)


@pytest.mark.parametrize("version_needs_a_token", [True, False])
def test_a_head_that_wants_a_token_says_so_in_one_line(version_needs_a_token: bool) -> None:
    """A token-auth head (RAY_AUTH_MODE=token) answers 401 to a client without its token: Ray's
    client raises its own AuthenticationError, which no stage start may let through."""
    import http.server
    import threading

    from tacx.engine.ray.jobs import JobServer, RayUnreachable

    class Head(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path == "/api/version" and not version_needs_a_token:
                body, status = b'{"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}', 200
            else:
                body, status = b"Unauthorized: Missing authentication token", 401
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        jobs = JobServer(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(RayUnreachable) as refused:
            jobs.submit(entrypoint="true", submission_id="tacx-token")
        text = str(refused.value)
        assert "\n" not in text and "token" in text and "RAY_AUTH_TOKEN" in text, text
    finally:
        server.shutdown()
        server.server_close()


SLOW_WORK = """
name: slow
workspace: worktree
defaults: {timeout: 120}
stages:
  - {name: work, provider: shell, executor: ray, run: "echo started; sleep 4; echo done > work.txt"}
  - {name: after, provider: shell, run: "cat work.txt"}
"""


def test_kill9_during_a_worktree_ray_stage_still_brings_its_work_back(
    project: Project, ray_head: RayHead, tmp_path: Path
) -> None:
    """A tacx restarted after kill -9 follows the job again: the node's pushed work must come
    back into the local worktree as it would have without the crash."""
    git_project(project, tmp_path)
    configure(project, ray_head)
    project.workflow("slow", SLOW_WORK)
    task_id = project.submit("slow.yaml")
    coordinator = project.start("--no-ui")
    log = project.home / "logs" / str(task_id) / "work.1.log"
    wait_for(lambda: log.exists() and b"started" in log.read_bytes(), timeout=90, what="the job running")
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    project.tacx("--no-ui", "--exit-when-idle", timeout=120, check=None)
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown["error"]
    assert stage(shown, "work")["attempt"] == 1
    assert log_of(project, task_id, "after") == b"done\n"


async def test_a_job_ray_no_longer_has_while_this_tacx_follows_it_fails_the_attempt(
    ray_head: RayHead, tmp_path: Path
) -> None:
    """'Ray has no such job' means 'ended unseen while tacx was away' (run it again) only for
    an adopted daughter. For one this tacx submitted and follows (its head restarted and
    forgot it), it is a failure saying so: the workflow's retries and backoff apply, where an
    interruption runs again at once, and again, without end."""
    import asyncio
    import time

    from tacx.engine.ray.config import RaySettings
    from tacx.engine.ray.executor import RayDaughter, RayExecutor

    executor = RayExecutor(RaySettings(address=ray_head.address), marker_prefix=f"{tmp_path}#")
    now = time.time()
    d = RayDaughter(pid=-7, create_time=now, argv=["true"], log_path=tmp_path / "l.log",
                    status_path=tmp_path / "l.status", marker=f"{tmp_path}#1/gone/1", started_at=now,
                    executor="ray", submission_id="tacx-attack-never-submitted", nonce="0123456789abcdef")
    executor.daughters[d.pid] = d
    executor._follow(d)  # as spawn does once Ray took the job
    try:
        await asyncio.wait_for(asyncio.shield(d.exited), timeout=60)
        assert d.failure and "tacx-attack-never-submitted" in d.failure, d.failure
    finally:
        await executor.stop()
