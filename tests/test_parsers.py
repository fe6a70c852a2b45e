"""The parser registry: every parser kind, and the plain parser of agents whose output has
no format."""

from __future__ import annotations

import pytest

from tacx.agents.base import OutputParser
from tacx.agents.registry import PARSER_KINDS, make_parser


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

