"""Providers that say when they cannot work (issue 10, point 9).

Login checks read what each CLI reads offline. Their cases are the ones run against the real
CLIs with an empty HOME: `claude auth status` of Claude Code 2.1.197 (no credentials: loggedIn
false; ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN, ANTHROPIC_AUTH_TOKEN, CLAUDE_CODE_USE_BEDROCK,
settings.json env, apiKeyHelper, primaryApiKey in ~/.claude.json: loggedIn true; a claude.ai
login in .credentials.json: true with the user:inference scope, false without), `codex login
status` and `codex exec` of codex-cli 0.171.0 (OPENAI_API_KEY alone is not used), and gemini-cli
0.61.0 (no auth method, oauth-personal without cached credentials, Vertex AI without a project:
exit 41).

Then the engine: an agent surely logged out is passed over (`provider.chosen` says why), a
stage whose agent failed on its credentials or could not reach its API goes to the next
candidate without spending a retry, and `tacx providers` and the dashboard say since when.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tacx.agents.aider import aider_login
from tacx.agents.claude import claude_login
from tacx.agents.codex import codex_login
from tacx.agents.gemini import gemini_login
from tacx.agents.health import TROUBLE_HOLD, ProviderHealth, failure_kind
from tacx.agents.login import Where
from tests.conftest import Project

FAKES = Path(__file__).parent / "fakes"


def where(home: Path, project: Path | None = None, **env: str) -> Where:
    home.mkdir(parents=True, exist_ok=True)
    return Where(env, home, project)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- login: claude --------------------------------------------------------------------------


def test_claude_login_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tacx.agents.claude.sys.platform", "linux")
    monkeypatch.setattr("tacx.agents.claude.MANAGED_SETTINGS", tmp_path / "no-managed.json")
    home = tmp_path / "h"
    out = claude_login(where(home))
    assert out.state == "no" and "claude auth login" in out.how and str(home / ".claude") in out.how
    assert claude_login(where(home, ANTHROPIC_API_KEY="sk-ant-x")).how == "ANTHROPIC_API_KEY is set"
    assert claude_login(where(home, CLAUDE_CODE_OAUTH_TOKEN="t")).state == "yes"
    assert claude_login(where(home, ANTHROPIC_AUTH_TOKEN="t")).state == "yes"
    assert claude_login(where(home, CLAUDE_CODE_USE_BEDROCK="1")).how == "Amazon Bedrock (CLAUDE_CODE_USE_BEDROCK)"
    assert claude_login(where(home, CLAUDE_CODE_USE_BEDROCK="0")).state == "no"
    assert claude_login(where(home, ANTHROPIC_API_KEY="  ")).state == "no"  # blank is not a key

    settings = write(home / ".claude" / "settings.json", '{"env": {"ANTHROPIC_AUTH_TOKEN": "x"}}')
    assert claude_login(where(home)).how == "ANTHROPIC_AUTH_TOKEN is set (settings.json env)"
    settings.write_text('{"apiKeyHelper": "echo sk-x"}')
    assert claude_login(where(home)).how == "apiKeyHelper in settings.json"
    settings.write_text("{not json")  # a broken settings file is not a login, and not a crash
    assert claude_login(where(home)).state == "no"
    project = tmp_path / "proj"  # the project's own settings, shared and local
    write(project / ".claude" / "settings.local.json", '{"apiKeyHelper": "vault read -field=key anthropic"}')
    assert claude_login(where(home, project)).state == "yes"
    write(project / ".claude" / "settings.local.json", "{}")
    write(project / ".claude" / "settings.json", '{"env": {"CLAUDE_CODE_USE_VERTEX": "1"}}')
    assert claude_login(where(home, project)).how == "Google Vertex AI (CLAUDE_CODE_USE_VERTEX)"

    write(home / ".claude.json", '{"primaryApiKey": "sk-ant-x"}')
    assert claude_login(where(home)).state == "yes"
    (home / ".claude.json").unlink()

    creds = write(home / ".claude" / ".credentials.json",
                  '{"claudeAiOauth": {"accessToken": "a", "refreshToken": "r", "expiresAt": 1,'
                  ' "scopes": ["user:inference"], "subscriptionType": "max"}}')
    assert claude_login(where(home)).how == "claude.ai login (max)"
    creds.write_text('{"claudeAiOauth": {"accessToken": "a", "refreshToken": "r", "expiresAt": 1}}')
    out = claude_login(where(home))
    assert out.state == "no" and "user:inference" in out.how

    other = tmp_path / "cfg"  # CLAUDE_CONFIG_DIR moves ~/.claude
    write(other / ".credentials.json", '{"claudeAiOauth": {"accessToken": "a", "scopes": ["user:inference"]}}')
    assert claude_login(where(home, CLAUDE_CONFIG_DIR=str(other))).state == "yes"


def test_claude_login_on_macos_cannot_see_the_keychain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tacx.agents.claude.sys.platform", "darwin")
    monkeypatch.setattr("tacx.agents.claude.MANAGED_SETTINGS", tmp_path / "no-managed.json")
    out = claude_login(where(tmp_path / "h"))
    assert out.state == "unknown" and out.problem is None  # unknown never keeps a provider from work


# -- login: codex, gemini, aider ------------------------------------------------------------


def test_codex_login_sources(tmp_path: Path) -> None:
    home = tmp_path / "h"
    out = codex_login(where(home))
    assert out.state == "no" and "codex login" in out.how
    out = codex_login(where(home, OPENAI_API_KEY="sk-x"))  # codex exec 0.171 does not read it; older builds did
    assert out.state == "unknown" and "CODEX_API_KEY" in out.how
    assert codex_login(where(home, CODEX_API_KEY="sk-x")).how == "CODEX_API_KEY is set"
    auth = write(home / ".codex" / "auth.json", '{"OPENAI_API_KEY": "sk-test"}')
    assert codex_login(where(home)).state == "yes"
    auth.write_text('{"OPENAI_API_KEY": null, "tokens": {"id_token": "x", "access_token": "y"}}')
    assert codex_login(where(home)).how == "ChatGPT login"
    auth.write_text("{}")
    assert codex_login(where(home)).state == "unknown"
    auth.unlink()
    config = write(home / ".codex" / "config.toml", 'model = "qwen3"\nmodel_provider = "ollama"\n')
    assert codex_login(where(home)).state == "unknown"
    config.write_text('cli_auth_credentials_store = "keyring"\n')  # the login is in the OS keyring
    assert codex_login(where(home)).state == "unknown"
    config.write_text('cli_auth_credentials_store = "file"\n')
    assert codex_login(where(home)).state == "no"
    elsewhere = tmp_path / "codex-home"
    write(elsewhere / "auth.json", '{"OPENAI_API_KEY": "sk-test"}')
    assert codex_login(where(home, CODEX_HOME=str(elsewhere))).state == "yes"


def test_gemini_login_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tacx.agents.gemini.SYSTEM_SETTINGS", tmp_path / "no-system.json")
    home, project = tmp_path / "h", tmp_path / "proj"
    project.mkdir()
    out = gemini_login(where(home, project))
    assert out.state == "no" and "GEMINI_API_KEY" in out.how
    assert gemini_login(where(home, project, GEMINI_API_KEY="k")).state == "yes"
    out = gemini_login(where(home, project, GOOGLE_GENAI_USE_VERTEXAI="true"))
    assert out.state == "no" and "GOOGLE_CLOUD_PROJECT" in out.how
    assert gemini_login(where(home, project, GOOGLE_GENAI_USE_VERTEXAI="true", GOOGLE_API_KEY="k")).state == "yes"
    assert gemini_login(where(home, project, GOOGLE_GENAI_USE_VERTEXAI="true", GOOGLE_CLOUD_PROJECT="p",
                              GOOGLE_CLOUD_LOCATION="us-central1")).state == "yes"

    write(project / ".env", "# keys\nexport GEMINI_API_KEY='abc'\n")  # gemini reads the project's .env
    assert gemini_login(where(home, project)).how == "GEMINI_API_KEY (.env)"
    (project / ".env").unlink()
    write(home / ".gemini" / ".env", "GOOGLE_GENAI_USE_VERTEXAI=true\nGOOGLE_API_KEY=k\n")
    assert gemini_login(where(home, project)).how == "Vertex AI"
    (home / ".gemini" / ".env").unlink()

    settings = write(home / ".gemini" / "settings.json", '{"security": {"auth": {"selectedType": "oauth-personal"}}}')
    out = gemini_login(where(home, project))
    assert out.state == "no" and "interactive" in out.how
    write(home / ".gemini" / "oauth_creds.json", '{"access_token": "x"}')
    assert gemini_login(where(home, project)).state == "yes"
    settings.write_text('{"selectedAuthType": "gemini-api-key"}')  # the older, flat settings
    out = gemini_login(where(home, project))
    assert out.state == "no" and "GEMINI_API_KEY is not set" in out.how
    write(project / ".gemini" / "settings.json", '{"security": {"auth": {"selectedType": "vertex-ai"}}}')
    assert "Vertex AI" in gemini_login(where(home, project)).how  # the project's settings win over the user's
    # settings with comments and a trailing comma, as gemini-cli accepts them
    write(project / ".gemini" / "settings.json",
          '{\n  // the team uses Vertex\n  "security": {"auth": {"selectedType": "vertex-ai",}},\n}\n')
    assert gemini_login(where(home, project, GOOGLE_API_KEY="k")).how == "Vertex AI"
    write(project / ".gemini" / "settings.json", '{"security": {"auth": {"useExternal": true}}}')
    assert gemini_login(where(home, project)).state == "unknown"
    write(project / ".gemini" / "settings.json", "{ this is not settings")  # unreadable: it may choose one
    assert gemini_login(where(home, project)).state == "unknown"
    (project / ".gemini" / "settings.json").unlink()
    elsewhere = tmp_path / "gemini-home"  # GEMINI_CLI_HOME moves ~/.gemini
    write(elsewhere / ".gemini" / "settings.json", '{"security": {"auth": {"selectedType": "oauth-personal"}}}')
    write(elsewhere / ".gemini" / "oauth_creds.json", '{"access_token": "x"}')
    (home / ".gemini" / "settings.json").unlink()
    assert gemini_login(where(home, project, GEMINI_CLI_HOME=str(elsewhere))).state == "yes"


def test_aider_login_sources(tmp_path: Path) -> None:
    home, project = tmp_path / "h", tmp_path / "proj"
    project.mkdir()
    assert aider_login(where(home, project)).state == "no"
    assert aider_login(where(home, project, DEEPSEEK_API_KEY="k")).how == "DEEPSEEK_API_KEY is set"
    write(project / ".env", "ANTHROPIC_API_KEY=sk-ant\n")
    assert aider_login(where(home, project)).state == "yes"
    (project / ".env").unlink()
    write(home / ".aider.conf.yml", "model: sonnet\nanthropic-api-key: sk-ant\n")
    assert aider_login(where(home, project)).state == "yes"
    (home / ".aider.conf.yml").unlink()
    write(home / ".aider" / "oauth-keys.env", "OPENROUTER_API_KEY=sk-or-x\n")  # saved by its browser login
    assert aider_login(where(home, project)).state == "yes"
    (home / ".aider" / "oauth-keys.env").unlink()
    assert aider_login(where(home, project, OLLAMA_API_BASE="http://127.0.0.1:11434")).state == "yes"
    write(project / ".aider.conf.yml", "model: ollama_chat/qwen3\n")  # a local model needs no key
    assert aider_login(where(home, project)).state == "unknown"


# -- what a failure says about access -------------------------------------------------------


def test_failure_kinds_from_what_agents_really_print() -> None:
    def kind(own: str | None = None, lines: tuple[str, ...] = (), *, cause: str | None = None, code: int | None = 1,
             auth: frozenset[int] = frozenset()) -> str | None:
        found = failure_kind(cause=cause, exit_code=code, auth_exit_codes=auth, own_error=own, cli_lines=list(lines))
        return found[0] if found else None

    # claude 2.1.197 with no credentials, and with a key the API refused (the parser's error of its result)
    assert kind("the agent reported an error (subtype success, is_error true): Not logged in · Please run /login") == "auth"
    assert kind("the agent reported an error (subtype success, is_error true, API status 401):"
                " Invalid API key · Please run /login") == "auth"
    # codex: the API refused the key
    assert kind("unexpected status 401 Unauthorized: Missing bearer or basic authentication in header") == "auth"
    # gemini 0.61.0: exit 41 and one stderr line; and a key the API refused, JSON in JSON
    gemini = ("Please set an Auth method in your /h/.gemini/settings.json or specify one of the following"
              " environment variables before running: GEMINI_API_KEY, GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_GENAI_USE_GCA")
    assert kind(lines=(gemini,), code=41, auth=frozenset({41})) == "auth"
    assert kind(code=41, auth=frozenset({41})) == "auth"
    nested = json.dumps({"error": {"code": 400, "message": json.dumps(
        {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}})}})
    found = failure_kind(cause=None, exit_code=1, auth_exit_codes=frozenset(), own_error=nested, cli_lines=[])
    assert found is not None and found[0] == "auth" and found[1].startswith("API key not valid.")
    # aider: litellm's own error line
    assert kind(lines=("litellm.AuthenticationError: AnthropicException - invalid x-api-key",)) == "auth"
    # no answer from the API
    assert kind(cause="unreachable: cannot reach the API: Connection error.") == "network"
    assert kind("API Error: Connection error.") == "network"

    # The work failed, not the access: what tools, tests and servers print stays theirs.
    work = ("AssertionError: expected status 401", "requests.exceptions.HTTPError: 401 Client Error: Unauthorized",
            "GET /admin -> 403 Forbidden", "npm ERR! 401 Unauthorized", "MCP server 'github' failed: HTTP 401 Unauthorized",
            "gh: token has expired", "docker: unauthorized: authentication required", "status: 403",
            "connection refused", "ECONNREFUSED 127.0.0.1:5432", "Could not resolve host: pypi.org",
            "psycopg2.OperationalError: connection refused")
    assert kind(lines=work) is None
    assert kind("the agent reached its turn limit (max_turns)", lines=work) is None
    assert kind("exited with code 1") is None


def test_only_the_clis_own_lines_are_read_for_its_access(tmp_path: Path) -> None:
    """A log longer than the tail read has its first line cut; aider's chat is not its errors."""
    from tacx.agents.registry import builtin_providers
    from tacx.engine.outcome import TAIL_BYTES, _cli_lines

    providers = builtin_providers()
    cut = b'401 Client Error: Unauthorized for url"}]}}\n' + b'{"type":"assistant"}\n' * (TAIL_BYTES // 21)
    assert _cli_lines(cut[-TAIL_BYTES:], providers["claude"], 8) == []
    chat = (b"I will return 401 Unauthorized when the session token has expired.\n"
            b"psycopg2.OperationalError: connection refused\n"
            b"litellm.AuthenticationError: AnthropicException - invalid x-api-key\n")
    assert _cli_lines(chat, providers["aider"], 8) == ["litellm.AuthenticationError: AnthropicException - invalid x-api-key"]


def test_health_marks_hold_and_clear(tmp_path: Path) -> None:
    health = ProviderHealth()
    first = health.failed("claude", "auth", "Invalid API key", now=1000.0)
    again = health.failed("claude", "auth", "Invalid API key", now=1100.0)
    assert first["since"] == again["since"] == 1000.0 and again["last"] == 1100.0
    assert health.held("claude", now=1100.0 + TROUBLE_HOLD - 1).startswith("claude is failing on auth since")
    assert health.held("claude", now=1100.0 + TROUBLE_HOLD + 1) is None  # tried again: the key may be fixed
    assert health.failed("claude", "network", "Connection error.", now=1200.0)["since"] == 1200.0  # a new kind
    assert health.succeeded("claude") == {"provider": "claude", "state": "ok", "since": pytest.approx(time.time(), abs=5)}
    assert health.succeeded("claude") is None and health.trouble("claude") is None

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, ts REAL, task_id INTEGER, kind TEXT, data TEXT)")
    now = time.time()
    rows = [(now - 10, json.dumps({"provider": "codex", "state": "network", "since": now - 10, "detail": "x"})),
            (now - 9, json.dumps({"provider": "gemini", "state": "auth", "since": now - 9, "detail": "y"})),
            (now - 8, json.dumps({"provider": "gemini", "state": "ok", "since": now - 8})),
            (now - 7, "not json"), (now - 6, json.dumps({"provider": "aider", "state": "auth"}))]
    conn.executemany("INSERT INTO events (ts, task_id, kind, data) VALUES (?, NULL, 'provider.health', ?)", rows)
    restored = ProviderHealth()
    restored.restore(conn)
    assert restored.names() == ["codex"] and restored.trouble("codex").kind == "network"


# -- the engine -----------------------------------------------------------------------------


def agents(project: Project, tmp_path: Path, *, logged_out: tuple[str, ...] = ()) -> Project:
    """The fake CLIs first on PATH, HOME empty, and every agent holding a key but those in
    ``logged_out``."""
    project.env["PATH"] = f"{FAKES}{os.pathsep}{project.env['PATH']}"
    home = tmp_path / "user-home"
    home.mkdir(exist_ok=True)
    project.env["HOME"] = str(home)
    names = {"claude": ["ANTHROPIC_API_KEY"], "codex": ["CODEX_API_KEY"], "gemini": ["GEMINI_API_KEY"],
             "aider": ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"]}
    for agent in logged_out:
        for name in names[agent]:
            project.env.pop(name, None)
    return project


def two_candidates(project: Project, name: str = "pair", retries: int = 0) -> str:
    project.workflow(name, f"""
        name: {name}
        inputs:
          title: {{required: true}}
        stages:
          - name: work
            provider: [claude, codex]
            prompt: "Fix it: {{{{ inputs.title }}}}"
            retries: {retries}
        """)
    return f"{name}.yaml"


def events(project: Project, task: int, kind: str) -> list[dict[str, Any]]:
    return [json.loads(r["data"]) for r in
            project.query("SELECT data FROM events WHERE task_id = ? AND kind = ? ORDER BY id", task, kind)]


def test_a_logged_out_agent_is_passed_over_and_the_choice_says_why(project: Project, tmp_path: Path) -> None:
    agents(project, tmp_path, logged_out=("claude",))
    out = project.tacx("run", two_candidates(project), "-i", "title=t", "--no-ui")
    task = project.ls()[0]["id"]
    assert project.show(task)["status"] == "succeeded", out.stdout
    (chosen,) = events(project, task, "provider.chosen")
    assert chosen["provider"] == "codex"
    assert "claude: not logged in: no ANTHROPIC_API_KEY" in chosen["reason"]
    assert not events(project, task, "stage.failed")  # claude never ran


def test_the_only_candidate_logged_out_is_refused_by_run_and_stops_a_headless_run(project: Project, tmp_path: Path) -> None:
    agents(project, tmp_path, logged_out=("gemini",))
    project.workflow("g", """
        name: g
        stages:
          - {name: work, provider: gemini, prompt: hi}
        """)
    out = project.tacx("run", "g.yaml", "--no-ui", check=2)  # refused: nothing queued
    assert "stage work can never start here: gemini: no auth method: set GEMINI_API_KEY" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout and project.ls() == []
    task = project.submit("g.yaml")  # queued for later: a headless run stops saying why
    out = project.tacx("--no-ui", "--exit-when-idle", check=1)
    assert "gemini: no auth method: set GEMINI_API_KEY" in out.stdout + out.stderr
    project.env["GEMINI_API_KEY"] = "k"  # once logged in, the same task runs
    project.tacx("--no-ui", "--exit-when-idle")
    assert project.show(task)["status"] == "succeeded"


def test_a_key_in_the_stage_env_or_check_login_false_lets_a_logged_out_agent_run(
    project: Project, tmp_path: Path
) -> None:
    agents(project, tmp_path, logged_out=("claude",))
    project.workflow("keyed", """
        name: keyed
        stages:
          - name: work
            provider: claude
            prompt: hi
            env: {ANTHROPIC_API_KEY: "sk-ant-from-the-workflow"}
        """)
    project.tacx("run", "keyed.yaml", "--no-ui")
    project.workflow("plain", """
        name: plain
        stages:
          - {name: work, provider: claude, prompt: hi}
        """)
    (project.root / "tacx.yaml").write_text("providers:\n  claude: {check_login: false}\n")
    project.tacx("run", "plain.yaml", "--no-ui")
    assert [t["status"] for t in project.ls()] == ["succeeded", "succeeded"]
    entries = {e["name"]: e for e in json.loads(project.tacx("providers", "--json").stdout)}
    assert entries["claude"]["login"]["state"] == "unknown" and "check_login: false" in entries["claude"]["login"]["how"]


def test_a_stage_refused_on_auth_goes_to_the_next_candidate_without_spending_a_retry(
    project: Project, tmp_path: Path
) -> None:
    agents(project, tmp_path)  # claude holds a key the API refuses: not known before it runs
    project.env["FAKE_SCENARIO_CLAUDE"] = "not_logged_in"
    out = project.tacx("run", two_candidates(project, retries=0), "-i", "title=t", "--no-ui")
    task = project.ls()[0]["id"]
    shown = project.show(task)
    assert shown["status"] == "succeeded", out.stdout
    stage = shown["stages"][0]
    assert stage["provider"] == "codex" and stage["attempt"] == 2
    (failover,) = events(project, task, "stage.failover")
    assert failover["from"] == "claude" and failover["trouble"] == "auth"
    assert "Not logged in · Please run /login" in failover["error"]
    first, second = events(project, task, "provider.chosen")
    assert first["provider"] == "claude" and second["provider"] == "codex"
    assert "claude failing on auth in attempt 1 of this stage" in second["reason"]

    entries = {e["name"]: e for e in json.loads(project.tacx("providers", "--json").stdout)}
    health = entries["claude"]["health"]
    assert health["state"] == "failing on auth" and "Not logged in" in health["detail"]
    assert time.time() - 120 < health["since"] <= time.time()
    assert entries["codex"]["health"]["state"] == "ready"
    text = project.tacx("providers").stdout
    assert "failing on auth since" in text

    # The next task does not try claude first while its failure holds, and says why.
    out = project.tacx("run", two_candidates(project, "pair2"), "-i", "title=u", "--no-ui")
    second_task = max(t["id"] for t in project.ls())
    (chosen,) = events(project, second_task, "provider.chosen")
    assert chosen["provider"] == "codex" and "claude is failing on auth since" in chosen["reason"]

    # A stage of claude that succeeds clears the mark.
    project.env.pop("FAKE_SCENARIO_CLAUDE")
    project.workflow("solo", """
        name: solo
        stages:
          - {name: work, provider: claude, prompt: hi}
        """)
    project.tacx("run", "solo.yaml", "--no-ui")
    entries = {e["name"]: e for e in json.loads(project.tacx("providers", "--json").stdout)}
    assert entries["claude"]["health"]["state"] == "ready"


def test_a_stage_that_cannot_reach_its_api_goes_to_the_next_candidate(project: Project, tmp_path: Path) -> None:
    agents(project, tmp_path)
    offline = project.root / "offline-claude"
    offline.write_text(
        "#!/usr/bin/env python3\nimport json, time\n"
        "print(json.dumps({'type': 'system', 'subtype': 'init', 'session_id': 's', 'model': 'claude-sonnet-4-5'}), flush=True)\n"
        "n = 0\nwhile True:\n    n += 1\n"
        "    print(json.dumps({'type': 'system', 'subtype': 'api_retry', 'attempt': n, 'max_retries': 10,"
        " 'retry_delay_ms': 200, 'error_status': None, 'error': 'Connection error.', 'session_id': 's'}), flush=True)\n"
        "    time.sleep(0.2)\n")
    offline.chmod(0o755)
    (project.root / "tacx.yaml").write_text(
        "unreachable_after: 1s\nproviders:\n  claude:\n    argv: [" + json.dumps(str(offline)) + ", '{{ prompt }}']\n"
        "    parser: claude-stream-json\n")
    project.tacx("run", two_candidates(project), "-i", "title=t", "--no-ui", timeout=90)
    task = project.ls()[0]["id"]
    assert project.show(task)["status"] == "succeeded"
    (failover,) = events(project, task, "stage.failover")
    assert failover["from"] == "claude" and failover["trouble"] == "network"
    entries = {e["name"]: e for e in json.loads(project.tacx("providers", "--json").stdout)}
    assert entries["claude"]["health"]["state"] == "unreachable"


def test_when_every_candidate_fails_on_access_the_task_fails_with_the_agents_words(
    project: Project, tmp_path: Path
) -> None:
    agents(project, tmp_path)
    project.env["FAKE_SCENARIO_CLAUDE"] = "not_logged_in"
    project.env["FAKE_SCENARIO_CODEX"] = "unauthorized"
    project.tacx("run", two_candidates(project, retries=0), "-i", "title=t", "--no-ui", check=None)
    task = project.show(project.ls()[0]["id"])
    assert task["status"] == "failed"
    assert "Missing bearer or basic authentication" in task["error"]
    assert len(events(project, task["id"], "stage.failover")) == 1  # claude -> codex, then no one is left



# -- the dashboard --------------------------------------------------------------------------


async def test_the_dashboard_names_troubled_agents_and_its_agents_screen_says_why(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tacx.home import Home
    from tacx.settings import Settings
    from tacx.ui.app import make_app
    from tacx.ui.providers import ProvidersScreen
    from tests.test_ui_app import screen_text, until

    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.delenv("GEMINI_API_KEY")
    app = make_app(Home(project.home), Settings(), refresh_seconds=0.2)
    async with app.run_test(size=(170, 40)) as pilot:
        await until(lambda: (project.home / "tacx.db").exists(), what="the store")
        since = time.time() - 60
        with project.db() as conn:  # what the coordinator records when claude's key is refused
            conn.execute("INSERT INTO events (ts, task_id, stage, kind, data) VALUES (?, NULL, NULL, 'provider.health', ?)",
                         (since, json.dumps({"provider": "claude", "state": "auth", "since": since, "last": since,
                                             "detail": "Invalid API key · Please run /login"})))
        stamp = time.strftime("%H:%M", time.localtime(since))
        await until(lambda: f"claude failing on auth since {stamp}" in screen_text(app), 10, "the header alert")
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ProvidersScreen))
        await until(lambda: "2.0.14 (Claude Code)" in screen_text(app), 15, "the versions read")
        await pilot.press("down")  # claude: its detail below the table
        await until(lambda: "Invalid API key" in screen_text(app), 5, "claude's detail")
        text = screen_text(app)
        assert f"failing on auth since {stamp}" in text and "Invalid API key · Please run /login" in text
        assert "not logged in" in text  # gemini, without its key
        assert "codex-cli 0.46.0" in text and "ready" in text
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, ProvidersScreen))
        await pilot.press("q")
        await until(lambda: not app.is_running, 20)
