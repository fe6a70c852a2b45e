"""The commands of DESIGN.md as a user runs them: shapes, exit codes, nothing written on bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Project, wait_for

MALFORMED = sorted((REPO / "tests" / "data" / "malformed").glob("*.yaml"))


def test_there_are_at_least_15_malformed_workflows() -> None:
    assert len(MALFORMED) >= 15


@pytest.mark.parametrize("path", MALFORMED, ids=[p.stem for p in MALFORMED])
def test_malformed_workflow_is_rejected_with_position_and_nothing_written(project: Project, path: Path) -> None:
    validated = project.tacx("validate", str(path), check=2)
    assert re.search(rf"^{re.escape(str(path))}:\d+:\d+: ", validated.stderr, re.M), validated.stderr
    submitted = project.tacx("submit", str(path), check=2)
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: ", submitted.stderr), submitted.stderr
    ran = project.tacx("run", str(path), "--no-ui", check=2)
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: ", ran.stderr), ran.stderr
    assert not project.home.exists()


def test_validate_and_schema(project: Project) -> None:
    out = project.tacx("validate", str(REPO / "workflows" / "shell-pipeline.yaml")).stdout
    assert "ok (shell-pipeline, 3 stages)" in out
    schema = json.loads(project.tacx("schema").stdout)
    assert "stages" in json.dumps(schema)


def test_second_coordinator_names_the_holder_and_reads_still_work(project: Project) -> None:
    first = project.start("--no-ui")
    wait_for(lambda: (project.home / "lock").exists() and (project.home / "lock").read_text(), what="lock")
    second = project.tacx("--no-ui", check=2)
    assert f"pid {first.pid}" in second.stderr
    assert "another tacx coordinator holds" in second.stderr
    assert project.tacx("ls").returncode == 0
    followed = project.tacx("run", "shell-pipeline", "--no-ui")  # handed over and followed
    assert followed.returncode == 0
    assert followed.stdout.splitlines()[-1].startswith("summary: 1 task: 1 succeeded · ")  # the followed run's end


def test_run_exit_codes_and_show_shape(project: Project) -> None:
    project.workflow("fail", """
        name: fail
        stages:
          - {name: s, provider: bash, run: "echo to stdout; echo 'not logged in' >&2; exit 4"}
    """)
    out = project.tacx("run", "fail.yaml", "--no-ui", check=1)
    assert "exited with code 4" in out.stdout and "not logged in" in out.stdout
    task = project.show(1)
    for key in ("id", "status", "workflow", "title", "priority", "created_at", "started_at", "ended_at",
                "tokens", "cost_usd", "inputs", "error", "trace_id", "stages", "events"):
        assert key in task
    assert set(task["tokens"]) == {"input", "output", "cache_read", "cache_write"}
    stage = task["stages"][0]
    for key in ("name", "status", "attempt", "provider", "model", "exit_code", "started_at", "ended_at",
                "error", "tokens", "cost_usd", "session_id", "daughters"):
        assert key in stage
    daughter = stage["daughters"][0]
    for key in ("pid", "argv", "exit_code", "signal", "started_at", "ended_at", "peak_rss", "cpu_seconds"):
        assert key in daughter
    assert task["status"] == "failed" and stage["exit_code"] == 4 and daughter["exit_code"] == 4
    assert "not logged in" in task["error"]
    assert all(isinstance(task[k], float) for k in ("created_at", "started_at", "ended_at"))
    listed = project.ls()[0]
    assert {k: listed[k] for k in ("id", "status", "tokens")} == {k: task[k] for k in ("id", "status", "tokens")}


def test_submit_each_dedupe_priority_and_ls_filters(project: Project) -> None:
    project.workflow("greet", """
        name: greet
        inputs:
          who: {required: true}
        dedupe_key: "{{ inputs.who }}"
        stages:
          - {name: s, provider: shell, run: 'echo "hi $TACX_INPUT_WHO"'}
    """)
    (project.root / "people.jsonl").write_text('{"who": "ann"}\n\n{"who": "bob"}\n')
    ids = project.tacx("submit", "greet.yaml", "--each", "people.jsonl").stdout.split()
    assert ids == ["1", "2"]
    again = project.tacx("submit", "greet.yaml", "-i", "who=ann").stdout
    assert again.startswith("1 ")  # the live duplicate is returned, nothing new queued
    assert project.submit("greet.yaml", "-i", "who=cy", "--priority", "5") == 3
    # A bad line anywhere: exit 2 naming file and line, and none of the lines is queued.
    (project.root / "bad.jsonl").write_text('{"who": "dan"}\n{"who": \n')
    bad = project.tacx("submit", "greet.yaml", "--each", "bad.jsonl", check=2)
    assert "bad.jsonl:2:" in bad.stderr
    missing = project.tacx("submit", "greet.yaml", check=2)
    assert "who" in missing.stderr
    unknown = project.tacx("submit", "greet.yaml", "-i", "who=x", "-i", "nope=1", check=2)
    assert "nope" in unknown.stderr
    assert len(project.ls()) == 3
    project.tacx("--no-ui", "--exit-when-idle", "--max-workers", "1")
    order = [e["ts"] for e in (project.show(i)["events"][1] for i in (3, 1, 2))]
    assert order == sorted(order)  # priority first, then age
    assert [t["id"] for t in json.loads(project.tacx("ls", "--json", "--status", "succeeded").stdout)] == [3, 2, 1]
    assert json.loads(project.tacx("ls", "--json", "--workflow", "nothing").stdout) == []


def test_cancel_queued_and_retry(project: Project) -> None:
    project.workflow("flaky", """
        name: flaky
        stages:
          - {name: a, provider: shell, run: "echo a >> a.log"}
          - {name: b, provider: shell, run: "[ -e ok ] && echo fine"}
    """)
    queued = project.submit("flaky.yaml")
    assert "cancelled" in project.tacx("cancel", str(queued)).stdout
    assert project.show(queued)["status"] == "cancelled"
    assert "already cancelled" in project.tacx("cancel", str(queued), check=2).stderr
    task = project.submit("flaky.yaml")
    project.tacx("--no-ui", "--exit-when-idle", check=1)
    assert project.show(task)["status"] == "failed"
    (project.root / "ok").touch()
    project.tacx("retry", str(task))
    assert project.show(task)["status"] == "queued"
    project.tacx("--no-ui", "--exit-when-idle")
    shown = project.show(task)
    assert shown["status"] == "succeeded"
    assert [(s["name"], s["attempt"]) for s in shown["stages"]] == [("a", 1), ("b", 2)]
    assert (project.root / "a.log").read_text() == "a\n"  # the stage that succeeded was not rerun
    assert "only failed" in project.tacx("retry", str(task), check=2).stderr
    project.tacx("show", "999", check=2)


def test_cancel_without_a_coordinator_ends_leftover_daughters(project: Project) -> None:
    import signal

    project.workflow("long", "name: long\nstages:\n  - {name: s, provider: bash, run: 'sleep 300 & wait'}\n")
    task = project.submit("long.yaml")
    coordinator = project.start("--no-ui")
    wait_for(lambda: len(project.marked_processes()) >= 2)
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    out = project.tacx("cancel", str(task)).stdout
    assert "cancelled" in out
    assert project.show(task)["status"] == "cancelled"
    assert project.marked_processes() == []


def test_logs_follow_until_the_stage_ends(project: Project) -> None:
    project.workflow("ticker", """
        name: ticker
        stages:
          - {name: tick, provider: bash, run: 'for i in 1 2 3 4 5; do echo "tick $i"; sleep 0.2; done'}
    """)
    task = project.submit("ticker.yaml")
    project.start("--no-ui")
    # Read from the store, not a `tacx show` per look: on a loaded machine one look took
    # longer than the stage runs, and the running state was missed.
    wait_for(lambda: project.query("SELECT status FROM stages WHERE task_id = ?", task)[0][0] != "pending")
    followed = project.tacx("logs", str(task), "-f", timeout=30).stdout
    assert followed == "".join(f"tick {i}\n" for i in range(1, 6))
    assert project.tacx("logs", str(task), "tick", "--attempt", "1").stdout == followed
    assert "no stage" in project.tacx("logs", str(task), "nope", check=2).stderr


def test_dag_runs_independent_stages_side_by_side(project: Project) -> None:
    project.workflow("dag", """
        name: dag
        stages:
          - {name: left, provider: shell, needs: [], run: "date +%s.%N; sleep 1; date +%s.%N"}
          - {name: right, provider: shell, needs: [], run: "date +%s.%N; sleep 1; date +%s.%N"}
          - {name: join, provider: shell, needs: [left, right], run: 'echo "$TACX_RESULT_LEFT $TACX_RESULT_RIGHT"'}
    """)
    project.tacx("run", "dag.yaml", "--no-ui")
    stages = {s["name"]: s for s in project.show(1)["stages"]}
    left, right = stages["left"], stages["right"]
    assert left["started_at"] < right["ended_at"] and right["started_at"] < left["ended_at"]  # overlapped
    assert stages["join"]["started_at"] >= max(left["ended_at"], right["ended_at"])
    assert stages["join"]["result"] == f"{left['result']} {right['result']}"


def test_when_expects_retries_and_idle_timeout(project: Project) -> None:
    (project.root / "tacx.yaml").write_text("sample_interval: 0.2s\nkill_grace: 1s\n")
    project.workflow("flow", """
        name: flow
        stages:
          - name: flaky
            provider: shell
            retries: 2
            backoff: 0.1s
            run: 'n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; [ "$n" -ge 1 ]'
          - {name: lazy, provider: shell, run: "true", expects: [missing.txt]}
          - {name: skipped, provider: shell, run: "echo never"}
          - {name: on-failure, provider: shell, when: failure, run: "echo cleaning"}
          - {name: quiet, provider: shell, when: always, idle_timeout: 1s, run: "echo hi; sleep 30"}
    """)
    project.tacx("run", "flow.yaml", "--no-ui", check=1)
    task = project.show(1)
    stages = {s["name"]: s for s in task["stages"]}
    assert (stages["flaky"]["status"], stages["flaky"]["attempt"]) == ("succeeded", 2)
    assert [e["kind"] for e in task["events"] if e["stage"] == "flaky"].count("stage.retrying") == 1
    assert stages["lazy"]["status"] == "failed" and "missing.txt" in stages["lazy"]["error"]
    assert stages["skipped"]["status"] == "skipped"
    assert stages["on-failure"]["status"] == "succeeded"
    assert stages["quiet"]["status"] == "timed_out" and "no output for 1s" in stages["quiet"]["error"]
    assert task["status"] == "failed" and "lazy" in task["error"]


def test_json_progress_is_one_event_per_line(project: Project) -> None:
    out = project.tacx("run", "shell-pipeline", "--no-ui", "--json").stdout
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "task.started" and kinds[-2:] == ["task.succeeded", "summary"]  # the run's summary last
    assert kinds.count("stage.succeeded") == 3


def test_home_is_found_from_a_subfolder_and_python_m_works(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / ".tacx").mkdir(parents=True)
    (root / "deep" / "er").mkdir(parents=True)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TACX_")}
    env["PYTHONPATH"] = str(REPO)
    subprocess.run([sys.executable, "-m", "tacx", "submit", "shell-pipeline"], cwd=root / "deep" / "er",
                   env=env, check=True, capture_output=True)
    assert (root / ".tacx" / "tacx.db").exists()
    assert not (root / "deep" / "er" / ".tacx").exists()


def test_a_database_from_a_newer_tacx_is_refused(project: Project) -> None:
    project.submit("shell-pipeline")
    conn = project.db()
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    assert "newer" in project.tacx("ls", check=2).stderr


def test_engine_imports_no_textual() -> None:
    code = (
        "import sys, tacx.engine.coordinator, tacx.engine.local.supervisor, tacx.store.database, tacx.store.records, tacx.workflow.model, "
        "tacx.agents.registry, tacx.cli.reporter, tacx.cli.main, tacx.agents.stream, tacx.agents.prices, tacx.agents.tailer, tacx.agents.spending, "
        "tacx.workspace.worktree, tacx.workspace.cleanup, tacx.agents.report, tacx.agents.mock_agent, tacx.submission, "
        "tacx.ui.data, tacx.ui.control, tacx.ui.notices, tacx.ui.logformat, tacx.ui.logtail; "
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_progress_line_when_on_a_terminal(project: Project) -> None:
    """On a TTY, headless mode draws a live progress bar below the event lines."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: become tacx on the terminal
        os.chdir(project.root)
        os.execve(sys.executable, [sys.executable, "-m", "tacx", "run", "shell-pipeline", "--no-ui"], project.env)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    output = b"".join(chunks).decode("utf-8", "replace")
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)  # state colours (tests/test_cli_output.py)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "done ·" in output and "█" in output
    assert "task 1 succeeded" in output
