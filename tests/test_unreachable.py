"""An agent whose API cannot be reached ends early, saying so; one whose API is only
overloaded is waited out. The agents here are small fake CLIs defined in tacx.yaml, writing
lines shaped as the real ones do offline: claude's `api_retry` system lines (error_status
null when no HTTP answer came, 529 when the API is overloaded) and codex's
"Reconnecting... waiting for network" error events, which never stop by themselves."""

from __future__ import annotations

import sys
import time

from tests.conftest import Project

OFFLINE_CLAUDE = r'''
import json, sys, time
print(json.dumps({"type": "system", "subtype": "init", "session_id": "s-off", "model": "claude-sonnet-4-5-20250929",
                  "tools": [], "cwd": "."}), flush=True)
attempt = 0
while True:  # a key but no network: retries (for about three minutes in the real CLI)
    attempt += 1
    print(json.dumps({"type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": 10,
                      "retry_delay_ms": 200, "error_status": None, "error": "Connection error.",
                      "session_id": "s-off"}), flush=True)
    time.sleep(0.2)
'''

OFFLINE_CODEX = r'''
import json, time
print(json.dumps({"type": "thread.started", "thread_id": "t-off"}), flush=True)
print(json.dumps({"type": "turn.started"}), flush=True)
n = 0
while True:  # codex offline prints this forever: an idle timeout never fires
    n += 1
    print(json.dumps({"type": "error", "message": f"Reconnecting... {n}/5 (stream disconnected before completion:"
                      " error sending request for url (https://api.openai.com/v1/responses)); waiting for network"}),
          flush=True)
    time.sleep(0.2)
'''

FLAKY_CODEX = r'''
import json, time
print(json.dumps({"type": "thread.started", "thread_id": "t-flaky"}), flush=True)
print(json.dumps({"type": "turn.started"}), flush=True)
print(json.dumps({"type": "error", "message": "Reconnecting... 1/5 (stream disconnected before completion)"}), flush=True)
for i in range(10):  # back at work for 2 s, more than unreachable_after; codex bills only at the turn's end
    print(json.dumps({"type": "item.completed", "item": {"id": f"item_{i}", "type": "reasoning",
                      "text": f"step {i}"}}), flush=True)
    time.sleep(0.2)
print(json.dumps({"type": "error", "message": "Reconnecting... 1/5 (stream disconnected before completion)"}), flush=True)
time.sleep(0.3)
print(json.dumps({"type": "item.completed", "item": {"id": "item_x", "type": "agent_message", "text": "done"}}),
      flush=True)
print(json.dumps({"type": "turn.completed", "usage": {"input_tokens": 100, "cached_input_tokens": 0,
                  "output_tokens": 10}}), flush=True)
'''

OVERLOADED_CLAUDE = r'''
import json, time
print(json.dumps({"type": "system", "subtype": "init", "session_id": "s-529", "model": "claude-sonnet-4-5-20250929",
                  "tools": [], "cwd": "."}), flush=True)
for attempt in range(1, 9):  # 529 overloaded: the API answers, busy; the real CLI waits it out
    print(json.dumps({"type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": 10,
                      "retry_delay_ms": 250, "error_status": 529, "error": "overloaded_error",
                      "session_id": "s-529"}), flush=True)
    time.sleep(0.25)
print(json.dumps({"type": "assistant", "message": {"id": "msg_1", "type": "message", "role": "assistant",
      "model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "done"}],
      "usage": {"input_tokens": 10, "output_tokens": 5}}, "session_id": "s-529"}), flush=True)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s-529",
                  "num_turns": 1, "duration_ms": 2100, "total_cost_usd": 0.000105,
                  "usage": {"input_tokens": 10, "output_tokens": 5}}), flush=True)
'''


def _project(project: Project) -> None:
    for name, text in (("offline_claude", OFFLINE_CLAUDE), ("offline_codex", OFFLINE_CODEX),
                       ("overloaded", OVERLOADED_CLAUDE), ("flaky_codex", FLAKY_CODEX)):
        (project.root / f"{name}.py").write_text(text)
    (project.root / "tacx.yaml").write_text(f"""
unreachable_after: 1s
kill_grace: 1s
providers:
  offline-claude: {{argv: [{sys.executable}, {project.root / 'offline_claude.py'}, "{{{{ prompt }}}}"], parser: claude-stream-json}}
  offline-codex: {{argv: [{sys.executable}, {project.root / 'offline_codex.py'}, "{{{{ prompt }}}}"], parser: codex-json}}
  overloaded: {{argv: [{sys.executable}, {project.root / 'overloaded.py'}, "{{{{ prompt }}}}"], parser: claude-stream-json}}
  flaky-codex: {{argv: [{sys.executable}, {project.root / 'flaky_codex.py'}, "{{{{ prompt }}}}"], parser: codex-json}}
""")


def test_an_agent_that_cannot_reach_its_api_ends_long_before_its_timeout(project: Project) -> None:
    _project(project)
    project.workflow("w", """
        name: w
        stages:
          - {name: claude, provider: offline-claude, prompt: hi, timeout: 10m, needs: []}
          - {name: codex, provider: offline-codex, prompt: hi, timeout: 10m, needs: []}
    """)
    started = time.monotonic()
    project.tacx("run", "w.yaml", "--no-ui", check=1, timeout=120)
    assert time.monotonic() - started < 60  # not the ten-minute timeout
    stages = {s["name"]: s for s in project.show(1)["stages"]}
    claude, codex = stages["claude"], stages["codex"]
    assert claude["status"] == "failed" and claude["error"].startswith("cannot reach the API: Connection error.")
    assert "unreachable_after" in claude["error"]
    assert codex["status"] == "failed" and codex["error"].startswith("cannot reach the API: Reconnecting... ")
    assert project.marked_processes() == []


def test_an_overloaded_api_is_waited_out(project: Project) -> None:
    _project(project)
    project.workflow("o", """
        name: o
        stages:
          - {name: busy, provider: overloaded, prompt: hi, needs: []}
          - {name: flaky, provider: flaky-codex, prompt: hi, needs: []}
    """)
    # 2 s of 529s, more than unreachable_after: waited out. A codex that reconnected once and
    # then worked 2 s without billing (it bills at the turn's end) is at work, not unreachable.
    project.tacx("run", "o.yaml", "--no-ui", timeout=120)
    task = project.show(1)
    assert task["status"] == "succeeded", task["stages"]
    assert task["stages"][0]["api_retries"] == 8  # each 529 seen, and shown as it came
    assert any(e["kind"] == "agent.retry" for e in task["events"])
