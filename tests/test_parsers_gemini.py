"""Gemini's stream-json parser, fed real bytes (no mocks).

The sample stream is the one in shared/reference/agent-cli-formats.md, verbatim. The result
events with ``models`` follow gemini-cli's own StreamStats / ModelStreamStats
(packages/core/src/output/types.ts and stream-json-formatter.ts, google-gemini/gemini-cli
PR #21839): per model total_tokens, input_tokens (cached included), output_tokens (the
candidates only), cached, input; total_tokens is the API's totalTokenCount, which adds the
thinking tokens (uiTelemetry sums thoughts_token_count apart; real `-o json` output in
oneryalcin/gemini-cli-sdk issue #9: prompt 7173, candidates 0, thoughts 17, total 7190).
Expected figures are worked out by hand in the comments.
"""

from __future__ import annotations

import json

import pytest

from tacx.agents.base import OutputParser, Usage
from tacx.agents.registry import make_parser
from tacx.agents.stream import NO_RESULT
from tests.streams import GARBAGE, assert_usage, kinds, lines, run, usage_sum

GEMINI_SAMPLE = b"""\
{"type":"init","timestamp":"2026-08-21T16:20:01.102Z","session_id":"5c1f0a9e-3b7d-4a8e-9d51-0e6c2f4b7a10","model":"gemini-2.5-pro"}
{"type":"tool_use","timestamp":"2026-08-21T16:20:04.310Z","tool_name":"run_shell_command","tool_id":"tool-1","parameters":{"command":"pytest -q"}}
{"type":"tool_result","timestamp":"2026-08-21T16:20:06.020Z","tool_id":"tool-1","status":"success","output":"3 passed in 0.41s"}
{"type":"message","timestamp":"2026-08-21T16:20:08.400Z","role":"assistant","content":"All 3 tests pass.","delta":true}
{"type":"result","timestamp":"2026-08-21T16:20:08.512Z","status":"success","stats":{"total_tokens":25113,"input_tokens":24939,"output_tokens":20,"cached":21263,"input":3676,"duration_ms":7410,"tool_calls":1}}
"""


def gemini(model: str | None = None) -> OutputParser:
    return make_parser("gemini-stream-json", model=model)


def test_gemini_sample_stream() -> None:
    p = gemini()
    events = run(p, GEMINI_SAMPLE)
    s = p.state
    assert kinds(events) == ["session", "tool_use", "tool_result", "text", "usage", "result"]
    assert events[1].data == {"id": "tool-1", "name": "run_shell_command", "input": "pytest -q"}
    assert events[2].data == {"id": "tool-1", "output": "3 passed in 0.41s", "is_error": False}
    # stats: input 3676 (uncached), cache_read = cached 21263; output = total_tokens -
    # input_tokens = 25113 - 24939 = 174 (20 candidates + 154 thinking tokens, billed as
    # output). gemini-2.5-pro: (3676*1.25 + 21263*0.125 + 174*10) / 1e6
    # = (4595 + 2657.875 + 1740) / 1e6 = 0.008992875. Tokens: 3676 + 174 + 21263 = 25113,
    # the CLI's own total_tokens.
    expected = Usage(3676, 174, 21263, 0, 0.008992875)
    assert expected.tokens == 25113
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
    assert_usage(p.state.usage, Usage(3676, 174, 21263, 0, 0.008992875))


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
    assert_usage(p.state.usage, Usage(3676, 174, 21263, 0, 0.008992875))
    assert not p.outcome.failed



def _result(stats: dict) -> bytes:
    return json.dumps({"type": "result", "timestamp": "2026-08-21T16:20:08.512Z", "status": "success",
                       "stats": stats}).encode()


def test_gemini_thinking_tokens_count_as_output() -> None:
    # The figures of a real run (oneryalcin/gemini-cli-sdk issue #9): a prompt of 7173 tokens,
    # no candidates, 17 thinking tokens, total 7190; as stream-json writes them.
    p = gemini()
    run(p, [lines(GEMINI_SAMPLE)[0], _result({"total_tokens": 7190, "input_tokens": 7173, "output_tokens": 0,
                                              "cached": 0, "input": 7173, "duration_ms": 3569, "tool_calls": 0})])
    # output = 7190 - 7173 = 17. gemini-2.5-pro: (7173*1.25 + 17*10) / 1e6 = (8966.25 + 170) / 1e6
    assert_usage(p.state.usage, Usage(7173, 17, 0, 0, 0.00913625))
    assert p.state.usage.tokens == 7190


# A run on gemini-2.5-pro whose helper calls (routing, next-speaker checks) went to
# gemini-2.5-flash, with stats.models as gemini-cli writes it since PR #21839.
PRO = {"total_tokens": 31810, "input_tokens": 30544, "output_tokens": 402, "cached": 24390, "input": 6154}
FLASH = {"total_tokens": 1262, "input_tokens": 1187, "output_tokens": 9, "cached": 0, "input": 1187}
TOTALS = {"total_tokens": 33072, "input_tokens": 31731, "output_tokens": 411, "cached": 24390, "input": 7341,
          "duration_ms": 48213, "tool_calls": 6}
# pro: output 31810 - 30544 = 1266 (402 + 864 thoughts):
#   (6154*1.25 + 1266*10 + 24390*0.125) / 1e6 = (7692.5 + 12660 + 3048.75) / 1e6 = 0.02340125
# flash: output 1262 - 1187 = 75 (9 + 66 thoughts): (1187*0.30 + 75*2.50) / 1e6 = (356.1 + 187.5) / 1e6 = 0.0005436
# totals: input 7341, output 33072 - 31731 = 1341 = 1266 + 75, cache_read 24390; cost 0.02394485
PER_MODEL = Usage(7341, 1341, 24390, 0, 0.02340125 + 0.0005436)


def test_gemini_prices_each_model_with_its_thoughts() -> None:
    p = gemini()
    events = run(p, [lines(GEMINI_SAMPLE)[0], _result({**TOTALS, "models": {"gemini-2.5-pro": PRO,
                                                                             "gemini-2.5-flash": FLASH}})])
    assert_usage(p.state.usage, PER_MODEL)
    assert_usage(usage_sum(events), PER_MODEL)
    assert p.state.usage.tokens == 33072  # the CLI's total_tokens
    assert p.state.usage.cost_usd == pytest.approx(0.02394485)
    # one usage event per model, so the store knows which model spent what
    per_model = {e.data["model"]: e.data for e in events if e.kind == "usage"}
    assert set(per_model) == {"gemini-2.5-pro", "gemini-2.5-flash"}
    pro, flash = per_model["gemini-2.5-pro"], per_model["gemini-2.5-flash"]
    assert (pro["input"], pro["output"], pro["cache_read"]) == (6154, 1266, 24390)
    assert pro["cost_usd"] == pytest.approx(0.02340125) and flash["cost_usd"] == pytest.approx(0.0005436)
    assert (flash["input"], flash["output"], flash["cache_read"]) == (1187, 75, 0)
    assert len({e.data["message_id"] for e in events if e.kind == "usage"}) == 2


def test_gemini_model_without_a_cached_split_is_not_priced_at_full_rate() -> None:
    # The pro entry gives only its whole prompt: the 24390 cached tokens the totals hold
    # (flash's split says it had none) are pro's, priced at 0.125, not 1.25. Priced as full
    # input it would cost 30544*1.25 = 38180 instead of 7692.5 + 3048.75 millionths.
    p = gemini()
    pro = {"total_tokens": 31810, "input_tokens": 30544, "output_tokens": 402}
    run(p, [lines(GEMINI_SAMPLE)[0], _result({**TOTALS, "models": {"gemini-2.5-pro": pro, "gemini-2.5-flash": FLASH}})])
    assert_usage(p.state.usage, PER_MODEL)


def test_gemini_models_that_do_not_cover_the_totals_price_the_rest_with_the_main_model() -> None:
    # Only flash is broken down: the rest of the totals is the init model's (gemini-2.5-pro),
    # so the cost is the same as when both are listed.
    p = gemini()
    events = run(p, [lines(GEMINI_SAMPLE)[0], _result({**TOTALS, "models": {"gemini-2.5-flash": FLASH}})])
    assert_usage(p.state.usage, PER_MODEL)
    assert_usage(usage_sum(events), PER_MODEL)
    assert {e.data["model"] for e in events if e.kind == "usage"} == {"gemini-2.5-pro", "gemini-2.5-flash"}


def test_gemini_unpriced_helper_model_is_named() -> None:
    # A helper model tacx has no price for: its usage is its own event, costing 0, and the
    # parser names it; the main model's usage keeps its price (6154/1266/24390 as above).
    p = gemini()
    events = run(p, [lines(GEMINI_SAMPLE)[0], _result({**TOTALS, "models": {"gemini-2.5-pro": PRO,
                                                                             "gemini-9-nano": FLASH}})])
    assert p.state.unpriced_model == "gemini-9-nano"
    costs = {e.data["model"]: e.data["cost_usd"] for e in events if e.kind == "usage"}
    assert costs["gemini-9-nano"] == 0 and costs["gemini-2.5-pro"] == pytest.approx(0.02340125)
