"""Dashboard responsiveness: key press to screen with 10,000 tasks in the store, idle and
while 8 agents write 5 MB/s each; startup time; peak RSS.

The app is driven headless (`App.run_test`) in this process, with the real engine (the
coordinator, supervisor and store run in the app's loop, as in `tacx`), on one home
seeded with `--tasks` tasks in one transaction (plain SQL matching the schema): a mix of
succeeded / failed / cancelled / timed-out / queued tasks of four workflows, with stages,
tokens and costs, usage rows (a few hundred of them today), one event per task and small
logs for the newest tasks. The coordinator is paused, so the queued tasks stay queued
and nothing runs unless the benchmark starts it.

Two states of the same app, alternating round by round:
- idle: nothing runs.
- loaded: `--daughters` real tasks run through the engine: a one-stage workflow on an
  agent provider defined the way tacx.yaml defines one (`parser: claude-stream-json`),
  whose program (written into the run folder) writes Claude-stream-json lines (assistant
  text, tool calls, tool results of a few KB; a new message id, hence a usage row, every
  ~0.5 MB) at `--rate-mb` MB/s, paced every 10 ms, until it is cancelled. They are queued
  at priority 100 and the coordinator is unpaused only until all of them run (so none of
  the seeded queued tasks starts). The supervisor tails and parses all of them; the log
  panel follows the selected one. The rate each one achieved is measured from its log's
  growth over the measurement and printed.

Key press to screen: a key event is handed to the app the way a terminal driver does
(`driver.send_message`, not `pilot.press`, whose idle waits never end under load), and
the time is taken until the screen is repainted showing the key's effect: the app's
`_display` (called with each compositor update; headless, it writes nothing) is wrapped
to check a condition at every repaint. Both keys need a store snapshot (the worker
thread) and its application to the panels:
- select: `down` / `up` in the tasks table, moving over the top `--daughters` rows (the
  flood tasks while loaded, the previous round's, cancelled, while idle); done when the
  stages panel's title names the newly selected task (set from the snapshot's detail,
  with the stages and tokens panels). Each move also switches the log panel to that
  task's log: while loaded, another live 5 MB/s log.
- filter: `f` cycles the status filter; done when the header says the new filter and the
  tasks table holds exactly the first page of tasks of that status (ids from SQLite).
Presses are spaced 50-150 ms apart (random, seeded) so they land at every phase of the
refresh timer and the log poll. Medians and 95th percentiles are printed per state, with
the ratio loaded / idle; also the time until the panels' state changed (before the
repaint), the snapshot's time in its thread, and the event loop's lag (a 10 ms ticker).

Startup: `tacx --home HOME` in a pseudo-terminal (the real CLI and its imports), timed
from spawn to the first output holding the newest task's title (then `q`); the median of
`--startup-runs`. For comparison: `python -c "import tacx.cli.main, tacx.ui.app"` in a
subprocess (median of 5) and, in process, `make_app` + `run_test` until the tasks table
has rows and is painted (warm: Textual is already imported and used).

Peak RSS: this process's resident set sampled every 50 ms (psutil) during the loaded
phases; its VmHWM (the kernel's high-water mark over the whole run) is printed too.

Where the time goes, per state: snapshots, repaints (Screen._compositor_refresh, timed)
and full layouts per second; engine events by kind; garbage collections by generation
(pauses and CPU, via gc.callbacks); CPU per thread (psutil, sampled); and, with
`--stacks`, the functions on the event loop's stack (sampled every ms), overall and while
the loop was late (a stall).

Goals: key press to screen < 100 ms at the median while loaded; startup < 1.5 s; RSS <
250 MB. Every daughter is ended at the end of its phase (cancelled through the engine);
the benchmark then checks that no process carrying the home's marker is left.

    python bench/ui.py            # 10,000 tasks, 8 daughters x 5 MB/s, 40 presses per key and state
    python bench/ui.py --quick    # 2,000 tasks, 10 presses, 2 rounds (a smoke check)
    python bench/ui.py --stacks   # also where the event loop spends its time
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import random
import re
import resource
import select
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tacx.home import Home
from tacx.agents.registry import configured_providers, provider_kinds
from tacx.store.records import text_hash
from tacx.settings import ProviderSettings, Settings
from tacx.store.database import connect, transaction
from tacx.engine.local.processes import end_processes, scan_marked
from tacx.workflow.loader import load_workflow_text

# A home lives inside its project: the benchmarks put theirs in bench/.runs by default.
DEFAULT_DIR = Path(__file__).resolve().parent / ".runs"

MB = 1_000_000
GOAL_KEY_MS = 100.0
GOAL_STARTUP_S = 1.5
GOAL_RSS_MB = 250.0
SIZE = (200, 60)  # columns, rows: a big terminal shows many log lines
PRESS_TIMEOUT = 10.0
RSS_POLL = 0.05
TICK = 0.01
STALL = 0.025  # the loop is stalled when the ticker has not run for this long
FLOOD_PRIORITY = 100
FLOOD_PROVIDER = "flood"
FLOOD_MODEL = "claude-sonnet-4-5"
PAUSED_REASON = "coordinator paused: `tacx resume` (or p in the dashboard) to continue"
MARKER_TITLE = "Newest task: startup marker"

# -- the flood daughter ----------------------------------------------------------------------

FLOOD_SCRIPT = r'''
"""A stand-in agent: Claude stream-json lines at a fixed rate until killed (or --seconds)."""
import argparse, json, os, random, sys, time, uuid

p = argparse.ArgumentParser()
p.add_argument("prompt")
p.add_argument("--rate", type=float, default=5e6, help="bytes per second")
p.add_argument("--seconds", type=float, default=300.0, help="stop after this long (a safety net)")
p.add_argument("--message-bytes", type=int, default=500_000, help="a new message id (a usage row) this often")
a = p.parse_args()
rng = random.Random(a.prompt)
sid = str(uuid.uuid4())
MODEL = "@MODEL@"
WORDS = ("the test suite parser coordinator store snapshot widget refresh log tail cursor daughter "
         "workflow stage budget token cache retry timeout queue worker panel filter search header "
         "should could will now then first next check fix add remove keep because while after").split()


def line(obj):
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def prose(n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def assistant(block):
    usage = {"input_tokens": rng.randint(1, 12), "cache_creation_input_tokens": rng.randint(400, 2500),
             "cache_read_input_tokens": rng.randint(12000, 60000), "output_tokens": rng.randint(20, 400)}
    return {"type": "assistant", "message": {"id": "@MSG@", "type": "message", "role": "assistant", "model": MODEL,
            "content": [block], "stop_reason": None, "stop_sequence": None, "usage": usage},
            "parent_tool_use_id": None, "session_id": sid, "uuid": str(uuid.uuid4())}


def group(i):
    out = []
    if i % 5 == 0:
        out.append(line(assistant({"type": "thinking", "thinking": prose(40), "signature": "sig_" + uuid.uuid4().hex})))
    text = "\n".join(prose(rng.randint(8, 30)) for _ in range(rng.randint(2, 6)))
    out.append(line(assistant({"type": "text", "text": text})))
    tool_id = "toolu_01" + uuid.uuid4().hex[:20]
    kind = i % 4
    if kind == 0:
        tool = {"name": "Bash", "input": {"command": f"python -m pytest -q tests/test_mod_{i}.py", "description": "Run the tests"}}
        body = "\n".join(f"tests/test_mod_{i}.py::test_case_{k} PASSED" + " " * rng.randint(1, 30) + f"[{k * 100 // 90:3d}%]"
                         for k in range(rng.randint(40, 120)))
    elif kind == 1:
        tool = {"name": "Read", "input": {"file_path": f"/src/project/module_{i}.py"}}
        body = "\n".join(f"{k:6d}\t    {prose(rng.randint(3, 12))}" for k in range(1, rng.randint(60, 160)))
    elif kind == 2:
        tool = {"name": "Grep", "input": {"pattern": rng.choice(WORDS), "output_mode": "content"}}
        body = "\n".join(f"src/pkg_{k % 9}/file_{k}.py:{rng.randint(1, 900)}: {prose(rng.randint(4, 14))}" for k in range(rng.randint(30, 90)))
    else:
        tool = {"name": "Edit", "input": {"file_path": f"/src/project/module_{i}.py", "old_string": prose(12), "new_string": prose(14)}}
        body = f"The file /src/project/module_{i}.py has been updated."
    out.append(line(assistant({"type": "tool_use", "id": tool_id, **tool})))
    out.append(line({"type": "user", "message": {"role": "user", "content": [
        {"tool_use_id": tool_id, "type": "tool_result", "content": body, "is_error": False}]},
        "parent_tool_use_id": None, "session_id": sid, "uuid": str(uuid.uuid4())}))
    return out


def write_all(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


groups = [group(i) for i in range(48)]
write_all(line({"type": "system", "subtype": "init", "session_id": sid, "model": MODEL, "cwd": os.getcwd(),
                "tools": ["Bash", "Read", "Edit", "Grep"], "permissionMode": "default"}))
start = time.monotonic()
written = msg = since = i = 0
msg_id = b"msg_01bench%08d" % msg
while True:
    now = time.monotonic()
    if now - start >= a.seconds:
        break
    owed = a.rate * (now - start) - written
    if owed < 16384:
        time.sleep(0.01)
        continue
    parts, size = [], 0
    while size < owed:
        for piece in groups[i % len(groups)]:
            piece = piece.replace(b"@MSG@", msg_id)
            parts.append(piece)
            size += len(piece)
        i += 1
        since += size
        if since >= a.message_bytes:
            msg, since = msg + 1, 0
            msg_id = b"msg_01bench%08d" % msg
    data = b"".join(parts)
    write_all(data)
    written += len(data)
write_all(line({"type": "result", "subtype": "success", "is_error": False, "num_turns": msg + 1,
                "result": "flood over", "session_id": sid, "total_cost_usd": 0.0}))
'''.replace("@MODEL@", FLOOD_MODEL)

FLOOD_WORKFLOW = f"""\
name: bench-flood
description: One agent stage writing Claude stream-json at a fixed rate until cancelled.
inputs:
  title: {{required: true}}
stages:
  - name: flood
    provider: {FLOOD_PROVIDER}
    prompt: "Flood the log: {{{{ inputs.title }}}}"
    extra_args: ["--rate", "@RATE@", "--seconds", "@SECONDS@"]
"""

# -- the seeded store ------------------------------------------------------------------------

PBR_YAML = """\
name: plan-build-review
description: Plan, build and review a change.
workspace: worktree
inputs:
  title: {required: true}
  body: {default: ""}
defaults: {provider: claude, timeout: 20m, idle_timeout: 5m, retries: 1}
budget: {usd: 3.00}
stages:
  - name: plan
    prompt: "Write a plan for {{ inputs.title }}"
  - name: build
    prompt: "Carry out plan.md"
  - name: test
    provider: bash
    run: pytest -q
  - name: review
    prompt: "Review the change"
"""
FIX_YAML = """\
name: fix-issue
description: Fix one issue and run the tests.
inputs:
  title: {required: true}
budget: {usd: 1.50}
stages:
  - name: fix
    provider: claude
    prompt: "Fix {{ inputs.title }}"
  - name: test
    provider: bash
    run: pytest -q
"""
LINT_YAML = """\
name: lint
description: Lint the project.
stages:
  - name: lint
    provider: shell
    run: ruff check .
"""
NIGHTLY_YAML = """\
name: nightly
description: Build, test, report.
stages:
  - name: build
    provider: bash
    run: make
  - name: test
    provider: bash
    run: make test
  - name: report
    provider: python
    run: print('ok')
"""
WORKFLOWS: dict[str, tuple[str, list[tuple[str, str]]]] = {  # name: (YAML as submitted, [(stage, provider)])
    "plan-build-review": (PBR_YAML, [("plan", "claude"), ("build", "claude"), ("test", "bash"), ("review", "claude")]),
    "fix-issue": (FIX_YAML, [("fix", "claude"), ("test", "bash")]),
    "lint": (LINT_YAML, [("lint", "shell")]),
    "nightly": (NIGHTLY_YAML, [("build", "bash"), ("test", "bash"), ("report", "python")]),
}
WORKFLOW_WEIGHTS = {"plan-build-review": 4, "fix-issue": 4, "lint": 1, "nightly": 1}
FINISHED_WEIGHTS = {"succeeded": 70, "failed": 15, "cancelled": 10, "timed_out": 5}
TITLES = [
    "Fix flaky test in {m}", "Add --{f} flag to the {m} command", "Refactor {m} to drop the global state",
    "Issue #{n}: {m} crashes on empty input", "Speed up {m} for large inputs", "Document the {m} settings",
    "Port {m} to the new store API", "Handle a timeout in {m}", "Issue #{n}: wrong totals in {m}",
    "Remove dead code from {m}", "Make {m} honour NO_COLOR", "Issue #{n}: {m} leaks file descriptors",
]
MODULES = ["the importer", "the parser", "auth", "billing", "the scheduler", "search", "the CLI", "exports",
           "the cache", "notifications", "the sync job", "reports"]
FLAGS = ["dry-run", "json", "since", "limit", "verbose", "force", "watch"]
ERRORS = {
    "claude": ["claude: not logged in: run `claude login`", "claude: rate limited (429): resets 14:05",
               "exit 1: the agent stopped: max turns reached"],
    "bash": ["exit 1: 3 failed, 41 passed in 12.31s", "exit 2: make: *** [test] Error 2"],
    "shell": ["exit 1: 14 errors found"],
    "python": ["exit 1: Traceback (most recent call last): KeyError: 'date'"],
}


def _tokens(rng: random.Random) -> tuple[int, int, int, int, float]:
    i, o = rng.randint(10, 400), rng.randint(500, 8000)
    cr, cw = rng.randint(20_000, 400_000), rng.randint(2_000, 40_000)
    return i, o, cr, cw, (i * 3 + o * 15 + cr * 0.3 + cw * 3.75) / 1e6


def _title(rng: random.Random) -> str:
    return rng.choice(TITLES).format(m=rng.choice(MODULES), f=rng.choice(FLAGS), n=rng.randint(100, 4000))


def seed_store(home: Home, count: int, seed: int = 1) -> dict[str, int]:
    """Insert `count` tasks with stages, usage, events and some logs, in one transaction."""
    rng = random.Random(seed)
    now = time.time()
    span = 30 * 86400.0  # tasks created over the last 30 days, the newest a few minutes ago
    project = str(home.project_root)
    texts = {name: (text, text_hash(text)) for name, (text, _) in WORKFLOWS.items()}
    names = list(WORKFLOW_WEIGHTS)
    weights = [WORKFLOW_WEIGHTS[n] for n in names]
    tasks, stages, usage, events, logs = [], [], [], [], []
    stage_id = usage_id = 0
    for i in range(count):
        task_id = i + 1
        age = (count - i) / count  # 1 = oldest
        created = now - 300 - age * span
        wf = rng.choices(names, weights)[0]
        title = MARKER_TITLE if task_id == count else _title(rng)
        newest = i >= count * 0.85
        if task_id == count:
            status = "succeeded"
        elif newest and rng.random() < 0.5:
            status = "queued"
        else:
            status = rng.choices(list(FINISHED_WEIGHTS), list(FINISHED_WEIGHTS.values()))[0]
        plan = WORKFLOWS[wf][1]
        started = ended = None
        error = wait = None
        stops_at = rng.randrange(len(plan)) if status in ("failed", "cancelled", "timed_out") else len(plan)
        t = created + rng.uniform(1, 60)
        if status != "queued":
            started = t
        else:
            wait = PAUSED_REASON
        for pos, (name, provider) in enumerate(plan):
            stage_id += 1
            s_status, s_start, s_end, s_err, attempt = "pending", None, None, None, 0
            tok = (0, 0, 0, 0, 0.0)
            log_path = None
            if status != "queued":
                if pos < stops_at:
                    s_status = "succeeded"
                elif pos == stops_at:
                    s_status = {"failed": "failed", "cancelled": "cancelled", "timed_out": "timed_out"}[status]
                else:
                    s_status = "skipped"
            if s_status in ("succeeded", "failed", "cancelled", "timed_out"):
                attempt = 1
                s_start = t
                t += rng.uniform(20, 900) if provider == "claude" else rng.uniform(2, 120)
                s_end = t
                log_path = str(home.stage_log(task_id, name, 1))
                if provider == "claude":
                    tok = _tokens(rng)
                if s_status == "failed":
                    s_err = rng.choice(ERRORS[provider])
                elif s_status == "timed_out":
                    s_err = "timed out after 20m: the stage was stopped"
                elif s_status == "cancelled":
                    s_err = "cancelled"
                if i >= count - 300:
                    logs.append((log_path, provider, s_status, s_err))
                if provider == "claude":
                    messages = max(1, min(3, int((s_end - s_start) // 300)))
                    for m in range(messages):
                        usage_id += 1
                        share = 1 / messages
                        usage.append((usage_id, task_id, stage_id, s_start + (m + 1) * (s_end - s_start) * share,
                                      f"msg_seed{usage_id:08d}", "claude-sonnet-4-5", int(tok[0] * share),
                                      int(tok[1] * share), int(tok[2] * share), int(tok[3] * share),
                                      tok[4] * share, 1))
            stages.append((stage_id, task_id, name, pos, s_status, attempt, provider, s_start, s_end, s_err,
                           log_path, *tok[:4], tok[4]))
        if status != "queued":
            ended = t
            if status != "succeeded":
                error = next((s[9] for s in stages[-len(plan):] if s[9]), None)
        tasks.append((task_id, os.urandom(16).hex(), wf, f"{project}/workflows/{wf}.yaml", texts[wf][0], texts[wf][1],
                      title, json.dumps({"title": title}), rng.choice((0, 0, 0, 1, 5)), status, project, error, wait,
                      created, started, ended))
        events.append((task_id, created, "task.queued", json.dumps({"priority": 0})))
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            conn.executemany(
                "INSERT INTO tasks (id, trace_id, workflow, workflow_path, workflow_text, workflow_hash, title, inputs,"
                " priority, status, project_root, error, wait_reason, created_at, started_at, ended_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tasks)
            conn.executemany(
                "INSERT INTO stages (id, task_id, name, position, status, attempt, provider, started_at, ended_at, error,"
                " log_path, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", stages)
            conn.executemany(
                "INSERT INTO usage (id, task_id, stage_id, ts, message_id, model, input_tokens, output_tokens,"
                " cache_read_tokens, cache_write_tokens, cost_usd, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                usage)
            conn.executemany("INSERT INTO events (task_id, stage, ts, kind, data) VALUES (?, NULL, ?, ?, ?)", events)
            conn.execute("INSERT INTO meta (key, value) VALUES ('paused', '1')"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        midnight = time.mktime(time.localtime(now)[:3] + (0, 0, 0, 0, 0, -1))
        today = conn.execute("SELECT COUNT(*) FROM usage WHERE ts >= ?", (midnight,)).fetchone()[0]
        by_status = dict(conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall())
    finally:
        conn.close()
    for path, provider, s_status, err in logs:
        _write_seed_log(Path(path), provider, s_status, err, rng)
    return {"stages": len(stages), "usage": len(usage), "usage_today": today, "logs": len(logs), **by_status}


def _write_seed_log(path: Path, provider: str, status: str, error: str | None, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    if provider == "claude":
        sid = os.urandom(8).hex()
        lines.append(json.dumps({"type": "system", "subtype": "init", "session_id": sid, "model": "claude-sonnet-4-5"}))
        for k in range(rng.randint(10, 40)):
            lines.append(json.dumps({"type": "assistant", "message": {"id": f"msg_{sid}_{k}", "model": "claude-sonnet-4-5",
                         "content": [{"type": "text", "text": f"Step {k}: {_title(rng)}."}],
                         "usage": {"input_tokens": 5, "output_tokens": 120}}, "session_id": sid}))
        lines.append(json.dumps({"type": "result", "subtype": "success" if status == "succeeded" else "error_during_execution",
                                 "is_error": status != "succeeded", "num_turns": 12, "result": "Done."}))
    else:
        lines += [f"collecting ... {k}" for k in range(rng.randint(5, 60))]
        if error:
            lines.append(error)
    path.write_text("\n".join(lines) + "\n")


# -- measuring ---------------------------------------------------------------------------------


class Probe:
    """Wraps the app's `_display` (called with every compositor update) to note the first
    repaint at which a condition holds."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cond: Callable[[], bool] | None = None
        self.painted: float | None = None
        self.paints = 0
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            original(screen, renderable)
            if renderable is None:
                return
            self.paints += 1
            cond = self.cond
            if cond is not None and self.painted is None and cond():
                self.painted = time.perf_counter()

        app._display = display

    def arm(self, cond: Callable[[], bool]) -> None:
        self.painted = None
        self.cond = cond

    def disarm(self) -> None:
        self.cond = None


@dataclass
class Press:
    state_s: float  # until the widgets showed it
    paint_s: float  # until a repaint showed it
    timed_out: bool = False


@dataclass
class Phase:
    """What one state (idle or loaded) gathered over its rounds."""

    select: list[Press] = field(default_factory=list)
    filter: list[Press] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # event-loop lag samples (s)
    snapshots: list[float] = field(default_factory=list)  # snapshot time in the worker thread (s)
    applies: list[float] = field(default_factory=list)  # _apply_snapshot on the loop (s)
    peak_rss: int = 0
    rates: list[float] = field(default_factory=list)  # bytes/s per daughter per round
    log_shown: list[str] = field(default_factory=list)
    wall: float = 0.0  # seconds measured
    cpu: float = 0.0  # CPU seconds of this process
    machine_busy: float = 0.0  # CPU seconds of the whole machine (all processes)
    thread_cpu: Counter[str] = field(default_factory=Counter)  # thread (name) -> CPU seconds
    events: Counter[str] = field(default_factory=Counter)  # engine events by kind
    paints: list[float] = field(default_factory=list)  # Screen._compositor_refresh durations (s)
    layouts: int = 0  # Screen._refresh_layout calls (a full layout and repaint)
    gc_objects: int = 0  # objects the collector tracks, at the end of a phase (the most seen)
    gc_pauses: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 2: []})  # by generation (s)
    gc_cpu: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 2: []})  # CPU of the collecting thread
    samples: int = 0  # stack samples of the event loop's thread (--stacks)
    stalls: int = 0  # ... taken while the loop was late by more than STALL
    stall_stacks: Counter[str] = field(default_factory=Counter)
    loop_stacks: Counter[str] = field(default_factory=Counter)


class Meter:
    """Background measurements attributed to the current phase: RSS and CPU per thread
    (every RSS_POLL), event-loop lag (a ticker in the loop) and, with --stacks, samples of
    the loop thread's stack every millisecond."""

    def __init__(self, stacks: bool = False) -> None:
        self.phase: Phase | None = None
        self.beat = time.perf_counter()  # the ticker's last run
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._loop_ident = threading.get_ident()
        self._threads = [threading.Thread(target=self._rss_loop, name="bench-rss", daemon=True)]
        if stacks:
            self._threads.append(threading.Thread(target=self._stack_loop, name="bench-stacks", daemon=True))
        for t in self._threads:
            t.start()
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, what: str, info: dict[str, int]) -> None:
        if what == "start":
            self._gc_start, self._gc_cpu = time.perf_counter(), time.thread_time()
            return
        phase = self.phase
        if phase is not None:
            phase.gc_pauses[info["generation"]].append(time.perf_counter() - self._gc_start)
            phase.gc_cpu[info["generation"]].append(time.thread_time() - self._gc_cpu)

    def _rss_loop(self) -> None:
        current: Phase | None = None
        seg: dict[int, list[Any]] = {}  # native thread id -> [name, CPU at start, CPU now]
        begun = (0.0, 0.0, 0.0)  # wall, process CPU, machine busy CPU at the segment's start

        def totals() -> tuple[float, float, float]:
            t = self._proc.cpu_times()
            m = psutil.cpu_times()
            return time.perf_counter(), t.user + t.system, m.user + m.system + getattr(m, "nice", 0.0)

        while not self._stop.wait(RSS_POLL):
            phase = self.phase
            if phase is not current:
                if current is not None:  # the segment ends: add it to its phase
                    now = totals()
                    current.wall += now[0] - begun[0]
                    current.cpu += now[1] - begun[1]
                    current.machine_busy += now[2] - begun[2]
                    for name, base, last in seg.values():
                        current.thread_cpu[name] += last - base
                current, seg, first = phase, {}, True
                begun = totals()
            if current is None:
                continue
            current.peak_rss = max(current.peak_rss, self._proc.memory_info().rss)
            names = {t.native_id: t.name for t in threading.enumerate()}
            for th in self._proc.threads():
                cpu = th.user_time + th.system_time
                if th.id in seg:
                    seg[th.id][2] = cpu
                else:
                    name = names.get(th.id, "(not a Python thread)")
                    name = "event loop" if th.id == threading.main_thread().native_id else re.sub(r"\d+", "N", name)
                    seg[th.id] = [name, cpu if first else 0.0, cpu]
            first = False

    def _stack_loop(self) -> None:
        """Every ms, the loop thread's stack: each function on it counts once (inclusive)."""
        names: dict[Any, str] = {}
        while not self._stop.wait(0.001):
            phase = self.phase
            frame = sys._current_frames().get(self._loop_ident)
            if phase is None or frame is None:
                continue
            stalled = time.perf_counter() - self.beat > STALL
            seen = set()
            while frame is not None:
                code = frame.f_code
                name = names.get(code)
                if name is None:
                    where = code.co_filename
                    for cut in ("site-packages/", "/work/main/", "lib/python3.11/"):
                        if cut in where:
                            where = where.split(cut, 1)[1]
                            break
                    name = names[code] = f"{getattr(code, 'co_qualname', code.co_name)} ({where})"
                seen.add(name)
                frame = frame.f_back
            phase.samples += 1
            phase.loop_stacks.update(seen)
            if stalled:
                phase.stalls += 1
                phase.stall_stacks.update(seen)

    async def ticker(self) -> None:
        while True:
            start = time.perf_counter()
            self.beat = start
            await asyncio.sleep(TICK)
            phase = self.phase
            if phase is not None:
                phase.lag.append(time.perf_counter() - start - TICK)

    def close(self) -> None:
        gc.callbacks.remove(self._gc)
        self.phase = None
        time.sleep(RSS_POLL * 3)  # let the sampler close the last segment
        self._stop.set()
        for t in self._threads:
            t.join()


def instrument(app: Any, meter: Meter) -> None:
    """Time each snapshot (worker thread) and its application (the loop); count engine
    events. (instrument_screen does the screen, once it exists.)"""

    def count(event: Any) -> None:
        phase = meter.phase
        if phase is not None:
            phase.events[event.kind] += 1

    app.bus.subscribe(count)
    data = app.data
    snapshot = data.snapshot

    def timed_snapshot(**kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return snapshot(**kwargs)
        finally:
            phase = meter.phase
            if phase is not None:
                phase.snapshots.append(time.perf_counter() - start)

    data.snapshot = timed_snapshot
    apply = app._apply_snapshot

    def timed_apply(*args: Any) -> None:
        start = time.perf_counter()
        try:
            apply(*args)
        finally:
            phase = meter.phase
            if phase is not None:
                phase.applies.append(time.perf_counter() - start)

    app._apply_snapshot = timed_apply


def instrument_screen(screen: Any, meter: Meter) -> None:
    """Time each repaint and count full layouts of the main screen."""
    refresh, layout = screen._compositor_refresh, screen._refresh_layout

    def timed_refresh() -> None:
        start = time.perf_counter()
        try:
            refresh()
        finally:
            phase = meter.phase
            if phase is not None:
                phase.paints.append(time.perf_counter() - start)

    def counted_layout(*args: Any, **kwargs: Any) -> None:
        phase = meter.phase
        if phase is not None:
            phase.layouts += 1
        layout(*args, **kwargs)

    screen._compositor_refresh = timed_refresh
    screen._refresh_layout = counted_layout


def plain(value: Any) -> str:
    return getattr(value, "plain", None) or str(value or "")


async def press_until(app: Any, probe: Probe, key: str, cond: Callable[[], bool]) -> Press:
    """Hand one key to the app as a terminal driver does; wait until a repaint shows `cond`."""
    from textual import events

    probe.arm(cond)
    state = None
    start = time.perf_counter()
    app._driver.send_message(events.Key(key, key if len(key) == 1 else None))
    deadline = start + PRESS_TIMEOUT
    while probe.painted is None:
        now = time.perf_counter()
        if state is None and cond():
            state = now
        if now > deadline:
            probe.disarm()
            return Press(PRESS_TIMEOUT, PRESS_TIMEOUT, timed_out=True)
        await asyncio.sleep(0.001)
    probe.disarm()
    painted = probe.painted
    return Press((state or painted) - start, painted - start)


async def until(predicate: Callable[[], Any], timeout: float, what: str,
                state: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise SystemExit(f"FAIL: timed out after {timeout:.0f}s waiting for {what}" + (f" {state()}" if state else ""))


def first_page(db: Path, status: str | None) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT id FROM tasks" + (" WHERE status = ?" if status else "") + " ORDER BY id DESC LIMIT 100"
        return [str(r[0]) for r in conn.execute(sql, (status,) if status else ())]
    finally:
        conn.close()


async def measure_select(app: Any, probe: Probe, rows: int, count: int, rng: random.Random) -> list[Press]:
    from tacx.ui.panels import TasksPanel

    tasks = app.query_one(TasksPanel)
    stages = app.query_one("#stages")
    out = []
    step = 1
    for _ in range(count):
        row = tasks.cursor_row
        if row + step >= rows or row + step < 0:
            step = -step
        target = tasks._keys[row + step]
        prefix = f"stages · task {target}"
        out.append(await press_until(app, probe, "down" if step > 0 else "up",
                                     lambda prefix=prefix: plain(stages.border_title).startswith(prefix)))
        await asyncio.sleep(rng.uniform(0.05, 0.15))
    return out


async def measure_filter(app: Any, probe: Probe, count: int, rng: random.Random) -> list[Press]:
    from tacx.ui.data import STATUSES
    from tacx.ui.panels import HeaderBar, TasksPanel

    order: list[str | None] = [None, *STATUSES]
    pages = await asyncio.to_thread(lambda: {s: first_page(app.home.db_path, s) for s in order})
    tasks = app.query_one(TasksPanel)
    header = app.query_one(HeaderBar)
    out = []
    for _ in range(count):
        nxt = order[(order.index(app.status_filter) + 1) % len(order)]
        keys = pages[nxt]
        words = f"│ status {nxt}"

        def cond(keys: list[str] = keys, words: str = words, nxt: str | None = nxt) -> bool:
            text = plain(header.content)
            shown = (words in text) if nxt else ("│ status" not in text)
            return shown and tasks._keys == keys

        out.append(await press_until(app, probe, "f", cond))
        await asyncio.sleep(rng.uniform(0.05, 0.15))
    # Back to no filter (not measured).
    while app.status_filter is not None:
        app.action_filter()
    await until(lambda: tasks._keys == pages[None] and not app._refreshing, 30, "the unfiltered tasks",
                lambda: f"(shown {tasks._keys[:3]}.. {len(tasks._keys)}, wanted {pages[None][:3]}.., "
                        f"refreshing {app._refreshing}, filter {app.status_filter})")
    return out


# -- the loaded state ------------------------------------------------------------------------


@dataclass
class Flood:
    ids: list[int]
    logs: list[Path]


async def start_flood(app: Any, wf: Any, text: str, path: Path, count: int, tag: str) -> Flood:
    coordinator = app.coordinator
    ids = []
    for i in range(count):
        title = f"flood {i + 1} of {count} ({tag})"
        task_id, _ = await coordinator.submit(
            workflow=wf, workflow_path=str(path), workflow_text=text, title=title, inputs={"title": title},
            priority=FLOOD_PRIORITY, dedupe_key=None, project_root=str(app.home.project_root))
        ids.append(task_id)
    await coordinator.set_paused(False)
    logs = [app.home.stage_log(t, "flood", 1) for t in ids]

    def all_writing() -> bool:
        live = {d.marker.removeprefix(app.home.marker_prefix).split("/")[0]
                for d in coordinator.supervisor.daughters.values() if not d.done}
        return all(str(t) in live for t in ids) and all(p.exists() and p.stat().st_size > 0 for p in logs)

    await until(all_writing, 30, f"{count} flood daughters to run and write")
    await coordinator.set_paused(True)
    return Flood(ids, logs)


async def stop_flood(app: Any, flood: Flood) -> None:
    coordinator = app.coordinator
    for task_id in flood.ids:
        await coordinator.cancel_task(task_id)
    wanted = {str(t) for t in flood.ids}

    def ended() -> bool:
        if any(t in coordinator.running for t in flood.ids):
            return False
        return not any(d.marker.removeprefix(app.home.marker_prefix).split("/")[0] in wanted
                       for d in coordinator.supervisor.daughters.values() if not d.done)

    await until(ended, 30, "the flood daughters to end")
    # The app gathers tasks finishing together into one notification (after a short
    # wait): let it come, then clear it, so no toast is on screen in the next phase.
    import tacx.ui.notices as ui_notices

    await asyncio.sleep(getattr(ui_notices, "NOTIFY_SECONDS", 0) + 0.05)
    app.clear_notifications()


def log_sizes(paths: Sequence[Path]) -> list[int]:
    return [p.stat().st_size if p.exists() else 0 for p in paths]


# -- the run -----------------------------------------------------------------------------------


@dataclass
class KeysResult:
    idle: Phase
    loaded: Phase
    hwm: int


async def run_keys(home: Home, settings: Settings, args: argparse.Namespace, flood_wf: tuple[Any, str, Path]) -> KeysResult:
    from tacx.ui.app import make_app
    from tacx.ui.panels import TasksPanel

    meter = Meter(stacks=args.stacks > 0)
    idle, loaded = Phase(), Phase()
    rng = random.Random(7)
    app = make_app(home, settings, engine=True, max_workers=args.daughters)
    probe = Probe(app)
    instrument(app, meter)
    wf, text, path = flood_wf
    rounds = args.rounds
    per_round = [args.presses // rounds + (1 if r < args.presses % rounds else 0) for r in range(rounds)]
    ticker = None
    try:
        async with app.run_test(size=SIZE):
            ticker = asyncio.create_task(meter.ticker())
            instrument_screen(app.screen, meter)
            tasks = app.query_one(TasksPanel)
            await until(lambda: len(tasks._keys) > 0 and app.coordinator is not None, 30, "the tasks listed")

            def cursor_on_top() -> bool:
                """The cursor follows its task when new tasks come above it: put it back on top."""
                if tasks.cursor_row != 0:
                    tasks.move_cursor(row=0)
                return True

            async def select_top() -> None:
                await until(lambda: cursor_on_top() and app.selected_task == int(tasks._keys[0]) and app.snapshot is not None
                            and app.snapshot.detail is not None and app.snapshot.detail.task.id == app.selected_task,
                            30, "the top task selected",
                            lambda: f"(top {tasks._keys[:3]}, cursor {tasks.cursor_row}, selected {app.selected_task}, "
                                    f"detail {app.snapshot.detail.task.id if app.snapshot and app.snapshot.detail else None}, "
                                    f"refreshing {app._refreshing}, again {app._refresh_again})")

            async def one_phase(phase: Phase, kind: str, n: int, tag: str) -> None:
                flood = None
                if kind == "loaded":
                    flood = await start_flood(app, wf, text, path, args.daughters, tag)
                await select_top()
                if flood is not None and int(tasks._keys[0]) not in flood.ids:
                    raise SystemExit("FAIL: the flood tasks are not at the top of the tasks table")
                await asyncio.sleep(args.settle)
                sizes, started = log_sizes(flood.logs) if flood else [], time.perf_counter()
                meter.phase = phase
                try:
                    log_panel = app.query_one("#log")
                    phase.log_shown.append(plain(getattr(log_panel, "title", "")))
                    phase.select += await measure_select(app, probe, max(2, args.daughters), n, rng)
                    phase.filter += await measure_filter(app, probe, n, rng)
                finally:
                    meter.phase = None
                phase.gc_objects = max(phase.gc_objects, len(gc.get_objects()))
                if flood is not None:
                    seconds = time.perf_counter() - started
                    grown = [b - a for a, b in zip(sizes, log_sizes(flood.logs))]
                    phase.rates += [g / seconds for g in grown]
                    await stop_flood(app, flood)

            # Warm-up (not measured): one loaded phase, so idle rounds have flood tasks of
            # the same shape on top, and a few presses in each state.
            warm = Phase()
            await one_phase(warm, "loaded", 3, "warm-up")
            await one_phase(warm, "idle", 3, "warm-up")
            for r in range(rounds):
                order = [("idle", idle), ("loaded", loaded)]
                for kind, phase in order if r % 2 == 0 else order[::-1]:
                    print(f"  round {r + 1}/{rounds}: {kind}, {per_round[r]} presses per key", flush=True)
                    await one_phase(phase, kind, per_round[r], f"round {r + 1}")
            ticker.cancel()
            app.coordinator.stop("stop")
            await app.engine_task
    finally:
        if ticker is not None:
            ticker.cancel()
        meter.close()
    return KeysResult(idle, loaded, read_hwm())


def read_hwm(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


# -- startup -----------------------------------------------------------------------------------


def tacx_command() -> list[str]:
    exe = shutil.which("tacx")
    return [exe] if exe else [sys.executable, "-m", "tacx"]


def import_time(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tacx.cli.main, tacx.ui.app"], check=True)
        times.append(time.perf_counter() - start)
    return times


def cli_startup(home: Home, marker: bytes, timeout: float = 30.0) -> float | None:
    """`tacx --home HOME` in a pseudo-terminal: seconds from spawn until its output holds
    `marker` (the newest task's title), or None. Then `q`, and the process must end."""
    import fcntl
    import pty
    import termios

    cols, rows = SIZE
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
    start = time.perf_counter()
    proc = subprocess.Popen([*tacx_command(), "--home", str(home.root)], stdin=slave, stdout=slave, stderr=slave,
                            cwd=home.project_root, env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    seen = bytearray()
    found = None

    def read(wait: float) -> bool:
        ready, _, _ = select.select([master], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the other side closed
            return False
        seen.extend(data)
        return bool(data)

    try:
        while found is None and time.perf_counter() - start < timeout and proc.poll() is None:
            if not read(0.02):
                break
            if marker in seen:
                found = time.perf_counter() - start
        if proc.poll() is None:
            os.write(master, b"q")
        deadline = time.perf_counter() + 20
        while proc.poll() is None and time.perf_counter() < deadline:
            if not read(0.05):
                break
        try:
            proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print("  warning: `tacx` did not quit on q; killed")
    finally:
        os.close(master)
    if found is None:
        dump = home.project_root.parent / f"cli-output-{proc.pid}.txt"
        dump.write_bytes(bytes(seen))
        print(f"  warning: the CLI's screen never showed the newest task within {time.perf_counter() - start:.1f} s "
              f"(exit {proc.returncode}); its output: {dump}")
    return found


async def inprocess_startup(home: Home, settings: Settings) -> float:
    """make_app + run_test until the tasks table has rows and a repaint shows them."""
    from tacx.ui.app import make_app
    from tacx.ui.panels import TasksPanel

    start = time.perf_counter()
    app = make_app(home, settings)
    probe = Probe(app)
    probe.arm(lambda: bool(app.query(TasksPanel) and app.query_one(TasksPanel)._keys))
    async with app.run_test(size=SIZE):
        await until(lambda: probe.painted is not None, 30, "the first screen with tasks")
        seconds = probe.painted - start
        app.coordinator.stop("stop")
        await app.engine_task
    return seconds


# -- reporting ---------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def ms(values: Sequence[float]) -> str:
    if not values:
        return "       -"
    return f"{statistics.median(values) * 1e3:7.1f} / {pct(values, 0.95) * 1e3:7.1f}"


def verdict(name: str, ok: bool, goal: str) -> str:
    return f"verdict: {name} {'MEETS' if ok else 'MISSES'} the goal ({goal})"


def leftovers(home: Home) -> list[int]:
    found = scan_marked(lambda m: m.startswith(home.marker_prefix))
    return end_processes(found, 1.0) if found else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke check: 2,000 tasks, 10 presses, 2 rounds")
    parser.add_argument("--tasks", type=int, help="tasks in the store (default 10000; 2000 with --quick)")
    parser.add_argument("--presses", type=int, help="presses per key and state (default 40; 10 with --quick)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 4; 2 with --quick)")
    parser.add_argument("--daughters", type=int, default=8, help="flood daughters while loaded (default 8)")
    parser.add_argument("--rate-mb", type=float, default=5.0, help="MB/s each daughter writes (default 5)")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds between a phase's start and its presses")
    parser.add_argument("--startup-runs", type=int, help="CLI and in-process startups (default 5; 2 with --quick)")
    parser.add_argument("--stacks", metavar="N", type=int, nargs="?", const=12, default=0,
                        help="sample the event loop's stack every ms; print the N commonest stacks while it stalled")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (home, logs) afterwards")
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="where the run folder goes (default: bench/.runs)")
    args = parser.parse_args(argv)
    args.tasks = args.tasks or (2000 if args.quick else 10_000)
    args.presses = args.presses or (10 if args.quick else 40)
    args.rounds = max(1, min(args.rounds or (2 if args.quick else 4), args.presses))
    args.startup_runs = args.startup_runs or (2 if args.quick else 5)
    if args.daughters < 1:
        parser.error("--daughters must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="tacx: %(levelname)s %(name)s: %(message)s")
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="tacx-bench-ui-", dir=args.dir))
    home = Home(run_dir / ".tacx")
    total_start = time.perf_counter()
    print(f"ui: {args.tasks:,} tasks, {args.daughters} daughters x {args.rate_mb:g} MB/s while loaded, "
          f"{args.presses} presses per key and state in {args.rounds} alternating rounds; screen {SIZE[0]}x{SIZE[1]}")
    print(f"run folder {run_dir}")
    try:
        # The store.
        start = time.perf_counter()
        seeded = seed_store(home, args.tasks)
        print(f"seeded in {time.perf_counter() - start:.1f} s: " + ", ".join(f"{k} {v:,}" for k, v in seeded.items()))

        # Startup: the real CLI in a pty (no other coordinator holds the home yet), imports.
        imports = import_time(5)
        cli = [cli_startup(home, MARKER_TITLE.encode()) for _ in range(args.startup_runs)]
        cli_ok = [c for c in cli if c is not None]

        # The flood provider and workflow.
        script = run_dir / "flood_agent.py"
        script.write_text(FLOOD_SCRIPT)
        settings = Settings(
            kill_grace=2.0,
            providers={FLOOD_PROVIDER: ProviderSettings(argv=[sys.executable, str(script), "{{ prompt }}"],
                                                        parser="claude-stream-json", model=FLOOD_MODEL)},
        )
        wf_text = FLOOD_WORKFLOW.replace("@RATE@", str(int(args.rate_mb * MB))).replace("@SECONDS@", "300")
        wf_path = run_dir / "workflows" / "bench-flood.yaml"
        wf_path.parent.mkdir(exist_ok=True)
        wf_path.write_text(wf_text)
        wf = load_workflow_text(wf_text, str(wf_path), provider_kinds(configured_providers(settings)))

        print("key presses:", flush=True)
        keys = asyncio.run(run_keys(home, settings, args, (wf, wf_text, wf_path)))
        left = leftovers(home)

        # In-process startup, warm (after the run: the measured app was the first in this process).
        inproc = [asyncio.run(inprocess_startup(home, Settings())) for _ in range(args.startup_runs)]
        left += leftovers(home)
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    idle, loaded = keys.idle, keys.loaded
    print()
    print(f"{'median / p95, ms':<44}{'idle':>17}   {'loaded':>17}   ratio (median)")

    def row(name: str, a: Sequence[float], b: Sequence[float]) -> None:
        ratio = statistics.median(b) / statistics.median(a) if a and b and statistics.median(a) else float("nan")
        print(f"{name:<44}{ms(a):>17}   {ms(b):>17}   {ratio:5.2f}")

    sel = ([p.paint_s for p in idle.select], [p.paint_s for p in loaded.select])
    flt = ([p.paint_s for p in idle.filter], [p.paint_s for p in loaded.filter])
    row("key to screen: select (down/up)", *sel)
    row("key to screen: filter (f)", *flt)
    row("  key to widgets updated: select", [p.state_s for p in idle.select], [p.state_s for p in loaded.select])
    row("  key to widgets updated: filter", [p.state_s for p in idle.filter], [p.state_s for p in loaded.filter])
    row("  snapshot in its thread", idle.snapshots, loaded.snapshots)
    row("  _apply_snapshot on the loop", idle.applies, loaded.applies)
    row("  event loop lag (10 ms ticker)", idle.lag, loaded.lag)
    print(f"{'  event loop lag, max':<44}{max(idle.lag, default=0) * 1e3:17.1f}   {max(loaded.lag, default=0) * 1e3:17.1f}")
    timeouts = sum(p.timed_out for ph in (idle, loaded) for p in ph.select + ph.filter)
    if timeouts:
        print(f"WARNING: {timeouts} presses never showed on screen within {PRESS_TIMEOUT:.0f} s (counted as {PRESS_TIMEOUT:.0f} s)")
    rates = [r / MB for r in loaded.rates]
    if rates:
        print(f"daughters' write rate while measured: median {statistics.median(rates):.2f} MB/s, "
              f"min {min(rates):.2f}, max {max(rates):.2f} (target {args.rate_mb:g}; {len(rates)} daughter-rounds); "
              f"total {statistics.median(rates) * args.daughters:.0f} MB/s")
    print(f"log panel while loaded showed: {', '.join(sorted(set(loaded.log_shown)))[:150]}")
    print(f"peak RSS (sampled every {RSS_POLL * 1e3:.0f} ms): idle {idle.peak_rss / 2**20:.0f} MiB, "
          f"loaded {loaded.peak_rss / 2**20:.0f} MiB; VmHWM of the whole run {keys.hwm / 2**20:.0f} MiB "
          f"(ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, includes the in-process startups)")
    print("startup: `tacx` in a pty, spawn to the newest task on screen: "
          + (f"median {statistics.median(cli_ok):.2f} s ({', '.join(f'{c:.2f}' for c in cli_ok)})" if cli_ok else "not measured")
          + (f"; {len(cli) - len(cli_ok)} run(s) never showed it" if len(cli_ok) != len(cli) else ""))
    print(f"         `python -c 'import tacx.cli.main, tacx.ui.app'`: median {statistics.median(imports):.2f} s of {len(imports)}")
    print(f"         in process (warm), make_app to the tasks painted: median {statistics.median(inproc):.2f} s "
          f"({', '.join(f'{s:.2f}' for s in inproc)})")
    for name, ph in (("idle", idle), ("loaded", loaded)):
        if ph.wall <= 0:
            continue
        top = ", ".join(f"{k} {n / ph.wall:.1f}" for k, n in ph.events.most_common(5))
        print(f"{name}: per second: {len(ph.snapshots) / ph.wall:.1f} snapshots, {len(ph.paints) / ph.wall:.1f} repaints "
              f"({sum(ph.paints) / ph.wall * 100:.0f}% of the loop's time; median {statistics.median(ph.paints or [0]) * 1e3:.1f} ms, "
              f"p95 {pct(ph.paints, 0.95) * 1e3:.1f} ms), {ph.layouts / ph.wall:.1f} full layouts; engine events: {top}")
    for name, ph in (("idle", idle), ("loaded", loaded)):
        if ph.wall <= 0:
            continue
        print(f"garbage collection {name}: " + ", ".join(
            f"gen {g} {len(v) / ph.wall:.1f}/s max {max(v, default=0) * 1e3:.0f} ms "
            f"(CPU max {max(ph.gc_cpu[g], default=0) * 1e3:.0f} ms, total {sum(ph.gc_cpu[g]) / ph.wall * 100:.1f}%)"
            for g, v in ph.gc_pauses.items())
            + f"; {sum(map(sum, ph.gc_pauses.values())) / ph.wall * 100:.1f}% of the time; "
            f"{ph.gc_objects:,} objects tracked")
    cores = psutil.cpu_count() or 1
    for name, ph in (("idle", idle), ("loaded", loaded)):
        if ph.wall <= 0:
            continue
        threads = ", ".join(f"{n} {c / ph.wall * 100:.0f}%" for n, c in ph.thread_cpu.most_common(6) if c / ph.wall >= 0.005)
        print(f"CPU {name}: this process {ph.cpu / ph.wall * 100:.0f}% of a core ({threads}); "
              f"the machine {ph.machine_busy / ph.wall / cores * 100:.0f}% busy of {cores} cores")
    if args.stacks:
        for name, ph in (("idle", idle), ("loaded", loaded)):
            print(f"\nevent loop, {name}: {ph.samples:,} stack samples, {ph.stalls:,} while it was {STALL * 1e3:.0f}+ ms late."
                  " Share of samples each function was on the stack (all samples | stalled ones):")
            shown = [k for k, n in ph.loop_stacks.most_common() if n < 0.97 * ph.samples][: args.stacks]
            shown += [k for k, n in ph.stall_stacks.most_common() if n < 0.97 * ph.stalls and k not in shown][:5]
            for key in shown:
                print(f"  {ph.loop_stacks[key] / max(ph.samples, 1) * 100:5.1f}% | "
                      f"{ph.stall_stacks[key] / max(ph.stalls, 1) * 100:5.1f}%  {key}")
    print(f"no process left behind: {'yes' if not left else f'NO, ended {left}'}; whole run {time.perf_counter() - total_start:.0f} s")

    key_median = max(statistics.median(sel[1]), statistics.median(flt[1]))
    print(verdict(f"key press to screen while loaded, median {statistics.median(sel[1]) * 1e3:.0f} ms (select) / "
                  f"{statistics.median(flt[1]) * 1e3:.0f} ms (filter)", key_median * 1e3 < GOAL_KEY_MS,
                  f"< {GOAL_KEY_MS:.0f} ms; idle: {statistics.median(sel[0]) * 1e3:.0f} / {statistics.median(flt[0]) * 1e3:.0f} ms"))
    if cli_ok:
        startup, how = statistics.median(cli_ok), "tacx in a pty"
    else:
        startup, how = statistics.median(imports) + statistics.median(inproc), "imports + in-process"
    print(verdict(f"startup {startup:.2f} s ({how})", startup < GOAL_STARTUP_S, f"< {GOAL_STARTUP_S} s"))
    print(verdict(f"peak RSS while loaded {loaded.peak_rss / 2**20:.0f} MiB", loaded.peak_rss / 2**20 < GOAL_RSS_MB,
                  f"< {GOAL_RSS_MB:.0f} MB; idle {idle.peak_rss / 2**20:.0f} MiB"))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
