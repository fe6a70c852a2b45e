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

