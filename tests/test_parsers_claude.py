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



# -- issue 10: every model, the latest figures per message, cache-write tiers, web searches ----

def assistant_line(mid: str, model: str, usage: dict[str, object], text: str = "x",
                   parent: str | None = None) -> bytes:
    """An assistant line as Claude Code 2.x prints it (--output-format stream-json --verbose):
    see CLAUDE_SAMPLE and the SDK's SDKAssistantMessage {type, message, parent_tool_use_id,
    session_id}."""
    return json.dumps({"type": "assistant", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": None, "stop_sequence": None, "usage": usage,
    }, "parent_tool_use_id": parent, "session_id": CLAUDE_SESSION}, separators=(",", ":")).encode()


def init_line(model: str) -> bytes:
    return json.dumps({"type": "system", "subtype": "init", "cwd": "/repo", "session_id": CLAUDE_SESSION,
                       "tools": ["Bash", "Read"], "model": model, "permissionMode": "acceptEdits"}).encode()


def usage_rows(events: list) -> list[dict]:
    return [e.data for e in events if e.kind == "usage"]


# The modelUsage of a real run (Claude Code 2.0, late 2025), verbatim from
# https://github.com/link-assistant/hive-mind/issues/640: the main model and the Haiku helper
# calls Claude Code makes on its own (never printed as assistant lines). result.usage holds the
# main model's figures only; total_cost_usd is the sum of the costUSD.
HIVE_MODEL_USAGE = {
    "claude-sonnet-4-5-20250929": {"inputTokens": 278, "outputTokens": 16670, "cacheReadInputTokens": 2673999,
                                   "cacheCreationInputTokens": 78213, "webSearchRequests": 0,
                                   "costUSD": 1.3463824500000001, "contextWindow": 200000},
    "claude-haiku-4-5-20251001": {"inputTokens": 765, "outputTokens": 1014, "cacheReadInputTokens": 0,
                                  "cacheCreationInputTokens": 0, "webSearchRequests": 0, "costUSD": 0.005835,
                                  "contextWindow": 200000},
}


def test_claude_totals_cover_every_model_of_model_usage() -> None:
    sonnet, haiku = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"
    live = {"input_tokens": 3, "cache_creation_input_tokens": 12000, "cache_read_input_tokens": 14000,
            "output_tokens": 8}
    main_usage = {"input_tokens": 278, "cache_creation_input_tokens": 78213, "cache_read_input_tokens": 2673999,
                  "output_tokens": 16670, "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"}
    p = claude()
    events = run(p, [init_line(sonnet), assistant_line("msg_01S", sonnet, live),
                     result_line(num_turns=4, total_cost_usd=1.35221745, usage=main_usage, modelUsage=HIVE_MODEL_USAGE)])
    # Totals are modelUsage's sum: input 278 + 765 = 1043, output 16670 + 1014 = 17684,
    # cache_read 2673999 + 0, cache_write 78213 + 0; cost total_cost_usd 1.34638245 + 0.005835
    # = 1.35221745 (result.usage alone would miss Haiku's 765 + 1014 tokens).
    final = Usage(1043, 17684, 2673999, 78213, 1.35221745)
    assert_usage(p.state.usage, final)
    assert p.state.final and p.state.cost_reported
    rows = usage_rows(events)
    assert [r["message_id"] for r in rows] == ["msg_01S", f"result:{sonnet}", f"result:{haiku}"]
    # Sonnet's row: its modelUsage less its live message: 278 - 3 = 275, 16670 - 8 = 16662,
    # 2673999 - 14000 = 2659999, 78213 - 12000 = 66213; cost 1.34638245 - live
    # (3*3 + 8*15 + 14000*0.30 + 12000*3.75) / 1e6 = 1.34638245 - 0.049329 = 1.29705345.
    s_row, h_row = rows[1], rows[2]
    assert (s_row["model"], s_row["input"], s_row["output"], s_row["cache_read"], s_row["cache_write"]) == (
        sonnet, 275, 16662, 2659999, 66213)
    assert s_row["cost_usd"] == pytest.approx(1.29705345)
    # Haiku was never seen live: its row is its whole modelUsage entry, its own costUSD.
    assert (h_row["model"], h_row["input"], h_row["output"], h_row["cache_read"], h_row["cache_write"]) == (
        haiku, 765, 1014, 0, 0)
    assert h_row["cost_usd"] == pytest.approx(0.005835)
    assert_usage(usage_sum(events), final)


def test_claude_failed_main_model_keeps_the_helper_models_tokens() -> None:
    """The main model failed (overloaded) after Claude Code's Haiku helper call: result.usage is
    all zero, modelUsage has Haiku's figures and total_cost_usd its cost. Tokens and cost must
    agree: not 0 tokens for $0.001015. Figures from a real 2.1 result's Haiku entry (925 in,
    18 out, costUSD 0.001015 = (925*1 + 18*5) / 1e6)."""
    sonnet, haiku = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"
    zero = {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0,
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}, "service_tier": "standard"}
    p = claude()
    events = run(p, [init_line(sonnet), result_line(
        is_error=True, result="API Error: 529 Overloaded", api_error_status=529, num_turns=1,
        total_cost_usd=0.001015, usage=zero, modelUsage={haiku: {
            "inputTokens": 925, "outputTokens": 18, "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0,
            "webSearchRequests": 0, "costUSD": 0.001015, "contextWindow": 200000, "maxOutputTokens": 32000}})])
    assert_usage(p.state.usage, Usage(925, 18, 0, 0, 0.001015))
    [row] = usage_rows(events)
    assert row["message_id"] == f"result:{haiku}" and row["model"] == haiku
    assert p.outcome.failed


def test_claude_result_without_model_usage_keeps_other_models_live_figures() -> None:
    """Older versions print no modelUsage: result.usage is the main model's, a sub-agent's
    messages on another model keep what was counted live (they are not in result.usage)."""
    sonnet, haiku = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"
    p = claude()
    events = run(p, [
        init_line(sonnet),
        assistant_line("msg_01M", sonnet, {"input_tokens": 5, "output_tokens": 50}),
        assistant_line("msg_01H", haiku, {"input_tokens": 1000, "output_tokens": 100}, parent="toolu_01T"),
        result_line(total_cost_usd=0.01, usage={"input_tokens": 10, "output_tokens": 200}),
    ])
    # Haiku live: (1000*1 + 100*5) / 1e6 = 0.0015. Sonnet: result.usage 10 / 200, cost
    # total - Haiku = 0.01 - 0.0015 = 0.0085. Totals 1010 / 300, $0.01.
    assert_usage(p.state.usage, Usage(1010, 300, 0, 0, 0.01))
    rows = usage_rows(events)
    assert [r["message_id"] for r in rows] == ["msg_01M", "msg_01H", f"result:{sonnet}"]
    assert (rows[2]["input"], rows[2]["output"]) == (5, 150)
    # Sonnet live (5*3 + 50*15) / 1e6 = 0.000765; its row 0.0085 - 0.000765 = 0.007735.
    assert rows[2]["cost_usd"] == pytest.approx(0.007735)
    assert_usage(usage_sum(events), p.state.usage)


def test_claude_latest_figures_per_message_id() -> None:
    """Claude Code prints one API message over several lines sharing message.id, the usage
    growing (output_tokens 7 on the first, 210 on a later one: measured on real 1.0-2.1
    streams, shared/reference/agent-cli-formats.md). Each growth is a row "<id>#n"; a lagging
    line never takes anything back."""
    sonnet = "claude-sonnet-4-5-20250929"
    first = {"input_tokens": 3, "cache_creation_input_tokens": 12000, "cache_read_input_tokens": 14000,
             "output_tokens": 7, "service_tier": "standard"}
    later = dict(first, output_tokens=210)
    lagging = dict(first, output_tokens=100)
    p = claude()
    sample_lines = [assistant_line("msg_01G", sonnet, first, "thinking it over"),
                    assistant_line("msg_01G", sonnet, first, "I'll run the tests."),
                    assistant_line("msg_01G", sonnet, later, "pytest -q"),
                    assistant_line("msg_01G", sonnet, lagging, "late copy")]
    events = []
    events += p.feed(sample_lines[0]) + p.feed(sample_lines[1])
    assert p.state.usage.output == 7
    events += p.feed(sample_lines[2])
    assert p.state.usage.output == 210  # live, before any result
    events += p.feed(sample_lines[3])
    rows = usage_rows(events)
    assert [r["message_id"] for r in rows] == ["msg_01G", "msg_01G#2"]
    # The growth: 210 - 7 = 203 output tokens, (203*15) / 1e6 = 0.003045 at Sonnet prices.
    assert (rows[1]["input"], rows[1]["output"], rows[1]["cache_read"], rows[1]["cache_write"]) == (0, 203, 0, 0)
    assert rows[1]["cost_usd"] == pytest.approx(0.003045)
    # Live total: 3 / 210 / 14000 / 12000, (9 + 3150 + 4200 + 45000) / 1e6 = 0.052359.
    assert_usage(p.state.usage, Usage(3, 210, 14000, 12000, 0.052359))
    assert p.state.turns == 1
    assert_usage(usage_sum(events), p.state.usage)


def test_claude_partial_messages_stream_events_count_once() -> None:
    """With --include-partial-messages, Claude Code wraps the API's SSE events in stream_event
    lines (real captures: {"type":"stream_event","event":{"type":"message_start","message":{
    "model":...,"id":"msg_...",...}},"session_id":...}; then content_block_start / _delta /
    _stop, the assembled assistant line, message_delta with the usage, message_stop).
    message_delta's usage is cumulative (the Anthropic API's MessageDeltaUsage: input_tokens,
    cache_creation_input_tokens, cache_read_input_tokens, output_tokens, server_tool_use). The
    assistant line carries a lagging snapshot of the same message: nothing is counted twice."""
    sonnet = "claude-sonnet-4-5-20250929"
    start_usage = {"input_tokens": 3, "cache_creation_input_tokens": 12000, "cache_read_input_tokens": 14000,
                   "output_tokens": 1, "service_tier": "standard"}

    def stream_event(event: dict[str, object]) -> bytes:
        return json.dumps({"type": "stream_event", "event": event, "session_id": CLAUDE_SESSION,
                           "parent_tool_use_id": None, "uuid": "9f1c3a52-1b7e-4a0e-8c55-2f1d3c4b5a69"},
                          separators=(",", ":")).encode()

    stream = [
        init_line(sonnet),
        stream_event({"type": "message_start", "message": {
            "model": sonnet, "id": "msg_01P", "type": "message", "role": "assistant", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
        stream_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        stream_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "All 3"}}),
        stream_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " pass."}}),
        assistant_line("msg_01P", sonnet, dict(start_usage, output_tokens=8), "All 3 pass."),
        stream_event({"type": "content_block_stop", "index": 0}),
        stream_event({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                      "usage": {"input_tokens": 3, "cache_creation_input_tokens": 12000,
                                "cache_read_input_tokens": 14000, "output_tokens": 275}}),
        stream_event({"type": "message_stop"}),
        stream_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 275}}),
    ]
    p = claude()
    assert p.feed(stream[3]) == []  # token chunks: nothing to read
    events = run(p, stream)
    rows = usage_rows(events)
    # message_start 3 / 1 / 14000 / 12000; the assistant line +7 output; message_delta +267.
    assert [r["message_id"] for r in rows] == ["msg_01P", "msg_01P#2", "msg_01P#3"]
    assert [r["output"] for r in rows] == [1, 7, 267]
    # (3*3 + 275*15 + 14000*0.30 + 12000*3.75) / 1e6 = (9 + 4125 + 4200 + 45000) / 1e6 = 0.053334
    assert_usage(p.state.usage, Usage(3, 275, 14000, 12000, 0.053334))
    assert_usage(usage_sum(events), p.state.usage)
    assert p.state.turns == 1
    assert [e.data["text"] for e in events if e.kind == "text"] == ["All 3 pass."]


def test_claude_one_hour_cache_writes_and_web_searches_are_priced_apart() -> None:
    # One message of a real Claude Code 2.1 run (the `iterations` entry of its result.usage):
    # every cache write a 1-hour one. Sonnet 4.x: 3 / 15 / 0.30, 5-minute write 3.75, 1-hour
    # write 2 x 3 = 6.00 per million.
    hour = {"input_tokens": 1, "output_tokens": 2221, "cache_read_input_tokens": 74995,
            "cache_creation_input_tokens": 793, "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": "standard", "cache_creation": {"ephemeral_1h_input_tokens": 793, "ephemeral_5m_input_tokens": 0}}
    # Opus 4.5 (5 / 25 / 0.50, 5-minute 6.25, 1-hour 10.00): 400 5-minute and 600 1-hour writes.
    mixed = {"input_tokens": 10, "output_tokens": 100, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 1000,
             "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600}}
    # Haiku 4.5 (1 / 5) with two server-side web searches at $10 per 1,000 (the Anthropic API's
    # price; usage.server_tool_use.web_search_requests, as in Anthropic's pricing page quoted in
    # https://github.com/enricoros/big-AGI/issues/852).
    search = {"input_tokens": 10, "output_tokens": 100, "server_tool_use": {"web_search_requests": 2}}
    p = claude()
    events = run(p, [assistant_line("m1", "claude-sonnet-4-6", hour), assistant_line("m2", "claude-opus-4-5", mixed),
                     assistant_line("m3", "claude-haiku-4-5", search)])
    costs = [r["cost_usd"] for r in usage_rows(events)]
    # m1: (1*3 + 2221*15 + 74995*0.30 + 793*6) / 1e6 = (3 + 33315 + 22498.5 + 4758) / 1e6 = 0.0605745
    # m2: (10*5 + 100*25 + 400*6.25 + 600*10) / 1e6 = (50 + 2500 + 2500 + 6000) / 1e6 = 0.01105
    # m3: (10*1 + 100*5) / 1e6 + 2 * 10 / 1000 = 0.00051 + 0.02 = 0.02051
    assert costs == [pytest.approx(0.0605745), pytest.approx(0.01105), pytest.approx(0.02051)]
    # Usage keeps its columns: the 1-hour writes are cache writes like the others.
    assert (p.state.usage.cache_write, p.state.usage.input) == (793 + 1000, 21)


def test_claude_computed_result_cost_matches_claude_codes_own_for_one_hour_writes() -> None:
    """A real Claude Code 2.1 result line's usage (claude-sonnet-4-6, all cache writes 1-hour
    ones) whose modelUsage costUSD is 0.9285405. Without total_cost_usd and modelUsage, tacx
    computes the same figure only when the 1-hour writes are priced at 2x input:
    (14*3 + 27313*15 + 645085*0.30 + 54213*6) / 1e6 = (42 + 409695 + 193525.5 + 325278) / 1e6
    = 0.9285405 (at the 5-minute 3.75 it would be 0.80656125)."""
    usage = {"input_tokens": 14, "cache_creation_input_tokens": 54213, "cache_read_input_tokens": 645085,
             "output_tokens": 27313, "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
             "service_tier": "standard", "cache_creation": {"ephemeral_1h_input_tokens": 54213, "ephemeral_5m_input_tokens": 0},
             "inference_geo": "not_available", "speed": "standard"}
    p = claude()
    events = run(p, [init_line("claude-sonnet-4-6"), result_line(usage=usage)])
    assert_usage(p.state.usage, Usage(14, 27313, 645085, 54213, 0.9285405))
    assert not p.state.cost_reported and p.state.final
    assert [r["message_id"] for r in usage_rows(events)] == ["result:claude-sonnet-4-6"]


def test_claude_live_costs_over_the_agents_total_are_scaled_to_it() -> None:
    """No modelUsage; a sub-agent's Haiku messages priced live at more than the whole
    total_cost_usd (an older price table, say): the rows still add up to the agent's total."""
    sonnet, haiku = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"
    p = claude()
    events = run(p, [init_line(sonnet), assistant_line("msg_01H", haiku, {"input_tokens": 10000, "output_tokens": 0},
                                                       parent="toolu_01T"),
                     result_line(total_cost_usd=0.004, usage={"input_tokens": 100, "output_tokens": 10})])
    # Haiku live: 10000 * 1 / 1e6 = 0.01 > 0.004: Haiku is scaled to 0.004, Sonnet gets 0.
    assert_usage(p.state.usage, Usage(10100, 10, 0, 0, 0.004))
    assert_usage(usage_sum(events), p.state.usage)


def test_claude_a_second_result_settles_again_under_its_own_row_ids() -> None:
    """Each result row id is unique within an attempt (the store keeps the first row of an id):
    a stream with two results (stream-json input, one result per turn) gets "#2" rows."""
    sonnet = "claude-sonnet-4-5-20250929"
    p = claude()
    events = run(p, [
        init_line(sonnet),
        result_line(total_cost_usd=0.01, modelUsage={sonnet: {"inputTokens": 10, "outputTokens": 100, "costUSD": 0.01}}),
        result_line(total_cost_usd=0.03, modelUsage={sonnet: {"inputTokens": 30, "outputTokens": 300, "costUSD": 0.03}}),
    ])
    rows = usage_rows(events)
    assert [r["message_id"] for r in rows] == [f"result:{sonnet}", f"result:{sonnet}#2"]
    assert (rows[1]["input"], rows[1]["output"]) == (20, 200) and rows[1]["cost_usd"] == pytest.approx(0.02)
    assert_usage(p.state.usage, Usage(30, 300, 0, 0, 0.03))


def test_one_hour_write_and_web_search_prices_can_be_overridden() -> None:
    from tacx.agents.prices import PriceTable
    table = PriceTable.load({"claude-sonnet-4": {"cache_write_1h": 5.0, "web_search": 12.0}})
    usage = Usage(0, 0, 0, 1000)
    # 400 5-minute writes at 3.75 and 600 1-hour ones at 5.00, 3 searches at $12 per 1,000:
    # (400*3.75 + 600*5) / 1e6 + 3 * 12 / 1000 = 0.0045 + 0.036 = 0.0405
    assert table.cost("claude-sonnet-4-5", usage, write_1h=600, web_searches=3) == pytest.approx(0.0405)
    # The shipped rule: 1-hour writes at 2 x 3 = 6.00, searches at $10 per 1,000:
    # (400*3.75 + 600*6) / 1e6 + 3 * 10 / 1000 = 0.0051 + 0.03 = 0.0351
    assert PriceTable.load().cost("claude-sonnet-4-5", usage, write_1h=600, web_searches=3) == pytest.approx(0.0351)
    # More 1-hour writes claimed than cache writes: only the cache writes are priced.
    assert PriceTable.load().cost("claude-sonnet-4-5", usage, write_1h=5000) == pytest.approx(0.006)
    with pytest.raises(ValueError, match="web_search must not be negative"):
        PriceTable.load({"claude-sonnet-4": {"web_search": -1}})


def test_claude_without_model_usage_a_zero_result_keeps_the_live_count() -> None:
    """No modelUsage and result.usage all zero (the main model failed after messages were
    printed) with a cost: the live figures stay, under the message's model even when init
    names it with a context suffix ("claude-opus-4-8[1m]", as real 2.1 init lines do)."""
    p = claude()
    events = run(p, [init_line("claude-opus-4-8[1m]"),
                     assistant_line("msg_01O", "claude-opus-4-8", {"input_tokens": 100, "output_tokens": 40}),
                     result_line(is_error=True, result="API Error: 500", total_cost_usd=0.0016,
                                 usage={"input_tokens": 0, "output_tokens": 0})])
    # Live at Opus 4.x prices (5 / 25): (100*5 + 40*25) / 1e6 = 0.0015; the agent's 0.0016 wins.
    assert_usage(p.state.usage, Usage(100, 40, 0, 0, 0.0016))
    rows = usage_rows(events)
    assert [r["message_id"] for r in rows] == ["msg_01O", "result:claude-opus-4-8"]
    assert rows[1]["cost_usd"] == pytest.approx(0.0001) and rows[1]["input"] == rows[1]["output"] == 0


def test_a_run_whose_tools_were_refused_is_not_a_plain_success() -> None:
    """result.permission_denials as Claude Code writes it in -p mode ([{tool_name,
    tool_use_id, tool_input}], the SDK's SDKPermissionDenial): the stage fails, naming what
    was refused; a retry before init brings the session id."""
    parser = make_parser("claude-stream-json")
    lines = [
        {"type": "system", "subtype": "api_retry", "attempt": 1, "max_retries": 10, "retry_delay_ms": 600,
         "error_status": None, "error": "unknown", "session_id": "0b1c2d3e-aaaa-bbbb-cccc-000000000001"},
        {"type": "result", "subtype": "success", "is_error": False, "result": "I could not write the file.",
         "session_id": "0b1c2d3e-aaaa-bbbb-cccc-000000000001", "num_turns": 2, "total_cost_usd": 0.0123,
         "usage": {"input_tokens": 10, "output_tokens": 20},
         "permission_denials": [
             {"tool_name": "Bash", "tool_use_id": "toolu_1", "tool_input": {"command": "rm -rf build"}},
             {"tool_name": "Write", "tool_use_id": "toolu_2", "tool_input": {"file_path": "src/app.py", "content": "x"}},
         ]},
    ]
    events = [e for line in lines for e in parser.feed(json.dumps(line).encode())]
    assert parser.state.session_id == "0b1c2d3e-aaaa-bbbb-cccc-000000000001"
    assert events[0].kind == "session"
    outcome = parser.finish(b"")
    assert outcome.failed
    assert outcome.error == ("the agent was refused 2 tool call(s): Bash (rm -rf build), Write (src/app.py)"
                             " (allow them with the stage's permission_mode, or extra_args such as --allowedTools)")
    clean = make_parser("claude-stream-json")
    clean.feed(json.dumps({**lines[1], "permission_denials": []}).encode())
    assert not clean.finish(b"").failed
