"""What the parser tests (test_parsers*.py) share: feeding a stream to a parser, summing its
usage events, and the garbage lines every streaming parser must skip without raising."""

from __future__ import annotations

import pytest

from tacx.agents.base import OutputParser, ParsedEvent, Usage

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


# Short real streams (captured from the CLIs), shared by the parser and the log view tests.
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
