"""kill -9 of tacx mid-run, and everything a restart must reconcile."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import psutil

from tests.conftest import Project, wait_for

# Stage `build` forks two grandchildren and lasts $TACX_INPUT_SECONDS; `pre` and `post` are quick.
# Every run of every stage appends a line to runs.log, so re-runs can be counted.
STAGED = """
name: staged
inputs:
  seconds: {required: true}
stages:
  - name: pre
    provider: shell
    run: echo "$TACX_TASK_ID pre" >> "$RUNS"
  - name: build
    provider: bash
    run: |
      echo "$TACX_TASK_ID build" >> "$RUNS"
      sleep "$TACX_INPUT_SECONDS" &
      sleep "$TACX_INPUT_SECONDS" &
      wait
      echo built
  - name: post
    provider: shell
    run: echo "$TACX_TASK_ID post" >> "$RUNS"
"""


def open_daughters(project: Project) -> list[sqlite3.Row]:
    return project.query("SELECT * FROM daughters WHERE ended_at IS NULL")


def test_kill9_then_restart_loses_nothing(project: Project) -> None:
    runs = project.root / "runs.log"
    project.env["RUNS"] = str(runs)
    project.workflow("staged", STAGED)
    # Tasks 1-2 end while tacx is dead (the keeper writes how), tasks 3-4 are still
    # running at the restart (re-adopted), and task 4's daughter is killed meanwhile: the
    # keeper, its parent, records the signal, and the stage fails as it would have with
    # tacx watching (it is not run again).
    ids = [project.submit("staged.yaml", "-i", f"seconds={s}") for s in (1, 1, 6, 6)]
    coordinator = project.start("--no-ui", "--max-workers", "4")
    wait_for(lambda: len([d for d in open_daughters(project) if d["stage"] == "build"]) == 4
             and len(project.marked_processes()) >= 12, what="4 build stages with grandchildren")
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    assert {t["status"] for t in project.ls()} == {"running"}
    builds = {d["task_id"]: d for d in open_daughters(project)}
    os.killpg(builds[ids[3]]["pid"], signal.SIGKILL)  # task 4's build dies while nobody watches
    time.sleep(1.5)  # tasks 1-2 finish while nobody watches

    restarted = project.tacx("--no-ui", "--exit-when-idle", timeout=120, check=1)
    assert "recovered" in restarted.stdout

    tasks = {t["id"]: t for t in project.ls()}
    assert [tasks[i]["status"] for i in ids] == ["succeeded", "succeeded", "succeeded", "failed"], [(project.show(i)["error"], project.show(i)["stages"]) for i in ids]
    assert "killed by signal SIGKILL (9)" in tasks[ids[3]]["error"]
    lines = runs.read_text().split("\n")
    for task_id in ids:
        shown = project.show(task_id)
        stages = {s["name"]: s for s in shown["stages"]}
        # Completed stages were not run again, nor was the build killed while tacx was away.
        assert lines.count(f"{task_id} pre") == 1
        assert lines.count(f"{task_id} post") == (0 if task_id == ids[3] else 1)
        assert lines.count(f"{task_id} build") == 1
        assert stages["build"]["attempt"] == 1
        assert stages["build"]["daughters"][0]["pid"] == builds[task_id]["pid"]
        if task_id == ids[3]:
            assert stages["build"]["daughters"][0]["signal"] == signal.SIGKILL
        else:
            assert stages["build"]["result"] == "built"
            assert stages["build"]["daughters"][0]["exit_code"] == 0
        recovered = [e for e in shown["events"] if e["kind"] == "task.recovered"]
        assert len(recovered) == 1
    assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0
    assert project.query("SELECT COUNT(*) FROM stages WHERE status = 'running'")[0][0] == 0
    assert project.marked_processes() == []
    assert project.query("PRAGMA integrity_check")[0][0] == "ok"


def test_a_daughter_that_ended_unseen_by_tacx_and_its_keeper_runs_again(project: Project) -> None:
    """kill -9 of tacx and of its keeper: nobody can know how the build ended (it was
    killed, and `exec` left no EXIT trap to write a status): the stage runs again."""
    runs = project.root / "runs.log"
    project.env.update(RUNS=str(runs), GATE=str(project.root / "gate"))
    project.workflow("execs", """
        name: execs
        stages:
          - name: build
            provider: shell
            run: echo "$TACX_TASK_ID build" >> "$RUNS"; if [ -e "$GATE" ]; then exit 0; fi; exec sleep 30
    """)
    task = project.submit("execs.yaml")
    coordinator = project.start("--no-ui")
    wait_for(lambda: open_daughters(project), what="the build's daughter")
    keepers = wait_for(project.keepers, what="the keepers")
    coordinator.send_signal(signal.SIGKILL)
    for keeper in keepers:
        keeper.kill()
    coordinator.wait()
    os.killpg(open_daughters(project)[0]["pid"], signal.SIGKILL)
    (project.root / "gate").touch()
    project.tacx("--no-ui", "--exit-when-idle", timeout=60)
    assert runs.read_text().count(f"{task} build") == 2
    build = project.show(task)["stages"][0]
    assert build["status"] == "succeeded" and build["attempt"] == 2


def test_restart_readopts_a_live_daughter_and_keeps_it_under_watch(project: Project) -> None:
    """While re-adopted, the task is `running` with a live daughter; then it completes."""
    gate = project.root / "gate"
    project.workflow("gated", f"""
        name: gated
        stages:
          - {{name: s, provider: bash, run: "while [ ! -e {gate} ]; do sleep 0.05; done; echo through"}}
    """)
    task = project.submit("gated.yaml")
    first = project.start("--no-ui")
    wait_for(lambda: open_daughters(project), what="daughter")
    pid = open_daughters(project)[0]["pid"]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert psutil.pid_exists(pid)
    project.start("--no-ui")
    wait_for(lambda: any(e["kind"] == "task.recovered" for e in project.show(task)["events"]), what="recovery")
    shown = project.show(task)
    assert shown["status"] == "running"
    assert shown["stages"][0]["daughters"][0]["pid"] == pid and psutil.pid_exists(pid)
    gate.touch()
    wait_for(lambda: project.show(task)["status"] == "succeeded", what="success after re-adoption")
    stage = project.show(task)["stages"][0]
    assert stage["attempt"] == 1 and stage["result"] == "through" and stage["exit_code"] == 0


def test_stage_marked_running_without_a_daughter_runs_again(project: Project) -> None:
    """A crash between committing `running` and starting the daughter: the stage reruns."""
    project.workflow("one", """
        name: one
        stages:
          - {name: s, provider: shell, run: "echo ran"}
    """)
    task = project.submit("one.yaml")
    conn = project.db()
    conn.execute("UPDATE tasks SET status = 'running', started_at = 1 WHERE id = ?", (task,))
    conn.execute("UPDATE stages SET status = 'running', attempt = 1 WHERE task_id = ?", (task,))
    conn.commit()
    conn.close()
    project.tacx("--no-ui", "--exit-when-idle")
    stage = project.show(task)["stages"][0]
    assert project.show(task)["status"] == "succeeded"
    assert stage["attempt"] == 2 and stage["result"] == "ran"


def test_stragglers_with_the_marker_are_ended_at_start(project: Project) -> None:
    """A process carrying this home's marker but belonging to no known daughter is ended."""
    env = dict(project.env, TACX_DAUGHTER=f"{project.home}#99/ghost/1")
    project.home.mkdir(parents=True, exist_ok=True)
    ghost = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    try:
        out = project.tacx("--no-ui", "--exit-when-idle").stdout
        assert ghost.wait(timeout=10) == -signal.SIGTERM
        assert str(ghost.pid) in out
    finally:
        if ghost.poll() is None:
            ghost.kill()
            ghost.wait()


def test_sigint_stops_daughters_and_requeues_for_the_next_start(project: Project) -> None:
    gate = project.root / "gate"
    project.workflow("twostep", f"""
        name: twostep
        stages:
          - {{name: a, provider: shell, run: "echo a"}}
          - {{name: b, provider: bash, run: "[ -e {gate} ] || {{ sleep 300 & wait; }}; echo b"}}
    """)
    task = project.submit("twostep.yaml")
    coordinator = project.start("--no-ui")
    wait_for(lambda: any(s["name"] == "b" and s["status"] == "running" for s in project.show(task)["stages"]))
    wait_for(lambda: len(project.marked_processes()) >= 2)
    coordinator.send_signal(signal.SIGINT)
    assert coordinator.wait(timeout=30) == 130
    shown = project.show(task)
    assert shown["status"] == "queued" and "interrupted" in shown["wait_reason"]
    assert [s["status"] for s in shown["stages"]] == ["succeeded", "pending"]
    assert project.marked_processes() == []
    # The next start resumes at b; a is not run again.
    gate.touch()
    project.tacx("--no-ui", "--exit-when-idle")
    stages = project.show(task)["stages"]
    assert project.show(task)["status"] == "succeeded"
    assert [(s["status"], s["attempt"]) for s in stages] == [("succeeded", 1), ("succeeded", 2)]


async def test_stop_leave_keeps_daughters_for_the_next_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Quitting with "leave them running": nothing is killed or rewritten; the next
    coordinator re-adopts the daughter and records its real outcome."""
    import asyncio

    from tacx.engine.coordinator import Coordinator
    from tacx.home import Home
    from tacx.store.database import connect
    from tacx.store.writer import Store
    from tests.test_lessons import queue

    home = Home(tmp_path / ".tacx")
    gate = tmp_path / "gate"
    (task,) = queue(home, f"name: g\nstages:\n  - {{name: s, provider: bash, run: 'while [ ! -e {gate} ]; do sleep 0.05; done; echo out'}}\n")
    store = await Store(home.db_path).open()
    coordinator = Coordinator(home, store)
    running = asyncio.create_task(coordinator.run())
    for _ in range(200):
        if coordinator.supervisor.daughters:
            break
        await asyncio.sleep(0.05)
    (daughter,) = coordinator.supervisor.daughters.values()
    coordinator.stop("leave")
    await asyncio.wait_for(running, 30)
    await store.close()
    assert psutil.pid_exists(daughter.pid)
    conn = connect(home.db_path)
    assert conn.execute("SELECT status FROM tasks").fetchone()[0] == "running"
    assert conn.execute("SELECT ended_at FROM daughters").fetchone()[0] is None
    conn.close()

    store = await Store(home.db_path).open()
    coordinator = Coordinator(home, store, exit_when_idle=True)
    running = asyncio.create_task(coordinator.run())
    await asyncio.sleep(0.3)
    gate.touch()
    await asyncio.wait_for(running, 30)
    await store.close()
    conn = connect(home.db_path)
    assert tuple(conn.execute("SELECT status, attempt, result FROM stages").fetchone()) == ("succeeded", 1, "out")
    assert tuple(conn.execute("SELECT pid, exit_code FROM daughters").fetchone()) == (daughter.pid, 0)


def test_sigint_in_the_middle_of_claiming_leaves_nothing_running(project: Project) -> None:
    """Stopping while claims and starts are in flight: tacx exits promptly and every task
    is queued or finished, with no stage running and no daughter open."""
    project.workflow("w", """
        name: w
        stages:
          - {name: s, provider: shell, run: "sleep 0.2"}
          - {name: t, provider: shell, run: "true"}
    """)
    (project.root / "many.jsonl").write_text("{}\n" * 80)  # more than three stops claim
    project.tacx("submit", "w.yaml", "--each", "many.jsonl")
    for delay in (0.0, 0.2, 0.5):
        # From the first claim on (a stage recorded running), not from the spawn: a fixed
        # delay from the spawn landed in Python's startup on a loaded machine (defect 8).
        started = project.query("SELECT COUNT(*) FROM stages WHERE started_at IS NOT NULL")[0][0]
        coordinator = project.start("--no-ui", "--max-workers", "8")
        wait_for(lambda: project.query("SELECT COUNT(*) FROM stages WHERE started_at IS NOT NULL")[0][0] > started,
                 what="a stage to start")
        time.sleep(delay)
        coordinator.send_signal(signal.SIGINT)
        assert coordinator.wait(timeout=30) == 130
        assert project.query("SELECT COUNT(*) FROM tasks WHERE status = 'running'")[0][0] == 0
        assert project.query("SELECT COUNT(*) FROM stages WHERE status = 'running'")[0][0] == 0
        assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0
        assert project.marked_processes() == []
    project.tacx("--no-ui", "--exit-when-idle", "--max-workers", "8", timeout=120)
    assert {t["status"] for t in project.ls()} == {"succeeded"}


def test_a_daughter_whose_task_ended_while_tacx_was_down_is_ended_at_start(project: Project) -> None:
    """A task recorded as finished (a cancel that raced a crash) but whose daughter still
    runs: the next start ends the daughter and closes its record."""
    project.workflow("long", "name: long\nstages:\n  - {name: s, provider: bash, run: 'sleep 300 & wait'}\n")
    task = project.submit("long.yaml")
    coordinator = project.start("--no-ui")
    wait_for(lambda: len(project.marked_processes()) >= 2)
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    conn = project.db()
    conn.execute("UPDATE tasks SET status = 'cancelled' WHERE id = ?", (task,))
    conn.commit()
    conn.close()
    project.tacx("--no-ui", "--exit-when-idle")
    assert project.marked_processes() == []
    assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0
    assert project.show(task)["status"] == "cancelled"
