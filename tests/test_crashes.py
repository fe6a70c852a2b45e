"""kill -9 of tacx at the worst moments: a stage that completed is never run again.

Every stage appends `<task> <stage> <attempt>` to a ledger as the last thing it does, so
the ledger counts how often each stage really completed; tacx's own records are not
trusted for that. The stages end the hard ways: `exec` (no EXIT trap survives it),
`os._exit` (no Python cleanup), and plain exits.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import psutil

from tests.conftest import Project, wait_for

LEDGER = """
name: ledger
stages:
  - name: a
    provider: shell
    run: echo "$TACX_TASK_ID a $TACX_ATTEMPT" >> "$LEDGER"
  - name: b
    provider: bash
    run: exec sh -c 'echo "$TACX_TASK_ID b $TACX_ATTEMPT" >> "$LEDGER"'
  - name: c
    provider: python
    run: |
      import os
      with open(os.environ["LEDGER"], "a") as f:
          f.write(f"{os.environ['TACX_TASK_ID']} c {os.environ['TACX_ATTEMPT']}\\n")
      os._exit(0)
"""


def completions(ledger: Path) -> Counter[tuple[str, str]]:
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return Counter((task, stage) for task, stage, _ in (line.split() for line in lines))


def setup(project: Project) -> Path:
    ledger = project.root / "ledger.txt"
    project.env["LEDGER"] = str(ledger)
    project.workflow("ledger", LEDGER)
    return ledger


def test_a_crash_between_a_daughters_start_and_its_row_does_not_run_it_again(project: Project) -> None:
    """tacx dies right after starting stage b's daughter, before recording it: b ends
    while tacx is down (by exec, no trap), and the next start reads how from the file
    its keeper wrote."""
    ledger = setup(project)
    task = project.submit("ledger.yaml")
    project.env["TACX_FAULT"] = "after-spawn:2"
    dying = project.start("--no-ui")
    assert dying.wait(timeout=60) == -signal.SIGKILL
    del project.env["TACX_FAULT"]
    wait_for(lambda: completions(ledger)[(str(task), "b")] == 1, what="b completing while tacx is down")
    assert project.query("SELECT COUNT(*) FROM daughters WHERE stage = 'b'")[0][0] == 0  # never recorded

    out = project.tacx("--no-ui", "--exit-when-idle").stdout
    assert "recovered" in out
    shown = project.show(task)
    assert shown["status"] == "succeeded"
    b = next(s for s in shown["stages"] if s["name"] == "b")
    assert b["attempt"] == 1 and b["exit_code"] == 0
    assert len(b["daughters"]) == 1 and b["daughters"][0]["exit_code"] == 0
    recovered = next(e for e in shown["events"] if e["kind"] == "task.recovered")
    assert recovered["data"]["found_without_row"] == ["b"] and recovered["data"]["rerun"] == []
    assert set(completions(ledger).values()) == {1}


def test_an_unrecorded_daughter_still_running_is_found_by_its_marker(project: Project) -> None:
    gate = project.root / "gate"
    project.workflow("slow", f"""
        name: slow
        stages:
          - name: s
            provider: bash
            run: while [ ! -e {gate} ]; do sleep 0.05; done; exec echo through
    """)
    task = project.submit("slow.yaml")
    project.env["TACX_FAULT"] = "after-spawn"
    assert project.start("--no-ui").wait(timeout=60) == -signal.SIGKILL
    del project.env["TACX_FAULT"]
    marked = wait_for(project.marked_processes, what="the daughter, alive")
    project.start("--no-ui")
    wait_for(lambda: project.show(task)["stages"][0]["daughters"], what="its row, written at recovery")
    found = project.show(task)["stages"][0]["daughters"][0]
    assert found["pid"] == marked[0].pid
    # Its row shows the workflow's command (read from the process, tacx's EXIT trap taken off).
    assert found["argv"][1:] == ["-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; exec echo through"]
    gate.touch()
    wait_for(lambda: project.show(task)["status"] == "succeeded", what="the task succeeding")
    stage = project.show(task)["stages"][0]
    assert stage["attempt"] == 1 and stage["result"] == "through"


def kill_at_a_stage_start(project: Project, nth: int, fault: str | None, wait: float) -> None:
    """One round: a coordinator, killed with SIGKILL right after it reports the nth
    stage start (or by the fault point first, or by a timer: whatever comes first)."""
    env = dict(project.env, **({"TACX_FAULT": fault} if fault else {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tacx", "--no-ui", "--json", "--max-workers", "4"], cwd=project.root, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    timer = threading.Timer(wait, proc.kill)
    timer.start()
    try:
        seen = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["kind"] == "stage.started":
                seen += 1
                if seen == nth:
                    proc.kill()
                    break
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_randomized_crash_loop_runs_no_completed_stage_again(project: Project) -> None:
    """Seeded and bounded: kill -9 right after the n-th stage start, or exactly after the
    n-th spawn (before its row), restart, again, until the queue is done; then count
    completions in the ledger."""
    rng = random.Random(20261130)
    ledger = setup(project)
    tasks = [project.submit("ledger.yaml") for _ in range(12)]
    rounds = 0
    while rounds < 40 and any(t["status"] in ("queued", "running") for t in project.ls()):
        fault = f"after-spawn:{rng.randint(1, 6)}" if rng.random() < 0.5 else None
        kill_at_a_stage_start(project, rng.randint(1, 6), fault, wait=rng.uniform(0.6, 2.0))
        rounds += 1
    project.tacx("--no-ui", "--exit-when-idle", timeout=120)
    assert {t["status"] for t in project.ls()} == {"succeeded"}
    done = completions(ledger)
    again = {k: n for k, n in done.items() if n > 1}
    assert again == {}, f"completed stages run again after {rounds} kills: {again}"
    assert len(done) == 3 * len(tasks)
    assert project.marked_processes() == []
    assert project.query("SELECT COUNT(*) FROM daughters WHERE ended_at IS NULL")[0][0] == 0


def test_a_keeper_killed_under_a_running_coordinator_is_replaced(project: Project) -> None:
    """The stage it was the parent of still ends right (a shell's EXIT trap says how),
    and the next stages start under a new keeper."""
    gate = project.root / "gate"
    ledger = project.root / "ledger.txt"
    project.env["LEDGER"] = str(ledger)
    project.workflow("two", f"""
        name: two
        stages:
          - {{name: wait, provider: bash, run: "while [ ! -e {gate} ]; do sleep 0.05; done; echo waited"}}
          - {{name: after, provider: shell, run: 'echo "$TACX_TASK_ID after 1" >> "$LEDGER"'}}
    """)
    task = project.submit("two.yaml")
    project.start("--no-ui")
    (daughter,) = wait_for(lambda: project.show(task)["stages"][0]["daughters"], what="the first stage running")
    first = psutil.Process(daughter["pid"]).parent()
    assert first is not None and first in project.keepers()
    before = {k.pid for k in project.keepers()}
    first.kill()
    first.wait(timeout=10)
    wait_for(lambda: len(project.keepers()) == len(before) and {k.pid for k in project.keepers()} != before,
             what="a new keeper in its place")
    gate.touch()
    wait_for(lambda: project.show(task)["status"] == "succeeded", what="the task succeeding")
    stages = project.show(task)["stages"]
    assert [s["result"] for s in stages][0] == "waited" and stages[0]["attempt"] == 1
    assert completions(ledger) == {(str(task), "after"): 1}
