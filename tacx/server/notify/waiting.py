"""When an agent is "waiting for input", as far as tacx can see it.

tacx runs agents headless with stdin closed: nobody can answer them, so an agent that needs
a person does not sit waiting, it asks and then stops or goes on without. What tacx sees in
the stream of an `agent.output` event, and takes as waiting for a person:

* Claude Code calls its question tool (`AskUserQuestion`): the agent asks the user a
  question (in -p mode the call is refused and the run goes on or ends without the answer).
* Claude Code's result lists `permission_denials`: tools the agent wanted and was refused
  (the claude parser reports them as the error "the agent was refused N tool call(s)..."):
  a person has to allow them (permission_mode, --allowedTools) and retry.
* Any agent's final result text ends with a question (its last line ends with "?"): the
  agent ended its turn asking something instead of finishing the work.

Not detectable: codex `exec` runs with approvals off (it never asks, it is refused by its
sandbox and says so only in prose); gemini in headless mode refuses tools outside its
approval mode without a distinct event; aider is run with --yes-always, so it never shows
its "(Y)es/(N)o" prompt, and tacx reads no text events from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

QUESTION_TOOLS = frozenset({"AskUserQuestion"})  # Claude Code's tool for asking the user
REFUSED_PREFIX = "the agent was refused "  # claude.py _denials, as the parser reports it
QUESTION_TAIL = 300  # how much of a final question is quoted


def waiting_reason(events: Iterable[Any]) -> str | None:
    """Why the agent in these (kind, data) pairs waits for a person; None if it does not."""
    for item in events:
        try:
            kind, data = item
        except (TypeError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if kind == "tool_use" and data.get("name") in QUESTION_TOOLS:
            return f"the agent asks a question ({data['name']})"
        if kind == "error" and str(data.get("message", "")).startswith(REFUSED_PREFIX):
            return str(data["message"])
        if kind == "result" and not data.get("is_error") and (question := _final_question(data.get("text"))):
            return f"the agent ended with a question: {question}"
    return None


def _final_question(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or not lines[-1].endswith("?"):
        return None
    return lines[-1][-QUESTION_TAIL:]
