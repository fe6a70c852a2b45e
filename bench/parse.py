"""Parsing speed: tacx's claude stream-json parser against plain `json.loads`, per line.

Every line an agent writes goes through its parser as it is captured, so the parser must
keep up with the agent. The input is a realistic Claude Code `--output-format stream-json
--verbose` stream of about 100 MB (`--size-mb`), generated once (seeded, so the same
every time) into bench/.runs/claude-<size>mb.jsonl: `system/init`; then turn after turn an
API message printed over 1-3 `assistant` lines that share its id and usage (thinking, text,
tool_use: Bash commands, Edit calls with old/new text, Reads), a `user` tool_result whose
output ranges from a line to a few hundred KB (test runs, file reads, diffs), now and then
a `system/api_retry` and a `rate_limit_event`; finally `result`. Text has escapes (quotes,
newlines, tabs) and non-ASCII, as real output does.

Both sides read the file the same way: 1 MiB chunks, split into lines (the remainder
carried to the next chunk). Baseline: `json.loads(line)` for each line. tacx:
`parser.feed(line)` for each line, a fresh parser per round (which includes the
json.loads, the dispatch, the usage bookkeeping and building the events). The sides
alternate, several rounds each, in one process; medians are printed with the ratio
tacx / baseline. Goal: tacx >= 0.7 of the baseline's rate.

Afterwards the parser's state is checked against the stream (totals from the result line,
retries, session), so a fast but wrong parser fails loudly.

    python bench/parse.py                 # 100 MB, 5 rounds per side
    python bench/parse.py --size-mb 20    # a smaller file (generated once too)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tacx.agents.registry import make_parser
from tacx.agents.base import Usage

DEFAULT_DIR = Path(__file__).resolve().parent / ".runs"

MB = 1_000_000
CHUNK = 1 << 20
GOAL = 0.7
SEED = 20260821
SESSION = "8d45afe0-771b-4803-8379-491dd9455365"
MODEL = "claude-sonnet-4-5-20250929"

# -- the stream ----------------------------------------------------------------------------------

WORDS = (
    "def class return import self None True False assert pytest test_ value result error "
    "the a of to in is that for it with as on this be are from by file line path config "
    "parser stream event usage token cost model session agent tool output input cache "
    "résumé naïve café — “quoted” ‘text’ λ → ✓ 日本語 "
    'x=1 y="two" {"key": [1, 2, 3]} \\\\n C:\\\\path\\\\to a\tb <tag attr="v"/> '
).split(" ")


def corpus(rng: random.Random, size: int) -> str:
    """A few MB of code- and log-like text, sliced for every message and tool output."""
    parts: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 16)))
        indent = "    " * rng.randint(0, 3)
        parts.append(indent + line)
        length += len(line) + len(indent) + 1
    return "\n".join(parts)


class Stream:
    """Writes a Claude Code stream of realistic shape and roughly the size asked for."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.text = corpus(self.rng, 4 * MB)
        self.messages = 0
        self.retries = 0
        self.total = Usage()

    def slice(self, size: int) -> str:
        start = self.rng.randrange(0, len(self.text) - size - 1)
        return self.text[start:start + size]

    def output_size(self) -> int:
        """Tool outputs: mostly short, some file reads and test logs, a few huge dumps."""
        r = self.rng.random()
        if r < 0.55:
            return self.rng.randint(20, 800)
        if r < 0.85:
            return self.rng.randint(800, 12_000)
        if r < 0.98:
            return self.rng.randint(12_000, 80_000)
        return self.rng.randint(80_000, 400_000)

    def tool_use(self, tool_id: str) -> dict:
        r = self.rng.random()
        if r < 0.5:
            name, args = "Bash", {"command": self.slice(self.rng.randint(10, 200)), "description": self.slice(40)}
        elif r < 0.8:
            name, args = "Edit", {"file_path": "/repo/tacx/parsers.py", "old_string": self.slice(self.rng.randint(50, 3000)),
                                  "new_string": self.slice(self.rng.randint(50, 3000))}
        else:
            name, args = "Read", {"file_path": "/repo/tests/test_parsers.py", "limit": 400}
        return {"type": "tool_use", "id": tool_id, "name": name, "input": args}

    def lines(self, size: int) -> Iterator[dict]:
        rng = self.rng
        yield {"type": "system", "subtype": "init", "cwd": "/repo", "session_id": SESSION,
               "tools": ["Bash", "Edit", "Read", "Write", "Glob", "Grep"], "model": MODEL,
               "permissionMode": "acceptEdits", "apiKeySource": "none"}
        written = 0
        while written < size:
            self.messages += 1
            mid = f"msg_01{self.messages:022d}"
            usage = {"input_tokens": rng.randint(1, 50), "cache_creation_input_tokens": rng.randint(0, 8000),
                     "cache_read_input_tokens": rng.randint(10_000, 150_000), "output_tokens": rng.randint(1, 4000)}
            self.total = self.total + Usage(usage["input_tokens"], usage["output_tokens"],
                                            usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"])
            blocks: list[dict] = []
            if rng.random() < 0.3:
                blocks.append({"type": "thinking", "thinking": self.slice(rng.randint(100, 3000)), "signature": "Eu8B" * 40})
            if rng.random() < 0.8:
                blocks.append({"type": "text", "text": self.slice(rng.randint(20, 1500))})
            tool_id = f"toolu_01{self.messages:022d}"
            uses_tool = rng.random() < 0.85 or not blocks
            if uses_tool:
                blocks.append(self.tool_use(tool_id))
            for block in blocks:  # one line per block, all sharing the message's id and usage
                line = {"type": "assistant", "message": {
                    "id": mid, "type": "message", "role": "assistant", "model": MODEL, "content": [block],
                    "stop_reason": None, "stop_sequence": None, "usage": usage,
                }, "parent_tool_use_id": None, "session_id": SESSION}
                written += yield line  # type: ignore[misc]
            if uses_tool:
                written += yield {"type": "user", "message": {"role": "user", "content": [
                    {"tool_use_id": tool_id, "type": "tool_result", "content": self.slice(self.output_size()),
                     "is_error": rng.random() < 0.05},
                ]}, "parent_tool_use_id": None, "session_id": SESSION}
            if rng.random() < 0.01:
                self.retries += 1
                written += yield {"type": "system", "subtype": "api_retry", "attempt": 1, "max_retries": 10,
                                  "retry_delay_ms": 2000, "error_status": 529, "error": "server_error",
                                  "session_id": SESSION}
            if rng.random() < 0.02:
                written += yield {"type": "rate_limit_event", "rate_limit_info": {
                    "status": "allowed", "resetsAt": 1784079000, "rateLimitType": "five_hour"},
                    "uuid": "76258cfb-0dc8-4d4b-8682-77082b59c03f", "session_id": SESSION}
        t = self.total
        yield {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 9_120_000,
               "num_turns": self.messages, "result": self.slice(800), "session_id": SESSION,
               "total_cost_usd": 123.456789,
               "usage": {"input_tokens": t.input, "cache_creation_input_tokens": t.cache_write,
                         "cache_read_input_tokens": t.cache_read, "output_tokens": t.output}}


def generate(path: Path, size: int) -> None:
    stream = Stream(SEED)
    gen = stream.lines(size)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        line = next(gen)
        while True:
            data = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            out.write(data)
            try:
                line = gen.send(len(data))
            except StopIteration:
                break
    tmp.replace(path)


# -- the two sides ---------------------------------------------------------------------------


def iter_lines(path: Path) -> Iterator[bytes]:
    """1 MiB reads split into lines without their newline, as the capture feeds a parser."""
    with open(path, "rb", buffering=0) as f:
        rest = b""
        while chunk := f.read(CHUNK):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


def bench_baseline(path: Path) -> tuple[float, int]:
    loads = json.loads
    count = 0
    start = time.perf_counter()
    for line in iter_lines(path):
        loads(line)
        count += 1
    return time.perf_counter() - start, count


def bench_tacx(path: Path) -> tuple[float, int]:
    parser = make_parser("claude-stream-json")
    feed = parser.feed
    count = 0
    start = time.perf_counter()
    for line in iter_lines(path):
        feed(line)
        count += 1
    return time.perf_counter() - start, count


def check(path: Path) -> str:
    """Run the parser once more, keeping its events, and check it read the stream right."""
    parser = make_parser("claude-stream-json")
    usage_sum = Usage()
    retries = 0
    last = b""
    for line in iter_lines(path):
        for event in parser.feed(line):
            if event.kind == "usage":
                d = event.data
                usage_sum = usage_sum + Usage(d["input"], d["output"], d["cache_read"], d["cache_write"], d["cost_usd"])
            retries += event.kind == "retry"
        last = line
    outcome = parser.finish(b"")
    result = json.loads(last)
    state = parser.state
    u = result["usage"]
    expected = Usage(u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"],
                     u["cache_creation_input_tokens"], result["total_cost_usd"])
    problems = []
    if outcome.failed or state.session_id != SESSION or not state.final or not state.cost_reported:
        problems.append(f"outcome {outcome}, state {state}")
    if state.usage != expected:
        problems.append(f"final usage {state.usage} != the result line's {expected}")
    live_tokens = (usage_sum.input, usage_sum.output, usage_sum.cache_read, usage_sum.cache_write)
    if live_tokens != (expected.input, expected.output, expected.cache_read, expected.cache_write) \
            or abs(usage_sum.cost_usd - expected.cost_usd) > 1e-6:
        problems.append(f"usage events add up to {usage_sum}, not {expected}")
    if state.api_retries != retries or state.turns != result["num_turns"]:
        problems.append(f"retries {state.api_retries} / {retries}, turns {state.turns} / {result['num_turns']}")
    if problems:
        raise SystemExit("FAIL: " + "; ".join(problems))
    return (f"checked: {state.turns:,} messages counted once, {state.api_retries} retries, "
            f"{expected.tokens:,} tokens, ${expected.cost_usd}; the usage events add up to the result's totals")


# -- reporting -------------------------------------------------------------------------------


def describe(name: str, times: list[float], size: int, lines: int) -> str:
    median = statistics.median(times)
    spread = f"{size / MB / max(times):.0f}-{size / MB / min(times):.0f}"
    return (f"{name:<28} {size / MB / median:6.1f} MB/s  {lines / median:10,.0f} lines/s  {median:6.3f} s"
            f"   (median of {len(times)}; range {spread} MB/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100, help="size of the stream (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side (default 5)")
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="where the stream is kept (default: bench/.runs)")
    parser.add_argument("--regenerate", action="store_true", help="write the stream again even if it exists")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"claude-{args.size_mb}mb.jsonl"
    if args.regenerate or not path.exists():
        start = time.perf_counter()
        generate(path, args.size_mb * MB)
        print(f"generated {path} in {time.perf_counter() - start:.1f} s")
    size = path.stat().st_size

    print(check(path))
    print(f"parse: {path.name}, {size:,} bytes, {args.rounds} round(s) per side, alternating")
    baseline: list[float] = []
    tacx: list[float] = []
    lines = 0
    sides: list[Callable[[], None]] = [
        lambda: baseline.append(bench_baseline(path)[0]),
        lambda: tacx.append(bench_tacx(path)[0]),
    ]
    _, lines = bench_baseline(path)  # warm the page cache
    for round_no in range(args.rounds):
        for side in sides if round_no % 2 == 0 else sides[::-1]:
            side()

    print(describe("baseline: json.loads", baseline, size, lines))
    print(describe("tacx: claude parser feed", tacx, size, lines))
    ratio = statistics.median(baseline) / statistics.median(tacx)
    print(f"ratio tacx / baseline: {ratio:.2f}")
    print(f"goal >= {GOAL}: {'meets' if ratio >= GOAL else 'misses'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
