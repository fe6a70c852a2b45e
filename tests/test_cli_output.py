"""What tacx prints for people: state words in the dashboard's colours on a terminal only
(never piped, never with NO_COLOR or TERM=dumb, never in JSON; columns stay aligned), and
the summary a headless run ends with (tasks by state, tokens, cost, wall time), as text
and as a last JSON event, however the run ends."""

from __future__ import annotations

import json
import re
import signal

from tacx.states import STATUS_STYLE
from tests.conftest import Project, wait_for
from tests.test_store_errors import on_a_terminal

SGR = re.compile(r"\x1b\[[0-9;]*m")  # a colour or style escape (the progress line's \r\x1b[K is not one)
GREEN_SUCCEEDED = "\x1b[32msucceeded\x1b[0m"


def _terminal_env(project: Project, **extra: str) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        project.env.pop(name, None)
    project.env["TERM"] = "xterm-256color"
    project.env.update(extra)


def _tty(project: Project, *args: str) -> str:
    code, out = on_a_terminal(project, ["-m", "tacx", *args])
    assert code == 0, out
    return out.replace("\r\n", "\n")


def test_colour_on_a_terminal_only(project: Project) -> None:
    _terminal_env(project)
    assert STATUS_STYLE["succeeded"] == "green"  # the dashboard's colour, from the one shared table
    run = _tty(project, "run", "shell-pipeline", "--no-ui")
    assert f"task 1 {GREEN_SUCCEEDED}" in run and f"· count: {GREEN_SUCCEEDED} in" in run
    assert f"summary: 1 task: 1 {GREEN_SUCCEEDED} ·" in run
    assert "\x1b[32m1 ok\x1b[0m" in run  # the live progress line

    # ls and show: painted on a terminal, the same text as piped once the escapes are gone
    # (padding is painted with its word: escapes never count as width, columns stay aligned).
    piped_ls, piped_show = project.tacx("ls").stdout, project.tacx("show", "1").stdout
    assert not SGR.search(piped_ls + piped_show)
    tty_ls, tty_show = _tty(project, "ls"), _tty(project, "show", "1")
    assert "\x1b[32msucceeded \x1b[0m" in tty_ls and "status \x1b[32msucceeded\x1b[0m" in tty_show
    assert SGR.sub("", tty_ls) == piped_ls and SGR.sub("", tty_show) == piped_show
    assert "trap" not in piped_show and "_tacx_status" not in piped_show  # the workflow's commands, unwrapped
    assert json.loads(_tty(project, "ls", "--json"))[0]["status"] == "succeeded"  # JSON: never painted
    _, doctor = on_a_terminal(project, ["-m", "tacx", "doctor"])  # exit 1 where a check fails here: not our point
    assert "\x1b[32mok  \x1b[0m  store" in doctor  # doctor's marks too

    # NO_COLOR (any non-empty value) and TERM=dumb turn it off on a terminal; FORCE_COLOR on, piped.
    _terminal_env(project, NO_COLOR="1")
    assert not SGR.search(_tty(project, "show", "1"))
    _terminal_env(project, TERM="dumb")
    assert not SGR.search(_tty(project, "ls"))
    _terminal_env(project, FORCE_COLOR="1")
    assert SGR.search(project.tacx("ls").stdout)


MOCKED = """
    name: mocked
    inputs: {title: {required: true}, fail: {default: ""}}
    defaults: {provider: mock, timeout: 1m}
    stages:
      - name: work
        prompt: "Do it: {{ inputs.title }}"
        extra_args: [--think, "0.2"]
      - name: check
        provider: shell
        run: test -z "$TACX_INPUT_FAIL"
"""

HANGING = """
    name: hanging
    inputs: {title: {required: true}}
    stages:
      - {name: nap, provider: mock, prompt: "Wait: {{ inputs.title }}", extra_args: [--hang]}
"""


def test_summary_at_the_end_of_a_headless_run(project: Project) -> None:
    project.workflow("mocked", MOCKED)
    project.workflow("hanging", HANGING)
    _terminal_env(project)
    project.submit("mocked.yaml", "-i", "title=one")
    project.submit("mocked.yaml", "-i", "title=two", "-i", "fail=yes")
    out = project.tacx("--no-ui", "--exit-when-idle", check=1).stdout
    tasks = project.ls()
    tokens = {k: sum(t["tokens"][k] for t in tasks) for k in ("input", "output")}
    cost = sum(t["cost_usd"] for t in tasks)
    assert cost > 0 and tokens["output"] > 0
    last = out.splitlines()[-1]
    assert re.fullmatch(
        rf"summary: 2 tasks: 1 succeeded, 1 failed · tokens in {tokens['input']}, out [0-9.]+k?,"
        rf" cache read [0-9.]+k, write [0-9.]+k · \${cost:.4f} · [0-9.]+s", last), last

    # --json: one last event of kind summary; it counts the tasks this run touched, not older ones.
    project.submit("mocked.yaml", "-i", "title=three")
    events = [json.loads(line) for line in project.tacx("--no-ui", "--exit-when-idle", "--json").stdout.splitlines()]
    summary = events[-1]
    assert [e for e in events if e["kind"] == "summary"] == [summary]
    three = project.show(3)
    assert summary["task_id"] is None and summary["stage"] is None
    assert summary["data"]["tasks"] == 1 and summary["data"]["states"] == {"succeeded": 1}
    assert summary["data"]["task_ids"] == [3] and summary["data"]["tokens"] == three["tokens"]
    assert summary["data"]["cost_usd"] == three["cost_usd"] and summary["data"]["unpriced"] == []
    assert 0 < summary["data"]["wall_seconds"] < 60

    # Interrupted (SIGTERM, as Ctrl-C): the summary still ends the output.
    task = project.submit("hanging.yaml", "-i", "title=four")
    coordinator = project.start("--no-ui")
    wait_for(lambda: project.query("SELECT COUNT(*) FROM daughters WHERE task_id = ?", task)[0][0], 20)
    coordinator.send_signal(signal.SIGTERM)
    out, _ = coordinator.communicate(timeout=30)
    assert coordinator.returncode == 130
    status = project.query("SELECT status FROM tasks WHERE id = ?", task)[0][0]
    assert re.search(rf"summary: 1 task: 1 {status.replace('_', ' ')} · .*[0-9.]+s\n\Z", out), out
