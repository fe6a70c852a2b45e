"""What a new user trips over in the first hour (issue 12), each with a test that fails
without its fix."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import Project

NAPS = """\
name: naps
inputs:
  n: {required: true}
stages:
  - {name: nap, provider: shell, run: 'sleep 0.3; echo "nap $TACX_INPUT_N"'}
"""


def test_a_closed_pipe_ends_the_output_quietly_and_the_work_goes_on(project: Project) -> None:
    project.workflow("naps", NAPS)
    for n in range(3):
        project.submit("naps.yaml", "-i", f"n={n}")
    proc = subprocess.Popen([sys.executable, "-m", "tacx", "--no-ui", "--exit-when-idle", "--json"], cwd=project.root,
                            env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"{")  # `| head -1`
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr.decode()
    assert [t["status"] for t in project.ls()] == ["succeeded"] * 3


def test_the_progress_line_counts_each_task_once() -> None:
    import io

    from tacx.cli.reporter import ConsoleReporter
    from tacx.engine.events import EngineEvent

    out = io.StringIO()
    reporter = ConsoleReporter(out, progress=True)
    reporter.set_queued(3, 0)  # the store: three queued, none running
    for task in (1, 2, 3):
        reporter(EngineEvent("task.started", task, None, {"title": "t", "workflow": "w"}))
    assert out.getvalue().rsplit("\r", 1)[-1].split("] ", 1)[1].startswith("0/3 done · 3 running · 0 queued")
    reporter(EngineEvent("task.succeeded", 1, None, {}))
    reporter.set_queued(0, 2)  # the store again, a moment later
    assert out.getvalue().rsplit("\r", 1)[-1].split("] ", 1)[1].startswith("1/3 done · 2 running · 0 queued")


def test_the_help_screen_shows_the_page_keys() -> None:
    from rich.text import Text

    from tacx.ui.screens import HELP

    assert "[ ]  previous / next page of tasks" in Text.from_markup(HELP).plain


def test_tacx_yaml_mistakes_have_line_column_and_did_you_mean(project: Project) -> None:
    (project.root / "tacx.yaml").write_text("max_worker: 2\nproviders:\n  claude: {limit: 2, cooldwn: 5m}\n")
    out = project.tacx("providers", check=2)
    assert "tacx.yaml:1:1: max_worker: unknown key 'max_worker' (did you mean 'max_workers'?)" in out.stderr
    assert "tacx.yaml:3:22: providers.claude.cooldwn: unknown key 'cooldwn' (did you mean 'cooldown'?)" in out.stderr
    assert "Traceback" not in out.stderr


def test_help_for_a_command_and_a_short_version_flag(project: Project) -> None:
    assert project.tacx("-V").stdout.startswith("tacx ")
    shown = project.tacx("help", "ls").stdout
    assert "--status" in shown and shown == project.tacx("ls", "--help").stdout
    assert "COMMAND" in project.tacx("help").stdout
    out = project.tacx("help", "lss", check=2)
    assert "no command 'lss'" in out.stderr and "ls" in out.stderr


def test_ls_lists_the_newest_first_with_tokens_and_cost_and_filters_by_age(project: Project) -> None:
    project.workflow("naps", NAPS)
    for n in range(3):
        project.submit("naps.yaml", "-i", f"n={n}")
    project.tacx("--no-ui", "--exit-when-idle")
    with project.db() as conn:  # the first task is two days old
        conn.execute("UPDATE tasks SET created_at = created_at - 2 * 86400 WHERE id = 1")
    lines = project.tacx("ls").stdout.splitlines()
    assert lines[0].split()[:8] == ["ID", "STATUS", "PRI", "WORKFLOW", "TIME", "TOKENS", "COST", "TITLE"]
    assert [int(line.split()[0]) for line in lines[1:]] == [3, 2, 1]
    assert [t["id"] for t in json.loads(project.tacx("ls", "--json", "--limit", "2").stdout)] == [3, 2]
    assert [t["id"] for t in json.loads(project.tacx("ls", "--json", "--since", "1d").stdout)] == [3, 2]
    assert "invalid duration" in project.tacx("ls", "--since", "soon", check=2).stderr


async def test_the_launch_form_refuses_a_task_that_can_never_start(project: Project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tacx.agents.registry import builtin_providers, never_starts, provider_kinds
    from tacx.home import Home
    from tacx.ui.control import TaskControl
    from tacx.ui.launch import LaunchRequest

    monkeypatch.setenv("PATH", "/nonexistent")  # no claude anywhere
    path = project.workflow("agent", "name: agent\nstages:\n  - {name: plan, provider: claude, prompt: hi}\n")
    said: list[str] = []
    providers = builtin_providers()
    control = TaskControl(Home(project.home), provider_kinds(providers), lambda text, **kw: said.append(text),
                          never_starts=lambda wf: never_starts(wf.stages, providers, lambda name: True, project.root))
    assert await control.launch(LaunchRequest("agent", path, {})) is None
    assert "stage plan can never start here: claude is not installed" in said[0]
    assert not (project.home / "tacx.db").exists() or project.ls() == []


def test_a_ctrl_c_while_tacx_imports_exits_130(project: Project) -> None:
    """Defect 8's cause: a ^C landing while tacx imports (pydantic-core building schemas)
    was wrapped in another error (exit 1) or tripped CPython's unhandled-interrupt flag
    (death by SIGINT, -2) though entry.py caught it. The ^C is held back until the imports
    are done, then ends the command with 130. The signal is sent once the process is
    inside tacx's imports (pydantic-core's library mapped), at a few points after that."""
    import signal
    import time
    from pathlib import Path

    for extra in (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06):
        # As from a terminal: ^C's default disposition. A test run started in the background
        # by a shell (`pytest &`) inherits SIGINT ignored, and a process that starts with it
        # ignored rightly keeps ignoring it until its loop takes it over.
        proc = subprocess.Popen([sys.executable, "-m", "tacx", "--no-ui"], cwd=project.root, env=project.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        maps = Path(f"/proc/{proc.pid}/maps")
        deadline = time.monotonic() + 20
        while "pydantic_core" not in maps.read_text() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(extra)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, (extra, proc.returncode, err[-500:])
        assert "Traceback" not in err


def test_output_to_a_full_disk_is_said_and_other_scripts_digits_are_no_id(project: Project) -> None:
    """`tacx ls > /dev/full` said "internal error (a bug in tacx)" (exit 70); it says the
    output could not be written (exit 2). `tacx show ٣` showed task 3: int() reads any
    script's digits; an id is written in ASCII digits."""
    project.workflow("w", "name: w\nstages:\n  - {name: s, provider: shell, run: 'true'}\n")
    project.submit("w.yaml")
    for args in (["ls"], ["show", "1"], ["completion", "bash"]):
        with open("/dev/full", "w") as full:
            out = subprocess.run([sys.executable, "-m", "tacx", *args], cwd=project.root, env=project.env,
                                 stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
        assert out.returncode == 2 and "the output could not be written: No space left on device" in out.stderr, out.stderr
        assert "bug" not in out.stderr
    for arabic_three in ("\u0663", "\uff13"):  # ARABIC-INDIC DIGIT THREE, FULLWIDTH DIGIT THREE
        assert "not a whole number" in project.tacx("show", arabic_three, check=2).stderr
