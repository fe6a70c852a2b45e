"""Parsers for the agent CLIs' output: streaming JSON lines (claude, codex, gemini) and
aider's text, turned into ParsedEvents and a running AgentState.

Each daughter's output is fed to its parser one complete line at a time, as it is written,
so the parsers are on the hot path of output capture: feed() prefilters lines that cannot
be JSON objects, parses once, dispatches on ``type`` through a dict and builds events only
for what it found. It never raises: agent CLIs change their output between versions, so a
non-JSON line, an unknown event type or a field of an unexpected shape is skipped.

Usage events are increments (each API message counted once); when an agent reports its own
final totals, one more usage event with message_id "result" carries the difference, so the
usage events of a stream always add up to ``state.usage``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tacx.agents.prices import PriceTable
from tacx.agents.base import (
    EVENT_TEXT_LIMIT,
    RESULT_LIMIT,
    Outcome,
    OutputParser,
    ParsedEvent,
    Usage,
    last_line,
)

log = logging.getLogger(__name__)

PARSER_KINDS = ("claude-stream-json", "codex-json", "gemini-stream-json", "aider-text", "plain")
INPUT_SUMMARY_LIMIT = 200  # a tool call's input, summarised for display
NO_RESULT = "the agent's stream ended without a result event"
INTERRUPTED = "the agent's turn was interrupted: it started but neither completed nor failed"
UNKNOWN_MODEL = "(model unknown)"  # unpriced_model when usage arrives and no model is known

_loads = json.loads
_EMPTY: dict[str, Any] = {}  # read-only stand-in for a missing object
_RATE_LIMIT = re.compile(
    r"\b429\b|rate[ _-]?limit|quota|resource[ _]exhausted|too many requests|usage limit|hit your limit", re.IGNORECASE
)
_INPUT_KEYS = ("command", "file_path", "path", "notebook_path", "pattern", "url", "query", "description", "prompt")

# -- small helpers: tolerant field access ------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else _EMPTY


def _str(value: Any) -> str | None:
    return value if type(value) is str and value else None


def _int(value: Any) -> int:
    """A token count: non-negative int, 0 for anything else (bools, text, NaN)."""
    if type(value) is int:
        return value if value > 0 else 0
    if type(value) is float and math.isfinite(value) and value > 0:
        return int(value)
    return 0


def _num(value: Any) -> float | None:
    if (type(value) is int or type(value) is float) and math.isfinite(value):
        return float(value)
    return None


def _clip(text: Any, limit: int = EVENT_TEXT_LIMIT) -> str:
    """Event text, bounded; a cut is marked with "…"."""
    if type(text) is not str:
        text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bound(text: str) -> str:
    """A stage's result, bounded like the result of a script stage."""
    return text if len(text) <= RESULT_LIMIT else text[: RESULT_LIMIT - 1] + "…"


def _one_line(text: str, limit: int = INPUT_SUMMARY_LIMIT) -> str:
    return _clip(" ".join(text[: limit * 4].split()), limit)


def _summarise_input(value: Any) -> str:
    """A tool call's input as a short line: its command, path or query if it has one,
    else ``key=value`` pairs (nested values elided)."""
    if type(value) is dict:
        for key in _INPUT_KEYS:
            found = value.get(key)
            if type(found) is str and found:
                return _one_line(found)
        parts: list[str] = []
        size = 0
        for key, item in value.items():
            if type(item) is str:
                shown = item[:60]
            elif item is None or type(item) in (int, float, bool):
                shown = json.dumps(item)
            else:
                shown = "…"
            parts.append(f"{key}={shown}")
            size += len(parts[-1]) + 2
            if size > INPUT_SUMMARY_LIMIT:
                break
        return _one_line(", ".join(parts))
    if type(value) is str:
        return _one_line(value)
    return "" if value is None else _one_line(str(value))


def _tool_output(content: Any) -> str:
    """A tool result's content (text, or a list of content blocks) as bounded text."""
    if type(content) is str:
        return _clip(content)
    if type(content) is not list:
        return "" if content is None else _clip(str(content))
    parts: list[str] = []
    size = 0
    for block in content:
        block = _obj(block)
        if block.get("type") == "text" and type(block.get("text")) is str:
            parts.append(block["text"][:EVENT_TEXT_LIMIT])
        elif block.get("type"):
            parts.append(f"[{block['type']}]")
        size += len(parts[-1]) if parts else 0
        if size > EVENT_TEXT_LIMIT:
            break
    return _clip("\n".join(parts))


def _mentions_rate_limit(text: str | None) -> bool:
    return bool(text) and _RATE_LIMIT.search(text) is not None  # type: ignore[arg-type]


def _usage_data(message_id: str, model: str | None, u: Usage) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "model": model,
        "input": u.input,
        "output": u.output,
        "cache_read": u.cache_read,
        "cache_write": u.cache_write,
        "cost_usd": u.cost_usd,
    }


# -- the shared machinery ----------------------------------------------------------------------


class StreamParser(OutputParser):
    """Base of the streaming parsers: line prefilter, dispatch, usage bookkeeping."""

    streaming = True

    # Lines that carry nothing but what the agent showed (tool results): skipped unread when
    # only the accounting is wanted (see make_parser's ``display``).
    DISPLAY_ONLY: tuple[bytes, ...] = ()

    def __init__(self, *, model: str | None = None, prices: PriceTable | None = None,
                 analytics_path: Path | None = None, display: bool = True) -> None:
        super().__init__()
        self._skip = () if display else self.DISPLAY_ONLY
        self.model = model  # the model the stage asked for: prices what the agent does not name
        self.prices = prices if prices is not None else PriceTable.load()
        self.analytics_path = analytics_path
        self.state.model = model
        self._handlers: dict[str, Callable[[dict[str, Any]], list[ParsedEvent]]] = {}
        self._final: list[ParsedEvent] = []
        self._result_seen = False  # set by parsers whose agent ends with a result event

    def feed(self, line: bytes) -> list[ParsedEvent]:
        if self._skip and line.startswith(self._skip):
            return []
        if line[:1] != b"{":
            line = line.lstrip()
            if line[:1] != b"{":
                return []
        try:
            obj = _loads(line)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or absurdly nested
            return []
        kind = obj.get("type")  # a line starting with "{" that parses is a dict
        handler = self._handlers.get(kind) if type(kind) is str else None
        if handler is None:
            return []
        try:
            return handler(obj)
        except Exception:  # a field of a shape no version we know writes: skip the line
            log.debug("skipped a %s line the parser could not read", kind, exc_info=True)
            return []

    def final_events(self) -> list[ParsedEvent]:
        return list(self._final)

    def finish(self, tail: bytes) -> Outcome:
        """Agents that end with a result event (claude, gemini): a stream without one
        failed, whatever the exit code; codex and aider conclude in their own way."""
        state = self.state
        if not self._result_seen and state.error is None:
            state.error = NO_RESULT
        return Outcome(result=state.result, error=state.error, failed=state.error is not None)

    # usage -----------------------------------------------------------------------------------

    def _price(self, model: str | None, usage: Usage) -> float:
        """Cost from the price table; an unpriced model with tokens is noted and costs 0."""
        cost = self.prices.cost(model, usage)
        if cost is None:
            if usage.tokens:
                self.state.unpriced_model = model or UNKNOWN_MODEL
            return 0.0
        return cost

    def _count(self, message_id: str, model: str | None, inc: Usage) -> ParsedEvent:
        """Add one message's usage increment to the live totals (a new Usage: a reader
        may hold on to the previous one)."""
        self.state.usage = self.state.usage + inc
        return ParsedEvent("usage", _usage_data(message_id, model, inc))

    def _settle(self, final: Usage) -> list[ParsedEvent]:
        """The agent's own totals replace the live ones; the difference becomes one more
        usage event, so the increments of a stream add up to the final figure."""
        state = self.state
        diff = final - state.usage
        state.usage = final
        state.final = True
        if diff.input or diff.output or diff.cache_read or diff.cache_write or diff.cost_usd:
            return [ParsedEvent("usage", _usage_data("result", state.model, diff))]
        return []

    def _set_session(self, session_id: Any, model: Any = None) -> list[ParsedEvent]:
        """The latest session id wins (it may change on resume); one event if it changed."""
        state = self.state
        sid, name = _str(session_id), _str(model)
        changed = False
        if sid and sid != state.session_id:
            state.session_id, changed = sid, True
        if name and name != state.model:
            state.model, changed = name, True
        if not changed:
            return []
        return [ParsedEvent("session", {"session_id": state.session_id, "model": state.model})]

    def _agent_error(self, message: str) -> ParsedEvent:
        self.state.error = message
        if _mentions_rate_limit(message):
            self.state.rate_limited = True
        return ParsedEvent("error", {"message": _clip(message)})


# -- Claude Code: --output-format stream-json --verbose ----------------------------------------

_CLAUDE_SUBTYPES = {
    "error_max_turns": "the agent reached its turn limit (max_turns)",
    "error_max_budget_usd": "the agent reached its budget limit (max_budget_usd)",
    "error_during_execution": "the agent failed during execution (error_during_execution)",
}


def _claude_usage(u: dict[str, Any]) -> Usage:
    return Usage(
        _int(u.get("input_tokens")),
        _int(u.get("output_tokens")),
        _int(u.get("cache_read_input_tokens")),
        _int(u.get("cache_creation_input_tokens")),
    )


def _claude_error(obj: dict[str, Any], subtype: str | None, text: str | None) -> str:
    """The error of a failed result, in words a user acts on, with the agent's own text."""
    status = obj.get("api_error_status")
    status_note = f"API status {status}" if status not in (None, "") else ""
    errors = obj.get("errors")
    detail = text or ("; ".join(e for e in errors if type(e) is str) if type(errors) is list else "")
    if subtype in _CLAUDE_SUBTYPES:
        head = _CLAUDE_SUBTYPES[subtype] + (f" ({status_note})" if status_note else "")
    elif subtype and subtype.startswith("error"):
        head = f"the agent ended with {subtype}" + (f" ({status_note})" if status_note else "")
    else:
        head = f"the agent reported an error (subtype {subtype or 'missing'}, is_error true"
        head += f", {status_note})" if status_note else ")"
    return f"{head}: {detail}" if detail else head


def _resets_from_text(text: str) -> float | None:
    """Older Claude Code ends a limited run with "Claude AI usage limit reached|<unix time>"."""
    tail = text.rsplit("|", 1)[-1].strip() if "|" in text else ""
    return float(tail) if tail.isdigit() else None


class ClaudeParser(StreamParser):
    """Claude Code's stream: counts each message.id once, prefers the result's totals."""

    DISPLAY_ONLY = (b'{"type":"user"',)  # tool results: often the biggest lines, never usage

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._seen: set[str] = set()
        self._lines_without_id = 0
        self._handlers = {
            "assistant": self._assistant,
            "user": self._user,
            "system": self._system,
            "rate_limit_event": self._rate_limit,
            "result": self._result,
        }

    def _assistant(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        msg = obj.get("message")
        if type(msg) is not dict:
            return []
        events: list[ParsedEvent] = []
        content = msg.get("content")
        if type(content) is list:
            for block in content:
                if type(block) is not dict:
                    continue
                kind = block.get("type")
                if kind == "text":
                    events.append(ParsedEvent("text", {"text": _clip(block.get("text"))}))
                elif kind == "tool_use":
                    events.append(ParsedEvent("tool_use", {
                        "id": block.get("id"), "name": block.get("name"),
                        "input": _summarise_input(block.get("input")),
                    }))
                elif kind == "thinking":
                    events.append(ParsedEvent("thinking", {"text": _clip(block.get("thinking"))}))
        usage = msg.get("usage")
        if type(usage) is dict:
            mid = msg.get("id")
            if type(mid) is not str:  # no id to tell repeats apart: count the line
                self._lines_without_id += 1
                mid = f"line-{self._lines_without_id}"
            if mid not in self._seen:
                self._seen.add(mid)
                model = _str(msg.get("model")) or self.state.model
                inc = _claude_usage(usage)
                inc.cost_usd = self._price(model, inc)
                self.state.turns += 1
                events.append(self._count(mid, model, inc))
        error = obj.get("error")  # e.g. "rate_limit" on the message an API failure became
        if type(error) is str and _mentions_rate_limit(error):
            self.state.rate_limited = True
        return events

    def _user(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        content = _obj(obj.get("message")).get("content")
        if type(content) is not list:
            return []
        events = []
        for block in content:
            if type(block) is dict and block.get("type") == "tool_result":
                events.append(ParsedEvent("tool_result", {
                    "id": block.get("tool_use_id"),
                    "output": _tool_output(block.get("content")),
                    "is_error": block.get("is_error") is True,
                }))
        return events

    def _system(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        subtype = obj.get("subtype")
        if subtype == "init":
            events = self._set_session(obj.get("session_id"), obj.get("model"))
            return events or [ParsedEvent("session", {"session_id": self.state.session_id, "model": self.state.model})]
        if subtype == "api_retry":
            self.state.api_retries += 1
            status = obj.get("error_status")
            if status in (429, "429"):
                self.state.rate_limited = True
            error = obj.get("error")
            return [ParsedEvent("retry", {
                "attempt": obj.get("attempt"), "delay_ms": obj.get("retry_delay_ms"),
                "status": status, "error": None if error is None else _clip(error),
            })]
        return []

    def _rate_limit(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        """{"rate_limit_info": {"status": "allowed" | "allowed_warning" | "rejected",
        "resetsAt": unix seconds, "rateLimitType": "five_hour", ...}}. Claude Code sends an
        "allowed" one on every turn: that is routine and not counted."""
        info = _obj(obj.get("rate_limit_info"))
        status = _str(info.get("status"))
        if status is None or status == "allowed":
            return []
        state = self.state
        state.rate_limits += 1
        resets_at = _num(info.get("resetsAt"))
        if resets_at is not None and resets_at > 1e12:  # milliseconds
            resets_at /= 1000
        if not status.startswith("allowed"):
            state.rate_limited = True
            if resets_at is not None:
                state.rate_limit_resets_at = resets_at
        detail = ", ".join(
            f"{key} {info[key]}" for key in ("rateLimitType", "utilization", "overageStatus")
            if type(info.get(key)) in (str, int, float)
        )
        return [ParsedEvent("rate_limit", {"status": status, "resets_at": resets_at, "detail": detail})]

    def _result(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        state = self.state
        self._result_seen = True
        events = self._set_session(obj.get("session_id"))
        subtype = _str(obj.get("subtype"))
        text = obj.get("result") if type(obj.get("result")) is str else None
        if text is not None:
            state.result = _bound(text)
        turns = obj.get("num_turns")
        if type(turns) is int and turns >= 0:
            state.turns = turns
        events += self._settle(self._final_usage(obj))
        is_error = obj.get("is_error") is True or bool(subtype and subtype.startswith("error"))
        if is_error:
            events.append(self._agent_error(_claude_error(obj, subtype, text)))
            if obj.get("api_error_status") in (429, "429"):
                state.rate_limited = True
            resets_at = _resets_from_text(text) if text else None
            if resets_at is not None:
                state.rate_limited, state.rate_limit_resets_at = True, resets_at
        events.append(ParsedEvent("result", {
            "subtype": subtype, "is_error": is_error, "text": _clip(text) if text else None,
            "turns": state.turns, "duration_ms": obj.get("duration_ms"),
        }))
        return events

    def _final_usage(self, obj: dict[str, Any]) -> Usage:
        """Tokens from result.usage (else modelUsage, else the live count); cost from
        total_cost_usd (else modelUsage's costUSD, else the price table)."""
        state = self.state
        per_model: list[tuple[str, Usage, float | None]] = []
        for name, mu in _obj(obj.get("modelUsage")).items():
            if type(mu) is dict:
                u = Usage(_int(mu.get("inputTokens")), _int(mu.get("outputTokens")),
                          _int(mu.get("cacheReadInputTokens")), _int(mu.get("cacheCreationInputTokens")))
                per_model.append((name, u, _num(mu.get("costUSD"))))
        usage = obj.get("usage")
        if type(usage) is dict:
            final = _claude_usage(usage)
        elif per_model:
            final = sum((u for _, u, _ in per_model), Usage())
        else:
            live = state.usage
            final = Usage(live.input, live.output, live.cache_read, live.cache_write)
        cost = _num(obj.get("total_cost_usd"))
        if cost is None and per_model and all(c is not None for _, _, c in per_model):
            cost = sum(c for _, _, c in per_model if c is not None)
        if cost is not None:
            state.cost_reported, state.unpriced_model = True, None
        elif per_model:
            cost = sum(self._price(name, u) for name, u, _ in per_model)
        else:
            cost = self._price(state.model, final)
        final.cost_usd = cost
        return final


# -- OpenAI Codex CLI: codex exec --json -------------------------------------------------------


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
        self._handlers = {
            "item.completed": self._item_completed,
            "item.started": self._item_started,
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
        return self._agent_error(message)

    def _turn_failed(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        self._turn_open = False
        message = _str(_obj(obj.get("error")).get("message")) or "the agent's turn failed"
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
        return [self._fail(message)]

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

    def _item_started(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        item = _obj(obj.get("item"))
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


# -- Google Gemini CLI: gemini -o stream-json --------------------------------------------------


def _gemini_usage(stats: dict[str, Any]) -> Usage:
    cached = _int(stats.get("cached"))
    uncached = _int(stats["input"]) if "input" in stats else max(_int(stats.get("input_tokens")) - cached, 0)
    return Usage(uncached, _int(stats.get("output_tokens")), cached, 0)


class GeminiParser(StreamParser):
    """Gemini's stream: the reply is the assistant's text since the last tool call; totals
    (tokens only) come with the result and are priced with the model of ``init``. Gemini
    reports no turn count: a turn is counted when the model speaks or calls tools after a
    tool result (or the prompt)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reply = ""
        self._in_reply = False
        self._in_turn = False
        self._handlers = {
            "message": self._message,
            "tool_use": self._tool_use,
            "tool_result": self._tool_result,
            "init": self._init,
            "error": self._error,
            "result": self._result,
        }

    def _init(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        return self._set_session(obj.get("session_id"), obj.get("model")) or [
            ParsedEvent("session", {"session_id": self.state.session_id, "model": self.state.model})
        ]

    def _model_turn(self) -> None:
        if not self._in_turn:
            self._in_turn = True
            self.state.turns += 1

    def _message(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        if obj.get("role") != "assistant":
            self._in_reply = self._in_turn = False
            return []
        self._model_turn()
        content = obj.get("content") if type(obj.get("content")) is str else ""
        if not self._in_reply:
            self._reply, self._in_reply = "", True
        self._reply = self._reply + content if obj.get("delta") is True else content
        self.state.result = _bound(self._reply)
        return [ParsedEvent("text", {"text": _clip(content)})]

    def _tool_use(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        self._in_reply = False
        self._model_turn()
        return [ParsedEvent("tool_use", {
            "id": obj.get("tool_id"), "name": obj.get("tool_name"), "input": _summarise_input(obj.get("parameters")),
        })]

    def _tool_result(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        self._in_reply = self._in_turn = False
        error = obj.get("error")
        output = obj.get("output")
        if output is None and error is not None:
            output = _obj(error).get("message") if type(error) is dict else error
        return [ParsedEvent("tool_result", {
            "id": obj.get("tool_id"), "output": _tool_output(output), "is_error": obj.get("status") != "success",
        })]

    def _error(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        message = _str(obj.get("message")) or "the agent reported an error"
        if obj.get("severity") == "warning":
            return [ParsedEvent("error", {"message": _clip(message)})]
        return [self._agent_error(message)]

    def _result(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        state = self.state
        self._result_seen = True
        status = _str(obj.get("status"))
        stats = obj.get("stats")
        events = self._settle(self._final_usage(stats)) if type(stats) is dict else []
        if status == "success":
            state.error = None  # any error event before was recovered from
        else:
            error = obj.get("error")
            message = _str(_obj(error).get("message") if type(error) is dict else error)
            events.append(self._agent_error(message or state.error or f"the agent's result status was {status!r}"))
        events.append(ParsedEvent("result", {
            "subtype": status, "is_error": status != "success",
            "text": _clip(state.result) if state.result else None, "turns": state.turns,
            "duration_ms": _obj(stats).get("duration_ms"),
        }))
        return events

    def _final_usage(self, stats: dict[str, Any]) -> Usage:
        """Totals from stats; priced per model when stats.models adds up to them."""
        final = _gemini_usage(stats)
        models = [(name, _gemini_usage(m)) for name, m in _obj(stats.get("models")).items() if type(m) is dict]
        if models and sum((u for _, u in models), Usage()).tokens == final.tokens:
            final.cost_usd = sum(self._price(name, u) for name, u in models)
        else:
            final.cost_usd = self._price(self.state.model, final)
        return final


# -- aider: plain text -------------------------------------------------------------------------

_AIDER_TOKENS = re.compile(r"([\d.,]+)\s*([kKmM]?)\s+(sent|received|cache write|cache hit)")
_AIDER_COST = re.compile(r"\$\s*([\d.,]+)\s+(message|request|session)")
_AIDER_MODEL = re.compile(r"^(?:Main model|Model):\s+(\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}


def _aider_number(digits: str, suffix: str) -> int:
    """ "2.1k" -> 2100, "12,345" -> 12345 (older aider printed exact counts with commas)."""
    try:
        return round(float(digits.replace(",", "")) * _SUFFIX[suffix.lower()])
    except ValueError:
        return 0


def _aider_costs(text: str) -> dict[str, float]:
    """ "Cost: $0.01 message, $0.05 session." -> {"message": 0.01, "session": 0.05}."""
    found: dict[str, float] = {}
    for digits, what in _AIDER_COST.findall(text):
        try:
            found[what] = float(digits.replace(",", "").rstrip("."))
        except ValueError:
            pass
    return found


class AiderParser(StreamParser):
    """aider's console text: "Tokens: 2.1k sent, 300 received. Cost: $0.01 message, $0.05
    session." lines give rounded live figures; the --analytics-log file read at the end
    gives exact ones. aider has no failure of its own to report: its exit status says."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pending: Usage | None = None  # a Tokens line whose Cost line may follow
        self._session_cost = 0.0

    def feed(self, line: bytes) -> list[ParsedEvent]:
        text = line.decode("utf-8", "replace").strip()
        if "\x1b" in text:
            text = _ANSI.sub("", text).strip()
        if not text:
            return []
        events: list[ParsedEvent] = []
        if self._pending is not None and not text.startswith("Cost:"):
            events.append(self._flush(None))
        if text.startswith("Tokens:"):
            cost_at = text.find("Cost:")
            self._pending = self._tokens(text if cost_at < 0 else text[:cost_at])
            if cost_at >= 0:
                events.append(self._flush(text[cost_at:]))
            return events
        if text.startswith("Cost:"):
            if self._pending is not None:
                events.append(self._flush(text))
            return events
        state = self.state
        if text.startswith(("Model:", "Main model:")):
            found = _AIDER_MODEL.match(text)
            if found:
                events += self._set_session(None, found.group(1))
        elif text.startswith("Retrying in"):
            state.api_retries += 1
            events.append(ParsedEvent("retry", {"attempt": state.api_retries, "delay_ms": None, "status": None,
                                                "error": _clip(text)}))
        if "RateLimitError" in text:
            state.rate_limited = True
        state.result = _bound(text)
        return events

    @staticmethod
    def _tokens(text: str) -> Usage:
        u = Usage()
        for digits, suffix, what in _AIDER_TOKENS.findall(text):
            n = _aider_number(digits, suffix)
            if what == "sent":
                u.input = n
            elif what == "received":
                u.output = n
            elif what == "cache hit":
                u.cache_read = n
            else:
                u.cache_write = n
        return u

    def _flush(self, cost_text: str | None) -> ParsedEvent:
        """Count the pending message, with the cost of its Cost line if there was one."""
        inc, self._pending = self._pending or Usage(), None
        state = self.state
        costs = _aider_costs(cost_text) if cost_text else {}
        session = costs.get("session")
        message = costs.get("message", costs.get("request"))
        if session is not None:  # the running total is the better figure: no rounding adds up
            inc.cost_usd = session - self._session_cost
            self._session_cost = session
            state.cost_reported = True
        elif message is not None:
            inc.cost_usd = message
            self._session_cost += message
            state.cost_reported = True
        elif inc.tokens:  # aider prints no cost for a model it has no price for
            state.unpriced_model = state.model or UNKNOWN_MODEL
        state.turns += 1
        return self._count(f"message-{state.turns}", state.model, inc)

    def _analytics(self) -> Usage | None:
        """Exact totals from aider's analytics log (its message_send events), if it wrote
        one. The log should be one attempt's own file: every message_send in it counts."""
        if self.analytics_path is None:
            return None
        try:
            raw_lines = Path(self.analytics_path).read_bytes().splitlines()
        except OSError:
            return None
        sent = received = messages = 0
        costs: list[float] = []
        session_total: float | None = None
        for raw in raw_lines:
            raw = raw.strip()
            if not raw.startswith(b"{"):
                continue
            try:
                event = _loads(raw)
            except (ValueError, RecursionError):
                continue
            if event.get("event") != "message_send":
                continue
            props = _obj(event.get("properties"))
            messages += 1
            sent += _int(props.get("prompt_tokens"))
            received += _int(props.get("completion_tokens"))
            cost, total = _num(props.get("cost")), _num(props.get("total_cost"))
            if cost is not None:
                costs.append(cost)
            if total is not None:
                session_total = total
        if not messages:
            return None
        state = self.state
        live = state.usage
        if costs:
            total_cost = sum(costs)
        elif session_total is not None:
            total_cost = session_total
        else:
            total_cost = live.cost_usd
        if costs or session_total is not None:
            state.cost_reported, state.unpriced_model = True, None
        state.turns = max(state.turns, messages)
        return Usage(sent, received, live.cache_read, live.cache_write, total_cost)

    def finish(self, tail: bytes) -> Outcome:
        if self._pending is not None:
            self._final.append(self._flush(None))
        exact = self._analytics()
        if exact is not None:
            self._final += self._settle(exact)
        state = self.state
        if state.result is None:
            state.result = last_line(tail)
        return Outcome(result=state.result)


_STREAMING: dict[str, type[StreamParser]] = {
    "claude-stream-json": ClaudeParser,
    "codex-json": CodexParser,
    "gemini-stream-json": GeminiParser,
    "aider-text": AiderParser,
}


def make_parser(kind: str, *, model: str | None = None, prices: PriceTable | None = None,
                analytics_path: Path | None = None, display: bool = True) -> OutputParser:
    """A fresh parser of ``kind`` for one attempt. ``model`` prices usage the agent does not
    name (codex); ``prices`` defaults to the shipped table (a tacx.yaml ``prices:`` mapping
    is accepted too); ``analytics_path`` is aider's --analytics-log file."""
    if kind == "plain":
        return OutputParser()
    cls = _STREAMING.get(kind)
    if cls is None:
        raise ValueError(f"unknown parser {kind!r} (known: {', '.join(PARSER_KINDS)})")
    if prices is not None and not isinstance(prices, PriceTable):
        prices = PriceTable.load(prices)  # type: ignore[arg-type]
    return cls(model=model, prices=prices, analytics_path=analytics_path, display=display)
