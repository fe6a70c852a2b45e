"""Google's Gemini CLI: its argv (`gemini -p PROMPT -o stream-json ...`) and the parser of its
stream-json, whose token totals come with the result and are priced per model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tacx.agents.agent import AgentProvider
from tacx.agents.base import ParsedEvent, StageContext, Usage
from tacx.agents.errors import human_error
from tacx.agents.login import Login, Where, dotenv, nonempty, read_json, upward
from tacx.agents.stream import (
    StreamParser, _bound, _clip, _int, _obj, _str, _summarise_input, _tool_output, _usage_data,
)
from tacx.workflow.model import StageSpec


def _gemini_usage(stats: dict[str, Any]) -> Usage:
    """Gemini's stats (the totals, or one model's) as tokens. ``input_tokens`` is the whole
    prompt, cached included; ``output_tokens`` is the candidates only, and ``total_tokens``
    (the API's totalTokenCount) adds the thinking tokens (and any tool-use prompt), which
    Google bills at the output rate: what the total holds beyond prompt and candidates counts
    as output, so the tokens add up to the CLI's own total."""
    prompt = _int(stats.get("input_tokens"))
    if "cached" in stats:
        cached = _int(stats["cached"])
        uncached = _int(stats["input"]) if "input" in stats else max(prompt - cached, 0)
    else:  # no split, or only the uncached part
        uncached = _int(stats["input"]) if "input" in stats else prompt
        cached = max(prompt - uncached, 0)
    prompt = max(prompt, uncached + cached)
    output = max(_int(stats.get("output_tokens")), _int(stats.get("total_tokens")) - prompt)
    return Usage(uncached, output, cached, 0)


def _split_cached(total: Usage, parts: list[tuple[str, Usage, bool]]) -> None:
    """Per-model entries without a cached split (``has_split`` False) carry their whole
    prompt as uncached input: give them the cached tokens the totals hold beyond the split
    ones, in proportion to their prompt, so cached input is never priced at the full rate."""
    unsplit = [u for _, u, has_split in parts if not has_split]
    spare = total.cache_read - sum(u.cache_read for _, u, has_split in parts if has_split)
    prompt = sum(u.input for u in unsplit)
    if not unsplit or spare <= 0 or prompt <= 0:
        return
    for u in unsplit:
        share = min(u.input, spare * u.input // prompt)
        u.input, u.cache_read = u.input - share, u.cache_read + share


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
        message = human_error(_str(obj.get("message")) or "the agent reported an error")
        if obj.get("severity") == "warning":
            return [ParsedEvent("error", {"message": _clip(message)})]
        return [self._agent_error(message)]

    def _result(self, obj: dict[str, Any]) -> list[ParsedEvent]:
        state = self.state
        self._result_seen = True
        status = _str(obj.get("status"))
        stats = obj.get("stats")
        events = self._final_events(stats) if type(stats) is dict else []
        if status == "success":
            state.error = None  # any error event before was recovered from
        else:
            error = obj.get("error")
            message = _str(_obj(error).get("message") if type(error) is dict else error)
            message = human_error(message) if message else None
            events.append(self._agent_error(message or state.error or f"the agent's result status was {status!r}"))
        events.append(ParsedEvent("result", {
            "subtype": status, "is_error": status != "success",
            "text": _clip(state.result) if state.result else None, "turns": state.turns,
            "duration_ms": _obj(stats).get("duration_ms"),
        }))
        return events

    def _final_events(self, stats: dict[str, Any]) -> list[ParsedEvent]:
        """The totals of stats become the stage's; when stats.models breaks them down, one
        usage event per model (each priced at its own rate, what the models leave of the
        totals with the model of ``init``), so the store knows which model spent what."""
        state = self.state
        final, parts = self._final_usage(stats)
        if not parts or state.final or state.usage.tokens or state.usage.cost_usd:
            return self._settle(final)
        state.usage, state.final = final, True
        return [ParsedEvent("usage", _usage_data(f"result:{name}", name, u)) for name, u in parts
                if u.tokens or u.cost_usd]

    def _final_usage(self, stats: dict[str, Any]) -> tuple[Usage, list[tuple[str | None, Usage]]]:
        """Totals from stats, and the usage of each model (priced) when stats.models adds
        up to no more than them."""
        final = _gemini_usage(stats)
        split = [(name, _gemini_usage(m), "cached" in m or "input" in m)
                 for name, m in _obj(stats.get("models")).items() if type(m) is dict]
        _split_cached(final, split)
        rest = final - sum((u for _, u, _ in split), Usage())
        if not split or min(rest.input, rest.output, rest.cache_read, rest.cache_write) < 0:
            final.cost_usd = self._price(self.state.model, final)
            return final, []
        merged: dict[str | None, Usage] = {}  # one entry per model (a usage event's id names it)
        for name, u in [*((name, u) for name, u, _ in split), (self.state.model, rest)]:
            if u.tokens:
                merged[name] = merged.get(name, Usage()) + u
        parts = list(merged.items())
        for name, u in parts:
            u.cost_usd = self._price(name, u)
        final.cost_usd = sum(u.cost_usd for _, u in parts)
        return final, parts


class GeminiProvider(AgentProvider):
    """Gemini CLI: `gemini -p PROMPT -o stream-json [-m M] [--approval-mode MODE]`."""

    name = executable = "gemini"
    parser_kind = "gemini-stream-json"
    parser_class = GeminiParser
    resumable = True
    default_model = "gemini-2.5-pro"
    auth_exit_codes = frozenset({41})  # FATAL_AUTHENTICATION_ERROR: no auth method, or what it needs is missing
    permission_modes = {"acceptEdits": "auto_edit", "bypassPermissions": "yolo", "workspace-write": "auto_edit",
                        "danger-full-access": "yolo", "read-only": "default", "plan": "default"}

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        args = ["-p", self.prompt(ctx), "-o", "stream-json"]
        if spec.model:
            args += ["-m", spec.model]
        if spec.permission_mode:
            args += ["--approval-mode", self.permission(spec.permission_mode)]
        if spec.allowed_tools:
            args += ["--allowed-tools", ",".join(spec.allowed_tools)]
        if ctx.resume_session:
            args += ["--resume", ctx.resume_session]
        return args + list(spec.extra_args)

    def login(self, where: Where) -> Login:
        return gemini_login(where)


SYSTEM_SETTINGS = Path("/etc/gemini-cli/settings.json")
_GEMINI_NAMES = ("GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_GCA", "GOOGLE_API_KEY",
                 "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_APPLICATION_CREDENTIALS",
                 "CLOUD_SHELL", "GEMINI_CLI_USE_COMPUTE_ADC")


def _auth_settings(settings: dict[str, Any]) -> tuple[str | None, bool]:
    """(the auth type a settings file chooses, whether it says auth is external)."""
    security = settings.get("security") if isinstance(settings.get("security"), dict) else {}
    auth = security.get("auth") if isinstance(security.get("auth"), dict) else {}
    chosen = auth.get("selectedType") or settings.get("selectedAuthType")  # flat before gemini-cli 0.3
    return (chosen if isinstance(chosen, str) and chosen else None), auth.get("useExternal") is True


def gemini_login(where: Where) -> Login:
    """What gemini's validateNonInteractiveAuth asks for: an auth type chosen in a
    settings.json (user, then project, then system, the later winning) or told by the
    environment (GOOGLE_GENAI_USE_GCA, GOOGLE_GENAI_USE_VERTEXAI, GEMINI_API_KEY,
    CLOUD_SHELL), and what that type needs. gemini also reads .env files (the project's and
    its parents', ~/.gemini/.env, ~/.env). Its home is $GEMINI_CLI_HOME/.gemini when set."""
    base = Path(where.env["GEMINI_CLI_HOME"]).expanduser() if where.set("GEMINI_CLI_HOME") else where.home
    gemini_dir = base / ".gemini"
    files = [gemini_dir / "settings.json"]
    if where.project is not None:
        files.append(where.project / ".gemini" / "settings.json")
    files.append(Path(where.env.get("GEMINI_CLI_SYSTEM_SETTINGS_PATH") or SYSTEM_SETTINGS))
    chosen: str | None = None
    for path in files:
        settings = read_json(path, comments=True)
        if settings is None:
            if path.is_file():
                return Login("unknown", f"cannot read {path}: it may choose an auth method")
            continue
        selected, external = _auth_settings(settings)
        if external:
            return Login("unknown", f"{path} says auth is external (security.auth.useExternal)")
        chosen = selected or chosen
    dotenvs = [*upward(where.project, ".gemini/.env", ".env"), gemini_dir / ".env", where.home / ".env"]
    from_files = {k: v for path in reversed(dotenvs) for k, v in dotenv(path).items() if k in _GEMINI_NAMES}
    env = {**from_files, **where.env}
    known = Where(env, where.home, where.project)
    if chosen is None:
        chosen = ("oauth-personal" if known.true("GOOGLE_GENAI_USE_GCA") else "vertex-ai"
                  if known.true("GOOGLE_GENAI_USE_VERTEXAI") else "gemini-api-key" if known.set("GEMINI_API_KEY")
                  else "compute-default-credentials" if known.true("CLOUD_SHELL")
                  or known.true("GEMINI_CLI_USE_COMPUTE_ADC") else None)
    if chosen is None:
        return Login("no", "no auth method: set GEMINI_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_GENAI_USE_GCA),"
                           " or choose one in ~/.gemini/settings.json")
    if chosen == "gemini-api-key":
        if known.set("GEMINI_API_KEY"):
            return Login("yes", "GEMINI_API_KEY" + (" (.env)" if "GEMINI_API_KEY" not in where.env else ""))
        return Login("no", "settings choose gemini-api-key, but GEMINI_API_KEY is not set")
    if chosen == "vertex-ai":
        if known.set("GOOGLE_API_KEY") or (known.set("GOOGLE_CLOUD_PROJECT") and known.set("GOOGLE_CLOUD_LOCATION")):
            return Login("yes", "Vertex AI")
        return Login("no", "Vertex AI needs GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION, or GOOGLE_API_KEY")
    if chosen == "oauth-personal":
        adc = known.env.get("GOOGLE_APPLICATION_CREDENTIALS") or os.path.join(
            where.home, ".config", "gcloud", "application_default_credentials.json")
        if nonempty(gemini_dir / "oauth_creds.json"):
            return Login("yes", "Google login (~/.gemini/oauth_creds.json)")
        if nonempty(Path(adc)):
            return Login("yes", "Google application default credentials")
        return Login("no", "not logged in: Google login needs one interactive run of `gemini` first"
                           " (no ~/.gemini/oauth_creds.json); or set GEMINI_API_KEY")
    return Login("unknown", f"auth method {chosen!r}")
