"""The `mock` provider's simulator (tacx/agents/mock_agent.py) and the fake agent CLIs (tests/fakes/).

Everything runs as real subprocesses with stdin on /dev/null, as tacx runs agents.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
FAKES = REPO / "tests" / "fakes"
REFERENCE = Path("/work/shared/reference/agent-cli-formats.md")
NOTICE = "[mock agent] This is tacx's simulator, not a real model: "
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_", "TACX_"))}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["PATH"] = str(FAKES) + os.pathsep + e.get("PATH", "")
    e.update(extra)
    return e


def run(cmd: list[str], cwd: Path, environ: dict[str, str] | None = None,
        timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, cwd=cwd, env=env() if environ is None else environ, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, check=False)


def mock_cmd(*args: str, prompt: str = "Write a plan for the login page\nwith details") -> list[str]:
    return [sys.executable, "-m", "tacx.agents.mock_agent", "-p", prompt, "--output-format", "stream-json", "--verbose",
            *args]


def run_mock(cwd: Path, *args: str, prompt: str | None = None, think: str = "0",
             timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    extra = () if "--think" in args else ("--think", think)
    cmd = mock_cmd(*extra, *args) if prompt is None else mock_cmd(*extra, *args, prompt=prompt)
    return run(cmd, cwd, timeout=timeout)


def events(proc: subprocess.CompletedProcess[bytes]) -> list[dict]:
    lines = proc.stdout.decode("utf-8").splitlines()
    assert lines, proc.stderr.decode()
    return [json.loads(line) for line in lines]  # every line must be JSON


def distinct_usage(evs: list[dict]) -> tuple[dict[str, int], dict[str, dict]]:
    by_id: dict[str, list[dict]] = defaultdict(list)
    for e in evs:
        if e["type"] == "assistant":
            by_id[e["message"]["id"]].append(e["message"]["usage"])
    for msg_id, usages in by_id.items():
        assert all(u == usages[0] for u in usages), msg_id
    total = {k: sum(u[0][k] for u in by_id.values()) for k in USAGE_KEYS}
    return total, {k: v[0] for k, v in by_id.items()}


def sonnet_cost(u: dict[str, int]) -> float:
    return (u["input_tokens"] * 3 + u["output_tokens"] * 15 + u["cache_read_input_tokens"] * 0.30
            + u["cache_creation_input_tokens"] * 3.75) / 1e6


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, timeout: float = 3.0) -> None:
    """Until pid is gone or a zombie (an orphan is reaped by init, maybe late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still running")


# ------------------------------------------------------------------ the mock agent


def test_stream_is_claude_stream_json_from_a_simulator(tmp_path: Path) -> None:
    proc = run_mock(tmp_path)
    assert proc.returncode == 0, proc.stderr
    evs = events(proc)
    init = evs[0]
    assert (init["type"], init["subtype"]) == ("system", "init")
    assert init["simulator"] is True and init["model"] == "mock-sonnet" and init["cwd"] == str(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", init["session_id"])
    texts = [b["text"] for e in evs if e["type"] == "assistant" for b in e["message"]["content"] if b["type"] == "text"]
    assert texts[0].startswith(NOTICE)
    assert sum(t.startswith(NOTICE) for t in texts) == 1
    assert any(e["type"] == "user" for e in evs)
    result = evs[-1]
    assert result["type"] == "result" and result["subtype"] == "success" and result["is_error"] is False
    assert result["session_id"] == init["session_id"]
    assert "Write a plan for the login page" in result["result"]
    assert isinstance(result["duration_ms"], int)
    assert [e["type"] for e in evs].count("result") == 1


def test_repeated_ids_share_usage_and_result_is_their_sum(tmp_path: Path) -> None:
    evs = events(run_mock(tmp_path, "--turns", "4"))
    total, by_id = distinct_usage(evs)
    lines_per_id = defaultdict(int)
    for e in evs:
        if e["type"] == "assistant":
            lines_per_id[e["message"]["id"]] += 1
    assert len(by_id) == 5  # 4 turns + the final message
    assert sum(n >= 2 for n in lines_per_id.values()) == 4  # text + tool_use lines share each turn's id
    for u in by_id.values():
        assert 0 < u["input_tokens"] < 100 and u["cache_read_input_tokens"] >= 1000
        assert u["cache_creation_input_tokens"] >= 100 and 10 <= u["output_tokens"] <= 1000
    result = evs[-1]
    assert {k: result["usage"][k] for k in USAGE_KEYS} == total
    assert result["num_turns"] == 5
    assert result["total_cost_usd"] == pytest.approx(sonnet_cost(total), abs=1e-9)
    (model, mu), = result["modelUsage"].items()
    assert model == "mock-sonnet" and mu["costUSD"] == result["total_cost_usd"]
    assert (mu["inputTokens"], mu["outputTokens"], mu["cacheReadInputTokens"], mu["cacheCreationInputTokens"]) == (
        total["input_tokens"], total["output_tokens"], total["cache_read_input_tokens"],
        total["cache_creation_input_tokens"])


def test_figures_are_deterministic_per_prompt_and_seed(tmp_path: Path) -> None:
    def figures(*args: str, prompt: str = "same prompt") -> tuple:
        r = events(run_mock(tmp_path, *args, prompt=prompt))[-1]
        return r["usage"], r["total_cost_usd"]

    assert figures() == figures()
    assert figures() != figures(prompt="another prompt")
    assert figures("--seed", "7") == figures("--seed", "7", prompt="another prompt")
    base, scaled = figures()[0], figures("--tokens-scale", "2")[0]
    for k in USAGE_KEYS:
        assert abs(scaled[k] - 2 * base[k]) <= 10


def test_write_creates_files_from_the_prompt(tmp_path: Path) -> None:
    proc = run_mock(tmp_path, "--write", "plan.md", "--write", "src/pkg/mod.py", "--write", "notes/out.txt",
                    "--write", "extra.md")
    assert proc.returncode == 0
    plan = (tmp_path / "plan.md").read_text()
    assert plan.startswith("# ") and "Write a plan for the login page" in plan
    mod = (tmp_path / "src/pkg/mod.py").read_text()
    compile(mod, "mod.py", "exec")
    assert "def mod(" in mod
    assert "login page" in (tmp_path / "notes/out.txt").read_text()
    assert (tmp_path / "extra.md").exists()
    writes = [b["input"]["file_path"] for e in events(proc) if e["type"] == "assistant"
              for b in e["message"]["content"] if b["type"] == "tool_use" and b["name"] == "Write"]
    assert str(tmp_path / "plan.md") in writes


@pytest.mark.parametrize(
    "args, code, subtype, is_error",
    [
        (["--fail"], 1, "error_during_execution", True),
        (["--api-error"], 1, "success", True),
        (["--exit-code", "3"], 3, "success", False),
        (["--max-turns", "2"], 1, "error_max_turns", True),
        (["--max-budget-usd", "0.000001"], 1, "error_max_budget_usd", True),
    ],
)
def test_outcomes(tmp_path: Path, args: list[str], code: int, subtype: str, is_error: bool) -> None:
    proc = run_mock(tmp_path, *args)
    assert proc.returncode == code, proc.stderr
    evs = events(proc)
    result = evs[-1]
    assert result["type"] == "result" and result["subtype"] == subtype and result["is_error"] is is_error
    if "--api-error" in args:
        assert result["result"] == "API Error: 401 Invalid API key · Please run /login"
        assert result["total_cost_usd"] == 0
        assert evs[1]["message"]["content"][0]["text"].startswith(NOTICE)
    total, _ = distinct_usage(evs)
    assert {k: result["usage"][k] for k in USAGE_KEYS} == total


def test_no_result_and_custom_result(tmp_path: Path) -> None:
    proc = run_mock(tmp_path, "--no-result")
    assert proc.returncode == 0
    evs = events(proc)
    assert all(e["type"] != "result" for e in evs) and evs[-1]["type"] == "assistant"
    r = events(run_mock(tmp_path, "--result", "All good."))[-1]
    assert r["result"] == "All good."


def test_resume_keeps_the_session(tmp_path: Path) -> None:
    sid = "0c0ffee0-1234-4abc-8def-0123456789ab"
    evs = events(run_mock(tmp_path, "--resume", sid, "--model", "claude-sonnet-4-5"))
    assert evs[0]["session_id"] == sid == evs[-1]["session_id"]
    assert evs[0]["model"] == "claude-sonnet-4-5" and "claude-sonnet-4-5" in evs[-1]["modelUsage"]
    first_text = next(b["text"] for e in evs if e["type"] == "assistant" for b in e["message"]["content"]
                      if b["type"] == "text")
    assert first_text.startswith(NOTICE) and f"resumed session {sid}" in first_text


def test_rate_limit_events_then_normal_finish(tmp_path: Path) -> None:
    proc = run_mock(tmp_path, "--rate-limit")
    assert proc.returncode == 0
    evs = events(proc)
    rl = [e for e in evs if e["type"] == "rate_limit_event"]
    assert rl and rl[0]["rate_limit_info"]["status"] == "rejected"
    assert any(e["type"] == "system" and e.get("subtype") == "api_retry" and e["error_status"] == 429 for e in evs)
    assert evs[-1]["subtype"] == "success"


def test_usage_errors_like_claude(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tacx.agents.mock_agent", "-p", "hi", "--output-format", "stream-json"]
    proc = run(cmd, tmp_path)
    assert proc.returncode == 1 and proc.stdout == b""
    assert b"Error: When using --print, --output-format=stream-json requires --verbose" in proc.stderr
    proc = run([*cmd[:-1], "text", "--verbose"], tmp_path)
    assert proc.returncode == 1 and proc.stdout == b"" and b"stream-json" in proc.stderr
    proc = run([sys.executable, "-m", "tacx.agents.mock_agent", "--output-format", "stream-json", "--verbose"], tmp_path)
    assert proc.returncode == 1 and b"--print" in proc.stderr


def test_runs_as_a_plain_script_too(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "tacx" / "agents" / "mock_agent.py"), "-p", "hi", "--output-format", "stream-json",
           "--verbose", "--think", "0", "--turns", "1"]
    proc = run(cmd, tmp_path, {"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    assert events(proc)[-1]["num_turns"] == 2


def test_prompt_as_positional_after_a_bare_print_flag(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tacx.agents.mock_agent", "-p", "--output-format", "stream-json", "--verbose",
           "--think", "0", "Positional prompt"]
    proc = run(cmd, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Positional prompt" in events(proc)[-1]["result"]


def test_values_starting_with_a_dash(tmp_path: Path) -> None:
    proc = run_mock(tmp_path, "--turns", "0", "--result", "-done", prompt="---\ntitle: x\n---\nDo it")
    assert proc.returncode == 0, proc.stderr
    assert events(proc)[-1]["result"] == "-done"


def test_think_spreads_the_time(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = run_mock(tmp_path, "--think", "0.5")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0
    assert 0.45 <= elapsed < 10
    assert events(proc)[-1]["duration_ms"] >= 450


def test_hang_dies_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(mock_cmd("--hang", "--think", "0"), cwd=tmp_path, env=env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        second = json.loads(proc.stdout.readline())
        assert first["subtype"] == "init" and second["type"] == "assistant"
        time.sleep(0.2)
        assert proc.poll() is None  # hanging
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=1) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_grandchild_escapes_the_process_group(tmp_path: Path) -> None:
    proc = run_mock(tmp_path, "--grandchild")
    pid_file = tmp_path / "grandchild.pid"
    assert pid_file.exists(), proc.stderr
    pid = int(pid_file.read_text())
    try:
        assert proc.returncode == 0 and events(proc)[-1]["subtype"] == "success"
        os.kill(pid, 0)  # still alive after the agent exited
        assert os.getsid(pid) == pid != os.getsid(0)
        assert os.getpgid(pid) == pid
    finally:
        kill_pid(pid)
    wait_gone(pid)


def test_flood_writes_megabytes(tmp_path: Path) -> None:
    proc = run_mock(tmp_path, "--flood", "5", "--turns", "1")
    assert proc.returncode == 0
    assert len(proc.stdout) >= 5 * 1024 * 1024
    evs = events(proc)
    total, by_id = distinct_usage(evs)
    assert len(by_id) == 2
    assert {k: evs[-1]["usage"][k] for k in USAGE_KEYS} == total


# ------------------------------------------------------------------ the fake CLIs


def reference_blocks() -> list[list[str]]:
    if not REFERENCE.exists():
        pytest.skip("agent-cli-formats.md not available")
    return [b.splitlines() for b in re.findall(r"```\n(.*?)```", REFERENCE.read_text(), re.DOTALL)]


def run_fake(tool: str, *args: str, cwd: Path, timeout: float = 20, **env_extra: str) -> subprocess.CompletedProcess[bytes]:
    return run([tool, *args], cwd, env(**env_extra), timeout)


CLAUDE = ("-p", "hi", "--output-format", "stream-json", "--verbose")


@pytest.mark.parametrize("tool, args, index", [
    ("claude", CLAUDE, 0),
    ("codex", ("exec", "--json", "hi"), 1),
    ("gemini", ("-p", "hi", "-o", "stream-json"), 2),
])
def test_fake_sample_is_the_reference_verbatim(tmp_path: Path, tool: str, args: tuple, index: int) -> None:
    expected = reference_blocks()[index]
    proc = run_fake(tool, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == expected


@pytest.mark.parametrize("tool, version", [
    ("claude", "2.0.14 (Claude Code)"), ("codex", "codex-cli 0.46.0"), ("gemini", "0.9.0"), ("aider", "aider 0.86.1"),
])
def test_fake_versions(tmp_path: Path, tool: str, version: str) -> None:
    proc = run_fake(tool, "--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.decode().strip() == version


def json_lines(proc: subprocess.CompletedProcess[bytes]) -> list[dict]:
    out = []
    for raw in proc.stdout.split(b"\n"):
        try:
            out.append(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError):
            continue
    return out


@pytest.mark.parametrize("scenario, code, totals, cost", [
    ("sample", 0, (8, 275, 40000, 12600), 0.063399),
    ("repeated", 0, (8, 400, 35500, 4000), 0.031674),
    ("api_error", 1, (0, 0, 0, 0), 0),
    ("rate_limited", 1, (3, 20, 0, 5000), 0.019059),
])
def test_fake_claude_scenarios(tmp_path: Path, scenario: str, code: int, totals: tuple, cost: float) -> None:
    proc = run_fake("claude", *CLAUDE, cwd=tmp_path, FAKE_SCENARIO=scenario)
    assert proc.returncode == code, proc.stderr
    evs = json_lines(proc)
    result = evs[-1]
    assert result["type"] == "result"
    assert tuple(result["usage"][k] for k in USAGE_KEYS) == totals
    assert result["total_cost_usd"] == pytest.approx(cost, abs=1e-9)
    assert sonnet_cost(result["usage"]) == pytest.approx(cost, abs=1e-9)
    if scenario != "sample":  # the sample's final message is not shown, so its live sum is smaller
        total, _ = distinct_usage(evs)
        assert tuple(total[k] for k in USAGE_KEYS) == totals
    if scenario == "repeated":
        assert b"Warning: something\n" in proc.stdout and b"\xff\xfe" in proc.stdout
    if scenario == "api_error":
        assert result["subtype"] == "success" and result["is_error"] is True
    if scenario == "rate_limited":
        assert any(e["type"] == "rate_limit_event" and e["rate_limit_info"]["status"] == "rejected" for e in evs)
        assert any(e.get("subtype") == "api_retry" and e["error_status"] == 429 for e in evs)


def test_fake_claude_no_result_hang_and_verbose(tmp_path: Path) -> None:
    proc = run_fake("claude", *CLAUDE, cwd=tmp_path, FAKE_SCENARIO="no_result")
    assert proc.returncode == 0 and all(e["type"] != "result" for e in json_lines(proc))
    proc = run_fake("claude", "-p", "hi", "--output-format", "stream-json", cwd=tmp_path)
    assert proc.returncode == 1 and b"requires --verbose" in proc.stderr
    proc = run_fake("claude", "-p", "hi", "--output-format", "json", "--verbose", cwd=tmp_path)
    assert json.loads(proc.stdout)[-1]["type"] == "result"
    hang = subprocess.Popen(["claude", *CLAUDE], cwd=tmp_path, env=env(FAKE_SCENARIO="hang"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert json.loads(hang.stdout.readline())["subtype"] == "init"
        hang.terminate()
        assert hang.wait(timeout=2) == -signal.SIGTERM
    finally:
        if hang.poll() is None:
            hang.kill()
            hang.wait()
        hang.stdout.close()


def test_fake_claude_grandchild(tmp_path: Path) -> None:
    pid_file = tmp_path / "gc.pid"
    proc = run_fake("claude", *CLAUDE, cwd=tmp_path, FAKE_SCENARIO="grandchild", FAKE_GRANDCHILD_PID=str(pid_file),
                    FAKE_STEPS="3", FAKE_INTERVAL="0.01")
    pid = int(pid_file.read_text())
    try:
        assert proc.returncode == 0
        os.kill(pid, 0)
        assert os.getsid(pid) == pid
        evs = json_lines(proc)
        total, by_id = distinct_usage(evs)
        assert len(by_id) == 3 and total["cache_creation_input_tokens"] == 300000
        assert evs[-1]["total_cost_usd"] == pytest.approx(3 * 0.381756, abs=1e-9)
    finally:
        kill_pid(pid)
    wait_gone(pid)


def test_fake_argv_file_and_writes(tmp_path: Path) -> None:
    argv_file = tmp_path / "argv.jsonl"
    work = tmp_path / "ws"
    work.mkdir()
    run_fake("claude", *CLAUDE, "--model", "m 1", cwd=work, FAKE_ARGV_FILE=str(argv_file), FAKE_WRITE="a.txt,d/b.txt")
    run_fake("codex", "exec", "--json", "hi", cwd=work, FAKE_ARGV_FILE=str(argv_file))
    entries = [json.loads(line) for line in argv_file.read_text().splitlines()]
    assert [e["tool"] for e in entries] == ["claude", "codex"]
    assert entries[0]["argv"] == [*CLAUDE, "--model", "m 1"]
    assert entries[0]["cwd"] == str(work)
    assert entries[0]["stdin_kind"] == "devnull" and entries[0]["stdin_eof"] is True
    assert entries[0]["stdin_isatty"] is False
    assert str(work) in (work / "a.txt").read_text() and (work / "d/b.txt").exists()


@pytest.mark.parametrize("scenario, code, final", [
    ("sample", 0, (24763, 24448, 122)),
    ("two_turns", 0, (25000, 20000, 700)),
    ("failed", 1, None),
    ("interrupted", 0, None),
])
def test_fake_codex(tmp_path: Path, scenario: str, code: int, final: tuple | None) -> None:
    proc = run_fake("codex", "exec", "--json", "hi", cwd=tmp_path, FAKE_SCENARIO=scenario)
    assert proc.returncode == code
    evs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert evs[0]["type"] == "thread.started"
    done = [e["usage"] for e in evs if e["type"] == "turn.completed"]
    if final is None:
        assert not done
    else:
        u = done[-1]
        assert (u["input_tokens"], u["cached_input_tokens"], u["output_tokens"]) == final
    if scenario == "failed":
        assert "429" in evs[-1]["error"]["message"] and evs[-1]["type"] == "turn.failed"
    if scenario == "interrupted":
        assert [e["type"] for e in evs] == ["thread.started", "turn.started"]


def test_fake_gemini_error_and_aider(tmp_path: Path) -> None:
    proc = run_fake("gemini", "-p", "hi", "-o", "stream-json", cwd=tmp_path, FAKE_SCENARIO="error")
    assert proc.returncode == 1
    evs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert evs[-1]["status"] == "error" and any(e["type"] == "error" for e in evs)
    log = tmp_path / "run.jsonl"
    proc = run_fake("aider", "--message", "hi", "--yes-always", "--no-pretty", "--analytics-log", str(log),
                    "--no-analytics", cwd=tmp_path)
    assert proc.returncode == 0
    assert b"Tokens: 2.1k sent, 300 received. Cost: $0.01 message, $0.05 session." in proc.stdout
    sends = [json.loads(line)["properties"] for line in log.read_text().splitlines()
             if json.loads(line)["event"] == "message_send"]
    assert sum(p["prompt_tokens"] for p in sends) == 9513
    assert sum(p["completion_tokens"] for p in sends) == 1400
    assert sends[-1]["total_cost"] == pytest.approx(sum(p["cost"] for p in sends)) == pytest.approx(0.049539)


def test_tacx_mock_pace_reaches_the_simulator_as_a_factor_on_its_thinking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Daughters never see TACX_* variables, so the mock provider passes TACX_MOCK_PACE on as
    --pace; a value that is no number from 0 to 100 is left out (full speed), never an error."""
    from tacx.agents import mock, mock_agent

    for given, passed in (("0.1", ["--pace", "0.1"]), ("0", ["--pace", "0.0"]), ("abc", []), ("-1", []),
                          ("nan", []), ("1e9", []), ("", [])):
        monkeypatch.setenv("TACX_MOCK_PACE", given)
        assert mock._pace() == passed, given
    args = mock_agent.build_parser().parse_args(["--think", "2", "--turns", "3", "--pace", "0.5", "-p", "x"])
    args.prompt = "x"
    assert mock_agent.Agent(args).pause == 0.25  # 2 s x 0.5 over 4 slices
    with pytest.raises(SystemExit):
        mock_agent.build_parser().parse_args(["--pace", "101", "-p", "x"])
