"""Claude Code: its argv (`claude -p PROMPT --output-format stream-json --verbose ...`) and
the parser of its stream-json, with the error texts and rate-limit quirks of its results."""

from __future__ import annotations

from typing import Any

from tacx.agents.agent import AgentProvider
from tacx.agents.base import ParsedEvent, StageContext, Usage
from tacx.agents.stream import (
    StreamParser,
    _bound,
    _clip,
    _int,
    _mentions_rate_limit,
    _num,
    _obj,
    _str,
    _summarise_input,
    _tool_output,
)
from tacx.workflow.model import StageSpec

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


class ClaudeProvider(AgentProvider):
    """Claude Code: `claude -p PROMPT --output-format stream-json --verbose ...`."""

    name = executable = "claude"
    parser_kind = "claude-stream-json"
    parser_class = ClaudeParser
    resumable = True
    permission_modes = {"read-only": "plan", "workspace-write": "acceptEdits", "danger-full-access": "bypassPermissions",
                        "auto_edit": "acceptEdits", "yolo": "bypassPermissions"}

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        return self.claude_options(spec, ctx) + list(spec.extra_args)

    def claude_options(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        args = ["-p", self.prompt(ctx), "--output-format", "stream-json", "--verbose"]
        if spec.model:
            args += ["--model", spec.model]
        if spec.max_turns:
            args += ["--max-turns", str(spec.max_turns)]
        if spec.allowed_tools:
            args += ["--allowedTools", ",".join(spec.allowed_tools)]
        if spec.permission_mode:
            args += ["--permission-mode", self.permission(spec.permission_mode)]
        if ctx.resume_session:
            args += ["--resume", ctx.resume_session]
        return args

