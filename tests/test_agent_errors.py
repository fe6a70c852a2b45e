"""Agents' error texts reduced to what a person acts on (tacx/agents/errors.py), and codex's
failures shown that way. The texts are as the CLIs print them: codex's from
openai/codex issues #6937 and #13372, gemini's as gemini-cli wraps the API's body."""

from __future__ import annotations

import json

from tacx.agents.errors import human_error
from tacx.agents.registry import make_parser

# openai/codex#6937 (codex-cli 0.60.1): the Responses API's 400 body, pretty-printed, after the status.
CODEX_400 = (
    "unexpected status 400 Bad Request: {\n  \"error\": {\n    \"message\": \"Missing required parameter: "
    "'input[399].id'.\",\n    \"type\": \"invalid_request_error\",\n    \"param\": \"input[399].id\",\n"
    "    \"code\": \"missing_required_parameter\"\n  }\n}"
)
# gemini-cli: the API's JSON error, serialised again as the message of an outer error.
GEMINI_KEY = "[API Error: " + json.dumps({"error": {"message": json.dumps({"error": {
    "code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}, indent=2),
    "code": 400, "status": "Bad Request"}}) + "]"


def test_the_innermost_message_then_the_status() -> None:
    assert human_error(CODEX_400) == "Missing required parameter: 'input[399].id'. (HTTP 400 Bad Request)"
    assert human_error(GEMINI_KEY) == "API key not valid. Please pass a valid API key. (HTTP 400)"
    # openai/codex#13372: the body says no more than the status.
    assert human_error('unexpected status 400 Bad Request: {"detail":"Bad Request"}') == "HTTP 400 Bad Request"
    assert human_error('{"detail":"Bad Request"}') == "Bad Request"


def test_text_without_json_or_without_a_message_stays_as_it_came() -> None:
    for text in ("stream disconnected before completion", "exit {not json", '{"error": {"type": "x"}}', ""):
        assert human_error(text) == text
    deep = "x"
    for _ in range(12):  # JSON in a string in JSON, 12 deep (each level doubles the escapes): bounded
        deep = json.dumps({"error": {"message": deep}})
    assert isinstance(human_error(deep), str)


def test_a_codex_turn_that_failed_on_a_400_says_it_in_words() -> None:
    parser = make_parser("codex-json")
    stream = [
        {"type": "thread.started", "thread_id": "019a9dc9-184c-7243-b7d5-d42185571b32"},
        {"type": "turn.started"},
        {"type": "error", "message": CODEX_400},
        {"type": "turn.failed", "error": {"message": CODEX_400}},
    ]
    for obj in stream:
        parser.feed(json.dumps(obj).encode())
    outcome = parser.finish(b"")
    assert outcome.failed
    assert outcome.error == "Missing required parameter: 'input[399].id'. (HTTP 400 Bad Request)"


def test_a_huge_error_text_is_shown_as_it_came() -> None:
    hostile = '{"message": "' + "{" * 200_000  # never closes: would be searched from every brace
    assert human_error(hostile) is hostile


def test_codex_says_when_its_usage_limit_resets() -> None:
    import time
    from datetime import datetime

    from tacx.agents.codex import resets_from_text

    now = datetime(2026, 11, 30, 10, 0).timestamp()  # local time, as codex prints its clock times
    # openai/codex#3899: 5 days 22 hours 11 minutes = 5*86400 + 22*3600 + 11*60 = 511,860 s.
    limit = ("You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in"
             " 5 days 22 hours 11 minutes.")
    assert resets_from_text(limit, now) == now + 511_860
    assert resets_from_text("or try again in 3 hours 2 minutes.", now) == now + 10_920  # openai/codex#3031
    assert resets_from_text("try again at 9:01 AM.", now) == datetime(2026, 12, 1, 9, 1).timestamp()  # tomorrow
    assert resets_from_text("try again at 11:30 AM", now) == datetime(2026, 11, 30, 11, 30).timestamp()
    assert resets_from_text("or try again at Jul 5th, 2026 8:19 PM.", now) == datetime(2026, 7, 5, 20, 19).timestamp()
    assert resets_from_text("stream disconnected", now) is None

    parser = make_parser("codex-json")
    for obj in ({"type": "thread.started", "thread_id": "t-1"}, {"type": "turn.started"},
                {"type": "error", "message": limit}, {"type": "turn.failed", "error": {"message": limit}}):
        parser.feed(json.dumps(obj).encode())
    outcome = parser.finish(b"")
    assert outcome.failed and parser.state.rate_limited
    assert abs(parser.state.rate_limit_resets_at - (time.time() + 511_860)) < 60


def test_the_last_output_of_a_failed_agent_is_its_words_and_stderr_not_its_stream() -> None:
    from tacx.engine.outcome import _agent_words

    stream = b"\n".join([
        json.dumps({"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-sonnet-4-5-20250929",
                    "tools": [], "cwd": "/repo"}).encode(),
        json.dumps({"type": "assistant", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "I'll run the tests."}],
                    "usage": {"input_tokens": 3, "output_tokens": 8}}, "session_id": "s-1"}).encode(),
        b"Error: connect ECONNREFUSED 160.79.104.10:443",  # stderr, as node prints it
        json.dumps({"type": "result", "subtype": "success", "is_error": True, "result": "API Error: Connection error.",
                    "session_id": "s-1", "num_turns": 1, "duration_ms": 100, "total_cost_usd": 0,
                    "usage": {"input_tokens": 3, "output_tokens": 8}}).encode(),
    ]) + b"\n"
    shown = _agent_words(stream, make_parser("claude-stream-json"), 8).splitlines()
    assert shown[:2] == ["I'll run the tests.", "Error: connect ECONNREFUSED 160.79.104.10:443"]
    assert shown[-1].endswith("API Error: Connection error.")
    assert not any(line.startswith("{") for line in shown)


def test_gemini_says_its_key_is_invalid_in_words() -> None:
    """gemini -o stream-json with a bad key: an error event and a failed result, each holding
    the API's JSON error serialised inside another error's message."""
    parser = make_parser("gemini-stream-json")
    lines = [
        {"type": "init", "timestamp": "2026-11-30T10:00:00.000Z", "session_id": "g-1", "model": "gemini-2.5-pro"},
        {"type": "error", "timestamp": "2026-11-30T10:00:01.000Z", "severity": "error", "message": GEMINI_KEY},
        {"type": "result", "timestamp": "2026-11-30T10:00:01.000Z", "status": "error",
         "error": {"type": "Error", "message": GEMINI_KEY}, "stats": {"total_tokens": 0, "input_tokens": 0,
                                                                      "output_tokens": 0, "duration_ms": 900,
                                                                      "tool_calls": 0}},
    ]
    for obj in lines:
        parser.feed(json.dumps(obj).encode())
    outcome = parser.finish(b"")
    assert outcome.failed and outcome.error == "API key not valid. Please pass a valid API key. (HTTP 400)"


def test_what_counts_as_an_api_that_cannot_be_reached() -> None:
    from tacx.agents.errors import unreachable

    assert unreachable("retry", {"status": None, "error": "Connection error."}) == "Connection error."
    assert unreachable("retry", {"status": None, "error": "unknown"}) == "no answer from the API"
    assert unreachable("retry", {"status": 529, "error": "overloaded_error"}) is None  # it answered: busy
    assert unreachable("retry", {"status": 429, "error": "rate_limit_error"}) is None
    assert unreachable("error", {"message": "Reconnecting... 2/5 waiting for network"}) is not None
    assert unreachable("error", {"message": "request to https://api.anthropic.com failed, reason: getaddrinfo EAI_AGAIN"})
    assert unreachable("error", {"message": "Invalid API key"}) is None
    assert unreachable("text", {"text": "connection refused, says the agent about your app"}) is None
