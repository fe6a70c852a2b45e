"""Codex's `exec --json` parser, fed real bytes (no mocks).

The sample stream is the one in shared/reference/agent-cli-formats.md, verbatim.
Expected figures are worked out by hand in the comments.
"""

from __future__ import annotations

import json

import pytest

from tacx.agents.base import OutputParser, Usage
from tacx.agents.codex import INTERRUPTED
from tacx.agents.registry import make_parser
from tacx.agents.stream import UNKNOWN_MODEL
from tests.streams import CODEX_SAMPLE, GARBAGE, assert_usage, kinds, lines, run, usage_sum


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


def test_make_parser_accepts_price_overrides() -> None:
    p = make_parser("codex-json", model="my-model", prices={"my-model": {"input": 1, "output": 1}})  # type: ignore[arg-type]
    run(p, CODEX_SAMPLE)
    # cache_read absent: priced as input. (315 + 24448 + 122) * 1 / 1e6
    assert p.state.usage.cost_usd == pytest.approx((315 + 24448 + 122) / 1e6)



def test_codex_plan_shows_as_it_changes() -> None:
    """todo_list items as codex exec --json writes them (openai/codex docs/exec json events:
    TodoListItem { items: [TodoItem { text, completed }] }, sent at item.started, item.updated
    and item.completed); each change is one line, an unchanged repeat none."""
    parser = make_parser("codex-json")
    steps = [{"text": "planning changes", "completed": False}, {"text": "running tests", "completed": False}]
    done = [{"text": "planning changes", "completed": True}, {"text": "running tests", "completed": False}]
    lines = [
        {"type": "item.started", "item": {"id": "item_0", "type": "todo_list", "items": steps}},
        {"type": "item.updated", "item": {"id": "item_0", "type": "todo_list", "items": done}},
        {"type": "item.completed", "item": {"id": "item_0", "type": "todo_list", "items": done}},
    ]
    shown = [e.data["text"] for line in lines for e in parser.feed(json.dumps(line).encode()) if e.kind == "thinking"]
    assert shown == ["plan: [ ] planning changes; [ ] running tests", "plan: [x] planning changes; [ ] running tests"]
