"""Claude Code: its argv (`claude -p PROMPT --output-format stream-json --verbose ...`) and
the parser of its stream-json, with the error texts and rate-limit quirks of its results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tacx.agents.agent import AgentProvider
from tacx.agents.base import ParsedEvent, StageContext, Usage
from tacx.agents.login import Login, Where, first_set, read_json
from tacx.agents.stream import (
    UNKNOWN_MODEL,
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
    _usage_data,
)
from tacx.workflow.model import StageSpec

_CLAUDE_SUBTYPES = {
    "error_max_turns": "the agent reached its turn limit (max_turns)",
    "error_max_budget_usd": "the agent reached its budget limit (max_budget_usd)",
    "error_during_execution": "the agent failed during execution (error_during_execution)",
}


# A message's figures: input, output, cache_read, cache_write (all of them), of which 1-hour
# cache writes, and server-side web searches. Usage keeps the first four; the last two only
# change the computed cost (tacx/agents/prices.py).
Figures = tuple[int, int, int, int, int, int]


def _figures(u: dict[str, Any]) -> Figures:
    """A message's ``usage``: {input_tokens, output_tokens, cache_read_input_tokens,
    cache_creation_input_tokens, cache_creation: {ephemeral_5m_input_tokens,
    ephemeral_1h_input_tokens}, server_tool_use: {web_search_requests}} (the Anthropic API's
    usage, as Claude Code 2.x prints it; older versions lack the last two)."""
    write = _int(u.get("cache_creation_input_tokens"))
    hour = searches = 0
    split = u.get("cache_creation")
    if type(split) is dict:
        hour = _int(split.get("ephemeral_1h_input_tokens"))
        write = max(write, hour + _int(split.get("ephemeral_5m_input_tokens")))
    tools = u.get("server_tool_use")
    if type(tools) is dict:
        searches = _int(tools.get("web_search_requests"))
    return (_int(u.get("input_tokens")), _int(u.get("output_tokens")), _int(u.get("cache_read_input_tokens")),
            write, hour, searches)


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


def _denials(value: Any) -> str | None:
    """result.permission_denials, [{tool_name, tool_use_id, tool_input}], as a sentence:
    a run whose tools were refused is not a plain success."""
    if type(value) is not list or not value:
        return None
    shown = []
    for denial in value[:10]:
        d = _obj(denial)
        tool = _str(d.get("tool_name")) or "a tool"
        what = _summarise_input(d.get("tool_input")) if d.get("tool_input") else ""
        shown.append(f"{tool} ({what})" if what else tool)
    more = f" and {len(value) - 10} more" if len(value) > 10 else ""
    return (f"the agent was refused {len(value)} tool call(s): {', '.join(shown)}{more}"
            " (allow them with the stage's permission_mode, or extra_args such as --allowedTools)")


def _resets_from_text(text: str) -> float | None:
    """Older Claude Code ends a limited run with "Claude AI usage limit reached|<unix time>"."""
    tail = text.rsplit("|", 1)[-1].strip() if "|" in text else ""
    return float(tail) if tail.isdigit() else None


class ClaudeParser(StreamParser):
    """Claude Code's stream. Live: the latest figures of each message.id (one API message is
    printed on several lines whose usage grows), each increment a usage row. At the result:
    the agent's own totals per model (modelUsage), one "result:<model>" row per model for
    the difference, so the rows add up to the agent's totals."""

    DISPLAY_ONLY = (b'{"type":"user"',)  # tool results: often the biggest lines, never usage

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # message id -> [the usage object last read for it, its figures counted so far (each
        # the largest seen), the usage rows emitted for it, its model]
        self._messages: dict[str, list[Any]] = {}
        self._live: dict[str | None, list[float]] = {}  # model -> figures and cost counted
        self._streaming: dict[str | None, tuple[str, str | None]] = {}  # parent tool use -> message
        self._results = 0
        self._lines_without_id = 0
        self._handlers = {
            "assistant": self._assistant,
            "user": self._user,
            "system": self._system,
            "rate_limit_event": self._rate_limit,
            "stream_event": self._stream_event,
            "result": self._result,
        }

    def _take(self, mid: str, model: str | None, usage: dict[str, Any]) -> list[ParsedEvent]:
        """A usage object seen for message ``mid``: what grew since the figures counted for it
        (each field the largest seen: lines repeat and lag, never shrink) becomes a row."""
        seen = self._messages.get(mid)
        new = _figures(usage)
        if seen is None:
            self.state.turns += 1
            self._messages[mid] = [usage, new, 1, model]
            inc, row = new, mid
        else:
            if seen[0] == usage:  # the same figures again: the common repeat
                return []
            seen[0] = usage
            old = seen[1]
            merged = (max(old[0], new[0]), max(old[1], new[1]), max(old[2], new[2]),
                      max(old[3], new[3]), max(old[4], new[4]), max(old[5], new[5]))
            if merged == old:
                return []
            inc = (merged[0] - old[0], merged[1] - old[1], merged[2] - old[2],
                   merged[3] - old[3], merged[4] - old[4], merged[5] - old[5])
            seen[1] = merged
            seen[2] += 1
            model = seen[3]
            row = f"{mid}#{seen[2]}"
        u = Usage(inc[0], inc[1], inc[2], inc[3])
        u.cost_usd = cost = self._price(model, u, inc[4], inc[5])
        live = self._live.get(model)
        if live is None:
            self._live[model] = [inc[0], inc[1], inc[2], inc[3], inc[4], inc[5], cost]
        else:
            live[0] += inc[0]
            live[1] += inc[1]
            live[2] += inc[2]
            live[3] += inc[3]
            live[4] += inc[4]
            live[5] += inc[5]
            live[6] += cost
        return [self._count(row, model, u)]

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
            seen = self._messages.get(mid)
            if seen is None or seen[0] != usage:  # else the same figures again: the common repeat
                events += self._take(mid, _str(msg.get("model")) or self.state.model, usage)
        error = obj.get("error")  # e.g. "rate_limit" on the message an API failure became
        if type(error) is str and _mentions_rate_limit(error):
            self.state.rate_limited = True
        return events

    def _stream_event(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        """--include-partial-messages: one line per token chunk (content_block_*: nothing
        to read, the assistant lines carry the content); message_start names the message (and
        its first usage); message_delta carries its usage as it grows (the API's figures are
        cumulative), read like one more line of that message. Sub-agents stream apart
        (parent_tool_use_id)."""
        event = obj.get("event")
        if type(event) is not dict:
            return []
        kind = event.get("type")
        parent = obj.get("parent_tool_use_id")
        key = parent if type(parent) is str else None
        if kind == "message_start":
            msg = _obj(event.get("message"))
            mid = msg.get("id")
            if type(mid) is not str:  # cannot be matched to its assistant lines: they count it
                self._streaming.pop(key, None)
                return []
            model = _str(msg.get("model")) or self.state.model
            self._streaming[key] = (mid, model)
            usage = msg.get("usage")
            return self._take(mid, model, usage) if type(usage) is dict else []
        if kind == "message_delta":
            current = self._streaming.get(key)
            usage = event.get("usage")
            if current is None or type(usage) is not dict:
                return []
            return self._take(current[0], current[1], usage)
        return []

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
            # A retry storm before init (no network, say) is the first place the session shows.
            return self._set_session(obj.get("session_id")) + [ParsedEvent("retry", {
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
        events += self._settle_models(obj)
        is_error = obj.get("is_error") is True or bool(subtype and subtype.startswith("error"))
        if is_error:
            events.append(self._agent_error(_claude_error(obj, subtype, text)))
            if obj.get("api_error_status") in (429, "429"):
                state.rate_limited = True
            resets_at = _resets_from_text(text) if text else None
            if resets_at is not None:
                state.rate_limited, state.rate_limit_resets_at = True, resets_at
        elif refused := _denials(obj.get("permission_denials")):
            events.append(self._agent_error(refused))  # not a plain success: the work may be undone
        events.append(ParsedEvent("result", {
            "subtype": subtype, "is_error": is_error, "text": _clip(text) if text else None,
            "turns": state.turns, "duration_ms": obj.get("duration_ms"),
        }))
        return events

    def _final_figures(self, obj: dict[str, Any]) -> tuple[dict[str | None, list[int]], dict[str | None, float | None]]:
        """The result's figures per model, and each model's own cost where it gave one.
        modelUsage{model: {inputTokens, outputTokens, cacheReadInputTokens,
        cacheCreationInputTokens, webSearchRequests, costUSD}} covers every model the run used;
        without it, result.usage is the main model's only and the other models keep their live
        figures. modelUsage has no 1-hour split: a model keeps the one counted live."""
        finals: dict[str | None, list[int]] = {}
        costs: dict[str | None, float | None] = {}
        for name, mu in _obj(obj.get("modelUsage")).items():
            if type(mu) is dict:
                write = _int(mu.get("cacheCreationInputTokens"))
                live = self._live.get(name)
                finals[name] = [_int(mu.get("inputTokens")), _int(mu.get("outputTokens")),
                                _int(mu.get("cacheReadInputTokens")), write,
                                min(int(live[4]), write) if live else 0, _int(mu.get("webSearchRequests"))]
                costs[name] = _num(mu.get("costUSD"))
        if finals:
            return finals, costs
        for name, live in self._live.items():
            finals[name] = [int(x) for x in live[:6]]
            costs[name] = live[6]
        usage = obj.get("usage")
        if type(usage) is dict:
            main = self._main(finals, costs)
            figures = list(_figures(usage))
            if any(figures[:4]) or main not in finals:  # all zero: the main model failed, keep the live count
                finals[main], costs[main] = figures, None
        return finals, costs

    def _main(self, finals: dict[str | None, list[int]], costs: dict[str | None, float | None]) -> str | None:
        """The run's main model: the one it was started with (init's "claude-opus-4-8[1m]"
        is the messages' "claude-opus-4-8"), else, no model named, the one that did most."""
        model = self.state.model
        if model in finals or not finals:
            return model
        if model is None:
            return max(finals, key=lambda m: (costs.get(m) or 0.0, sum(finals[m][:4])))
        for name in finals:
            if name and (model.startswith(name) or name.startswith(model)):
                return name
        return model

    def _settle_models(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        """The agent's own totals replace the live ones, model by model: each model's
        difference becomes a "result:<model>" usage row (tokens and cost from the same
        figures, so they agree). Cost: total_cost_usd (it covers every model), split by
        modelUsage's costUSD; else the models' own costs; else the price table."""
        state = self.state
        finals, costs = self._final_figures(obj)
        given = [name for name in finals if costs[name] is not None]
        for name, f in finals.items():
            if costs[name] is None:
                costs[name] = self._price(name, Usage(f[0], f[1], f[2], f[3]), f[4], f[5])
        total = _num(obj.get("total_cost_usd"))
        if total is not None and total < 0:
            total = None
        if total is None and finals and len(given) == len(finals) and obj.get("modelUsage"):
            total = sum(c or 0.0 for c in costs.values())
        if total is not None:
            state.cost_reported, state.unpriced_model = True, None
            main = self._main(finals, costs)
            finals.setdefault(main, [0, 0, 0, 0, 0, 0])
            others = sum(c or 0.0 for name, c in costs.items() if name != main)
            if total >= others:
                costs[main] = total - others
            else:  # the others' computed costs overshoot the agent's total: scale them to it
                costs = {name: 0.0 if name == main else (c or 0.0) * total / others for name, c in costs.items()}
                costs[main] = 0.0
        self._results += 1
        suffix = f"#{self._results}" if self._results > 1 else ""
        events: list[ParsedEvent] = []
        final_total = Usage()
        settled: dict[str | None, list[float]] = {}
        for name in [*finals, *(m for m in self._live if m not in finals)]:
            f = finals.get(name)
            final = Usage(f[0], f[1], f[2], f[3], costs[name] or 0.0) if f else Usage()
            live = self._live.get(name)
            diff = final - (Usage(int(live[0]), int(live[1]), int(live[2]), int(live[3]), live[6]) if live else Usage())
            if diff.input or diff.output or diff.cache_read or diff.cache_write or diff.cost_usd:
                row = f"result:{name or UNKNOWN_MODEL}{suffix}"
                events.append(ParsedEvent("usage", _usage_data(row, name, diff)))
            final_total = final_total + final
            if f:
                settled[name] = [*f, final.cost_usd]
        self._live = settled
        if total is not None:
            final_total.cost_usd = total
        state.usage = final_total
        state.final = True
        return events


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

    def login(self, where: Where) -> Login:
        return claude_login(where)


_CLAUDE_KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
_CLAUDE_CLOUDS = {"CLAUDE_CODE_USE_BEDROCK": "Amazon Bedrock", "CLAUDE_CODE_USE_VERTEX": "Google Vertex AI",
                  "CLAUDE_CODE_USE_FOUNDRY": "Microsoft Foundry"}
MANAGED_SETTINGS = Path("/etc/claude-code/managed-settings.json")


def claude_login(where: Where) -> Login:
    """Claude Code's sources of credentials, in the order `claude auth status` reports them:
    a key or token in the environment (or in a settings file's `env`), a cloud provider,
    an apiKeyHelper, a key approved at /login, the claude.ai login. A claude.ai login
    without the user:inference scope is not one (`claude auth status` says so too)."""
    config = Path(where.env["CLAUDE_CONFIG_DIR"]).expanduser() if where.set("CLAUDE_CONFIG_DIR") else where.home / ".claude"
    files = [config / "settings.json"]
    if where.project is not None:  # the project's own, shared and local, apply to sessions there
        files += [where.project / ".claude" / "settings.json", where.project / ".claude" / "settings.local.json"]
    settings = [s for s in (read_json(f) for f in (*files, MANAGED_SETTINGS)) if s]
    env = dict(where.env)
    for s in settings:
        if isinstance(s.get("env"), dict):
            env.update({k: str(v) for k, v in s["env"].items()})
    merged = Where(env, where.home, where.project)
    if name := first_set(merged, _CLAUDE_KEYS):
        return Login("yes", f"{name} is set" + ("" if where.set(name) else " (settings.json env)"))
    for name, cloud in _CLAUDE_CLOUDS.items():
        if merged.true(name):
            return Login("yes", f"{cloud} ({name})")
    if any(isinstance(s.get("apiKeyHelper"), str) and s["apiKeyHelper"].strip() for s in settings):
        return Login("yes", "apiKeyHelper in settings.json")
    account = read_json(config / ".claude.json") or read_json(where.home / ".claude.json") or {}
    if isinstance(account.get("primaryApiKey"), str) and account["primaryApiKey"]:
        return Login("yes", "an API key approved at /login (~/.claude.json)")
    oauth = (read_json(config / ".credentials.json") or {}).get("claudeAiOauth")
    if isinstance(oauth, dict) and oauth.get("accessToken"):
        scopes = oauth.get("scopes")
        if isinstance(scopes, list) and "user:inference" in scopes:
            plan = oauth.get("subscriptionType")
            return Login("yes", "claude.ai login" + (f" ({plan})" if isinstance(plan, str) and plan else ""))
        # Claude Code 2.1.197's `claude auth status` says loggedIn false for such a file, scopes missing or not.
        return Login("no", "not logged in: the claude.ai login in .credentials.json lacks the user:inference scope"
                           " (run `claude auth login` again)")
    if sys.platform == "darwin":
        return Login("unknown", "no key in the environment; a claude.ai login would be in the macOS keychain")
    return Login("no", "not logged in: no ANTHROPIC_API_KEY and no claude.ai login in"
                       f" {config}/.credentials.json (run `claude auth login`, or set ANTHROPIC_API_KEY)")
