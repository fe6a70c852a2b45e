"""Agent stages end to end: fake agent CLIs on PATH print the reference streams, the real
tacx runs them, and tokens, cost and errors in `tacx show --json` match figures computed
by hand (the fakes' docstrings give each scenario's totals)."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Project, wait_for

FAKES = Path(__file__).parent / "fakes"
SAMPLE_SESSION = "8d45afe0-771b-4803-8379-491dd9455365"
INJECTION = "\"; rm -rf / $(touch pwned) `touch pwned` && echo"


@pytest.fixture
def agents(project: Project) -> Project:
    """The project with the fake agent CLIs first on PATH and their argv recorded."""
    project.env["PATH"] = f"{FAKES}{os.pathsep}{project.env['PATH']}"
    project.env["FAKE_ARGV_FILE"] = str(project.root / "argv.jsonl")
    return project


def calls(project: Project) -> list[dict[str, Any]]:
    path = project.root / "argv.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def one_stage(project: Project, provider: str, scenario: str = "sample", extra: str = "", name: str = "agent") -> str:
    """A one-stage workflow file; ``extra`` adds keys to the stage (one per line)."""
    text = (
        f"name: {name}\ninputs:\n  title: {{required: true}}\nstages:\n  - name: work\n"
        f"    provider: {provider}\n    prompt: \"Fix it: {{{{ inputs.title }}}}\"\n"
        f"    env: {{FAKE_SCENARIO: {scenario}}}\n"
    )
    text += "".join(f"    {line}\n" for line in extra.splitlines() if line.strip())
    (project.root / f"{name}.yaml").write_text(text)
    return f"{name}.yaml"


def stage_of(task: dict[str, Any], name: str = "work") -> dict[str, Any]:
    return next(s for s in task["stages"] if s["name"] == name)


def tokens(input: int, output: int, cache_read: int, cache_write: int) -> dict[str, int]:
    return {"input": input, "output": output, "cache_read": cache_read, "cache_write": cache_write}


# -- claude -----------------------------------------------------------------------------------


def test_claude_command_line_and_reference_stream(agents: Project) -> None:
    agents.workflow(
        "c",
        """
        name: c
        inputs:
          title: {required: true}
        stages:
          - name: work
            provider: claude
            prompt: "Fix it: {{ inputs.title }}"
            model: claude-sonnet-4-5
            max_turns: 5
            allowed_tools: [Read, "Bash(git diff:*)"]
            permission_mode: acceptEdits
            extra_args: [--append-system-prompt, be brief]
        """,
    )
    agents.tacx("run", "c.yaml", "-i", f"title={INJECTION}", "--no-ui")
    (call,) = calls(agents)
    assert call["argv"] == [
        "-p", f"Fix it: {INJECTION}", "--output-format", "stream-json", "--verbose",
        "--model", "claude-sonnet-4-5", "--max-turns", "5", "--allowedTools", "Read,Bash(git diff:*)",
        "--permission-mode", "acceptEdits", "--append-system-prompt", "be brief",
    ]
    assert call["stdin_kind"] == "devnull" and call["stdin_eof"]
    assert not (agents.root / "pwned").exists()
    task = agents.show(1)
    work = stage_of(task)
    # Final totals come from the result line, not from the live sum (3/8/14000/12000).
    assert work["tokens"] == tokens(8, 275, 40000, 12600) == task["tokens"]
    assert work["cost_usd"] == pytest.approx(0.063399) and task["cost_usd"] == pytest.approx(0.063399)
    assert work["session_id"] == SAMPLE_SESSION
    assert work["model"] == "claude-sonnet-4-5-20250929"
    assert (work["turns"], work["api_retries"]) == (2, 1)
    assert work["result"] == "All 3 tests pass."
    kinds = [e["kind"] for e in task["events"]]
    assert "agent.session" in kinds and "agent.retry" in kinds and "agent.result" in kinds
    # The usage rows sum to the final figures: the live message and the result's correction,
    # one per model of the result's modelUsage.
    rows = agents.query("SELECT message_id, input_tokens, cache_read_tokens, cost_usd FROM usage ORDER BY id")
    assert [r["message_id"] for r in rows] == ["msg_01A", "result:claude-sonnet-4-5-20250929"]
    assert sum(r["cache_read_tokens"] for r in rows) == 40000
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(0.063399)


def test_claude_repeated_message_ids_count_once_and_noise_is_skipped(agents: Project) -> None:
    agents.tacx("run", one_stage(agents, "claude", "repeated"), "-i", "title=x", "--no-ui")
    work = stage_of(agents.show(1))
    assert work["tokens"] == tokens(8, 400, 35500, 4000)  # counting every line would give 17/690/69500/9000
    assert work["cost_usd"] == pytest.approx(0.031674)
    assert work["api_retries"] == 1 and work["turns"] == 3
    ids = [r[0] for r in agents.query("SELECT message_id FROM usage ORDER BY id")]
    assert ids == ["msg_01RepA", "msg_01RepB", "msg_01RepC"]
    log = Path(work["log_path"]).read_bytes()
    assert b"Warning: something" in log  # non-JSON lines stay in the log


def test_claude_api_error_with_subtype_success_fails_the_stage(agents: Project) -> None:
    agents.tacx("run", one_stage(agents, "claude", "api_error"), "-i", "title=x", "--no-ui", check=1)
    task = agents.show(1)
    work = stage_of(task)
    assert work["status"] == "failed"
    assert "Invalid API key" in work["error"] and "/login" in work["error"]
    assert "Invalid API key" in task["error"]


def test_claude_stream_without_result_fails_and_keeps_live_figures(agents: Project) -> None:
    agents.tacx("run", one_stage(agents, "claude", "no_result"), "-i", "title=x", "--no-ui", check=1)
    work = stage_of(agents.show(1))
    assert work["status"] == "failed" and work["exit_code"] == 0
    assert "without a result" in work["error"]
    assert work["tokens"] == tokens(4, 60, 9000, 3000)
    assert work["cost_usd"] == pytest.approx(0.014862)  # computed from sonnet prices


def test_mock_agent_runs_without_any_cli_installed(project: Project) -> None:
    project.workflow(
        "m",
        """
        name: m
        workspace: dir
        stages:
          - name: plan
            provider: mock
            prompt: Write plan.md
            expects: [plan.md]
            extra_args: [--think, "0.3"]
          - name: broken
            provider: mock
            prompt: Pretend the API key is wrong
            extra_args: [--think, "0.1", --api-error]
        """,
    )
    project.tacx("run", "m.yaml", "--no-ui", check=1)
    task = project.show(1)
    plan, broken = stage_of(task, "plan"), stage_of(task, "broken")
    assert plan["status"] == "succeeded" and plan["tokens"]["output"] > 0 and plan["cost_usd"] > 0
    assert (project.home / "trees" / "1" / "plan.md").is_file()
    assert broken["status"] == "failed" and "Invalid API key" in broken["error"]


# -- codex, gemini, aider ------------------------------------------------------------------------


def test_codex_command_line_running_totals_and_computed_cost(agents: Project) -> None:
    wf = one_stage(agents, "codex", "two_turns", extra="model: gpt-5-codex\npermission_mode: workspace-write\n")
    agents.tacx("run", wf, "-i", "title=x", "--no-ui")
    (call,) = calls(agents)
    argv = call["argv"]
    assert argv[:3] == ["exec", "--json", "-C"] and argv[-1] == "Fix it: x"
    assert "--skip-git-repo-check" in argv and argv[argv.index("-m") + 1] == "gpt-5-codex"
    assert argv[argv.index("-s") + 1] == "workspace-write"
    work = stage_of(agents.show(1))
    # The last running total, not the sum of both turns (7000/28000/1000).
    assert work["tokens"] == tokens(5000, 700, 20000, 0)
    assert work["cost_usd"] == pytest.approx(0.01575)  # (5000*1.25 + 700*10 + 20000*0.125) / 1e6


def test_codex_reference_stream(agents: Project) -> None:
    agents.tacx("run", one_stage(agents, "codex", "sample"), "-i", "title=x", "--no-ui")
    work = stage_of(agents.show(1))
    assert work["tokens"] == tokens(24763 - 24448, 122, 24448, 0)
    # No model given: priced as gpt-5-codex, codex's default.
    assert work["cost_usd"] == pytest.approx((315 * 1.25 + 122 * 10 + 24448 * 0.125) / 1e6)
    assert work["session_id"] == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert work["result"] == "Yes, README.md is in the root."


def test_codex_interrupted_turn_fails(agents: Project) -> None:
    agents.tacx("run", one_stage(agents, "codex", "interrupted"), "-i", "title=x", "--no-ui", check=1)
    work = stage_of(agents.show(1))
    assert work["status"] == "failed" and "interrupted" in work["error"]


def test_gemini_reference_stream_and_error(agents: Project) -> None:
    agents.tacx("run", one_stage(agents, "gemini", "sample", name="g1"), "-i", "title=x", "--no-ui")
    (call,) = calls(agents)
    assert call["argv"] == ["-p", "Fix it: x", "-o", "stream-json"]
    work = stage_of(agents.show(1))
    # output = total_tokens - input_tokens = 25113 - 24939 = 174 (thinking tokens included)
    assert work["tokens"] == tokens(3676, 174, 21263, 0)
    assert work["cost_usd"] == pytest.approx(0.008992875)  # gemini-2.5-pro from the init line
    assert work["model"] == "gemini-2.5-pro" and work["result"] == "All 3 tests pass."
    agents.tacx("run", one_stage(agents, "gemini", "error", name="g2"), "-i", "title=x", "--no-ui", check=1)
    failed = stage_of(agents.show(2))
    assert failed["status"] == "failed" and failed["exit_code"] == 1 and failed["error"]


def test_aider_exact_figures_from_its_analytics_log(agents: Project) -> None:
    agents.tacx("run", one_stage(agents, "aider", "sample", extra="model: sonnet\n"), "-i", "title=x", "--no-ui")
    (call,) = calls(agents)
    argv = call["argv"]
    assert argv[:2] == ["--message", "Fix it: x"]
    assert {"--yes-always", "--no-auto-commits", "--no-pretty", "--no-stream"} <= set(argv)
    assert argv[argv.index("--analytics-log") + 1].endswith("work.1.analytics.jsonl")
    work = stage_of(agents.show(1))
    assert (work["tokens"]["input"], work["tokens"]["output"]) == (9513, 1400)
    assert work["cost_usd"] == pytest.approx(0.049539)


# -- budgets, live usage, routing -----------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_budget_stop_kills_the_whole_tree_and_says_why(agents: Project) -> None:
    agents.env["FAKE_GRANDCHILD_PID"] = str(agents.root / "grandchild.pid")
    wf = one_stage(agents, "claude", "grandchild", extra="")
    text = (agents.root / wf).read_text().replace("stages:", "budget: {usd: 1.00}\nstages:", 1)
    text += "  - name: after\n    provider: bash\n    run: touch after-ran\n"
    (agents.root / wf).write_text(text)
    agents.tacx("run", wf, "-i", "title=x", "--no-ui", check=1, timeout=60)
    task = agents.show(1)
    assert task["status"] == "failed"
    assert task["error"].startswith("budget exceeded: cost $")
    assert "passed the budget of $1.00 by $" in task["error"]
    work = stage_of(task)
    assert work["status"] == "failed" and "budget exceeded" in work["error"]
    assert work["cost_usd"] > 1.0 and work["cost_usd"] < 10  # stopped within a few messages
    assert stage_of(task, "after")["status"] == "skipped" and not (agents.root / "after-ran").exists()
    grandchild = int((agents.root / "grandchild.pid").read_text())
    wait_for(lambda: _gone(grandchild), 10, what="the grandchild (own session) to be ended")
    assert not agents.marked_processes()
    assert any(e["kind"] == "task.budget_exceeded" for e in task["events"])


def test_tokens_budget_from_tacx_yaml(agents: Project) -> None:
    (agents.root / "tacx.yaml").write_text("budget: {tokens: 50000}\n")
    agents.tacx("run", one_stage(agents, "claude", "sample"), "-i", "title=x", "--no-ui", check=1)
    task = agents.show(1)
    # 3 + 8 + 14000 + 12000 live, then 8 + 275 + 40000 + 12600 = 52883 from the result.
    assert task["error"] == (
        "budget exceeded: 52,883 tokens (input + output + cache) passed the budget of 50,000 by 2,883"
    )


def test_live_usage_reaches_the_store_while_the_agent_runs(agents: Project) -> None:
    agents.env["FAKE_GRANDCHILD_PID"] = str(agents.root / "grandchild.pid")
    wf = one_stage(agents, "claude", "grandchild")
    task_id = agents.submit(wf, "-i", "title=x")
    agents.start("--no-ui")

    def live() -> dict[str, Any] | None:
        task = agents.show(task_id)
        work = stage_of(task)
        return work if work["status"] == "running" and work["tokens"]["cache_write"] >= 300000 else None

    work = wait_for(live, 20, interval=0.2, what="live tokens while the stage runs")
    assert work["session_id"] == "55555555-2222-4333-8444-555555555555"
    assert work["tokens"]["cache_write"] % 100000 == 0  # whole messages, each counted once
    agents.tacx("cancel", str(task_id))
    wait_for(lambda: agents.show(task_id)["status"] == "cancelled", 20)
    grandchild = int((agents.root / "grandchild.pid").read_text())
    wait_for(lambda: _gone(grandchild), 10)


def test_routing_skips_a_missing_cli_and_cools_down_a_rate_limited_one(agents: Project) -> None:
    agents.workflow(
        "limited",
        """
        name: limited
        stages:
          - {name: work, provider: claude, prompt: hi, env: {FAKE_SCENARIO: rate_limited}}
        """,
    )
    agents.workflow(
        "either",
        """
        name: either
        stages:
          - {name: work, provider: [claude, mock], prompt: hi, extra_args: [--think, "0.1"]}
        """,
    )
    (agents.root / "tacx.yaml").write_text("providers:\n  claude: {cooldown: 5m}\n")
    first = agents.submit("limited.yaml", "--priority", "1")
    second = agents.submit("either.yaml")
    agents.tacx("--no-ui", "--exit-when-idle", "--max-workers", "1", check=1)
    assert stage_of(agents.show(first))["status"] == "failed"
    assert "429" in stage_of(agents.show(first))["error"] or "limit" in stage_of(agents.show(first))["error"]
    chosen = [e for e in agents.show(second)["events"] if e["kind"] == "provider.chosen"]
    assert chosen[0]["data"]["provider"] == "mock"
    assert "claude is cooling down after a rate limit" in chosen[0]["data"]["reason"]
    report = json.loads(agents.tacx("providers", "--json").stdout)
    claude = next(p for p in report if p["name"] == "claude")
    assert claude["cooling_down"] and claude["cooling_down"]["until"] > time.time() + 60
    assert stage_of(agents.show(first))["rate_limits"] >= 1

    # Without the fakes on PATH, claude is not installed and the reason says so.
    agents.env["PATH"] = agents.env["PATH"].split(os.pathsep, 1)[1]
    third = agents.submit("either.yaml")
    agents.tacx("--no-ui", "--exit-when-idle")
    chosen = [e for e in agents.show(third)["events"] if e["kind"] == "provider.chosen"]
    assert chosen[0]["data"]["provider"] == "mock" and "claude is not installed" in chosen[0]["data"]["reason"]


def test_provider_defined_in_tacx_yaml(agents: Project) -> None:
    (agents.root / "tacx.yaml").write_text(
        textwrap.dedent(
            f"""
            providers:
              house-agent:
                argv: [{FAKES / 'claude'}, -p, "{{{{ prompt }}}}", --output-format, stream-json, --verbose,
                       [--model, "{{{{ model }}}}"]]
                parser: claude-stream-json
                limit: 1
                env: {{FAKE_SCENARIO: repeated}}
            """
        )
    )
    agents.workflow("h", "name: h\nstages:\n  - {name: work, provider: house-agent, prompt: do it}\n")
    agents.tacx("validate", "h.yaml")
    agents.tacx("run", "h.yaml", "--no-ui")
    (call,) = calls(agents)
    assert call["argv"] == ["-p", "do it", "--output-format", "stream-json", "--verbose"]  # no model: group left out
    work = stage_of(agents.show(1))
    assert work["provider"] == "house-agent" and work["tokens"] == tokens(8, 400, 35500, 4000)
    report = json.loads(agents.tacx("providers", "--json").stdout)
    house = next(p for p in report if p["name"] == "house-agent")
    assert house["defined_in"] == "tacx.yaml" and house["limit"] == 1 and house["usage"]["stages"] == 1


def test_bad_provider_settings_exit_2(agents: Project) -> None:
    (agents.root / "tacx.yaml").write_text("providers:\n  x: {argv: [x, '{{ nope }}']}\n")
    proc = agents.tacx("providers", check=2)
    assert "unknown name 'nope'" in proc.stderr


def test_providers_reports_versions_and_usage(agents: Project) -> None:
    agents.tacx("run", one_stage(agents, "claude", "sample"), "-i", "title=x", "--no-ui")
    report = json.loads(agents.tacx("providers", "--json").stdout)
    by_name = {p["name"]: p for p in report}
    assert by_name["claude"]["installed"] and by_name["claude"]["version"] == "2.0.14 (Claude Code)"
    assert by_name["codex"]["version"].startswith("codex-cli")
    usage = by_name["claude"]["usage"]
    assert usage["stages"] == 1 and usage["success_rate"] == 1.0 and usage["median_seconds"] is not None
    assert usage["tokens"] == tokens(8, 275, 40000, 12600) and usage["cost_usd"] == pytest.approx(0.063399)
    text = agents.tacx("providers").stdout
    assert "2.0.14 (Claude Code)" in text and "claude" in text


def test_a_hanging_cli_version_does_not_hang_providers(agents: Project, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    slow = bin_dir / "gemini"
    slow.write_text("#!/bin/sh\nsleep 60\n")
    slow.chmod(0o755)
    agents.env["PATH"] = f"{bin_dir}{os.pathsep}{agents.env['PATH']}"
    started = time.monotonic()
    report = json.loads(agents.tacx("providers", "--json", timeout=30).stdout)
    assert time.monotonic() - started < 25
    gemini = next(p for p in report if p["name"] == "gemini")
    assert gemini["installed"] and "no answer" in gemini["version"]


# -- the demo ------------------------------------------------------------------------------------


def test_demo_on_a_fresh_home_succeeds(project: Project) -> None:
    project.env["TACX_MOCK_PACE"] = "0.1"  # the simulator's thinking at a tenth: the same streams
    proc = project.tacx("demo", "--no-ui", timeout=120)
    assert "simulator" in proc.stderr
    tasks = project.ls()
    assert len(tasks) == 4 and all(t["status"] == "succeeded" for t in tasks)
    for t in tasks:
        assert t["cost_usd"] > 0 and t["tokens"]["output"] > 0
        task = project.show(t["id"])
        assert [s["name"] for s in task["stages"]] == ["plan", "build", "test", "review"]
        assert stage_of(task, "review")["result"] == "APPROVED"
        assert (project.home / "trees" / str(t["id"]) / "change.py").is_file()
    cost = sum(t["cost_usd"] for t in tasks)
    assert proc.stdout.splitlines()[-1].startswith("summary: 4 tasks: 4 succeeded · tokens in ")  # the demo's end
    assert proc.stdout.splitlines()[-1].split(" · ")[-2] == f"${cost:.4f}"


# -- handoff, loops, recovery -----------------------------------------------------------------


def test_agent_result_hands_off_and_a_loop_carries_the_failing_result(agents: Project) -> None:
    agents.workflow(
        "loop",
        """
        name: loop
        stages:
          - name: build
            provider: claude
            prompt: "Build. Notes from the check: [{{ stages.check.result }}]"
          - name: check
            provider: bash
            run: |
              echo "build said: $TACX_RESULT_BUILD"
              echo "still red: 2 tests fail"
              exit 1
            loop: {back_to: build, max: 2}
        """,
    )
    agents.tacx("run", "loop.yaml", "--no-ui", check=1)
    prompts = [c["argv"][c["argv"].index("-p") + 1] for c in calls(agents)]
    assert prompts == [
        "Build. Notes from the check: []",
        "Build. Notes from the check: [still red: 2 tests fail]",
        "Build. Notes from the check: [still red: 2 tests fail]",
    ]
    task = agents.show(1)
    assert stage_of(task, "check")["status"] == "failed"
    log = Path(stage_of(task, "check")["log_path"]).read_text()
    assert "build said: All 3 tests pass." in log
    # Three attempts of build, each counted: 3 x the sample's final figures.
    assert stage_of(task, "build")["tokens"] == tokens(24, 825, 120000, 37800)
    assert stage_of(task, "build")["cost_usd"] == pytest.approx(3 * 0.063399)


def test_agent_that_ends_while_tacx_is_down_is_counted_once(agents: Project) -> None:
    """kill -9 of tacx while an agent runs; it finishes meanwhile. The next start reads its
    exit status from the wrapper's file and its whole log again, counting nothing twice."""
    agents.env["FAKE_SLEEP"] = "0"
    agents.workflow(
        "slow",
        """
        name: slow
        stages:
          - name: work
            provider: claude
            prompt: go
            env: {FAKE_SCENARIO: grandchild, FAKE_STEPS: "12", FAKE_INTERVAL: "0.25"}
        """,
    )
    agents.env["FAKE_GRANDCHILD_PID"] = str(agents.root / "grandchild.pid")
    task_id = agents.submit("slow.yaml")
    coordinator = agents.start("--no-ui")
    wait_for(lambda: stage_of(agents.show(task_id))["tokens"]["cache_write"] >= 200000, 20, interval=0.1)
    coordinator.kill()
    coordinator.wait()
    daughter = stage_of(agents.show(task_id))["daughters"][0]["pid"]
    wait_for(lambda: _gone(daughter), 20, what="the agent to finish on its own")
    agents.tacx("--no-ui", "--exit-when-idle")
    task = agents.show(task_id)
    work = stage_of(task)
    assert task["status"] == "succeeded" and work["attempt"] == 1 and work["exit_code"] == 0
    # 12 messages: input 2, output 50, cache_read 20000, cache_write 100000 each.
    assert work["tokens"] == tokens(24, 600, 240000, 1200000)
    assert work["cost_usd"] == pytest.approx(12 * 0.381756)
    ids = [r[0] for r in agents.query("SELECT message_id FROM usage WHERE stage_id = (SELECT id FROM stages)")]
    assert len(ids) == len(set(ids))
    grandchild = int((agents.root / "grandchild.pid").read_text())
    wait_for(lambda: _gone(grandchild), 10)


def test_mock_agent_hang_meets_idle_timeout_and_flood_is_logged_whole(project: Project) -> None:
    project.workflow(
        "m",
        """
        name: m
        stages:
          - name: flood
            provider: mock
            prompt: flood
            extra_args: [--think, "0.1", --flood, "8"]
          - name: hang
            provider: mock
            prompt: hang
            idle_timeout: 2s
            extra_args: [--think, "0.1", --hang]
        """,
    )
    project.tacx("run", "m.yaml", "--no-ui", check=1)
    task = project.show(1)
    flood, hang = stage_of(task, "flood"), stage_of(task, "hang")
    assert flood["status"] == "succeeded" and Path(flood["log_path"]).stat().st_size > 8 * 2**20
    assert flood["tokens"]["output"] > 0 and flood["session_id"]
    assert hang["status"] == "timed_out" and "idle_timeout" in hang["error"]
    assert not project.marked_processes()


def test_a_retried_task_gets_its_budget_anew(project: Project) -> None:
    project.workflow(
        "b",
        """
        name: b
        budget: {tokens: 1000}
        stages:
          - {name: work, provider: mock, prompt: spend, extra_args: [--think, "3", --turns, "6"]}
        """,
    )
    project.tacx("run", "b.yaml", "--no-ui", check=1)
    first = project.show(1)
    assert stage_of(first)["status"] == "failed"  # stopped while it ran
    assert first["error"].startswith("budget exceeded:") and "since the last retry" not in first["error"]
    project.tacx("retry", "1")
    # Runs again (and would hang if the worker of a task stopped at once were never given back).
    project.tacx("--no-ui", "--exit-when-idle", "--max-workers", "1", check=1, timeout=60)
    again = project.show(1)
    assert again["status"] == "failed" and "since the last retry" in again["error"]
    assert stage_of(again)["attempt"] == 2 and again["tokens"]["output"] > first["tokens"]["output"]


def test_a_429_the_agent_retried_by_itself_does_not_rest_the_provider(agents: Project, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\",\"model\":\"claude-sonnet-4-5\"}'\n"
        "echo '{\"type\":\"system\",\"subtype\":\"api_retry\",\"attempt\":1,\"retry_delay_ms\":100,\"error_status\":429}'\n"
        "echo '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\",\"session_id\":\"s\","
        "\"total_cost_usd\":0.001,\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}'\n"
    )
    fake.chmod(0o755)
    agents.env["PATH"] = f"{bin_dir}{os.pathsep}{agents.env['PATH']}"
    agents.workflow(
        "two",
        """
        name: two
        stages:
          - {name: first, provider: claude, prompt: a}
          - {name: second, provider: [claude, mock], prompt: b}
        """,
    )
    agents.tacx("run", "two.yaml", "--no-ui")
    task = agents.show(1)
    assert [stage_of(task, n)["provider"] for n in ("first", "second")] == ["claude", "claude"]
    assert stage_of(task, "first")["api_retries"] == 1
    assert not any(e["kind"] == "provider.cooldown" for e in task["events"])
