"""aider's console-text parser and its analytics log, fed real bytes (no mocks).
Expected figures are worked out by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tacx.agents.base import OutputParser, Usage
from tacx.agents.registry import make_parser
from tests.streams import GARBAGE, assert_usage, kinds, run, usage_sum

AIDER_OUTPUT = b"""\
Aider v0.86.1
Main model: anthropic/claude-sonnet-4-5 with diff edit format, infinite output
Git repo: .git with 12 files
Applied edit to hello.py
Tokens: 2.1k sent, 300 received. Cost: $0.01 message, $0.05 session.
I changed hello.py to print the greeting.

Tokens: 12k sent, 8.2k cache write, 3.1k cache hit, 512 received.
Cost: $0.04 message, $0.09 session.
"""


def aider(analytics: Path | None = None) -> OutputParser:
    return make_parser("aider-text", analytics_path=analytics)


def test_aider_text_gives_live_usage() -> None:
    p = aider()
    events = run(p, AIDER_OUTPUT)
    usage = [e.data for e in events if e.kind == "usage"]
    # 2.1k -> 2100 sent, 300 received; cost from the session total: 0.05.
    assert (usage[0]["input"], usage[0]["output"], usage[0]["cost_usd"]) == (2100, 300, 0.05)
    # 12k sent, 8.2k cache write, 3.1k cache hit, 512 received; the Cost line that follows
    # belongs to it: 0.09 - 0.05 = 0.04.
    assert (usage[1]["input"], usage[1]["cache_write"], usage[1]["cache_read"], usage[1]["output"]) == (12000, 8200, 3100, 512)
    assert usage[1]["cost_usd"] == pytest.approx(0.04)
    assert [u["message_id"] for u in usage] == ["message-1", "message-2"]
    assert_usage(p.state.usage, Usage(14100, 812, 3100, 8200, 0.09))
    assert_usage(usage_sum(events), p.state.usage)
    assert p.state.cost_reported and not p.state.final and p.state.turns == 2
    assert p.state.model == "anthropic/claude-sonnet-4-5"
    assert p.outcome.result == "I changed hello.py to print the greeting."
    assert not p.outcome.failed


def test_aider_number_formats() -> None:
    p = aider()
    run(p, [b"Tokens: 1,234 sent, 1.5M received. Cost: $1,000.50 request, $1,000.50 session.", b"ok"])
    assert_usage(p.state.usage, Usage(1234, 1_500_000, 0, 0, 1000.5))


def test_aider_analytics_override_the_rounded_text(tmp_path: Path) -> None:
    log = tmp_path / "analytics.jsonl"
    log.write_text("\n".join([
        json.dumps({"event": "launched", "properties": {}, "user_id": "u", "time": 1}),
        json.dumps({"event": "message_send", "properties": {"main_model": "anthropic/claude-sonnet-4-5",
                    "prompt_tokens": 2134, "completion_tokens": 301, "total_tokens": 2435,
                    "cost": 0.0109, "total_cost": 0.0109}, "time": 2}),
        "not json",
        json.dumps({"event": "message_send", "properties": {"prompt_tokens": 12010, "completion_tokens": 515,
                    "cost": 0.0398, "total_cost": 0.0507}, "time": 3}),
        "",
    ]))
    p = aider(log)
    events = run(p, AIDER_OUTPUT)
    # Exact: sent 2134 + 12010 = 14144, received 301 + 515 = 816, cost 0.0109 + 0.0398 =
    # 0.0507; cache figures only come from the text (3100 read, 8200 written).
    exact = Usage(14144, 816, 3100, 8200, 0.0507)
    assert_usage(p.state.usage, exact)
    assert p.state.final and p.state.cost_reported
    [adjust] = p.final_events()
    # The adjustment: 14144 - 14100 = 44, 816 - 812 = 4, 0.0507 - 0.09 = -0.0393.
    assert adjust.data["message_id"] == "result"
    assert (adjust.data["input"], adjust.data["output"], adjust.data["cache_read"], adjust.data["cache_write"]) == (44, 4, 0, 0)
    assert adjust.data["cost_usd"] == pytest.approx(-0.0393)
    assert_usage(usage_sum(events), exact)


def test_aider_missing_analytics_keeps_live_totals(tmp_path: Path) -> None:
    p = aider(tmp_path / "never-written.jsonl")
    run(p, AIDER_OUTPUT)
    assert not p.state.final and p.final_events() == []
    assert_usage(p.state.usage, Usage(14100, 812, 3100, 8200, 0.09))


def test_aider_without_cost_is_unpriced_and_flushes_at_finish() -> None:
    p = aider()
    events = []
    for line in [b"Model: ollama/qwen3 with whole edit format", b"Tokens: 900 sent, 40 received."]:
        events += p.feed(line)
    assert "usage" not in kinds(events)  # its Cost line might still come
    outcome = p.finish(b"")
    final = p.final_events()
    assert kinds(final) == ["usage"]
    assert p.state.unpriced_model == "ollama/qwen3"
    assert p.state.usage == Usage(900, 40, 0, 0, 0.0)
    assert outcome.result == "Model: ollama/qwen3 with whole edit format" and not outcome.failed


def test_aider_garbage_and_retries() -> None:
    p = aider()
    run(p, [*GARBAGE, b"litellm.RateLimitError: AnthropicException - rate limited",
            b"Retrying in 0.2 seconds...", b"\x1b[32mAll done.\x1b[0m\r"])
    assert p.state.rate_limited and p.state.api_retries == 1
    assert p.outcome.result == "All done." and not p.outcome.failed

