"""The log tailer: complete lines only, any line length, bounded batches, ordered delivery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tacx.agents.registry import make_parser
from tacx.agents.base import AgentState
from tacx.agents.tailer import MAX_LINE, SHOWN_EVENTS, Batch, Tail, Tailer


def assistant(i: int, text: str = "hello") -> bytes:
    message = {"id": f"msg_{i}", "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": text}],
               "usage": {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 0,
                         "cache_creation_input_tokens": 0}}
    return json.dumps({"type": "assistant", "message": message}).encode() + b"\n"


def test_a_huge_backlog_keeps_every_usage_event_and_only_the_last_lines_to_show(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    with log.open("wb") as f:
        for i in range(5000):
            f.write(assistant(i))
            f.write(assistant(i))  # the same message again: counted once
    tail = Tail(log, make_parser("claude-stream-json"), lambda *a: None)
    batch, outcome = tail.finish()
    assert len(batch.usage) == 5000 and tail.parser.state.usage.output == 10000
    assert len(batch.shown) == SHOWN_EVENTS and batch.dropped == 10000 - SHOWN_EVENTS
    assert outcome.failed and "without a result" in (outcome.error or "")


def test_lines_longer_than_the_limit_are_skipped_and_the_next_ones_read(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    with log.open("wb") as f:
        f.write(assistant(1))
        f.write(b"{" + b"x" * (MAX_LINE + 10) + b"\n")
        f.write(assistant(2))
        f.write(assistant(3, "unterminated")[:-1])  # the last line has no newline yet
    tail = Tail(log, make_parser("claude-stream-json"), lambda *a: None)
    batch = Batch()
    tail.read(batch)  # one round: 16 MiB at most
    tail.read(batch)
    assert [e.data["message_id"] for e in batch.usage] == ["msg_1", "msg_2"]
    assert tail.skipped_lines == 1 and len(tail.partial) < 1000
    end, _ = tail.finish()
    assert [e.data["message_id"] for e in end.usage] == ["msg_3"]


async def test_deliveries_arrive_in_order_and_the_end_comes_last(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    seen: list[tuple[list[str], int]] = []

    def deliver(tail: Tail, batch: Batch, state: AgentState) -> None:
        seen.append(([e.data["message_id"] for e in batch.usage], state.usage.output))

    tailer = Tailer(interval=0.01)
    tailer.start()
    tail = tailer.watch(log, make_parser("claude-stream-json"), deliver)
    with log.open("ab") as f:
        for i in range(200):
            f.write(assistant(i))
            f.flush()
            if i % 20 == 0:
                await asyncio.sleep(0.02)
    await tailer.finish(tail)
    await tailer.stop()
    ids = [m for batch, _ in seen for m in batch]
    assert ids == [f"msg_{i}" for i in range(200)]
    totals = [output for _, output in seen]
    assert totals == sorted(totals) and totals[-1] == 400
