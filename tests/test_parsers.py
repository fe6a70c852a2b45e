"""The agent output parsers and the price table, fed real bytes (no mocks).

The sample streams are the ones in shared/reference/agent-cli-formats.md, verbatim.
Expected figures are worked out by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tacx.agents.parsers import (
    INTERRUPTED,
    NO_RESULT,
    PARSER_KINDS,
    UNKNOWN_MODEL,
    make_parser,
)
from tacx.agents.prices import Price, PriceTable
from tacx.agents.base import EVENT_TEXT_LIMIT, OutputParser, ParsedEvent, Usage

CLAUDE_SAMPLE = b"""\
{"type":"system","subtype":"init","cwd":"/repo","session_id":"8d45afe0-771b-4803-8379-491dd9455365","tools":["Bash","Edit","Read"],"model":"claude-sonnet-4-5-20250929","permissionMode":"acceptEdits"}
{"type":"assistant","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"I'll run the tests."}],"usage":{"input_tokens":3,"cache_creation_input_tokens":12000,"cache_read_input_tokens":14000,"output_tokens":8}},"session_id":"8d45afe0-771b-4803-8379-491dd9455365","request_id":"req_01A"}
{"type":"assistant","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"toolu_01X","name":"Bash","input":{"command":"pytest -q"}}],"usage":{"input_tokens":3,"cache_creation_input_tokens":12000,"cache_read_input_tokens":14000,"output_tokens":8}},"session_id":"8d45afe0-771b-4803-8379-491dd9455365","request_id":"req_01A"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01X","type":"tool_result","content":"3 passed in 0.41s","is_error":false}]},"session_id":"8d45afe0-771b-4803-8379-491dd9455365"}
{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":2000,"error_status":529,"error":"server_error","session_id":"8d45afe0-771b-4803-8379-491dd9455365"}
{"type":"result","subtype":"success","is_error":false,"duration_ms":9120,"num_turns":2,"result":"All 3 tests pass.","session_id":"8d45afe0-771b-4803-8379-491dd9455365","total_cost_usd":0.063399,"usage":{"input_tokens":8,"cache_creation_input_tokens":12600,"cache_read_input_tokens":40000,"output_tokens":275},"modelUsage":{"claude-sonnet-4-5-20250929":{"inputTokens":8,"outputTokens":275,"cacheReadInputTokens":40000,"cacheCreationInputTokens":12600,"costUSD":0.063399}}}
"""

CODEX_SAMPLE = b"""\
{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Searching for README files**"}}
{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"","exit_code":null,"status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"AGENTS.md\\nREADME.md\\n","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"Yes, README.md is in the root."}}
{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}
"""

GEMINI_SAMPLE = b"""\
{"type":"init","timestamp":"2026-08-21T16:20:01.102Z","session_id":"5c1f0a9e-3b7d-4a8e-9d51-0e6c2f4b7a10","model":"gemini-2.5-pro"}
{"type":"tool_use","timestamp":"2026-08-21T16:20:04.310Z","tool_name":"run_shell_command","tool_id":"tool-1","parameters":{"command":"pytest -q"}}
{"type":"tool_result","timestamp":"2026-08-21T16:20:06.020Z","tool_id":"tool-1","status":"success","output":"3 passed in 0.41s"}
{"type":"message","timestamp":"2026-08-21T16:20:08.400Z","role":"assistant","content":"All 3 tests pass.","delta":true}
{"type":"result","timestamp":"2026-08-21T16:20:08.512Z","status":"success","stats":{"total_tokens":25113,"input_tokens":24939,"output_tokens":20,"cached":21263,"input":3676,"duration_ms":7410,"tool_calls":1}}
"""

CLAUDE_SESSION = "8d45afe0-771b-4803-8379-491dd9455365"

GARBAGE = [
    b"",
    b"\r",
    b"\xff\xfe",
    b"[1,2]",
    b"null",
    b"42",
    b'"a string"',
    b"{not json",
    b"{}",
    b'{"type": [1, 2]}',
    b'{"type": null}',
    b'{"type": "no_such_event"}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"\xff\xfe"}]}}',  # not UTF-8
    b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # absurdly nested (RecursionError in json)
    b'{"type":"no_such_event","text":"' + b"y" * 5_000_000 + b'"}',  # a huge JSON line
    b"x" * 5_000_000,  # a huge non-JSON line
    b"Traceback (most recent call last):",
]


# -- helpers -----------------------------------------------------------------------------------


def lines(stream: bytes) -> list[bytes]:
    return stream.splitlines()


def run(parser: OutputParser, stream: bytes | list[bytes]) -> list[ParsedEvent]:
    """Feed every line, finish, and return every event including the final ones."""
    events: list[ParsedEvent] = []
    for line in lines(stream) if isinstance(stream, bytes) else stream:
        events += parser.feed(line)
    parser.outcome = parser.finish(b"")  # type: ignore[attr-defined]
    return events + parser.final_events()


def usage_sum(events: list[ParsedEvent]) -> Usage:
    total = Usage()
    for e in events:
        if e.kind == "usage":
            d = e.data
            total = total + Usage(d["input"], d["output"], d["cache_read"], d["cache_write"], d["cost_usd"])
    return total


def assert_usage(actual: Usage, expected: Usage) -> None:
    assert (actual.input, actual.output, actual.cache_read, actual.cache_write) == (
        expected.input, expected.output, expected.cache_read, expected.cache_write)
    assert actual.cost_usd == pytest.approx(expected.cost_usd, rel=1e-9, abs=1e-12)


def kinds(events: list[ParsedEvent]) -> list[str]:
    return [e.kind for e in events]


def claude(**kwargs: object) -> OutputParser:
    return make_parser("claude-stream-json", **kwargs)  # type: ignore[arg-type]


def result_line(**fields: object) -> bytes:
    base: dict[str, object] = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                               "result": "done", "session_id": CLAUDE_SESSION}
    base.update(fields)
    return json.dumps(base).encode()


# -- claude ------------------------------------------------------------------------------------


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
    # cost 0.063399 (the agent's own). The "result" adjustment is the difference:
    # 5, 267, 26000, 600, 0.063399 - 0.049329 = 0.01407.
    adjust = events[6].data
    assert adjust["message_id"] == "result"
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


def test_mock_model_is_priced_like_sonnet() -> None:
    p = claude()
    events = p.feed(json.dumps({"type": "assistant", "message": {"id": "m", "model": "mock-sonnet", "content": [],
                                "usage": {"input_tokens": 1_000_000, "output_tokens": 0}}}).encode())
    assert events[0].data["cost_usd"] == pytest.approx(3.0) and p.state.unpriced_model is None


def test_claude_unknown_model_is_unpriced() -> None:
    p = claude()
    p.feed(json.dumps({"type": "assistant", "message": {"id": "m", "model": "claude-9-ultra", "content": [],
                       "usage": {"input_tokens": 10, "output_tokens": 10}}}).encode())
    assert p.state.unpriced_model == "claude-9-ultra" and p.state.usage.cost_usd == 0
    p.feed(json.dumps({"type": "assistant", "message": {"id": "m2", "model": "<synthetic>", "content": [],
                       "usage": {"input_tokens": 0, "output_tokens": 0}}}).encode())
    assert p.state.unpriced_model == "claude-9-ultra"  # a message with no tokens names no model


# -- codex -------------------------------------------------------------------------------------


def codex(model: str | None = "gpt-5-codex") -> OutputParser:
    return make_parser("codex-json", model=model)


def test_codex_sample_stream() -> None:
    p = codex()
    events = run(p, CODEX_SAMPLE)
    s = p.state
    assert kinds(events) == ["session", "thinking", "tool_use", "tool_result", "text", "usage", "result"]
    assert events[0].data == {"session_id": "0199a213-81c0-7800-8aa1-bbab2a035a53", "model": "gpt-5-codex"}
    assert events[1].data == {"text": "**Searching for README files**"}
    assert events[2].data == {"id": "item_1", "name": "command", "input": "bash -lc ls"}
    assert events[3].data == {"id": "item_1", "output": "AGENTS.md\nREADME.md\n", "is_error": False}
    # input = 24763 - 24448 = 315, cache_read 24448, output 122;
    # cost for gpt-5-codex = (315*1.25 + 24448*0.125 + 122*10) / 1e6
    #                      = (393.75 + 3056 + 1220) / 1e6 = 0.00466975
    expected = Usage(315, 122, 24448, 0, (315 * 1.25 + 24448 * 0.125 + 122 * 10) / 1e6)
    assert expected.cost_usd == pytest.approx(0.00466975)
    assert events[5].data["message_id"] == "turn-1"
    assert_usage(s.usage, expected)
    assert_usage(usage_sum(events), s.usage)
    assert s.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53" and s.turns == 1
    assert s.result == "Yes, README.md is in the root."
    assert not s.cost_reported and not s.final and s.unpriced_model is None
    assert not p.outcome.failed and p.outcome.result == "Yes, README.md is in the root."


def test_codex_running_totals_become_increments() -> None:
    p = codex()
    second = [
        b'{"type":"turn.started"}',
        b'{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Done again."}}',
        b'{"type":"turn.completed","usage":{"input_tokens":30000,"cached_input_tokens":28000,"output_tokens":200}}',
    ]
    events = run(p, lines(CODEX_SAMPLE) + second)
    usage = [e.data for e in events if e.kind == "usage"]
    assert [u["message_id"] for u in usage] == ["turn-1", "turn-2"]
    # Turn 2: uncached 30000 - 28000 = 2000, minus 315 before -> 1685; cache_read
    # 28000 - 24448 = 3552; output 200 - 122 = 78.
    assert (usage[1]["input"], usage[1]["cache_read"], usage[1]["output"]) == (1685, 3552, 78)
    assert usage[1]["cost_usd"] == pytest.approx((1685 * 1.25 + 3552 * 0.125 + 78 * 10) / 1e6)
    # The thread total: 2000 uncached, 28000 cached, 200 output.
    total = Usage(2000, 200, 28000, 0, (2000 * 1.25 + 28000 * 0.125 + 200 * 10) / 1e6)
    assert_usage(p.state.usage, total)
    assert_usage(usage_sum(events), total)
    assert p.state.turns == 2 and p.state.result == "Done again."


def test_codex_turn_failed_fails_with_the_message() -> None:
    p = codex()
    run(p, [b'{"type":"thread.started","thread_id":"t1"}', b'{"type":"turn.started"}',
            b'{"type":"error","message":"exceeded retry limit, last status: 429 Too Many Requests"}',
            b'{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests"}}'])
    assert p.outcome.failed
    assert p.outcome.error == "exceeded retry limit, last status: 429 Too Many Requests"
    assert p.state.rate_limited


def test_codex_error_event_alone_fails_and_quota_is_rate_limiting() -> None:
    p = codex()
    run(p, [b'{"type":"thread.started","thread_id":"t1"}',
            b'{"type":"error","message":"You\'ve hit your usage limit. Try again in 3 hours."}'])
    assert p.outcome.failed and p.state.rate_limited
    assert p.outcome.error == "You've hit your usage limit. Try again in 3 hours."


def test_codex_reconnect_notice_is_a_retry() -> None:
    p = codex()
    events = run(p, lines(CODEX_SAMPLE)[:2] + [b'{"type":"error","message":"Reconnecting... 1/5"}'] + lines(CODEX_SAMPLE)[2:])
    assert "retry" in kinds(events) and p.state.api_retries == 1
    assert not p.outcome.failed and p.outcome.error is None


def test_codex_interrupted_turn_fails() -> None:
    p = codex()
    run(p, lines(CODEX_SAMPLE)[:-1])
    assert p.outcome.failed and p.outcome.error == INTERRUPTED
    assert p.outcome.result == "Yes, README.md is in the root."
    assert p.state.usage == Usage()


def test_codex_unknown_model_is_unpriced_and_costs_nothing() -> None:
    p = codex(model="o9-preview")
    events = run(p, CODEX_SAMPLE)
    assert p.state.unpriced_model == "o9-preview"
    assert p.state.usage == Usage(315, 122, 24448, 0, 0.0)
    assert_usage(usage_sum(events), p.state.usage)
    p = codex(model=None)
    run(p, CODEX_SAMPLE)
    assert p.state.unpriced_model == UNKNOWN_MODEL


def test_codex_skips_garbage() -> None:
    p = codex()
    sample = lines(CODEX_SAMPLE)
    run(p, [*sample[:3], *GARBAGE, b'{"type":"item.completed","item":"x"}', b'{"type":"turn.completed","usage":[1]}', *sample[3:]])
    # The malformed turn.completed counts a turn but no usage.
    assert_usage(p.state.usage, Usage(315, 122, 24448, 0, 0.00466975))
    assert p.state.turns == 2 and not p.outcome.failed


# -- gemini ------------------------------------------------------------------------------------


def gemini(model: str | None = None) -> OutputParser:
    return make_parser("gemini-stream-json", model=model)


def test_gemini_sample_stream() -> None:
    p = gemini()
    events = run(p, GEMINI_SAMPLE)
    s = p.state
    assert kinds(events) == ["session", "tool_use", "tool_result", "text", "usage", "result"]
    assert events[1].data == {"id": "tool-1", "name": "run_shell_command", "input": "pytest -q"}
    assert events[2].data == {"id": "tool-1", "output": "3 passed in 0.41s", "is_error": False}
    # stats: input 3676 (uncached), cache_read = cached 21263, output 20. gemini-2.5-pro:
    # (3676*1.25 + 21263*0.125 + 20*10) / 1e6 = (4595 + 2657.875 + 200) / 1e6 = 0.007452875
    expected = Usage(3676, 20, 21263, 0, 0.007452875)
    assert_usage(s.usage, expected)
    assert_usage(usage_sum(events), expected)
    assert events[4].data["message_id"] == "result"
    assert s.final and not s.cost_reported
    assert (s.session_id, s.model) == ("5c1f0a9e-3b7d-4a8e-9d51-0e6c2f4b7a10", "gemini-2.5-pro")
    assert s.result == "All 3 tests pass." and s.turns == 2
    assert events[5].data["duration_ms"] == 7410
    assert not p.outcome.failed and p.outcome.result == "All 3 tests pass."


def test_gemini_stats_without_input_are_normalised() -> None:
    p = gemini()
    stream = GEMINI_SAMPLE.replace(b',"input":3676', b"")
    assert stream != GEMINI_SAMPLE
    run(p, stream)
    # input = input_tokens - cached = 24939 - 21263 = 3676
    assert_usage(p.state.usage, Usage(3676, 20, 21263, 0, 0.007452875))


def test_gemini_result_is_the_last_turns_deltas() -> None:
    def message(text: str, delta: bool = True) -> bytes:
        return json.dumps({"type": "message", "role": "assistant", "content": text, "delta": delta}).encode()

    p = gemini()
    stream = [b'{"type":"init","session_id":"s","model":"gemini-2.5-flash"}',
              b'{"type":"message","role":"user","content":"do it"}',
              message("Let me "), message("look."),
              b'{"type":"tool_use","tool_name":"read_file","tool_id":"t1","parameters":{"path":"a.py"}}',
              b'{"type":"tool_result","tool_id":"t1","status":"error","error":{"type":"x","message":"no such file"}}',
              message("All "), message("done.")]
    events = []
    for line in stream[:4]:
        events += p.feed(line)
    assert p.state.result == "Let me look."
    for line in stream[4:]:
        events += p.feed(line)
    assert p.state.result == "All done."
    assert {"id": "t1", "output": "no such file", "is_error": True} in [e.data for e in events]
    p.feed(message("Replaced.", delta=False))
    assert p.state.result == "Replaced."
    assert p.state.turns == 2
    assert p.finish(b"").failed  # no result event
    assert p.state.error == NO_RESULT


def test_gemini_error_result_fails_and_detects_quota() -> None:
    p = gemini()
    run(p, [lines(GEMINI_SAMPLE)[0],
            b'{"type":"error","severity":"warning","message":"Loop detected"}',
            b'{"type":"error","severity":"error","message":"[API Error: 429 RESOURCE_EXHAUSTED] Quota exceeded"}',
            (b'{"type":"result","status":"error","error":{"type":"FatalError","message":"Quota exceeded for gemini-2.5-pro"},'
             b'"stats":{"input_tokens":100,"cached":0,"output_tokens":0}}')])
    assert p.outcome.failed and p.outcome.error == "Quota exceeded for gemini-2.5-pro"
    assert p.state.rate_limited
    assert_usage(p.state.usage, Usage(100, 0, 0, 0, 100 * 1.25 / 1e6))


def test_gemini_prices_per_model_when_stats_break_them_down() -> None:
    p = gemini()
    stats = {"input_tokens": 2000, "cached": 0, "input": 2000, "output_tokens": 200, "models": {
        "gemini-2.5-pro": {"input_tokens": 1000, "cached": 0, "input": 1000, "output_tokens": 100},
        "gemini-2.5-flash": {"input_tokens": 1000, "cached": 0, "input": 1000, "output_tokens": 100}}}
    run(p, [lines(GEMINI_SAMPLE)[0], json.dumps({"type": "result", "status": "success", "stats": stats}).encode()])
    # pro: (1000*1.25 + 100*10) / 1e6 = 0.00225; flash: (1000*0.30 + 100*2.50) / 1e6 = 0.00055
    assert p.state.usage.cost_usd == pytest.approx(0.0028)


def test_gemini_skips_garbage() -> None:
    p = gemini()
    sample = lines(GEMINI_SAMPLE)
    run(p, [sample[0], *GARBAGE, b'{"type":"message","role":"assistant","content":["x"]}',
            b'{"type":"result","status":"success","stats":"none"}', *sample[1:]])
    assert_usage(p.state.usage, Usage(3676, 20, 21263, 0, 0.007452875))
    assert not p.outcome.failed


# -- aider -------------------------------------------------------------------------------------

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


# -- make_parser and plain ---------------------------------------------------------------------


def test_make_parser_kinds() -> None:
    assert PARSER_KINDS == ("claude-stream-json", "codex-json", "gemini-stream-json", "aider-text", "plain")
    for kind in PARSER_KINDS:
        p = make_parser(kind)
        assert p.streaming == (kind != "plain")
        assert p.final_events() == []
    with pytest.raises(ValueError, match="unknown parser 'claude-json'.*claude-stream-json, codex-json"):
        make_parser("claude-json")


def test_plain_parser_keeps_the_last_line() -> None:
    p = make_parser("plain")
    assert type(p) is OutputParser and not p.streaming
    assert p.feed(b"anything") == []
    assert p.finish(b"first\nsecond\n\n").result == "second"


def test_make_parser_accepts_price_overrides() -> None:
    p = make_parser("codex-json", model="my-model", prices={"my-model": {"input": 1, "output": 1}})  # type: ignore[arg-type]
    run(p, CODEX_SAMPLE)
    # cache_read absent: priced as input. (315 + 24448 + 122) * 1 / 1e6
    assert p.state.usage.cost_usd == pytest.approx((315 + 24448 + 122) / 1e6)


# -- prices ------------------------------------------------------------------------------------


def test_price_table_prefix_matching() -> None:
    table = PriceTable.load()
    sonnet = table.price_for("claude-sonnet-4-5-20250929")
    assert sonnet == Price(3.0, 15.0, 0.30, 3.75)
    assert table.price_for("claude-opus-4-5-20251101") == Price(5.0, 25.0, 0.50, 6.25)
    assert table.price_for("claude-opus-4-1-20250805") == Price(15.0, 75.0, 1.50, 18.75)  # older, dearer
    assert table.price_for("claude-haiku-4-5") == Price(1.0, 5.0, 0.10, 1.25)
    # The longest prefix wins: gpt-5-mini is not gpt-5, gpt-5-codex-x is gpt-5-codex.
    assert table.price_for("gpt-5-mini-2025-08-07") == Price(0.25, 2.0, 0.025, None)
    assert table.price_for("gpt-5") == table.price_for("gpt-5-2025-08-07") == Price(1.25, 10.0, 0.125, None)
    assert table.price_for("gpt-5.1-codex") == Price(1.25, 10.0, 0.125, None)
    assert table.price_for("gemini-2.5-flash-lite") == Price(0.30, 2.50, 0.03, None)
    assert table.price_for("GPT-5-Codex") == Price(1.25, 10.0, 0.125, None)  # case
    assert table.price_for("anthropic/claude-sonnet-4-5") == sonnet  # aider's provider/ prefix
    assert table.price_for("mock-sonnet") == sonnet
    assert table.price_for("llama-3-70b") is None
    assert table.price_for("") is None and table.price_for(None) is None


def test_price_cost_and_cache_write_priced_as_input() -> None:
    table = PriceTable.load()
    usage = Usage(input=1000, output=100, cache_read=10_000, cache_write=2000)
    # gpt-5 has no cache-write price: cache writes cost input, 1.25.
    # (1000*1.25 + 100*10 + 10000*0.125 + 2000*1.25) / 1e6 = (1250 + 1000 + 1250 + 2500) / 1e6
    assert table.cost("gpt-5", usage) == pytest.approx(0.006)
    # sonnet: (1000*3 + 100*15 + 10000*0.30 + 2000*3.75) / 1e6 = (3000 + 1500 + 3000 + 7500) / 1e6
    assert table.cost("claude-sonnet-4-5", usage) == pytest.approx(0.015)
    assert table.cost("unknown-model", usage) is None


def test_price_overrides_win_field_by_field() -> None:
    table = PriceTable.load({
        "claude-sonnet-4": {"output": 20},
        "my-local": {"input": 0, "output": 0},
        "gpt-5-codex": {"cache_write": 2.5},
    })
    assert table.price_for("claude-sonnet-4-5") == Price(3.0, 20.0, 0.30, 3.75)
    assert table.price_for("my-local-llm") == Price(0.0, 0.0, 0.0, None)
    assert table.price_for("gpt-5-codex") == Price(1.25, 10.0, 0.125, 2.5)
    assert table.price_for("gpt-5") == Price(1.25, 10.0, 0.125, None)  # untouched
    assert PriceTable.load().price_for("claude-sonnet-4-5") == Price(3.0, 15.0, 0.30, 3.75)  # shipped table intact


@pytest.mark.parametrize("overrides, words", [
    ({"gpt-5": {"input": -1}}, "gpt-5: input must not be negative"),
    ({"gpt-5": {"output": "ten"}}, "gpt-5: output must be a number"),
    ({"gpt-5": {"output": True}}, "gpt-5: output must be a number"),
    ({"gpt-5": {"cache_read": float("nan")}}, "gpt-5: cache_read must be a number"),
    ({"gpt-5": {"price": 1}}, "gpt-5: unknown field 'price'"),
    ({"new-model": {"output": 1}}, "new-model: input is required"),
    ({"new-model": 3}, "new-model: expected a mapping"),
])
def test_price_overrides_are_checked(overrides: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        PriceTable.load(overrides)


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
