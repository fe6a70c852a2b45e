"""What agents spend and what it limits: usage written to the store, budgets, and the rest a
rate-limited provider takes. Plain functions and state; the coordinator acts on them."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from tacx.store import records
from tacx.agents.base import AgentState, ParsedEvent, Usage
from tacx.settings import Settings
from tacx.workflow.model import Budget

COOLDOWN_HORIZON = 3600.0  # an agent's "resets at" further ahead than this is not believed


def record_agent_output(
    conn: sqlite3.Connection,
    *,
    task_id: int,
    stage_id: int,
    stage: str,
    attempt: int,
    usage: list[ParsedEvent],
    notable: list[ParsedEvent],
    state: AgentState,
) -> None:
    """One round of an agent's output in the store: a usage row per message (a log parsed
    again after a crash inserts nothing twice), the stage's totals summed from those rows,
    what the agent said about itself, and the events worth keeping."""
    now = time.time()
    if usage:
        conn.executemany(
            "INSERT OR IGNORE INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens,"
            " output_tokens, cache_read_tokens, cache_write_tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (task_id, stage_id, attempt, now, e.data.get("message_id"), e.data.get("model") or state.model,
                 e.data.get("input", 0), e.data.get("output", 0), e.data.get("cache_read", 0),
                 e.data.get("cache_write", 0), e.data.get("cost_usd", 0.0))
                for e in usage
            ],
        )
    conn.execute(
        "UPDATE stages SET (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd) ="
        " (SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
        " COALESCE(SUM(cache_read_tokens), 0), COALESCE(SUM(cache_write_tokens), 0),"
        " COALESCE(SUM(cost_usd), 0) FROM usage WHERE stage_id = :id),"
        " session_id = COALESCE(:session, session_id), model = COALESCE(:model, model),"
        " turns = :turns, api_retries = :retries, rate_limits = :limits WHERE id = :id",
        {"id": stage_id, "session": state.session_id, "model": state.model, "turns": state.turns,
         "retries": state.api_retries, "limits": state.rate_limits},
    )
    for event in notable:
        records.add_event(conn, task_id, stage, f"agent.{event.kind}", event.data)


def rejected_limit(notable: list[ParsedEvent]) -> str | None:
    """The agent said it hit a rate limit (not a 429 it retried by itself): in its words."""
    rejected = [e for e in notable if e.kind == "rate_limit" and not str(e.data.get("status")).startswith("allowed")]
    if not rejected:
        return None
    data = rejected[-1].data
    return f"rate limit {data.get('status')}" + (f" ({data['detail']})" if data.get("detail") else "")


def budget_exceeded(budget: Budget | None, spent: Usage, base: tuple[float, int]) -> dict[str, Any] | None:
    """Which budget a task passed and by how much (None while it is within both). ``base``
    is what it had spent when last retried: a retried task gets its budget anew."""
    if budget is None:
        return None
    cost, tokens = spent.cost_usd - base[0], spent.tokens - base[1]
    since = " since the last retry" if base != (0.0, 0) else ""
    if budget.usd is not None and cost > budget.usd:
        message = f"budget exceeded: cost ${cost:.4f}{since} passed the budget of ${budget.usd:.2f} by ${cost - budget.usd:.4f}"
    elif budget.tokens is not None and tokens > budget.tokens:
        message = (
            f"budget exceeded: {tokens:,} tokens (input + output + cache){since} passed the budget of"
            f" {budget.tokens:,} by {tokens - budget.tokens:,}"
        )
    else:
        return None
    return {"error": message, "cost_usd": round(cost, 6), "tokens": tokens, "budget": budget.model_dump(exclude_none=True)}


def tokens_json(usage: Usage) -> dict[str, int]:
    return {"input": usage.input, "output": usage.output, "cache_read": usage.cache_read, "cache_write": usage.cache_write}


class Cooldowns:
    """Providers resting after they reported rate limiting, until a moment in Unix time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._until: dict[str, tuple[float, str]] = {}  # provider -> (until, why)

    def reason(self, name: str) -> str | None:
        """Why a provider is not chosen yet, while it rests."""
        until, why = self._until.get(name, (0.0, ""))
        left = until - time.time()
        if left <= 0:
            self._until.pop(name, None)
            return None
        return f"{name} is cooling down after a rate limit ({why}; {left:.0f}s left)"

    def start(self, name: str, why: str, resets_at: float | None) -> float | None:
        """Rest ``name`` for its cooldown from tacx.yaml, or until the agent said its limit
        resets; the end (Unix time) when this rest is new or longer, else None."""
        now = time.time()
        until = now + self.settings.cooldown(name)
        if resets_at and now < resets_at < now + COOLDOWN_HORIZON:
            until = max(until, resets_at)
        if self._until.get(name, (0.0, ""))[0] >= until:
            return None
        self._until[name] = (until, why)
        return until

    def active(self) -> dict[str, tuple[float, str]]:
        """Every provider still resting: name -> (until, why)."""
        return {name: self._until[name] for name in list(self._until) if self.reason(name)}

    def restore(self, conn: sqlite3.Connection) -> list[float]:
        """Rests still running from before a restart (recorded as events); their ends."""
        now = time.time()
        ends = []
        for (text,) in conn.execute(
            "SELECT data FROM events WHERE task_id IS NULL AND kind = 'provider.cooldown' AND ts > ? ORDER BY id",
            (now - 86400,),
        ):
            try:
                data = json.loads(text)
            except ValueError:
                continue
            if not isinstance(data, dict) or not isinstance(data.get("until"), (int, float)):
                continue
            if data["until"] > now and data.get("provider"):
                self._until[data["provider"]] = (data["until"], data.get("reason", "rate limited"))
                ends.append(data["until"])
        return ends
