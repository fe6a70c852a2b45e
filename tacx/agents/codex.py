"""OpenAI's Codex CLI: its argv (`codex exec --json ...`, resumed by thread id) and the parser
of its thread events, which turns the thread's running usage totals into increments."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tacx.agents.agent import AgentProvider
from tacx.agents.base import Outcome, ParsedEvent, StageContext, Usage
from tacx.agents.errors import human_error
from tacx.agents.login import Login, Where, read_json, read_text
from tacx.agents.stream import (
    StreamParser,
    _bound,
    _clip,
    _int,
    _mentions_rate_limit,
    _obj,
    _one_line,
    _str,
    _summarise_input,
    _tool_output,
)
from tacx.workflow.model import StageSpec

INTERRUPTED = "the agent's turn was interrupted: it started but neither completed nor failed"

# "You've hit your usage limit. Upgrade to Pro (...) or try again in 5 days 22 hours 11 minutes."
# (openai/codex#3899), "... try again in 3 hours 2 minutes." (#3031), "... or try again at
# Jul 5th, 2026 8:19 PM." (#26668), "... try again at 9:01 AM." (a reset later today).
_AGAIN_IN = re.compile(r"try again in ((?:\d+\s*(?:days?|hours?|minutes?|seconds?)[\s,]*(?:and\s+)?)+)", re.I)
_PART = re.compile(r"(\d+)\s*(day|hour|minute|second)", re.I)
_AGAIN_AT = re.compile(
    r"try again at\s+(?:(?P<month>[A-Z][a-z]{2,8})\.? (?P<day>\d{1,2})(?:st|nd|rd|th)?,? (?P<year>\d{4}),?\s+)?"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<half>[AP]M)?", re.I)
_SECONDS = {"day": 86400, "hour": 3600, "minute": 60, "second": 1}


def resets_from_text(text: str, now: float | None = None) -> float | None:
    """When codex says its usage limit resets (Unix time), from "try again in ..." or "try
    again at ..." (a clock time is local, as codex prints it); None when it says neither."""
    now = time.time() if now is None else now
    if match := _AGAIN_IN.search(text):
        seconds = sum(int(n) * _SECONDS[unit.lower()] for n, unit in _PART.findall(match.group(1)))
        return now + seconds if seconds else None
    match = _AGAIN_AT.search(text)
    if match is None:
        return None
    hour, minute = int(match["hour"]), int(match["minute"])
    if match["half"]:
        hour = hour % 12 + (12 if match["half"].upper() == "PM" else 0)
    try:
        if match["year"]:
            month = datetime.strptime(match["month"][:3], "%b").month
            return datetime(int(match["year"]), month, int(match["day"]), hour, minute).timestamp()
        today = datetime.fromtimestamp(now)
        at = today.replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError:  # a month or a time that does not exist
        return None
    return (at if at.timestamp() > now else at + timedelta(days=1)).timestamp()


class CodexParser(StreamParser):
    """Codex's thread events. Its usage is the thread's running total, so each
    turn.completed is turned into an increment; codex names no model and no cost, so usage
    is priced with the model the stage asked for."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._total = (0, 0, 0)  # the thread's last running total: uncached input, output, cached
        self._turn_open = False
        self._failed = False
        self._started: set[str] = set()  # items whose tool_use event went out at item.started
        self._plan = ""  # the todo list as last shown: shown again only when it changed
        self._handlers = {
            "item.completed": self._item_completed,
            "item.started": self._item_started,
            "item.updated": self._item_updated,
            "thread.started": self._thread,
            "turn.started": self._turn_started,
            "turn.completed": self._turn_completed,
            "turn.failed": self._turn_failed,
            "error": self._error,
        }

    def resume_from(self, previous: Usage) -> None:
        """`codex exec resume` continues the thread: its running total starts from what the
        interrupted attempt already counted."""
        self._total = (previous.input, previous.output, previous.cache_read)

    def _thread(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        return self._set_session(obj.get("thread_id")) or [
            ParsedEvent("session", {"session_id": self.state.session_id, "model": self.state.model})
        ]

    def _turn_started(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        self._turn_open = True
        return []

    def _turn_completed(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        state = self.state
        self._turn_open = False
        state.turns += 1
        events: list[ParsedEvent] = []
        usage = obj.get("usage")
        if type(usage) is dict:
            cached = _int(usage.get("cached_input_tokens"))
            total = (max(_int(usage.get("input_tokens")) - cached, 0), _int(usage.get("output_tokens")), cached)
            last = self._total
            if total[0] < last[0] or total[1] < last[1] or total[2] < last[2]:
                last = (0, 0, 0)  # the running total restarted: this one counts whole
            self._total = total
            inc = Usage(total[0] - last[0], total[1] - last[1], total[2] - last[2])
            inc.cost_usd = self._price(self.model, inc)
            events.append(self._count(f"turn-{state.turns}", self.model, inc))
        if self._failed:  # an error earlier in the run, and yet the turn completed: recovered
            self._failed, state.error = False, None
        events.append(ParsedEvent("result", {
            "subtype": "success", "is_error": False,
            "text": _clip(state.result) if state.result else None, "turns": state.turns, "duration_ms": None,
        }))
        return events

    def _fail(self, message: str) -> ParsedEvent:
        self._failed = True
        event = self._agent_error(message)
        if self.state.rate_limited and (resets := resets_from_text(message)) is not None:
            self.state.rate_limit_resets_at = resets
        return event

    def _turn_failed(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        self._turn_open = False
        message = human_error(_str(_obj(obj.get("error")).get("message")) or "the agent's turn failed")
        return [self._fail(message), ParsedEvent("result", {
            "subtype": "failed", "is_error": True, "text": _clip(message), "turns": self.state.turns,
            "duration_ms": None,
        })]

    def _error(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        message = _str(obj.get("message")) or "the agent reported an error"
        lowered = message.lower()
        if "reconnecting" in lowered or "retrying" in lowered:  # a stream retry, not the end
            self.state.api_retries += 1
            if _mentions_rate_limit(message):
                self.state.rate_limited = True
            return [ParsedEvent("retry", {"attempt": None, "delay_ms": None, "status": None, "error": _clip(message)})]
        return [self._fail(human_error(message))]

    def _tool_use(self, item: dict[str, Any]) -> ParsedEvent | None:
        kind = item.get("type")
        if kind == "command_execution":
            name, summary = "command", _summarise_input(item.get("command"))
        elif kind == "mcp_tool_call":
            name = f"{item.get('server')}.{item.get('tool')}"
            summary = _summarise_input(item.get("arguments"))
        elif kind == "file_change":
            changes = item.get("changes") if type(item.get("changes")) is list else []
            name = "file_change"
            summary = _one_line(", ".join(f"{_obj(c).get('kind')} {_obj(c).get('path')}" for c in changes[:20]))
        elif kind == "web_search":
            name, summary = "web_search", _summarise_input(item.get("query"))
        else:
            return None
        return ParsedEvent("tool_use", {"id": item.get("id"), "name": name, "input": summary})

    def _todo_list(self, item: dict[str, Any]) -> list[ParsedEvent]:
        """Codex's plan, {"type": "todo_list", "items": [{"text", "completed"}]}, started,
        updated as steps are done, completed: one line each time it changes."""
        steps = item.get("items") if type(item.get("items")) is list else []
        plan = "; ".join(f"[{'x' if _obj(s).get('completed') is True else ' '}] {_one_line(str(_obj(s).get('text', '')))}"
                         for s in steps[:50])
        if not plan or plan == self._plan:
            return []
        self._plan = plan
        return [ParsedEvent("thinking", {"text": _clip(f"plan: {plan}")})]

    def _item_updated(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        item = _obj(obj.get("item"))
        return self._todo_list(item) if item.get("type") == "todo_list" else []

    def _item_started(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        item = _obj(obj.get("item"))
        if item.get("type") == "todo_list":
            return self._todo_list(item)
        event = self._tool_use(item)
        if event is None:
            return []
        if type(item.get("id")) is str:
            self._started.add(item["id"])
        return [event]

    def _item_completed(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        item = _obj(obj.get("item"))
        kind = item.get("type")
        if kind == "agent_message":
            text = item.get("text") if type(item.get("text")) is str else ""
            self.state.result = _bound(text)
            return [ParsedEvent("text", {"text": _clip(text)})]
        if kind == "reasoning":
            return [ParsedEvent("thinking", {"text": _clip(item.get("text"))})]
        if kind == "error":  # a warning item: the run goes on
            return [ParsedEvent("error", {"message": _clip(item.get("message"))})]
        if kind == "todo_list":
            return self._todo_list(item)
        use = self._tool_use(item)
        if use is None:
            return []
        item_id = item.get("id")
        if type(item_id) is str and item_id in self._started:
            self._started.discard(item_id)
            events: list[ParsedEvent] = []
        else:
            events = [use]
        status = item.get("status")
        if kind == "command_execution":
            exit_code = item.get("exit_code")
            output = _clip(item.get("aggregated_output"))
            is_error = status in ("failed", "declined") or (type(exit_code) is int and exit_code != 0)
        elif kind == "mcp_tool_call":
            error = _obj(item.get("error")).get("message")
            output = _clip(error) if error else _tool_output(_obj(item.get("result")).get("content"))
            is_error = status == "failed" or bool(error)
        else:
            output, is_error = _clip(status), status == "failed"
        events.append(ParsedEvent("tool_result", {"id": item_id, "output": output, "is_error": is_error}))
        return events

    def finish(self, tail: bytes) -> Outcome:
        state = self.state
        if self._turn_open and not self._failed:
            state.error = INTERRUPTED
        failed = self._failed or self._turn_open
        return Outcome(result=state.result, error=state.error if failed else None, failed=failed)


class CodexProvider(AgentProvider):
    """Codex CLI: `codex exec --json [-m M] [-s MODE] -C DIR PROMPT`; resume by thread id."""

    name = executable = "codex"
    parser_kind = "codex-json"
    parser_class = CodexParser
    resumable = True
    default_model = "gpt-5-codex"
    SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
    permission_modes = {"plan": "read-only", "default": "read-only", "acceptEdits": "workspace-write",
                        "bypassPermissions": "danger-full-access", "auto_edit": "workspace-write",
                        "yolo": "danger-full-access"}

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        args = ["exec", "--json", "-C", str(ctx.workspace), "--skip-git-repo-check"]
        if spec.model:
            args += ["-m", spec.model]
        if spec.permission_mode:
            sandbox = self.permission(spec.permission_mode)
            if sandbox not in self.SANDBOXES:
                raise ValueError(
                    f"codex takes permission_mode {', '.join(self.SANDBOXES)} (its -s sandbox) or claude's"
                    f" plan, acceptEdits, bypassPermissions; not {spec.permission_mode!r}"
                )
            args += ["-s", sandbox]
        args += list(spec.extra_args)
        if ctx.resume_session:
            args += ["resume", ctx.resume_session]
        return args + [self.prompt(ctx)]

    def login(self, where: Where) -> Login:
        return codex_login(where)


_MODEL_PROVIDER = re.compile(r"""^\s*model_provider\s*=\s*["']([^"']+)["']""", re.M)
_CREDENTIALS_STORE = re.compile(r"""^\s*cli_auth_credentials_store\s*=\s*["']([^"']+)["']""", re.M)


def codex_login(where: Where) -> Login:
    """`codex exec` takes CODEX_API_KEY from the environment (which `codex login status` does
    not report) or the login `codex login` stored in $CODEX_HOME/auth.json; OPENAI_API_KEY
    alone is not read (codex-cli 0.171). A model provider of config.toml's own brings its
    own key, which tacx cannot check."""
    if where.set("CODEX_API_KEY"):
        return Login("yes", "CODEX_API_KEY is set")
    codex_home = Path(where.env["CODEX_HOME"]).expanduser() if where.set("CODEX_HOME") else where.home / ".codex"
    auth = read_json(codex_home / "auth.json")
    if auth is not None:
        if isinstance(auth.get("OPENAI_API_KEY"), str) and auth["OPENAI_API_KEY"]:
            return Login("yes", f"API key stored by `codex login` ({codex_home}/auth.json)")
        if isinstance(auth.get("tokens"), dict):
            return Login("yes", "ChatGPT login")
        return Login("unknown", f"{codex_home}/auth.json holds neither a key nor a ChatGPT login")
    config = read_text(codex_home / "config.toml") or ""
    found = _MODEL_PROVIDER.search(config)
    if found and found.group(1) != "openai":
        return Login("unknown", f"model provider {found.group(1)!r} from config.toml: its key is its own")
    store = _CREDENTIALS_STORE.search(config)
    if store and store.group(1) != "file":
        return Login("unknown", f"codex keeps its login in the {store.group(1)} store (cli_auth_credentials_store)")
    if where.set("OPENAI_API_KEY"):  # older codex builds read it; 0.171's exec does not
        return Login("unknown", "only OPENAI_API_KEY is set: codex-cli 0.171 reads CODEX_API_KEY or `codex login`")
    return Login("no", f"not logged in: no {codex_home}/auth.json and no CODEX_API_KEY (run `codex login`,"
                       " or `printenv OPENAI_API_KEY | codex login --with-api-key`)")
