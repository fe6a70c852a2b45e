"""How each agent provider turns a stage into argv: the prompt one element, options mapped
between agents, resume by session id, nothing through a shell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tacx.agents.registry import configured_providers
from tacx.agents.agent import RESUME_NOTE
from tacx.agents.base import StageContext
from tacx.settings import Settings
from tacx.workflow.model import StageSpec

PROMPT = "Fix `it`; $(rm -rf /) \"now\"\nsecond line"


def ctx(tmp_path: Path, resume: str | None = None) -> StageContext:
    return StageContext(
        task_id=7, trace_id="t", stage="build", attempt=2, workspace=tmp_path, prompt=PROMPT,
        script_path=tmp_path / "build.2.script", resume_session=resume,
    )


def argv_of(provider: str, tmp_path: Path, resume: str | None = None, settings: Settings | None = None, **stage) -> list[str]:
    spec = StageSpec(name="build", provider=[provider], prompt="p", **stage)
    argv = configured_providers(settings)[provider].launch(spec, ctx(tmp_path, resume)).argv
    assert argv[:4] == ["/bin/sh", "-c", argv[2], "tacx-agent"]  # the status wrapper passes "$@" through
    assert '"$@"' in argv[2]
    return argv[4:]


def test_permission_modes_are_translated_between_agents(tmp_path: Path) -> None:
    claude = argv_of("claude", tmp_path, permission_mode="workspace-write")
    assert claude[claude.index("--permission-mode") + 1] == "acceptEdits"
    codex = argv_of("codex", tmp_path, permission_mode="acceptEdits")
    assert codex[codex.index("-s") + 1] == "workspace-write"
    gemini = argv_of("gemini", tmp_path, permission_mode="bypassPermissions")
    assert gemini[gemini.index("--approval-mode") + 1] == "yolo"
    with pytest.raises(ValueError, match="codex takes permission_mode"):
        argv_of("codex", tmp_path, permission_mode="whatever")


def test_resume_passes_the_session_and_says_it_was_interrupted(tmp_path: Path) -> None:
    claude = argv_of("claude", tmp_path, resume="s-1")
    assert claude[claude.index("--resume") + 1] == "s-1"
    assert claude[claude.index("-p") + 1] == RESUME_NOTE + PROMPT
    codex = argv_of("codex", tmp_path, resume="th-1", extra_args=["--foo"])
    assert codex[-4:] == ["--foo", "resume", "th-1", RESUME_NOTE + PROMPT]
    gemini = argv_of("gemini", tmp_path, resume="g-1")
    assert gemini[gemini.index("--resume") + 1] == "g-1"
    assert "--resume" not in argv_of("claude", tmp_path)


def test_mock_runs_the_shipped_simulator_and_writes_what_the_stage_expects(tmp_path: Path) -> None:
    argv = argv_of("mock", tmp_path, expects=["plan.md"], extra_args=["--think", "1"])
    assert argv[0] == sys.executable and argv[1].endswith("tacx/agents/mock_agent.py") and Path(argv[1]).is_file()
    assert argv[-4:] == ["--write", "plan.md", "--think", "1"]
    assert argv[argv.index("-p") + 1] == PROMPT


def test_custom_provider_leaves_out_empty_optional_items(tmp_path: Path) -> None:
    settings = Settings.model_validate({"providers": {"house": {
        "argv": ["house", "--json", "{{ prompt }}", "{{ session_id }}", ["--model", "{{ model }}"], "--ws={{ workspace }}"],
        "parser": "codex-json",
    }}})
    assert argv_of("house", tmp_path, settings=settings)[1:] == ["--json", PROMPT, f"--ws={tmp_path}"]
    argv = argv_of("house", tmp_path, settings=settings, resume="s", model="m")
    assert argv[1:] == ["--json", RESUME_NOTE + PROMPT, "s", "--model", "m", f"--ws={tmp_path}"]
    assert configured_providers(settings)["house"].resumable


def test_the_status_wrapper_keeps_the_agents_exit_and_outlives_a_group_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    from tacx.agents.agent import wrapped

    status = tmp_path / "status"
    env = {**os.environ, "TACX_STATUS_FILE": str(status)}
    assert subprocess.run(wrapped(["sh", "-c", "exit 3"]), env=env).returncode == 3
    assert status.read_text().strip() == "3"
    # The agent takes 0.3 s to end after SIGTERM and exits 7: that is what is recorded.
    agent = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), sys.exit(7)))\ntime.sleep(30)"
    proc = subprocess.Popen(wrapped([sys.executable, "-c", agent]), env=env, start_new_session=True)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 7 and status.read_text().strip() == "7"
    # An agent killed by a signal: the wrapper ends by the same signal.
    proc = subprocess.Popen(wrapped(["sleep", "30"]), env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM


@pytest.mark.parametrize("provider", ["shell", "bash", "python", "claude", "mock"])
def test_the_workflow_command_is_the_real_argv_unwrapped(provider: str, tmp_path: Path) -> None:
    """What people read is the command the workflow asked for; taken back off a real argv
    (a daughter found by its marker after a crash) it is the same command."""
    from tacx.agents.scripts import workflow_command

    script = provider in ("shell", "bash", "python")
    spec = StageSpec(name="build", provider=[provider], **({"run": "echo 'a b'\necho c"} if script else {"prompt": "p"}))
    launch = configured_providers(None)[provider].launch(spec, ctx(tmp_path))
    for path, text in launch.files.items():
        path.write_text(text)
    assert launch.command is not None and launch.command != launch.argv
    assert "trap" not in " ".join(launch.command) and "tacx-agent" not in launch.command
    if script:
        assert launch.command[1:] == ["-c", "echo 'a b'\necho c"]
    assert workflow_command(launch.argv) == launch.command
    assert workflow_command(["python3", "build.py", "--fast"]) == ["python3", "build.py", "--fast"]  # not tacx's
