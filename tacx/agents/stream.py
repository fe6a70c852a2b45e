"""The shared part of the agents' stream parsers: the StreamParser base (line prefilter,
dispatch, usage bookkeeping) and the tolerant JSON field helpers every agent's parser uses."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tacx.agents.prices import UNKNOWN_MODEL, PriceTable  # noqa: F401 - the parsers import UNKNOWN_MODEL from here
from tacx.agents.base import (
    EVENT_TEXT_LIMIT,
    RESULT_LIMIT,
    Outcome,
    OutputParser,
    ParsedEvent,
    Usage,
)

log = logging.getLogger(__name__)

INPUT_SUMMARY_LIMIT = 200  # a tool call's input, summarised for display
NO_RESULT = "the agent's stream ended without a result event"

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


class StreamParser(OutputParser):
    """Base of the streaming parsers: line prefilter, dispatch, usage bookkeeping.

    Each daughter's output is fed to its parser one complete line at a time, as it is written,
    so the parsers are on the hot path of output capture: feed() prefilters lines that cannot
    be JSON objects, parses once, dispatches on ``type`` through a dict and builds events only
    for what it found. It never raises: agent CLIs change their output between versions, so a
    non-JSON line, an unknown event type or a field of an unexpected shape is skipped.

    Usage events are increments (each API message counted once; claude's, whose figures grow
    over repeated lines, once more as "<id>#n" for each growth); when an agent reports its own
    final totals, one more usage event with message_id "result" carries the difference (claude:
    one "result:<model>" per model), so the usage events of a stream always add up to
    ``state.usage``.
    """

    streaming = True

    # Lines that carry nothing but what the agent showed (tool results): skipped unread when
    # only the accounting is wanted (see make_parser's ``display``).
    DISPLAY_ONLY: tuple[bytes, ...] = ()

    def __init__(self, *, model: str | None = None, prices: PriceTable | Mapping[str, Any] | None = None,
                 analytics_path: Path | None = None, display: bool = True) -> None:
        super().__init__()
        self._skip = () if display else self.DISPLAY_ONLY
        self.model = model  # the model the stage asked for: prices what the agent does not name
        # the shipped table, or it with a tacx.yaml ``prices:`` mapping laid over it
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable.load(prices)
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

    def _price(self, model: str | None, usage: Usage, write_1h: int = 0, web_searches: int = 0) -> float:
        """Cost from the price table (``write_1h`` of the cache writes were 1-hour ones;
        ``web_searches`` are charged per request); an unpriced model with tokens is noted
        and costs 0."""
        cost = self.prices.cost(model, usage, write_1h, web_searches)
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
