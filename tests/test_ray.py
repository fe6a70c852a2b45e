"""Stages on a real local Ray head (tests/rayhead.py starts it): one attempt is one Ray job,
its log streams back into the stage's log, cancel and timeouts end the remote tree, and a
tacx killed with -9 finds its jobs again. Every test here runs on one xdist worker, so one
head serves them all."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tacx.engine.ray.executor import submission_id
from tacx.engine.state import marker
from tests.conftest import Project, wait_for

ray_job_submission = pytest.importorskip("ray.job_submission", reason="the ray extra is not installed")

from tests.rayhead import RayHead, head_processes  # noqa: E402



def configure(project: Project, head: RayHead, **ray: object) -> None:
    settings = {"address": head.address, "lost_after": "5s", **ray}
    lines = ["kill_grace: 1s", "sample_interval: 0.5s", "executors:", "  ray:"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in settings.items()]
    (project.root / "tacx.yaml").write_text("\n".join(lines) + "\n")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


def git_project(project: Project, tmp_path: Path) -> Path:
    """The project is a git repository whose origin is a bare repository on this machine
    (the nodes clone from it and push to it)."""
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(origin)], check=True)
    git(project.root, "init", "--quiet", "-b", "main")
    (project.root / "README.md").write_text("the project\n")
    (project.root / ".gitignore").write_text(".tacx/\n")
    git(project.root, "add", "-A")
    git(project.root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "seed")
    git(project.root, "remote", "add", "origin", str(origin))
    git(project.root, "push", "--quiet", "origin", "main")
    return origin


def stage(shown: dict, name: str) -> dict:
    return next(s for s in shown["stages"] if s["name"] == name)


def log_of(project: Project, task_id: int, name: str, attempt: int = 1) -> bytes:
    return (project.home / "logs" / str(task_id) / f"{name}.{attempt}.log").read_bytes()


def job_of(project: Project, task_id: int, name: str, attempt: int = 1) -> str:
    return submission_id(marker(f"{project.home}#", task_id, name, attempt))


def jobs(head: RayHead) -> dict[str, object]:
    client = ray_job_submission.JobSubmissionClient(head.address)
    return {j.submission_id: j for j in client.list_jobs() if j.submission_id}


THREE = """
name: three
workspace: worktree
defaults: {executor: ray, timeout: 180}
stages:
  - name: shell
    provider: shell
    run: |
      printf 'from the shell on %s\\n' "$(hostname)" > shell.txt
      printf 'binary \\001\\377 end'
  - name: py
    provider: python
    run: |
      import pathlib
      print("python read:", pathlib.Path("shell.txt").read_text().strip())
      pathlib.Path("py.txt").write_text("written by python\\n")
    expects: [py.txt]
  - name: agent
    provider: mock
    prompt: Summarise shell.txt and py.txt.
"""


def test_three_stages_on_ray_with_tokens_counted(project: Project, ray_head: RayHead, tmp_path: Path) -> None:
    origin = git_project(project, tmp_path)
    configure(project, ray_head, resources={"mock": {"num_cpus": 0.5}, "default": {"num_cpus": 1}})
    project.workflow("three", THREE)
    task_id = project.submit("three.yaml")
    project.tacx("--no-ui", "--exit-when-idle", timeout=240)

    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown["error"]
    for name in ("shell", "py", "agent"):
        (daughter,) = stage(shown, name)["daughters"]
        assert daughter["executor"] == "ray" and daughter["node"], daughter
    # The output came back byte for byte, and nothing of Ray's own lines.
    shell_log = log_of(project, task_id, "shell")
    assert shell_log == b"binary \x01\xff end", shell_log
    assert log_of(project, task_id, "py").startswith(b"python read: from the shell on ")
    # Tokens: what the agent itself totalled in its result line, counted once.
    result = next(json.loads(line) for line in log_of(project, task_id, "agent").splitlines()
                  if line.startswith(b"{") and json.loads(line).get("type") == "result")
    usage = result["usage"]
    assert stage(shown, "agent")["tokens"] == {
        "input": usage["input_tokens"], "output": usage["output_tokens"],
        "cache_read": usage["cache_read_input_tokens"], "cache_write": usage["cache_creation_input_tokens"],
    }
    assert stage(shown, "agent")["cost_usd"] == pytest.approx(result["total_cost_usd"], abs=1e-6)
    # The nodes' work came back: in the task's worktree here, and on its branch at the remote.
    tree = Path(shown["workspace"])
    assert (tree / "shell.txt").read_text().startswith("from the shell on ")
    assert (tree / "py.txt").read_text() == "written by python\n"
    branch = shown["branch"]
    assert "py.txt" in git(origin, "ls-tree", "--name-only", branch)
    assert git(tree, "rev-parse", "HEAD") == git(origin, "rev-parse", branch)
    # `tacx logs` reads the streamed log as it reads a local one.
    assert "python read:" in project.tacx("logs", str(task_id), "py").stdout


SLEEPER = """
name: sleeper
workspace: none
defaults: {executor: ray}
stages:
  - name: hold
    provider: shell
    timeout: {timeout}
    run: |
      trap '' TERM
      (sleep 300 &)
      echo started
      sleep 300
"""


def wait_marked(project: Project, count: int) -> None:
    wait_for(lambda: len(project.marked_processes()) >= count, timeout=90,
             what=f"{count} processes carrying the home's marker (on the Ray node, which is this machine)")


def test_cancel_and_a_timeout_end_the_remote_tree_with_its_double_forked_grandchild(
    project: Project, ray_head: RayHead
) -> None:
    configure(project, ray_head, shared_filesystem=True)
    project.workflow("sleeper", SLEEPER.replace("{timeout}", "600"))
    project.workflow("short", SLEEPER.replace("{timeout}", "4s"))
    cancelled, timed_out = project.submit("sleeper.yaml"), project.submit("short.yaml")
    coordinator = project.start("--no-ui")
    wait_marked(project, 6)  # each: the shell, its sleep, the double-forked sleep (which ignore SIGTERM)
    project.tacx("cancel", str(cancelled))
    wait_for(lambda: [project.show(i)["status"] for i in (cancelled, timed_out)] == ["cancelled", "timed_out"],
             timeout=60, what="one task cancelled, the other timed out")
    wait_for(lambda: project.marked_processes() == [], timeout=30, what="both remote trees ended")
    for task_id in (cancelled, timed_out):
        (daughter,) = stage(project.show(task_id), "hold")["daughters"]
        assert daughter["ended_at"] is not None and daughter["signal"] == signal.SIGKILL  # TERM was ignored
    assert "timed out after 4s" in stage(project.show(timed_out), "hold")["error"]
    assert b"started" in log_of(project, timed_out, "hold")
    coordinator.send_signal(signal.SIGINT)
    coordinator.wait(timeout=30)


COUNTER = """
name: counter
workspace: none
defaults: {executor: ray, timeout: 180}
stages:
  - name: count
    provider: python
    run: |
      import time
      for i in range(12):
          print(f"line {i}", flush=True)
          time.sleep(0.25)
      print("done")
"""


def counting_when_tacx_is_killed(project: Project, ray_head: RayHead, line: bytes) -> tuple[int, Path]:
    """A counter task on Ray, whose tacx is killed with -9 once its log holds `line`: the
    task's id and its stage's log."""
    configure(project, ray_head, shared_filesystem=True)
    project.workflow("counter", COUNTER)
    task_id = project.submit("counter.yaml")
    coordinator = project.start("--no-ui")
    log = project.home / "logs" / str(task_id) / "count.1.log"
    wait_for(lambda: log.exists() and line in log.read_bytes(), timeout=90, what="the job's output streaming")
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    return task_id, log


def test_kill9_of_tacx_then_its_ray_job_is_readopted(project: Project, ray_head: RayHead) -> None:
    task_id, log = counting_when_tacx_is_killed(project, ray_head, b"line 3")
    time.sleep(1.0)  # the job runs on while nobody follows it
    project.tacx("--no-ui", "--exit-when-idle", timeout=120)
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown["error"]
    lines = log.read_text().splitlines()
    assert lines == [f"line {i}" for i in range(12)] + ["done"]  # each line once, in order
    assert stage(shown, "count")["attempt"] == 1
    recovered = [e for e in shown["events"] if e["kind"] == "task.recovered"]
    assert list(recovered[0]["data"]["adopted"]) == ["count"]
    assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0


def test_a_job_ray_lost_while_tacx_was_down_runs_again(project: Project, ray_head: RayHead) -> None:
    task_id, _ = counting_when_tacx_is_killed(project, ray_head, b"line 1")
    client = ray_job_submission.JobSubmissionClient(ray_head.address)
    sid = job_of(project, task_id, "count")
    assert sid in jobs(ray_head)
    client.stop_job(sid)
    wait_for(lambda: client.get_job_status(sid).is_terminal(), timeout=60, what="the job stopped")
    client.delete_job(sid)  # as far as tacx can tell, Ray lost it
    project.tacx("--no-ui", "--exit-when-idle", timeout=120)
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown["error"]
    assert stage(shown, "count")["attempt"] == 2
    assert log_of(project, task_id, "count", 2).decode().splitlines()[-1] == "done"


def test_dir_workspace_without_a_shared_filesystem_says_what_it_needs(project: Project, ray_head: RayHead) -> None:
    configure(project, ray_head)
    project.workflow("plain", """
        name: plain
        workspace: dir
        stages:
          - name: one
            provider: shell
            executor: ray
            run: echo never
    """)
    task_id = project.submit("plain.yaml")
    project.tacx("--no-ui", "--exit-when-idle", timeout=60, check=1)
    error = stage(project.show(task_id), "one")["error"]
    assert "shared_filesystem: true" in error and "workspace: worktree" in error, error


def test_a_ray_head_that_goes_away_fails_the_running_stage_and_retries_it(project: Project, tmp_path: Path) -> None:
    head = RayHead()
    head.start()
    try:
        configure(project, head, shared_filesystem=True, lost_after="3s")
        project.workflow("counter", COUNTER.replace("timeout: 180}", "timeout: 180, retries: 1, backoff: 0.5}")
                         .replace("range(12)", "range(600)"))
        task_id = project.submit("counter.yaml")
        coordinator = project.start("--no-ui")
        log = project.home / "logs" / str(task_id) / "count.1.log"
        wait_for(lambda: log.exists() and b"line 1" in log.read_bytes(), timeout=90, what="the job running")
    finally:
        temp_dir = head.temp_dir
        head.stop()
    assert head_processes(str(temp_dir)) == []  # the test's head leaves nothing behind
    wait_for(lambda: project.show(task_id)["status"] == "failed", timeout=90, what="the task failed")
    shown = project.show(task_id)
    failed = [e for e in shown["events"] if e["kind"] == "stage.failed"]
    assert len(failed) == 2  # the attempt the head took away, and its retry that found no head
    assert "cannot reach the Ray cluster's job server" in failed[0]["data"]["error"]
    assert "lost_after" in failed[0]["data"]["error"]
    assert "cannot reach the Ray cluster's job server" in failed[1]["data"]["error"]
    assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0
    assert project.query("SELECT COUNT(*) FROM stages WHERE status = 'running'")[0][0] == 0
    coordinator.send_signal(signal.SIGINT)
    coordinator.wait(timeout=30)
    project.marked_processes()  # the head's processes went with it; stop_background sweeps the rest


def test_a_job_asking_for_resources_no_node_has_waits_unplaced_until_its_timeout(
    project: Project, ray_head: RayHead
) -> None:
    """tacx.yaml's resources reach Ray: a provider asking for what no node has is never
    placed (Ray holds its job PENDING), and the stage's timeout still ends it; its idle
    timeout does not (waiting for a node is not an agent gone quiet)."""
    configure(project, ray_head, shared_filesystem=True, resources={"shell": {"resources": {"no-such-thing": 1}}})
    project.workflow("unplaced", """
        name: unplaced
        defaults: {executor: ray}
        stages:
          - {name: wait, provider: shell, run: echo never, timeout: 4s, idle_timeout: 2s}
    """)
    task_id = project.submit("unplaced.yaml")
    coordinator = project.start("--no-ui")
    client = ray_job_submission.JobSubmissionClient(ray_head.address)
    sid = job_of(project, task_id, "wait")
    wait_for(lambda: sid in jobs(ray_head), timeout=60, what="the job submitted")
    assert str(client.get_job_status(sid).value) == "PENDING"
    wait_for(lambda: project.show(task_id)["status"] == "timed_out", timeout=60, what="the stage timed out")
    assert "timed out after 4s" in stage(project.show(task_id), "wait")["error"]
    assert (project.home / "logs" / str(task_id) / "wait.1.log").read_bytes() == b""
    assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0
    # Ray holds the stop until it places the job (then it ends at once); it never ran.
    assert str(client.get_job_status(sid).value) == "PENDING"
    coordinator.send_signal(signal.SIGINT)
    coordinator.wait(timeout=30)


async def test_the_dashboard_shows_where_a_ray_daughter_runs_and_kills_it(project: Project, ray_head: RayHead) -> None:
    from tacx.home import Home
    from tacx.settings import load_settings
    from tacx.ui.app import make_app
    from tacx.ui.panels import DaughtersPanel
    from tacx.ui.screens import ConfirmScreen
    from tests.test_ui_app import status_of, until

    configure(project, ray_head, shared_filesystem=True)
    project.workflow("counter", COUNTER.replace("range(12)", "range(600)"))
    task_id = project.submit("counter.yaml")
    app = make_app(Home(project.home), load_settings(project.root), refresh_seconds=0.2)
    async with app.run_test(size=(180, 50)) as pilot:
        panel = app.query_one(DaughtersPanel)
        node = socket.gethostname()
        await until(lambda: [cells[1] for cells in panel._cells.values()] == [node], 90, "the node it runs on")
        (key,) = panel._keys
        assert int(key) < 0  # a Ray daughter's key, never a local pid
        (cells,) = panel._cells.values()
        assert cells[0].isdigit() and cells[3] == "count"  # its pid on the node, its stage
        # Live figures from its node (the runner's samples): memory, and CPU as it works.
        await until(lambda: [c[6] for c in panel._cells.values()][0].endswith(("K", "M", "G")), 30, "its RSS")
        (cells,) = panel._cells.values()
        # `tacx providers`, from another terminal, says where it runs too.
        listed = await asyncio.to_thread(project.tacx, "providers", "--json")
        (running,) = next(e for e in json.loads(listed.stdout) if e["name"] == "python")["running"]
        assert running == {"task": task_id, "stage": "count", "executor": "ray", "node": node}
        text = (await asyncio.to_thread(project.tacx, "providers")).stdout
        assert f"task {task_id} count on {node} (ray)" in text
        panel.focus()
        panel.move_cursor(row=0)
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        from tests.test_ui_app import question_text

        assert f"Kill pid {cells[0]} on {node} (task {task_id}, stage count:" in question_text(app)
        await pilot.press("y")
        await until(lambda: status_of(project, task_id) == "failed", 60, "the killed stage failed")
        assert "killed from the dashboard" in project.show(task_id)["stages"][0]["error"]
        await until(lambda: not panel._keys, 20, "the daughter gone from the panel")
        await pilot.press("q")
        await until(lambda: not app.is_running, 20)
    wait_for(lambda: project.marked_processes() == [], timeout=30, what="the remote tree ended")


async def test_a_job_id_ray_still_holds_is_ended_forgotten_and_taken_again(ray_head: RayHead, tmp_path: Path) -> None:
    """Ray keeps every job's record, and a job id is the daughter's marker: one Ray still
    holds (a store restored from a backup, a home moved back) is from an earlier life of the
    home, which nothing follows. It is ended and forgotten, and the new attempt runs."""
    import sys

    from tacx.engine.executor import Placement
    from tacx.engine.ray.config import RaySettings
    from tacx.engine.ray.executor import RayExecutor

    held = f"{tmp_path}#1/say/1"
    client = ray_job_submission.JobSubmissionClient(ray_head.address)
    client.submit_job(entrypoint="sleep 300", submission_id=submission_id(held))
    executor = RayExecutor(RaySettings(address=ray_head.address, shared_filesystem=True),
                           marker_prefix=f"{tmp_path}#", grace=1.0)
    try:
        d = await executor.spawn([sys.executable, "-c", "print('the new one')"], env={}, cwd=tmp_path,
                                 log_path=tmp_path / "say.log", status_path=tmp_path / "say.status", marker=held,
                                 placement=Placement("none", tmp_path))
        info = await asyncio.wait_for(asyncio.shield(d.exited), timeout=90)
    finally:
        await executor.stop()
    assert info.exit_code == 0 and (tmp_path / "say.log").read_bytes() == b"the new one\n"
    assert "sleep 300" not in client.get_job_info(submission_id(held)).entrypoint


def test_a_providers_limit_holds_across_the_cluster(project: Project, ray_head: RayHead) -> None:
    """Ray places jobs where it likes; tacx's own limits still decide how many run at once."""
    configure(project, ray_head, shared_filesystem=True)
    with (project.root / "tacx.yaml").open("a") as f:
        f.write("providers:\n  shell: {limit: 1}\n")
    project.workflow("nap", """
        name: nap
        defaults: {executor: ray}
        stages:
          - {name: nap, provider: shell, run: sleep 1}
    """)
    ids = [project.submit("nap.yaml") for _ in range(2)]
    project.tacx("--no-ui", "--exit-when-idle", "--max-workers", "2", timeout=180)
    spans = sorted((d["started_at"], d["ended_at"]) for task_id in ids
                   for d in stage(project.show(task_id), "nap")["daughters"])
    assert len(spans) == 2 and all(project.show(i)["status"] == "succeeded" for i in ids)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_doctor_checks_the_cluster_tacx_yaml_names(project: Project, ray_head: RayHead) -> None:
    configure(project, ray_head)
    checks = {c["check"]: c for c in json.loads(project.tacx("doctor", "--json", check=None).stdout)}
    assert checks["ray"]["status"] == "ok" and ray_head.address in checks["ray"]["detail"]
    (project.root / "tacx.yaml").write_text("executors:\n  ray: {address: 'http://127.0.0.1:9'}\n")
    proc = project.tacx("doctor", check=1)
    assert "cannot reach the Ray cluster's job server at http://127.0.0.1:9: it did not answer (is the Ray head" \
        " running, and is this its dashboard's address?)" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
