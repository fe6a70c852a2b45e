"""aider: its argv (one message, no prompts, no commits) and the parser of its console text,
whose rounded live figures give way to the exact ones of its --analytics-log file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tacx.agents.agent import AgentProvider
from tacx.agents.base import Outcome, ParsedEvent, StageContext, Usage, last_line
from tacx.agents.login import Login, Where, dotenv, read_text
from tacx.agents.stream import UNKNOWN_MODEL, StreamParser, _bound, _clip, _int, _loads, _num, _obj
from tacx.workflow.model import StageSpec

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


class AiderProvider(AgentProvider):
    """Aider: one message, no prompts, no commits; exact figures from its analytics log."""

    name = executable = "aider"
    parser_kind = "aider-text"
    parser_class = AiderParser
    error_lines = re.compile(r"\blitellm\.\w*(?:Error|Exception)\b")  # its own errors, amid the chat

    def sidecar(self, log_path: Path) -> Path | None:
        return log_path.with_suffix(".analytics.jsonl")

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        args = ["--message", self.prompt(ctx), "--yes-always", "--no-auto-commits", "--no-pretty", "--no-stream"]
        args += ["--analytics-log", str(self.sidecar(ctx.script_path)), "--no-analytics"]
        if spec.model:
            args += ["--model", spec.model]
        return args + list(spec.extra_args)

    def login(self, where: Where) -> Login:
        return aider_login(where)


# Besides every *_API_KEY and *_API_BASE (a local or self-hosted model): what litellm reaches
# models with that needs no key of that name.
_AIDER_ACCESS = ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "VERTEXAI_PROJECT")
_AIDER_CONF_KEY = re.compile(r"^\s*(?:[a-z]+-)?api-(?:key|base)\s*:", re.M)
_AIDER_LOCAL_MODEL = re.compile(r"^\s*model\s*:\s*['\"]?(?:ollama|ollama_chat|lm_studio)/", re.M)


def _key_name(env: Mapping[str, str]) -> str | None:
    return next((n for n, v in env.items()
                 if (n.endswith(("_API_KEY", "_API_BASE")) or n in _AIDER_ACCESS) and v.strip()), None)


def aider_login(where: Where) -> Login:
    """aider needs a model's key: any *_API_KEY in the environment, a .env file (the
    project's, the home's), .aider.conf.yml (`api-key:`, `openai-api-key:` ...) or the
    OpenRouter key its browser login saved (~/.aider/oauth-keys.env). A local model (an
    *_API_BASE, `model: ollama/...`) needs none. With none of these, headless aider offers
    the OpenRouter login in a browser and waits for it."""
    if name := _key_name(where.env):
        return Login("yes", f"{name} is set")
    if name := _key_name(dotenv(where.home / ".aider" / "oauth-keys.env")):
        return Login("yes", f"{name} saved by aider's login (~/.aider/oauth-keys.env)")
    for folder in [where.home] + ([where.project] if where.project is not None else []):
        if name := _key_name(dotenv(folder / ".env")):
            return Login("yes", f"{name} in {folder / '.env'}")
        conf = read_text(folder / ".aider.conf.yml") or ""
        if _AIDER_CONF_KEY.search(conf):
            return Login("yes", f"an api key in {folder / '.aider.conf.yml'}")
        if _AIDER_LOCAL_MODEL.search(conf):
            return Login("unknown", f"a local model in {folder / '.aider.conf.yml'}: it needs no key")
    return Login("no", "no API key: aider needs a model's key, e.g. ANTHROPIC_API_KEY or OPENAI_API_KEY"
                       " (or api-key: in .aider.conf.yml)")
