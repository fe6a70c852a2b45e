"""`tacx logs`: an agent's stream shown for people by default and as written with --raw,
a script's output as its bytes, and -f following a task from stage to stage and from
attempt to attempt until it ends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from tests.conftest import Project, wait_for


def test_an_agents_log_is_shown_for_people_and_raw_on_request(project: Project) -> None:
    project.workflow("m", """
        name: m
        workspace: dir
        stages:
          - name: plan
            provider: mock
            prompt: Say hello
            extra_args: [--think, "0"]
    """)
    project.tacx("run", "m.yaml", "--no-ui")
    raw = project.tacx("logs", "1", "--raw").stdout
    assert raw == (project.home / "logs" / "1" / "plan.1.log").read_text()
    assert all(json.loads(line)["type"] for line in raw.splitlines() if line.strip())  # the stream as written
    shown = project.tacx("logs", "1").stdout
    assert shown.strip() and not any(line.lstrip().startswith("{") for line in shown.splitlines())
    said = [json.loads(line) for line in raw.splitlines() if line.startswith('{"type":"result"')][0]["result"]
    assert said.splitlines()[0].strip() in shown  # what the agent said is there, in words


def test_a_scripts_log_is_its_bytes(project: Project) -> None:
    project.workflow("s", r"""
        name: s
        stages:
          - {name: s, provider: bash, run: 'printf "{\"not\": \"an agent\"}\n\tx\n"'}
    """)
    project.tacx("run", "s.yaml", "--no-ui")
    assert project.tacx("logs", "1").stdout == '{"not": "an agent"}\n\tx\n'


def test_follow_goes_from_stage_to_stage_and_attempt_to_attempt_until_the_task_ends(project: Project) -> None:
    marker, gate = project.root / "failed-once", project.root / "gate"
    project.workflow("two", f"""
        name: two
        stages:
          - {{name: first, provider: bash, run: 'echo "first 1"; while [ ! -e {gate} ]; do sleep 0.05; done; echo "first 2"'}}
          - name: second
            provider: bash
            retries: 1
            backoff: 0.1s
            run: 'echo "second try"; if [ ! -e {marker} ]; then touch {marker}; exit 3; fi; echo "second done"'
    """)
    task = project.submit("two.yaml")
    project.start("--no-ui")
    wait_for(lambda: project.show(task)["stages"][0]["status"] == "running")
    follower = subprocess.Popen([sys.executable, "-m", "tacx", "logs", str(task), "-f"], env=project.env,
                                cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, follower.kill)  # a follower that never prints fails, never hangs
    watchdog.start()
    try:
        assert follower.stdout is not None and follower.stdout.readline() == "first 1\n"  # following the first stage
        gate.touch()  # now it may end, and the rest of the task run
        out, err = follower.communicate(timeout=60)
    finally:
        watchdog.cancel()
        follower.kill()
    assert follower.returncode == 0, err
    assert "first 1\n" + out == (
        "first 1\nfirst 2\n"
        "── second · attempt 1 ──\nsecond try\n"
        "── second · attempt 2 ──\nsecond try\nsecond done\n"
    )
    assert project.show(task)["status"] == "succeeded"  # -f returned because the task ended
