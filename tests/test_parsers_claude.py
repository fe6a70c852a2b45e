"""Claude Code's stream-json parser, fed real bytes (no mocks).

The sample stream is the one in shared/reference/agent-cli-formats.md, verbatim.
Expected figures are worked out by hand in the comments.
"""

from __future__ import annotations

import json

import pytest

from tacx.agents.base import EVENT_TEXT_LIMIT, OutputParser, Usage
from tacx.agents.registry import make_parser
from tacx.agents.stream import NO_RESULT
from tests.streams import CLAUDE_SAMPLE, GARBAGE, assert_usage, kinds, lines, run, usage_sum


CLAUDE_SESSION = "8d45afe0-771b-4803-8379-491dd9455365"


def claude(**kwargs: object) -> OutputParser:
    return make_parser("claude-stream-json", **kwargs)  # type: ignore[arg-type]


def result_line(**fields: object) -> bytes:
    base: dict[str, object] = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                               "result": "done", "session_id": CLAUDE_SESSION}
    base.update(fields)
    return json.dumps(base).encode()


def test_claude_sample_stream() -> None:
    p = claude()
    events = run(p, CLAUDE_SAMPLE)
    s = p.state
    assert kinds(events) == ["session", "text", "usage", "tool_use", "tool_result", "retry", "usage", "result"]
    assert events[0].data == {"session_id": CLAUDE_SESSION, "model": "claude-sonnet-4-5-20250929"}
    assert events[3].data == {"id": "toolu_01X", "name": "Bash", "input": "pytest -q"}
    assert events[4].data == {"id": "toolu_01X", "output": "3 passed in 0.41s", "is_error": False}
    assert events[5].data == {"attempt": 1, "delay_ms": 2000, "status": 529, "error": "server_error"}
    # msg_01A is on two lines with the same usage: counted once. Live cost at Sonnet prices
    # (3 / 15 / 0.30 / 3.75 per million): (3*3 + 8*15 + 14000*0.30 + 12000*3.75) / 1e6
    # = (9 + 120 + 4200 + 45000) / 1e6 = 0.049329.
    live = events[2].data
    assert live["message_id"] == "msg_01A"
    assert (live["input"], live["output"], live["cache_read"], live["cache_write"]) == (3, 8, 14000, 12000)
    assert live["cost_usd"] == pytest.approx(0.049329)
    # The result's totals win: input 8, output 275, cache_read 40000, cache_write 12600,
    # cost 0.063399 (the agent's own). The model's "result:<model>" adjustment (one row per
    # model of modelUsage) is the difference: 5, 267, 26000, 600, 0.063399 - 0.049329 = 0.01407.
    adjust = events[6].data
    assert adjust["message_id"] == "result:claude-sonnet-4-5-20250929"
    assert adjust["model"] == "claude-sonnet-4-5-20250929"
    assert (adjust["input"], adjust["output"], adjust["cache_read"], adjust["cache_write"]) == (5, 267, 26000, 600)
    assert adjust["cost_usd"] == pytest.approx(0.01407)
    final = Usage(8, 275, 40000, 12600, 0.063399)
    assert s.usage == final
    assert_usage(usage_sum(events), final)
    assert s.final and s.cost_reported and s.unpriced_model is None
    assert s.session_id == CLAUDE_SESSION
    assert s.model == "claude-sonnet-4-5-20250929"
    assert (s.turns, s.api_retries, s.rate_limits) == (2, 1, 0)
    assert not s.rate_limited  # 529 is overload, not a rate limit
    assert s.result == "All 3 tests pass."
    assert events[7].data == {"subtype": "success", "is_error": False, "text": "All 3 tests pass.",
                              "turns": 2, "duration_ms": 9120}
    assert p.outcome.result == "All 3 tests pass." and not p.outcome.failed and p.outcome.error is None


def test_claude_state_is_current_after_every_line() -> None:
    p = claude()
    sample = lines(CLAUDE_SAMPLE)
    p.feed(sample[0])
    assert p.state.session_id == CLAUDE_SESSION and p.state.usage == Usage()
    p.feed(sample[1])
    assert p.state.usage.tokens == 3 + 8 + 14000 + 12000 and p.state.turns == 1
    p.feed(sample[2])  # the same message again
    assert p.state.usage.tokens == 3 + 8 + 14000 + 12000 and p.state.turns == 1
    p.feed(sample[4])
    assert p.state.api_retries == 1
    assert not p.state.final


def test_claude_lines_with_cr_and_leading_space_parse() -> None:
    p = claude()
    events = run(p, [b"  " + line + b"\r" for line in lines(CLAUDE_SAMPLE)])
    assert p.state.usage == Usage(8, 275, 40000, 12600, 0.063399)
    assert kinds(events).count("usage") == 2


def test_claude_is_error_with_subtype_success_fails_with_the_agents_message() -> None:
    p = claude()
    run(p, [lines(CLAUDE_SAMPLE)[0], result_line(
        is_error=True, result="Invalid API key · Please run /login", api_error_status=401,
        total_cost_usd=0, usage={"input_tokens": 0, "output_tokens": 0})])
    assert p.outcome.failed
    assert p.outcome.error == p.state.error == (
        "the agent reported an error (subtype success, is_error true, API status 401): "
        "Invalid API key · Please run /login")
    assert not p.state.rate_limited


@pytest.mark.parametrize("subtype, words", [
    ("error_max_turns", "the agent reached its turn limit (max_turns)"),
    ("error_max_budget_usd", "the agent reached its budget limit (max_budget_usd)"),
    ("error_during_execution", "the agent failed during execution (error_during_execution)"),
    ("error_something_new", "the agent ended with error_something_new"),
])
def test_claude_error_subtypes_are_named(subtype: str, words: str) -> None:
    p = claude()
    line = json.loads(result_line(subtype=subtype, is_error=True))
    del line["result"]  # error results carry no result text
    run(p, [json.dumps(line).encode()])
    assert p.outcome.failed
    assert p.outcome.error == words


def test_claude_error_lists_its_errors() -> None:
    p = claude()
    line = json.loads(result_line(subtype="error_during_execution", is_error=True, errors=["tool crashed", 3]))
    del line["result"]
    run(p, [json.dumps(line).encode()])
    assert p.outcome.error == "the agent failed during execution (error_during_execution): tool crashed"


def test_claude_missing_result_fails_and_keeps_live_totals() -> None:
    p = claude()
    events = run(p, lines(CLAUDE_SAMPLE)[:-1])
    assert p.outcome.failed and p.outcome.error == NO_RESULT == p.state.error
    # Live totals stay: msg_01A once, priced from the table.
    assert_usage(p.state.usage, Usage(3, 8, 14000, 12000, 0.049329))
    assert not p.state.final and not p.state.cost_reported
    assert_usage(usage_sum(events), p.state.usage)


def test_claude_session_id_changes_on_resume_latest_wins() -> None:
    p = claude()
    init = json.loads(lines(CLAUDE_SAMPLE)[0])
    resumed = dict(init, session_id="new-session-2")
    events = run(p, [json.dumps(init).encode(), json.dumps(resumed).encode(), result_line(session_id="new-session-3")])
    assert p.state.session_id == "new-session-3"
    assert [e.data["session_id"] for e in events if e.kind == "session"] == [CLAUDE_SESSION, "new-session-2", "new-session-3"]


def test_claude_messages_counted_once_each() -> None:
    def assistant(mid: str, usage: dict[str, int]) -> bytes:
        return json.dumps({"type": "assistant", "message": {
            "id": mid, "model": "claude-haiku-4-5", "content": [{"type": "text", "text": "x"}], "usage": usage}}).encode()

    u1 = {"input_tokens": 10, "output_tokens": 100, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0}
    u2 = {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 2000}
    p = claude()
    events = run(p, [assistant("m1", u1), assistant("m1", u1), assistant("m2", u2), assistant("m1", u1), assistant("m2", u2)])
    # Haiku 4.5 (1 / 5 / 0.10 / 1.25): m1 = (10 + 500 + 100) / 1e6 = 0.00061;
    # m2 = (1 + 5 + 2500) / 1e6 = 0.002506.
    usage = [e.data for e in events if e.kind == "usage"]
    assert [u["message_id"] for u in usage] == ["m1", "m2"]
    assert_usage(p.state.usage, Usage(11, 101, 1000, 2000, 0.00061 + 0.002506))
    assert p.state.turns == 2
    assert p.outcome.failed  # no result line


def test_claude_result_without_total_cost_uses_model_usage_then_prices() -> None:
    usage = {"input_tokens": 1000, "output_tokens": 1000, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    p = claude()
    run(p, [result_line(usage=usage, modelUsage={"claude-sonnet-4-5": {"inputTokens": 1000, "outputTokens": 1000, "costUSD": 0.5}})])
    assert p.state.usage.cost_usd == 0.5 and p.state.cost_reported
    p = claude(model="claude-sonnet-4-5")
    run(p, [result_line(usage=usage)])
    # Sonnet: (1000*3 + 1000*15) / 1e6 = 0.018, computed
    assert p.state.usage.cost_usd == pytest.approx(0.018) and not p.state.cost_reported and p.state.final


def test_claude_api_retry_429_is_rate_limiting() -> None:
    p = claude()
    run(p, [b'{"type":"system","subtype":"api_retry","attempt":3,"retry_delay_ms":8000,"error_status":429,"error":"rate_limit"}',
            result_line()])
    assert p.state.api_retries == 1 and p.state.rate_limited
    assert not p.outcome.failed


def test_claude_rate_limit_events() -> None:
    def event(status: str, resets: int = 1784079000) -> bytes:
        return json.dumps({"type": "rate_limit_event", "rate_limit_info": {
            "status": status, "resetsAt": resets, "rateLimitType": "five_hour"}, "session_id": CLAUDE_SESSION}).encode()

    p = claude()
    assert p.feed(event("allowed")) == []  # routine, on every turn
    assert p.state.rate_limits == 0
    [warning] = p.feed(event("allowed_warning"))
    assert warning.kind == "rate_limit" and warning.data["status"] == "allowed_warning"
    assert p.state.rate_limits == 1 and not p.state.rate_limited and p.state.rate_limit_resets_at is None
    [rejected] = p.feed(event("rejected", 1778565600))
    assert rejected.data == {"status": "rejected", "resets_at": 1778565600.0, "detail": "rateLimitType five_hour"}
    assert p.state.rate_limits == 2 and p.state.rate_limited and p.state.rate_limit_resets_at == 1778565600.0
    assert p.feed(b'{"type":"rate_limit_event"}') == []  # bare: nothing to go on


def test_claude_usage_limit_result_is_rate_limited() -> None:
    p = claude()
    run(p, [result_line(is_error=True, result="Claude AI usage limit reached|1753120800")])
    assert p.outcome.failed and p.state.rate_limited and p.state.rate_limit_resets_at == 1753120800.0


def test_claude_skips_garbage_and_never_raises() -> None:
    p = claude()
    sample = lines(CLAUDE_SAMPLE)
    mixed = [sample[0], *GARBAGE, *sample[1:3],
             b'{"type":"assistant","message":"not an object"}',
             b'{"type":"assistant","message":{"id":["x"],"content":"text","usage":[]}}',
             b'{"type":"user","message":{"content":[{"type":"tool_result","content":[{"type":"text","text":"a"},{"type":"image"}]}]}}',
             b'{"type":"result","usage":"none","num_turns":"2","total_cost_usd":"1"}',
             *sample[3:]]
    events = run(p, mixed)
    assert p.state.usage == Usage(8, 275, 40000, 12600, 0.063399)
    assert_usage(usage_sum(events), p.state.usage)
    assert {"id": None, "output": "a\n[image]", "is_error": False} in [e.data for e in events if e.kind == "tool_result"]
    assert not p.outcome.failed


def test_claude_event_text_is_bounded() -> None:
    p = claude()
    big = "é" * (EVENT_TEXT_LIMIT * 3)
    [text, tool] = p.feed(json.dumps({"type": "assistant", "message": {"content": [
        {"type": "text", "text": big},
        {"type": "tool_use", "id": "t", "name": "Write", "input": {"content": big, "mode": 1, "nested": {"a": 1}}},
    ]}}).encode())
    assert len(text.data["text"]) == EVENT_TEXT_LIMIT and text.data["text"].endswith("…")
    assert len(tool.data["input"]) <= 200 and tool.data["input"].startswith("content=éé")
    [result] = p.feed(json.dumps({"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": "t", "content": big * 10, "is_error": True}]}}).encode())
    assert len(result.data["output"]) == EVENT_TEXT_LIMIT and result.data["is_error"]


def test_claude_unknown_model_is_unpriced() -> None:
    p = claude()
    p.feed(json.dumps({"type": "assistant", "message": {"id": "m", "model": "claude-9-ultra", "content": [],
                       "usage": {"input_tokens": 10, "output_tokens": 10}}}).encode())
    assert p.state.unpriced_model == "claude-9-ultra" and p.state.usage.cost_usd == 0
    p.feed(json.dumps({"type": "assistant", "message": {"id": "m2", "model": "<synthetic>", "content": [],
                       "usage": {"input_tokens": 0, "output_tokens": 0}}}).encode())
    assert p.state.unpriced_model == "claude-9-ultra"  # a message with no tokens names no model


def test_mock_model_is_priced_like_sonnet() -> None:
    p = claude()
    events = p.feed(json.dumps({"type": "assistant", "message": {"id": "m", "model": "mock-sonnet", "content": [],
                                "usage": {"input_tokens": 1_000_000, "output_tokens": 0}}}).encode())
    assert events[0].data["cost_usd"] == pytest.approx(3.0) and p.state.unpriced_model is None


def test_accounting_only_skips_tool_results_and_counts_the_same() -> None:
    """The engine's parser (display=False) leaves tool-result lines unread: same figures."""
    lines = [
        b'{"type":"assistant","message":{"id":"m1","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],'
        b'"usage":{"input_tokens":3,"output_tokens":8,"cache_read_input_tokens":100,"cache_creation_input_tokens":50}}}',
        b'{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t","type":"tool_result","content":"'
        + b"x" * 100_000 + b'"}]}}',
        b'{"type":"result","subtype":"success","is_error":false,"result":"done","total_cost_usd":0.5,'
        b'"usage":{"input_tokens":3,"output_tokens":8,"cache_read_input_tokens":100,"cache_creation_input_tokens":50}}',
    ]
    full, lean = make_parser("claude-stream-json"), make_parser("claude-stream-json", display=False)
    full_events = [e for line in lines for e in full.feed(line)]
    lean_events = [e for line in lines for e in lean.feed(line)]
    assert any(e.kind == "tool_result" for e in full_events)
    assert not any(e.kind == "tool_result" for e in lean_events)
    assert full.state.usage == lean.state.usage and lean.state.usage.cost_usd == 0.5
    assert full.finish(b"") == lean.finish(b"")

