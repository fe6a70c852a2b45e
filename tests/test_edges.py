"""Edges found in review: loops, pause between stages, cancels across a restart, runs that
can never start, mixed interpreters, exit statuses that were lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from tacx.engine.local.supervisor import LocalExecutor
from tests.conftest import REPO, Project, wait_for


def test_loop_goes_back_and_hands_over_the_failing_result(project: Project) -> None:
    project.workflow("loop", """
        name: loop
        stages:
          - name: build
            provider: bash
            run: 'echo "round with notes: [$TACX_RESULT_REVIEW]" >> build.log; echo built'
          - name: review
            provider: bash
            run: '[ "$(wc -l < build.log)" -ge 3 ] && echo APPROVED || { echo "needs work"; exit 1; }'
            loop: {back_to: build, max: 2}
    """)
    project.tacx("run", "loop.yaml", "--no-ui")
    task = project.show(1)
    stages = {s["name"]: s for s in task["stages"]}
    assert task["status"] == "succeeded"
    assert (stages["build"]["attempt"], stages["review"]["attempt"]) == (3, 3)
    assert (project.root / "build.log").read_text().splitlines() == [
        "round with notes: []", "round with notes: [needs work]", "round with notes: [needs work]",
    ]
    assert [e["data"]["round"] for e in task["events"] if e["kind"] == "stage.loop"] == [1, 2]


def test_loop_gives_up_after_max(project: Project) -> None:
    project.workflow("loop", """
        name: loop
        stages:
          - {name: build, provider: shell, run: "echo b >> b.log"}
          - {name: review, provider: shell, run: "exit 1", loop: {back_to: build, max: 1}}
    """)
    project.tacx("run", "loop.yaml", "--no-ui", check=1)
    assert (project.root / "b.log").read_text() == "b\nb\n"
    assert project.show(1)["status"] == "failed"


def test_pause_holds_the_next_stage_of_a_running_task(project: Project) -> None:
    gate = project.root / "gate"
    project.workflow("two", f"""
        name: two
        stages:
          - {{name: a, provider: bash, run: "while [ ! -e {gate} ]; do sleep 0.05; done"}}
          - {{name: b, provider: shell, run: "echo b"}}
    """)
    task = project.submit("two.yaml")
    project.start("--no-ui")
    wait_for(lambda: project.show(task)["stages"][0]["status"] == "running")
    project.tacx("pause")
    # Once a task submitted now says "paused", the coordinator has heard of the pause.
    witness = project.submit("two.yaml")
    wait_for(lambda: "paused" in (project.show(witness)["wait_reason"] or ""), what="pause noticed")
    gate.touch()

    def b_waits() -> str | None:
        b = project.show(task)["stages"][1]
        return b["wait_reason"] if b["status"] == "pending" and b["wait_reason"] else None

    assert "paused" in wait_for(b_waits, what="b waiting because paused")
    assert project.show(task)["stages"][0]["status"] == "succeeded"
    project.tacx("resume")
    wait_for(lambda: project.show(task)["status"] == "succeeded")


def test_a_cancel_asked_for_before_a_stop_is_not_lost(project: Project) -> None:
    project.workflow("long", "name: long\nstages:\n  - {name: s, provider: bash, run: 'sleep 300 & wait'}\n")
    task = project.submit("long.yaml")
    coordinator = project.start("--no-ui")
    wait_for(lambda: len(project.marked_processes()) >= 2)
    conn = project.db()  # the cancel lands, but the coordinator stops before it acts on it
    conn.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?", (task,))
    conn.commit()
    conn.close()
    coordinator.send_signal(signal.SIGINT)
    coordinator.wait(timeout=30)
    assert project.show(task)["status"] == "cancelled"
    project.tacx("--no-ui", "--exit-when-idle")
    assert project.show(task)["status"] == "cancelled"
    assert project.query("SELECT COUNT(*) FROM daughters")[0][0] == 1


def test_a_task_that_can_never_start_is_refused_by_run_and_ends_a_headless_run(project: Project) -> None:
    project.workflow("bashy", "name: bashy\nstages:\n  - {name: s, provider: bash, run: 'true'}\n")
    project.env["PATH"] = "/nonexistent"

    def tacx(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tacx", *args], cwd=project.root, env=project.env,
                              capture_output=True, text=True, timeout=60)

    refused = tacx("run", "bashy.yaml", "--no-ui")  # nothing made: no task, no workspace
    assert refused.returncode == 2, refused.stderr
    assert "stage s can never start here: bash is not installed" in refused.stderr
    assert "nothing was queued" in refused.stderr and project.ls() == []
    project.submit("bashy.yaml")  # queued for later (bash may be installed by then)
    headless = tacx("--no-ui", "--exit-when-idle")
    assert headless.returncode == 1, headless.stderr
    assert "bash is not installed" in headless.stdout + headless.stderr
    assert project.ls()[0]["status"] == "queued"


def test_one_script_is_never_offered_to_two_languages(project: Project) -> None:
    project.workflow("mixed", """
        name: mixed
        stages:
          - {name: s, provider: [shell, python], run: "print('hi')"}
    """)
    out = project.tacx("validate", "mixed.yaml", check=2)
    assert "mixed.yaml:4:25: stages[0].provider: mixes" in out.stderr and "different languages" in out.stderr
    project.workflow("ok", """
        name: ok
        stages:
          - {name: s, provider: [bash, shell], run: "echo hi"}
    """)
    project.tacx("validate", "ok.yaml")


async def test_an_exit_status_reaped_elsewhere_is_unknown_not_zero(tmp_path: Path) -> None:
    supervisor = LocalExecutor()  # no home: no keeper, tacx is the daughter's parent
    log = tmp_path / "x.log"
    d = await supervisor.spawn(["sh", "-c", "exit 7"], env=dict(os.environ), cwd=tmp_path,
                               log_path=log, status_path=tmp_path / "x.status", marker="test")
    os.waitpid(d.pid, 0)  # someone else reaps it first
    info = await asyncio.wait_for(d.exited, 10)
    assert not info.known and info.exit_code is None


async def test_the_keeper_hands_over_a_small_log_with_the_exit(tmp_path: Path) -> None:
    """Where a cgroup holds the stage (no leftovers can still write), the keeper sends a
    small log whole with the exit, so tacx classifies the end without reading the file; a
    larger log, or a log a daughter swapped for a FIFO, is left to tacx to read."""
    home = tmp_path / ".tacx"
    home.mkdir()
    executor = LocalExecutor(home_root=home)
    executor.start()

    async def run(script: str, name: str):  # type: ignore[no-untyped-def]
        d = await executor.spawn(["sh", "-c", script], env=dict(os.environ), cwd=tmp_path,
                                 log_path=tmp_path / f"{name}.log", status_path=tmp_path / f"{name}.status",
                                 marker=f"tail-test-{name}")
        return d, await asyncio.wait_for(d.exited, 30)

    try:
        small, info = await run("echo some words; echo last words; exit 3", "small")
        assert info.exit_code == 3 and small.kept_by is not None
        large, _ = await run("head -c 9000 /dev/zero | tr '\\0' x; echo; echo last words", "large")
        fifo = tmp_path / "swapped.log"
        swapped, _ = await run(f"rm {fifo} && mkfifo {fifo}", "swapped")
        quiet, _ = await run("true", "quiet")
        assert large.tail is None and swapped.tail is None  # tacx reads those itself
        if small.cgroup is None:  # no cgroup here: leftovers could still write, tacx reads
            assert small.tail is None and quiet.tail is None
        else:
            assert small.tail == b"some words\nlast words\n" and quiet.tail == b""
    finally:
        await executor.stop()


def test_a_reader_probing_the_lock_never_turns_a_coordinator_away(project: Project) -> None:
    """`tacx ls`/`submit` probe the coordinator lock by taking it for an instant; a
    coordinator starting at that instant waits it out instead of exiting 2."""
    import threading

    project.home.mkdir(parents=True)
    (project.home / "lock").touch()
    stop = threading.Event()

    def probe() -> None:
        """What coordinator_running does, with the instant stretched so starts collide."""
        import fcntl

        fd = os.open(project.home / "lock", os.O_RDWR)
        try:
            while not stop.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a coordinator has it
                    stop.wait(0.005)
                    continue
                stop.wait(0.02)
                fcntl.flock(fd, fcntl.LOCK_UN)
                stop.wait(0.002)
        finally:
            os.close(fd)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(8):
            project.tacx("--no-ui", "--exit-when-idle")
    finally:
        stop.set()
        prober.join()


async def test_a_bug_in_one_branch_ends_the_other_branches_daughters(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """If tacx itself fails while a DAG runs, the sibling stage's daughter does not outlive
    its task: the task fails saying so, and nothing is left running."""
    from tacx.engine.coordinator import Coordinator
    from tacx.engine.outcome import Outcomes
    from tacx.home import Home
    from tacx.store.database import connect
    from tacx.store.writer import Store
    from tests.test_lessons import queue

    home = Home(tmp_path / ".tacx")
    queue(home, "name: d\nstages:\n  - {name: quick, provider: shell, needs: [], run: 'true'}\n"
                "  - {name: slow, provider: bash, needs: [], run: 'sleep 300 & wait'}\n")
    real = Outcomes.classify

    async def broken(self, run, name, *args):  # type: ignore[no-untyped-def]
        if name == "quick":
            raise RuntimeError("injected bug")
        return await real(self, run, name, *args)

    monkeypatch.setattr(Outcomes, "classify", broken)
    store = await Store(home.db_path).open()
    try:
        await asyncio.wait_for(Coordinator(home, store, exit_when_idle=True).run(), 60)
    finally:
        await store.close()
    conn = connect(home.db_path)
    status, error = conn.execute("SELECT status, error FROM tasks").fetchone()
    assert status == "failed" and "injected bug" in error
    assert conn.execute("SELECT COUNT(*) FROM stages WHERE status = 'running'").fetchone()[0] == 0
    slow_pid = conn.execute("SELECT pid FROM daughters WHERE stage = 'slow'").fetchone()[0]
    conn.close()
    import psutil

    assert not psutil.pid_exists(slow_pid) or psutil.Process(slow_pid).status() == psutil.STATUS_ZOMBIE


def test_two_processes_opening_a_fresh_home_at_once(tmp_path: Path) -> None:
    """A coordinator starting and a submit opening the same new database together: the
    switch to WAL waits for the other instead of failing with "database is locked"."""
    code = (
        "import sys; from pathlib import Path; from tacx.store.database import connect; "
        "c = connect(Path(sys.argv[1])); c.execute('SELECT COUNT(*) FROM tasks').fetchone(); c.close()"
    )
    for round_ in range(10):
        db = tmp_path / f"r{round_}" / "tacx.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], cwd=REPO, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        for proc in procs:
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
