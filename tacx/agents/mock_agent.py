"""tacx's simulated coding agent: the `mock` provider runs this instead of a real model.

It speaks Claude Code's ``--output-format stream-json --verbose`` stream exactly (one JSON
object per stdout line, flushed per line), so tacx's claude parser reads it unchanged, and it
costs nothing. Run it as ``python -m tacx.agents.mock_agent -p PROMPT --output-format stream-json
--verbose [options]`` or ``python path/to/mock_agent.py ...``.

Stdlib only and no import of tacx's other modules, so it starts in a few tens of ms.

Stream (figures deterministic for a given ``--seed``, by default derived from the prompt):

* ``system/init`` with ``session_id`` (a fresh uuid4, or the ``--resume`` one), ``model``,
  ``cwd``, ``tools``, ``permissionMode`` and ``"simulator": true``;
* per turn (``--turns``, default 3): one assistant API response with a unique ``msg_...`` id
  printed over several lines that share the id and the same ``usage`` (an optional thinking
  line, a text line, a tool_use line - the repeated-id pitfall), then a ``user`` tool_result;
* a final assistant message (text only);
* ``result`` whose ``usage`` is the sum of the distinct messages' usages and whose
  ``total_cost_usd`` uses Sonnet prices (USD per million tokens: input 3, output 15,
  cache read 0.30, cache write 3.75).

The first assistant text always starts with "[mock agent] This is tacx's simulator, not a
real model: ".

Exit status: 0 on success; 1 for ``--fail``, ``--api-error``, ``--max-turns`` /
``--max-budget-usd`` being hit and usage errors; ``--exit-code N`` after a normal result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

SIMULATOR_NOTICE = "[mock agent] This is tacx's simulator, not a real model: "
DEFAULT_MODEL = "mock-sonnet"
TOOLS = [
    "Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "NotebookEdit",
    "WebFetch", "WebSearch", "TodoWrite", "BashOutput", "KillShell",
]
# Sonnet prices, in units of 1e-8 USD per token (USD per million * 100), so sums stay exact.
PRICE_INPUT, PRICE_OUTPUT, PRICE_CACHE_READ, PRICE_CACHE_WRITE = 300, 1500, 30, 375
API_ERROR_TEXT = "API Error: 401 Invalid API key · Please run /login"


def cost_usd(usage: dict) -> float:
    units = (
        usage["input_tokens"] * PRICE_INPUT
        + usage["output_tokens"] * PRICE_OUTPUT
        + usage["cache_read_input_tokens"] * PRICE_CACHE_READ
        + usage["cache_creation_input_tokens"] * PRICE_CACHE_WRITE
    )
    return round(units / 1e8, 8)


def zero_usage() -> dict:
    return {
        "input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }


def add_usage(total: dict, usage: dict) -> None:
    for key in total:
        total[key] += usage[key]


def new_uuid() -> str:
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_id(prefix: str) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789"
    return prefix + "".join(alphabet[c % len(alphabet)] for c in os.urandom(24))


def parse_pace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a pace from 0 to 100, not {text}")
    return value


def parse_seconds(text: str) -> float:
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            value = float(t[:-2]) / 1000
        elif t.endswith("s"):
            value = float(t[:-1])
        elif t.endswith("m"):
            value = float(t[:-1]) * 60
        else:
            value = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative duration: {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # like claude: usage errors exit 1
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n")
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="mock_agent",
        description="tacx's simulated agent (speaks claude's stream-json).",
        allow_abbrev=False,
    )
    # Claude Code's own options.
    # Like claude, `-p PROMPT` and `-p ... PROMPT` (flag, prompt as the positional) both work.
    p.add_argument("-p", "--print", dest="print_prompt", nargs="?", const="", default=None, metavar="PROMPT")
    p.add_argument("prompt_arg", nargs="?", default=None, metavar="PROMPT")
    p.add_argument("--output-format", default="text")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--max-turns", type=int)
    p.add_argument("--allowedTools", "--allowed-tools", dest="allowed_tools")
    p.add_argument("--permission-mode", default="default")
    p.add_argument("--append-system-prompt")
    p.add_argument("--resume", "-r", dest="resume", metavar="SESSION_ID")
    p.add_argument("--max-budget-usd", type=float)
    # Simulation options.
    p.add_argument("--think", type=parse_seconds, default=2.0, metavar="SECONDS")
    p.add_argument("--pace", type=parse_pace, default=1.0, metavar="FACTOR",
                   help="a factor on --think (0.1: ten times faster; tacx passes TACX_MOCK_PACE)")
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--write", action="append", default=[], metavar="FILE")
    p.add_argument("--fail", action="store_true")
    p.add_argument("--api-error", action="store_true")
    p.add_argument("--rate-limit", action="store_true")
    p.add_argument("--hang", action="store_true")
    p.add_argument("--flood", type=float, default=0.0, metavar="MB")
    p.add_argument("--grandchild", action="store_true")
    p.add_argument("--exit-code", type=int, default=0)
    p.add_argument("--no-result", action="store_true")
    p.add_argument("--result")
    p.add_argument("--tokens-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    return p


# --------------------------------------------------------------------------- content


def first_line(prompt: str, limit: int = 100) -> str:
    for line in prompt.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return "(empty prompt)"


def file_content(path: str, prompt: str) -> str:
    topic = first_line(prompt)
    name = os.path.basename(path)
    if path.endswith(".md"):
        return (
            f"# Plan: {topic}\n\n"
            "_Written by tacx's mock agent (a simulator, not a real model)._\n\n"
            "## Goal\n\n"
            f"{topic}\n\n"
            "## Steps\n\n"
            "1. Read the relevant code and tests.\n"
            "2. Write a failing test that captures the requirement.\n"
            "3. Make the smallest change that passes it.\n"
            "4. Run the whole test suite and fix regressions.\n\n"
            "## Risks\n\n"
            "- Hidden coupling between modules.\n"
            "- Flaky timing in integration tests.\n"
        )
    if path.endswith(".py"):
        func = "".join(c if c.isalnum() else "_" for c in os.path.splitext(name)[0].lower())
        if not func or func[0].isdigit():
            func = "task_" + func
        return (
            f'"""{topic.replace(chr(92), "/").replace(chr(34) * 3, "")}\n\n'
            'Written by tacx\'s mock agent (a simulator, not a real model).\n"""\n\n'
            "from __future__ import annotations\n\n\n"
            f"def {func}(items: list[str]) -> list[str]:\n"
            '    """Return the non-empty items, stripped and sorted."""\n'
            "    return sorted(item.strip() for item in items if item.strip())\n\n\n"
            'if __name__ == "__main__":\n'
            f'    print({func}([" b", "a ", ""]))\n'
        )
    return (
        f"{topic}\n\n"
        "Written by tacx's mock agent (a simulator, not a real model).\n"
        f"File: {name}\n"
    )


def write_file(path: str, prompt: str) -> str:
    full = os.path.abspath(path)
    parent = os.path.dirname(full)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
        f.write(file_content(path, prompt))
    return full


# --------------------------------------------------------------------------- the agent




class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # A str seed is hashed with sha512 by random itself: stable across runs and machines.
        self.rng = random.Random(args.seed if args.seed is not None else "prompt:" + args.prompt)
        self.session_id = args.resume or new_uuid()
        self.model = args.model
        self.start = time.monotonic()
        self.total = zero_usage()
        self.num_turns = 0
        self.simulator_said = False
        self.pending_writes = list(args.write)
        slices = max(args.turns, 0) + 1
        self.pause = args.think * args.pace / slices

    # ---- output
    def emit(self, obj: dict) -> None:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def sleep(self, seconds: float | None = None) -> None:
        s = self.pause if seconds is None else seconds
        if s > 0:
            time.sleep(s)

    # ---- figures
    def usage(self, turn: int, final: bool = False) -> dict:
        r, k = self.rng, self.args.tokens_scale
        u = {
            "input_tokens": r.randint(1, 12) if turn else r.randint(3, 40),
            "cache_creation_input_tokens": r.randint(400, 2500) if turn else r.randint(4000, 14000),
            "cache_read_input_tokens": (r.randint(2000, 6000) if turn == 0 else 12000 + turn * r.randint(1500, 4000)),
            "output_tokens": r.randint(150, 600) if final else r.randint(20, 260),
        }
        return {key: max(0, round(v * k)) for key, v in u.items()}

    def assistant_line(self, msg_id: str, block: dict, usage: dict, model: str | None = None) -> dict:
        return {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model or self.model,
                "content": [block],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": dict(usage),
            },
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": new_uuid(),
        }

    def text(self, body: str) -> str:
        if not self.simulator_said:
            self.simulator_said = True
            lead = SIMULATOR_NOTICE
            if self.args.resume:
                lead += f"resumed session {self.args.resume}. "
            return lead + body
        return body

    def over_budget(self) -> bool:
        b = self.args.max_budget_usd
        return b is not None and cost_usd(self.total) >= b

    # ---- stream pieces
    def init(self) -> None:
        self.emit({
            "type": "system",
            "subtype": "init",
            "cwd": os.getcwd(),
            "session_id": self.session_id,
            "tools": list(TOOLS),
            "mcp_servers": [],
            "model": self.model,
            "permissionMode": self.args.permission_mode,
            "slash_commands": ["compact", "context", "cost", "init", "review"],
            "apiKeySource": "none",
            "claude_code_version": "2.0.14",
            "output_style": "default",
            "agents": ["general-purpose"],
            "uuid": new_uuid(),
            "simulator": True,
        })

    def tool_for(self, turn: int) -> tuple[dict, str]:
        """A tool_use input and its tool_result text for this turn."""
        topic = first_line(self.args.prompt, 60)
        choices = [
            ({"name": "Glob", "input": {"pattern": "**/*.py"}}, "src/app.py\nsrc/util.py\ntests/test_app.py"),
            ({"name": "Read", "input": {"file_path": os.path.join(os.getcwd(), "README.md")}},
             "     1\t# Project\n     2\t\n     3\tA small project used by tacx's simulator."),
            ({"name": "Grep", "input": {"pattern": topic.split()[0] if topic.split() else "TODO", "output_mode": "files_with_matches"}},
             "Found 2 files\nsrc/app.py\ntests/test_app.py"),
            ({"name": "Bash", "input": {"command": "python -m pytest -q", "description": "Run the tests"}},
             f"{self.rng.randint(3, 40)} passed in {self.rng.randint(10, 300) / 100:.2f}s"),
        ]
        if self.pending_writes and (turn >= 1 or self.args.turns <= 1):
            path = self.pending_writes.pop(0)
            full = write_file(path, self.args.prompt)
            return ({"name": "Write", "input": {"file_path": full, "content": file_content(path, self.args.prompt)}},
                    f"File created successfully at: {full}")
        return choices[turn % len(choices)]

    def turn(self, turn: int) -> None:
        self.sleep()
        msg_id = new_id("msg_01")
        usage = self.usage(turn)
        add_usage(self.total, usage)
        self.num_turns += 1
        if turn > 0 and self.rng.random() < 0.5:
            self.emit(self.assistant_line(msg_id, {
                "type": "thinking",
                "thinking": f"The previous step went fine; next I should check step {turn + 1}.",
                "signature": new_id("sig_"),
            }, usage))
        if turn == 0:
            body = f"I'll work on: {first_line(self.args.prompt)}. First, let me look around."
        else:
            body = f"Step {turn + 1}: continuing with the task."
        self.emit(self.assistant_line(msg_id, {"type": "text", "text": self.text(body)}, usage))
        if self.args.hang:
            while True:  # dies on SIGTERM with the default handler
                time.sleep(3600)
        tool, result = self.tool_for(turn)
        tool_id = new_id("toolu_01")
        self.emit(self.assistant_line(msg_id, {"type": "tool_use", "id": tool_id, **tool}, usage))
        self.emit({
            "type": "user",
            "message": {"role": "user", "content": [
                {"tool_use_id": tool_id, "type": "tool_result", "content": result, "is_error": False}]},
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": new_uuid(),
        })

    def rate_limit(self) -> None:
        self.emit({
            "type": "rate_limit_event",
            "rate_limit_info": {
                "status": "rejected",
                "resetsAt": int(time.time()) + 3600,
                "rateLimitType": "five_hour",
                "isUsingOverage": False,
            },
            "uuid": new_uuid(),
            "session_id": self.session_id,
        })
        self.emit({
            "type": "system",
            "subtype": "api_retry",
            "attempt": 1,
            "max_retries": 10,
            "retry_delay_ms": 50,
            "error_status": 429,
            "error": "rate_limit",
            "session_id": self.session_id,
            "uuid": new_uuid(),
        })
        self.sleep(0.05)

    def grandchild(self) -> None:
        import subprocess  # only when asked: keeps startup fast

        proc = subprocess.Popen(
            ["sleep", "600"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        with open("grandchild.pid", "w") as f:
            f.write(f"{proc.pid}\n")

    def final_message(self) -> None:
        self.sleep()
        msg_id = new_id("msg_01")
        usage = self.usage(self.num_turns, final=True)
        add_usage(self.total, usage)
        self.num_turns += 1
        if self.args.flood > 0:
            self.flood(msg_id, usage)
        body = "Done. " + self.result_text()
        self.emit(self.assistant_line(msg_id, {"type": "text", "text": self.text(body)}, usage))

    def flood(self, msg_id: str, usage: dict) -> None:
        """Extra text lines of the final message (same id and usage: totals unchanged)."""
        target = int(self.args.flood * 1024 * 1024)
        chunk = ("The simulator floods its output to test tacx's back-pressure. " * 256)[:16000]
        line = self.assistant_line(msg_id, {"type": "text", "text": chunk}, usage)
        written = 0
        out = sys.stdout
        while written < target:
            line["uuid"] = new_uuid()
            data = json.dumps(line, separators=(",", ":")) + "\n"
            out.write(data)
            out.flush()
            written += len(data)

    def result_text(self) -> str:
        if self.args.result is not None:
            return self.args.result
        return f"Simulated work on “{first_line(self.args.prompt)}” finished in {self.num_turns} turns."

    def result(self, subtype: str = "success", is_error: bool = False, text: str | None = None,
               errors: list[str] | None = None, api_error_status: int | None = None) -> None:
        elapsed = int((time.monotonic() - self.start) * 1000)
        cost = cost_usd(self.total)
        obj: dict = {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": elapsed,
            "duration_api_ms": max(0, elapsed - 5),
            "num_turns": self.num_turns,
        }
        if text is not None:
            obj["result"] = text
        obj.update({
            "session_id": self.session_id,
            "total_cost_usd": cost,
            "usage": dict(self.total),
            "modelUsage": {self.model: {
                "inputTokens": self.total["input_tokens"],
                "outputTokens": self.total["output_tokens"],
                "cacheReadInputTokens": self.total["cache_read_input_tokens"],
                "cacheCreationInputTokens": self.total["cache_creation_input_tokens"],
                "webSearchRequests": 0,
                "costUSD": cost,
                "contextWindow": 200000,
            }},
            "permission_denials": [],
            "uuid": new_uuid(),
        })
        if errors is not None:
            obj["errors"] = errors
        if api_error_status is not None:
            obj["api_error_status"] = api_error_status
        self.emit(obj)

    # ---- whole runs
    def run(self) -> int:
        a = self.args
        self.init()
        if a.grandchild:
            self.grandchild()
        if a.api_error:
            return self.run_api_error()
        turns = max(a.turns, 0)
        for t in range(turns):
            if a.max_turns is not None and self.num_turns >= a.max_turns:
                self.result("error_max_turns", True, errors=[f"Reached maximum number of turns ({a.max_turns})"])
                return 1
            self.turn(t)
            if t == 0 and a.rate_limit:
                self.rate_limit()
            if self.over_budget():
                self.result("error_max_budget_usd", True,
                            errors=[f"Reached maximum budget (${a.max_budget_usd})"])
                return 1
        if turns == 0 and a.rate_limit:
            self.rate_limit()
        if a.hang:  # --turns 0: still hang after one message
            self.final_message()
            while True:
                time.sleep(3600)
        for path in self.pending_writes:
            write_file(path, a.prompt)
        self.pending_writes = []
        if a.max_turns is not None and self.num_turns >= a.max_turns:
            self.result("error_max_turns", True, errors=[f"Reached maximum number of turns ({a.max_turns})"])
            return 1
        self.final_message()
        if a.no_result:
            return 0
        if a.fail:
            self.result("error_during_execution", True,
                        errors=["[mock agent] simulated failure (--fail)"])
            return 1
        self.result("success", False, self.result_text())
        return a.exit_code

    def run_api_error(self) -> int:
        self.sleep()
        usage = zero_usage()
        self.num_turns = 1
        text = SIMULATOR_NOTICE + "simulating an API failure. " + API_ERROR_TEXT
        self.simulator_said = True
        self.emit(self.assistant_line(new_id("msg_01"), {"type": "text", "text": text}, usage, model="<synthetic>"))
        if self.args.no_result:
            return 0
        self.result("success", True, API_ERROR_TEXT)
        return 1


def glue_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--opt VALUE` -> `--opt=VALUE`, so that values starting with '-' (say a prompt that
    opens with a YAML front matter `---`) are not mistaken for options. A value is any word
    that is not itself one of our option strings."""
    actions = parser._option_string_actions
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        action = actions.get(arg)
        takes_value = action is not None and action.nargs in (None, "?") and action.option_strings \
            and not isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction))
        if takes_value and i + 1 < len(argv) and argv[i + 1] not in actions:
            long = max(action.option_strings, key=len)
            out.append(f"{long}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(glue_values(parser, sys.argv[1:] if argv is None else argv))
    if args.print_prompt is None:
        parser.error("the following arguments are required: -p/--print")
    args.prompt = args.print_prompt or args.prompt_arg or ""
    if not args.prompt.strip():
        sys.stderr.write("Error: Input must be provided either through stdin or as a prompt argument when using --print\n")
        return 1
    if unknown:
        sys.stderr.write(f"mock agent: ignoring unsupported arguments: {' '.join(unknown)}\n")
    if args.output_format != "stream-json":
        sys.stderr.write(
            f'Error: tacx\'s mock agent only speaks --output-format stream-json (got "{args.output_format}")\n')
        return 1
    if not args.verbose:
        sys.stderr.write("Error: When using --print, --output-format=stream-json requires --verbose\n")
        return 1
    try:
        return Agent(args).run()
    except BrokenPipeError:
        # The reader went away: exit quietly, and keep Python from complaining at shutdown.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
