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
