"""The lessons of DESIGN.md (1-6), each with a test that fails if the lesson is broken."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import psutil

from tacx.store import records
from tacx.engine.coordinator import Coordinator
from tacx.home import Home
from tacx.settings import Settings
from tacx.store.database import connect, transaction
from tacx.store.writer import Store
from tacx.workflow.loader import load_workflow_text
from tests.conftest import Project, wait_for


def queue(home: Home, text: str, count: int = 1, inputs: dict[str, str] | None = None) -> list[int]:
    """Insert tasks straight into the store, as `tacx submit` does."""
    wf = load_workflow_text(text, "test.yaml")
    conn = connect(home.db_path)
    with transaction(conn):
        ids = records.queue_workflow(
            conn, wf, path="test.yaml", text=text, project_root=str(home.project_root),
            inputs=[inputs or {}] * count, titles=[f"t{i}" for i in range(count)],
        )
    conn.close()
    return ids


async def run_until_idle(home: Home, **kwargs: object) -> Coordinator:
    store = await Store(home.db_path).open()
    try:
        coordinator = Coordinator(home, store, Settings(sample_interval=0.2), exit_when_idle=True, **kwargs)  # type: ignore[arg-type]
        await asyncio.wait_for(coordinator.run(), timeout=60)
    finally:
        await store.close()
    return coordinator


# -- 1. accepted but never started ----------------------------------------------------------


def test_lesson1_queued_tasks_start_and_waiting_ones_say_why(project: Project) -> None:
    (project.root / "tacx.yaml").write_text("max_workers: 3\nproviders: {bash: {limit: 1}}\n")
    gate = project.root / "gate"
    project.workflow("hold", f"""
        name: hold
        stages:
          - name: wait
            provider: bash
            run: while [ ! -e {gate} ]; do sleep 0.05; done
    """)
    project.workflow("quick", """
        name: quick
        stages:
          - {name: go, provider: shell, run: "echo ok"}
    """)
    first, second = project.submit("hold.yaml"), project.submit("hold.yaml")
    # No coordinator: the listing says so.
    assert "no coordinator is running" in project.tacx("ls").stdout
    project.start("--no-ui")
    wait_for(lambda: project.show(first)["status"] == "running", what="first task running")
    reason = wait_for(lambda: project.show(second)["wait_reason"], what="a wait reason")
    assert project.show(second)["status"] == "queued"
    assert "bash is at its limit (1 of 1 busy)" in reason
    assert "bash is at its limit" in project.tacx("ls").stdout
    # Paused: new tasks wait and say so; resumed: they start.
    project.tacx("pause")
    third = project.submit("quick.yaml")
    wait_for(lambda: "paused" in (project.show(third)["wait_reason"] or ""), what="paused reason")
    assert project.show(third)["status"] == "queued"
    project.tacx("resume")
    wait_for(lambda: project.show(third)["status"] == "succeeded", what="quick task after resume")
    gate.touch()
    wait_for(lambda: project.show(second)["status"] == "succeeded", what="second hold task")
    assert project.show(first)["status"] == "succeeded"


def test_lesson1_a_waiting_stage_says_why(project: Project) -> None:
    (project.root / "tacx.yaml").write_text("providers: {bash: {limit: 1}}\n")
    gate = project.root / "gate"
    project.workflow("fan", f"""
        name: fan
        stages:
          - {{name: a, provider: bash, needs: [], run: "while [ ! -e {gate} ]; do sleep 0.05; done"}}
          - {{name: b, provider: bash, needs: [], run: "while [ ! -e {gate} ]; do sleep 0.05; done"}}
    """)
    task = project.submit("fan.yaml")
    project.start("--no-ui")

    def waiting_stage() -> str | None:
        stages = {s["name"]: s for s in project.show(task)["stages"]}
        pending = [s for s in stages.values() if s["status"] == "pending"]
        return pending[0]["wait_reason"] if pending and pending[0]["wait_reason"] else None

    assert "bash is at its limit" in wait_for(waiting_stage, what="stage wait reason")
    gate.touch()
    wait_for(lambda: project.show(task)["status"] == "succeeded")


# -- 2. finished but shown "pending" ---------------------------------------------------------


async def test_lesson2_reaper_records_result_with_the_stage_state(tmp_path: Path) -> None:
    """The daughter's exit status and the stage's new state are written by one write, in one
    transaction: traced on the writer connection, both UPDATEs sit inside one savepoint."""
    home = Home(tmp_path / ".tacx")
    queue(home, "name: one\nstages:\n  - {name: s, provider: shell, run: 'exit 3'}\n", count=3)
    statements: list[str] = []
    store = await Store(home.db_path).open()
    await store._run(lambda conn: conn.set_trace_callback(statements.append))
    try:
        await asyncio.wait_for(Coordinator(home, store, exit_when_idle=True).run(), 60)
    finally:
        await store.close()
    blocks: list[list[str]] = []
    for sql in statements:
        if sql.startswith("SAVEPOINT"):
            blocks.append([])
        elif blocks:
            blocks[-1].append(sql)
    reaps = [b for b in blocks if any(s.startswith("UPDATE daughters SET ended_at") for s in b)]
    assert len(reaps) == 3
    for block in reaps:
        assert any(s.startswith("UPDATE stages SET status") for s in block), block
    conn = connect(home.db_path)
    rows = conn.execute("SELECT s.status, s.exit_code, d.exit_code FROM stages s JOIN daughters d ON d.stage_id = s.id").fetchall()
    assert [tuple(r) for r in rows] == [("failed", 3, 3)] * 3
    assert {r[0] for r in conn.execute("SELECT status FROM tasks")} == {"failed"}


# -- 3. stage result computed but never stored -------------------------------------------------


def test_lesson3_outcome_is_stored_before_the_next_stage_reads_it(project: Project) -> None:
    project.workflow("handoff", """
        name: handoff
        stages:
          - name: first
            provider: shell
            run: echo noise; echo "the answer is 42"
          - name: second
            provider: python
            run: |
              import os, sqlite3
              db = sqlite3.connect(os.path.join(os.environ["TACX_HOME"], "tacx.db"))
              status, result = db.execute(
                  "SELECT status, result FROM stages WHERE task_id = ? AND name = 'first'",
                  (os.environ["TACX_TASK_ID"],)).fetchone()
              assert status == "succeeded", status
              assert result == os.environ["TACX_RESULT_FIRST"] == "the answer is 42", (result,)
              print("read", result)
    """)
    project.tacx("run", "handoff.yaml", "--no-ui")
    task = project.ls()[0]
    stages = project.show(task["id"])["stages"]
    assert [s["result"] for s in stages] == ["the answer is 42", "read the answer is 42"]


# -- 4. python run by /bin/sh ---------------------------------------------------------------------


def test_lesson4_each_provider_names_its_interpreter(project: Project) -> None:
    project.workflow("interp", """
        name: interp
        stages:
          - {name: sh, provider: shell, run: 'echo "$0"'}
          - {name: bash, provider: bash, run: 'echo "bash $BASH_VERSION"'}
          - name: py
            provider: python
            run: |
              import sys
              def f(*, x: int) -> str:
                  return f"python {sys.version_info[0]} {x}"
              print(f(x=1))
    """)
    events = [json.loads(line) for line in project.tacx("run", "interp.yaml", "--no-ui", "--json").stdout.splitlines()]
    shown = project.show(1)
    stages = {s["name"]: s for s in shown["stages"]}
    assert stages["sh"]["daughters"][0]["argv"][0] == "/bin/sh"
    assert stages["sh"]["result"] == "/bin/sh"
    assert stages["bash"]["daughters"][0]["argv"][0].endswith("bash")
    assert stages["bash"]["result"].startswith("bash ")
    assert stages["py"]["daughters"][0]["argv"][0] == sys.executable
    assert stages["py"]["result"] == "python 3 1"
    # What people read is the command the workflow asked for, never tacx's status wrapper
    # (an EXIT trap, a python bootstrap), in the daughters' rows and daughter.started alike.
    py_code = "import sys\ndef f(*, x: int) -> str:\n    return f\"python {sys.version_info[0]} {x}\"\nprint(f(x=1))\n"
    asked = {"sh": ["/bin/sh", "-c", 'echo "$0"'],
             "bash": [stages["bash"]["daughters"][0]["argv"][0], "-c", 'echo "bash $BASH_VERSION"'],
             "py": [sys.executable, "-c", py_code]}
    started = {e["stage"]: e["data"]["argv"] for e in events if e["kind"] == "daughter.started"}
    assert started == asked
    assert {name: s["daughters"][0]["argv"] for name, s in stages.items()} == asked
    for said in (json.dumps(shown), json.dumps(events)):
        assert "trap" not in said and "_tacx_status" not in said


# -- 5. zombies, stragglers, orphans --------------------------------------------------------------


def test_lesson5_timeout_kills_the_whole_tree(project: Project) -> None:
    project.workflow("hang", """
        name: hang
        stages:
          - {name: s, provider: shell, timeout: 1s, run: "sh -c 'sleep 300 & sleep 300 & wait'"}
    """)
    project.tacx("run", "hang.yaml", "--no-ui", check=1)
    stage = project.show(1)["stages"][0]
    assert stage["status"] == "timed_out"
    assert "timed out after 1s" in stage["error"]
    assert project.marked_processes() == []
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "300"]
                and p.environ().get("TACX_DAUGHTER", "").startswith(str(project.home))]


def test_lesson5_escaped_descendants_are_swept(project: Project) -> None:
    """A daughter that exits 0 but leaves a setsid'd grandchild behind: the grandchild goes."""
    project.workflow("escape", """
        name: escape
        stages:
          - {name: s, provider: shell, run: "setsid sleep 300 > /dev/null 2>&1 & echo left one behind"}
    """)
    project.tacx("run", "escape.yaml", "--no-ui")
    assert project.marked_processes() == []


def test_lesson5_escaped_descendants_go_with_their_stage_while_tacx_runs_on(project: Project) -> None:
    """The coordinator keeps running: by the time the stage's end is in the store, the
    setsid'd grandchild it left is gone (not left for a later periodic sweep)."""
    (project.root / "tacx.yaml").write_text("sample_interval: 0.2s\n")
    project.workflow("escape", """
        name: escape
        stages:
          - {name: s, provider: shell, run: "setsid sleep 300 > /dev/null 2>&1 & sleep 0.6; echo done"}
    """)
    task = project.submit("escape.yaml")
    project.start("--no-ui")
    wait_for(lambda: project.show(task)["status"] == "succeeded", what="stage end")
    assert project.marked_processes() == []


def test_lesson5_cancel_from_another_terminal_kills_the_tree(project: Project) -> None:
    project.workflow("long", """
        name: long
        stages:
          - {name: s, provider: bash, run: "sleep 300 & sleep 300 & wait"}
          - {name: after, provider: shell, run: "echo never"}
    """)
    task = project.submit("long.yaml")
    project.start("--no-ui")
    wait_for(lambda: len(project.marked_processes()) >= 3, what="daughter and grandchildren")
    out = project.tacx("cancel", str(task)).stdout
    assert "cancel requested" in out
    wait_for(lambda: project.show(task)["status"] == "cancelled", what="cancelled")
    shown = project.show(task)
    assert [s["status"] for s in shown["stages"]] == ["cancelled", "cancelled"]
    wait_for(lambda: project.marked_processes() == [], what="no marked process")


async def test_lesson5_no_zombies_after_many_daughters(tmp_path: Path) -> None:
    home = Home(tmp_path / ".tacx")
    queue(home, "name: z\nstages:\n  - {name: s, provider: shell, run: 'sleep 0.01 & echo $$'}\n", count=30)
    # Only what this run started: a keeper left by an earlier test in this process (its app
    # closed with daughters running) is reaped by nobody here and ends a zombie on its own.
    earlier = {c.pid for c in psutil.Process().children(recursive=True)}
    await run_until_idle(home, max_workers=6)
    zombies = [c for c in psutil.Process().children(recursive=True)
               if c.pid not in earlier and c.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []
    conn = connect(home.db_path)
    assert conn.execute("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL").fetchone()[0] == 0
    assert {r[0] for r in conn.execute("SELECT status FROM tasks")} == {"succeeded"}


# -- 6. silent routing ------------------------------------------------------------------------------


def test_lesson6_every_provider_choice_is_an_event_with_trace_and_reason(project: Project) -> None:
    project.workflow("route", """
        name: route
        stages:
          - {name: a, provider: shell, run: "exit 1", retries: 1, backoff: 0s}
          - {name: b, provider: [bash, shell], run: "true", when: always}
    """)
    project.tacx("run", "route.yaml", "--no-ui", check=1)
    task = project.show(1)
    chosen = [e for e in task["events"] if e["kind"] == "provider.chosen"]
    started = [e for e in task["events"] if e["kind"] == "stage.started"]
    assert len(chosen) == len(started) == 3  # two attempts of a, one of b
    for event in chosen:
        assert event["data"]["trace_id"] == task["trace_id"]
        assert event["data"]["reason"]
        assert event["data"]["provider"] in event["data"]["candidates"]
    assert chosen[-1]["data"]["provider"] == "bash"
    assert "first available" in chosen[-1]["data"]["reason"]
