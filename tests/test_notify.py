"""Notifications (tacx.yaml `notify:`): a webhook received by a real HTTP server on
127.0.0.1, a command writing a file, the terminal's bytes, bursts summarised, tacx.yaml's
mistakes located, and a hanging channel that never holds the engine up."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import psutil
import tacx
import pytest
from aiohttp import web

from tacx.agents.registry import make_parser
from tacx.agents.tailer import Batch
from tacx.engine.coordinator import Coordinator
from tacx.engine.events import EngineEvent, EventBus
from tacx.home import Home
from tacx.server.notify.command import CommandChannel
from tacx.server.notify.message import Notice, message, sentence
from tacx.server.notify.notifier import start_notifications
from tacx.server.notify.rules import NotifyRule
from tacx.server.notify.terminal import TerminalChannel, sequences, stderr_terminal
from tacx.server.notify.waiting import waiting_reason
from tacx.server.notify.webhook import WebhookChannel
from tacx.settings import Settings, SettingsError, load_settings
from tacx.store import records
from tacx.store.database import connect, transaction
from tacx.store.writer import Store
from tacx.workflow.loader import load_workflow_text
from tests.conftest import Project


class Hook:
    """A webhook receiver on 127.0.0.1 (a random port): answers each POST with the next of
    ``answers`` (then 200); an answer of None hangs until `release` is set."""

    def __init__(self, answers: list[int | None] | None = None, retry_after: str | None = None) -> None:
        self.answers = list(answers or [])
        self.retry_after = retry_after
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _post(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        answer = self.answers.pop(0) if self.answers else 200
        if answer is None:
            self.arrived.set()
            await self.release.wait()
            answer = 200
        if answer == 200:
            self.bodies.setdefault(request.path, []).append(body)
            self.headers.append(dict(request.headers))
        self.arrived.set()
        headers = {"Retry-After": self.retry_after} if self.retry_after and answer == 429 else {}
        return web.Response(status=answer, headers=headers)

    async def __aenter__(self) -> Hook:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._post)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    async def received(self, path: str, count: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(20):
            while len(self.bodies.get(path, [])) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.bodies[path]


def queue(home: Home, text: str, titles: list[str], providers: dict[str, str] | None = None) -> list[int]:
    """Tasks straight into the store, as `tacx submit` would queue them."""
    wf = load_workflow_text(textwrap.dedent(text), "test.yaml", providers)
    conn = connect(home.db_path)
    with transaction(conn):
        ids = records.queue_workflow(conn, wf, path="test.yaml", text=textwrap.dedent(text),
                                     project_root=str(home.project_root), inputs=[{}] * len(titles), titles=titles)
    conn.close()
    return ids


def rule(**fields: Any) -> NotifyRule:
    return NotifyRule.model_validate(fields)


def ended(kind: str, task_id: int, title: str, error: str | None = None) -> EngineEvent:
    return EngineEvent(f"task.{kind}", task_id, data={"title": title, "error": error})


# -- a real run, headless: the wiring, the facts, the flush at shutdown, waiting ----------------

ASKER = """\
import json
for line in [
    {"type": "system", "subtype": "init", "session_id": "s-ask", "model": "claude-sonnet-4-5"},
    {"type": "assistant", "message": {"id": "m1", "model": "claude-sonnet-4-5", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "AskUserQuestion",
         "input": {"questions": [{"question": "Which database?", "options": []}]}}],
        "usage": {"input_tokens": 10, "output_tokens": 5}}},
    {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "session_id": "s-ask",
     "result": "I need to know which database to use.", "total_cost_usd": 0.25,
     "usage": {"input_tokens": 10, "output_tokens": 5},
     "permission_denials": [{"tool_name": "AskUserQuestion", "tool_use_id": "toolu_1", "tool_input": {}}]},
]:
    print(json.dumps(line), flush=True)
"""


async def test_a_headless_run_posts_its_task_ends_in_one_burst_and_an_agent_waiting_for_a_person(project: Project) -> None:
    (project.root / "asker.py").write_text(ASKER)
    async with Hook() as hook:
        (project.root / "tacx.yaml").write_text(textwrap.dedent(f"""\
            providers:
              asker: {{argv: [{sys.executable}, asker.py, '{{{{ prompt }}}}'], parser: claude-stream-json}}
            notify:
              - on: [succeeded, failed]
                webhook: {hook.url}/ends
                headers: {{X-Tacx-Test: hello}}
                burst: 1m
              - on: [waiting]
                webhook: {hook.url}/waiting
                burst: 1m
              - on: [failed]
                command: [sh, -c, "echo no display >&2; exit 4"]
                burst: 1m
        """))
        home = Home(project.home)
        queue(home, "name: quick\nstages:\n  - {name: go, provider: shell, run: echo ok}\n", ["Fix the off-by-one"])
        queue(home, "name: broken\nstages:\n  - {name: go, provider: shell, run: exit 3}\n", ["Break the build"])
        queue(home, "name: ask\nstages:\n  - {name: think, provider: asker, prompt: go}\n", ["Pick a database"],
              {"asker": "agent", "shell": "script"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tacx", "--no-ui", "--exit-when-idle", "--max-workers", "1",
            cwd=project.root, env=project.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1, err.decode()  # two tasks failed
        # The window is a minute: both messages went out as the coordinator stopped.
        ((ends,),) = [await hook.received("/ends")]
        ((waiting,),) = [await hook.received("/waiting")]
        assert "hello" in [h.get("X-Tacx-Test") for h in hook.headers]
        # A channel that gives up is said once on stderr (it was also logged there as a WARNING).
        assert [line for line in err.decode().splitlines() if "notify" in line] == ["tacx: notify: command sh exited 4: no display"]
    assert ends["event"] == "burst" and ends["count"] == 3
    assert ends["text"] == (
        "3 tasks ended: 1 succeeded, 2 failed — #2 Break the build (failed: stage go failed: exited with code 3),"
        " #3 Pick a database (failed: stage think failed: exited 0, but the agent was refused 1 tool call(s):"
        " AskUserQuestion (allow them with the stage's permission_mode, or extra_args such as --allowedTools);"
        " last output:), #1 Fix the off-by-one (succeeded)")
    first = ends["events"][0]
    assert {k: first[k] for k in ("event", "kind", "task_id", "title", "workflow", "status", "error", "cost_usd", "url")} == {
        "event": "succeeded", "kind": "task.succeeded", "task_id": 1, "title": "Fix the off-by-one", "workflow": "quick",
        "status": "succeeded", "error": None, "cost_usd": 0.0, "url": None}
    assert first["duration_s"] >= 0
    assert [(e["task_id"], e["status"], e["workflow"]) for e in ends["events"]] == [
        (1, "succeeded", "quick"), (2, "failed", "broken"), (3, "failed", "ask")]
    assert ends["tacx"]["project"] == project.root.name and ends["tacx"]["version"]
    assert waiting["event"] == "waiting" and waiting["count"] == 1  # the tool call and the denial: one notice
    assert waiting["text"] == "task 3 needs you at stage think: Pick a database (ask, $0.25) — the agent asks a question (AskUserQuestion)"
    assert waiting["events"][0]["stage"] == "think"


# -- the webhook: retries, refusals, a bound ----------------------------------------------------


async def test_the_webhook_retries_a_5xx_and_a_429_refuses_to_retry_a_4xx_and_gives_up_within_its_bound() -> None:
    said: list[str] = []
    msg = message([Notice("failed", "task.failed", 4, title="t4", status="failed", error="exit code 1")], {"failed": 1})
    async with Hook([500, 429], retry_after="0") as hook:
        channel = WebhookChannel(hook.url + "/a", {}, 10, "/h", "webhook", said.append, first_delay=0.01)
        assert await channel.deliver(msg)
        await channel.close()
        assert hook.requests == 3 and len(hook.bodies["/a"]) == 1 and said == []
        assert hook.bodies["/a"][0]["text"] == "task 4 failed: t4 — exit code 1"
    async with Hook([400]) as hook:
        channel = WebhookChannel(hook.url + "/b", {}, 10, "/h", "webhook x", said.append, first_delay=0.01)
        assert not await channel.deliver(msg)
        await channel.close()
        assert hook.requests == 1 and said == ["notify: webhook x gave up after 1 try: HTTP 400 (the message was: task 4 failed: t4 — exit code 1)"]
    said.clear()
    async with Hook([308]) as hook:  # http:// moved to https://, say: a POST is not followed (its body could go elsewhere)
        channel = WebhookChannel(hook.url + "/r", {}, 10, "/h", "webhook r", said.append, first_delay=0.01)
        assert not await channel.deliver(msg)
        await channel.close()
        assert hook.requests == 1 and said == ["notify: webhook r gave up after 1 try: HTTP 308 (a redirect, not followed:"
                                               " write the URL it points to) (the message was: task 4 failed: t4 — exit code 1)"]
    said.clear()
    async with Hook([None, None, None]) as hook:  # never answers
        channel = WebhookChannel(hook.url + "/c", {}, 0.3, "/h", "webhook y", said.append, first_delay=0.01)
        assert not await asyncio.wait_for(channel.deliver(msg), 10)
        await channel.close()
        assert said == ["notify: webhook y gave up after 1 try: no answer in time (the message was: task 4 failed: t4 — exit code 1)"]
    # A hook that hangs once is tried again when one try's share of the bound has passed.
    said.clear()
    async with Hook([None]) as hook:
        channel = WebhookChannel(hook.url + "/e", {}, 10, "/h", "webhook w", said.append, first_delay=0.01, try_timeout=0.3)
        assert await asyncio.wait_for(channel.deliver(msg), 10)
        await channel.close()
        assert hook.requests == 2 and len(hook.bodies["/e"]) == 1 and said == []
    # Nothing listens at all: connection refused, retried, given up.
    said.clear()
    channel = WebhookChannel(hook.url + "/d", {}, 5, "/h", "webhook z", said.append, tries=2, first_delay=0.01)
    assert not await channel.deliver(msg)
    await channel.close()
    assert said[0].startswith("notify: webhook z gave up after 2 tries: ClientConnectorError")


async def test_a_burst_of_task_ends_is_one_message_with_the_right_counts(tmp_path: Path) -> None:
    home = Home(tmp_path / ".tacx")
    connect(home.db_path).close()
    bus = EventBus()
    async with Hook() as hook:
        notifier = start_notifications(home, [rule(on=["succeeded", "failed"], webhook=hook.url + "/n", burst="300ms")],
                                       bus, None, terminal=None)
        assert notifier is not None
        for i in range(1, 11):
            bus.publish(ended("succeeded", i, f"t{i}"))
        bus.publish(ended("failed", 11, "fix pagination", "exit code 1"))
        bus.publish(ended("failed", 12, "t12", "stage go failed: exit code 2\nmore lines"))
        bus.publish(EngineEvent("task.started", 13, data={"title": "not asked for"}))
        (body,) = await hook.received("/n")
        assert body["count"] == 12 and len(body["events"]) == 12
        assert body["text"] == ("12 tasks ended: 10 succeeded, 2 failed — #11 fix pagination (failed: exit code 1),"
                                " #12 t12 (failed: stage go failed: exit code 2), #1 t1 (succeeded), #2 t2 (succeeded),"
                                " #3 t3 (succeeded), and 7 more")
        bus.publish(ended("cancelled", 14, "not asked for either"))
        bus.publish(ended("succeeded", 15, "later"))  # after the window: a message of its own
        second = (await hook.received("/n", 2))[1]
        await bus.drain(5)
        await notifier.close()
    assert second["count"] == 1 and second["event"] == "succeeded"
    assert second["text"] == "task 15 succeeded: later"


def test_one_event_reads_as_a_sentence() -> None:
    done = Notice("succeeded", "task.succeeded", 12, title="Fix the off-by-one", workflow="plan-build-review",
                  status="succeeded", cost_usd=0.42, duration_s=192.4)
    assert sentence(done) == "task 12 succeeded: Fix the off-by-one (plan-build-review, $0.42, 3m12s)"
    budget = Notice("budget", "task.budget_exceeded", 3, title="Big", workflow="w", cost_usd=1.2345,
                    error="budget exceeded: cost $1.2345 passed the budget of $1.00 by $0.2345")
    assert sentence(budget) == "task 3 stopped by its budget: Big (w, $1.23) — budget exceeded: cost $1.2345 passed the budget of $1.00 by $0.2345"
    source = Notice("source_error", "source.failed", source="github:octo/widgets", error="HTTP 502 from GitHub")
    assert sentence(source) == "source github:octo/widgets failed to poll: HTTP 502 from GitHub"


# -- a hanging channel never holds the engine up --------------------------------------------------


async def test_a_hanging_webhook_does_not_slow_the_engine(project: Project) -> None:
    home = Home(project.home)
    ids = queue(home, "name: quick\nstages:\n  - {name: go, provider: shell, run: echo ok}\n", [f"t{i}" for i in range(6)])
    async with Hook([None] * 100) as hook:  # every POST hangs until the test ends
        settings = Settings(sample_interval=0.2, notify=[rule(on=["all"], webhook=hook.url + "/stuck", burst=0)])
        store = await Store(home.db_path).open()
        try:
            coordinator = Coordinator(home, store, settings, exit_when_idle=True)
            said: list[str] = []
            notifier = start_notifications(home, settings.notify, coordinator.bus, coordinator.lifecycle.done,
                                           terminal=None, say=said.append)
            assert notifier is not None
            for i in range(2000):  # the publishes return at once: the rule's queue takes them
                coordinator.publish("task.failed", 10_000 + i, title="x", error="boom")
            await asyncio.wait_for(coordinator.run(), 60)  # its drain gives up on the stuck channel
            await notifier.close()
        finally:
            await store.close()
        # Every task ended while the one POST in flight was still unanswered.
        assert not hook.release.is_set() and hook.requests == 1 and hook.bodies == {}
    assert [t["status"] for t in project.ls()] == ["succeeded"] * len(ids)
    # The message in flight when the drain's bound ran out is said lost, not lost in silence.
    assert said == [f"notify: webhook {hook.url}/… had not delivered when tacx stopped: task 10000 failed: x — boom"]


async def test_agents_chatter_does_not_push_task_ends_out_of_a_held_up_rules_queue(tmp_path: Path) -> None:
    """An `all` rule hears every agent.output (for `waiting`): while its webhook hangs, 12,000
    of them that show no waiting must not fill its queue (10,000) and drop a task's end."""
    home = Home(tmp_path / ".tacx")
    connect(home.db_path).close()
    bus = EventBus()
    subscribed = len(bus._subscribers)
    async with Hook([None]) as hook:
        notifier = start_notifications(home, [rule(on=["all"], webhook=hook.url + "/all", burst=0)], bus, None, terminal=None)
        assert notifier is not None
        bus.publish(ended("failed", 1, "first"))
        await hook.arrived.wait()  # its POST hangs
        bus.publish(ended("failed", 2, "second"))
        chatter = [("text", {"text": "working on it"})]
        for _ in range(12_000):
            bus.publish(EngineEvent("agent.output", 3, "think", data={"attempt": 1, "events": chatter}))
        hook.release.set()
        (second,) = (await hook.received("/all", 2))[1:]
        await bus.drain(5)
        await notifier.close()
    assert second["text"] == "task 2 failed: second" and notifier.senders[0].queued.dropped == 0
    assert len(bus._subscribers) == subscribed + 1  # closed: its filters are off the bus (its drained queue stays)


async def test_events_a_held_up_rules_queue_drops_are_said(tmp_path: Path) -> None:
    """10,025 ends behind a hanging POST: the queue keeps 10,000, and the 25 it dropped are
    said with the next delivery."""
    home = Home(tmp_path / ".tacx")
    bus = EventBus()
    said: list[str] = []
    async with Hook([None]) as hook:
        notifier = start_notifications(home, [rule(on=["failed"], webhook=hook.url + "/f", burst=0)], bus, None,
                                       terminal=None, say=said.append)
        assert notifier is not None
        bus.publish(ended("failed", 1, "first"))
        await hook.arrived.wait()  # its POST hangs; the queue holds 10,000
        for task_id in range(2, 10_027):
            bus.publish(ended("failed", task_id, "later"))
        hook.release.set()
        await hook.received("/f", 2)
        await bus.drain(0.1)
        await notifier.close()
    assert said[0] == f"notify: webhook {hook.url}/… fell behind: 25 events were dropped (the oldest waiting)"


# -- the command channel -------------------------------------------------------------------------

HOSTILE = "\x1b]0;pwned\x07 $(touch pwned) `touch pwned2`; Fix\x9b31m it\nnow"
CLEAN = "]0,pwned $(touch pwned) `touch pwned2`, Fix 31m it now"  # after plain() and OSC's ; -> ,


async def test_a_command_gets_the_facts_in_its_environment_never_in_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "env.json"
    monkeypatch.setenv("OUT", str(out))
    monkeypatch.chdir(tmp_path)
    argv = [sys.executable, "-c", "import os, json; json.dump({k: v for k, v in os.environ.items() if k.startswith('TACX_')},"
            " open(os.environ['OUT'], 'w'))"]
    said: list[str] = []
    notices = [Notice("failed", "task.failed", 41, title=HOSTILE, workflow="fix", status="failed", error="exit code 1\nat line 3",
                      cost_usd=0.5, url="https://github.com/o/r/issues/41"),
               Notice("succeeded", "task.succeeded", 42, title="ok", workflow="fix", status="succeeded", cost_usd=0.25)]
    assert await CommandChannel(argv, 10, said.append).deliver(message(notices, {"failed": 1, "succeeded": 1}))
    env = json.loads(out.read_text())
    events = json.loads(env.pop("TACX_EVENTS_JSON"))
    assert env == {
        "TACX_EVENT": "burst", "TACX_COUNT": "2", "TACX_TASK_ID": "41", "TACX_TASK_STATUS": "failed",
        "TACX_TASK_TITLE": "]0;pwned $(touch pwned) `touch pwned2`; Fix 31m it now", "TACX_WORKFLOW": "fix",
        "TACX_ERROR": "exit code 1 at line 3", "TACX_URL": "https://github.com/o/r/issues/41", "TACX_COST_USD": "0.500000",
        "TACX_MESSAGE": "2 tasks ended: 1 failed, 1 succeeded — #41 ]0;pwned $(touch pwned) `touch pwned2`; Fix 31m it now"
                        " (failed: exit code 1), #42 ok (succeeded)",
    }
    assert [(e["task_id"], e["title"]) for e in events] == [(41, HOSTILE), (42, "ok")]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists() and said == []
    # A fact the message lacks is absent, not inherited from tacx's own environment.
    monkeypatch.setenv("TACX_URL", "https://stale.example")
    assert await CommandChannel(argv, 10, said.append).deliver(message(notices[1:], {"succeeded": 1}))
    second = json.loads(out.read_text())
    assert "TACX_URL" not in second and "TACX_ERROR" not in second and second["TACX_TASK_ID"] == "42"
    # A failing command is said in one line with its stderr.
    assert not await CommandChannel([sys.executable, "-c", "import sys; sys.exit('no display')"], 10, said.append).deliver(
        message(notices[1:], {"succeeded": 1}))
    assert said == [f"notify: command {sys.executable} exited 1: no display"]
    # No temporary file for its stderr (the temp folder full or gone): said, not raised.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    assert not await CommandChannel(argv, 10, said.append).deliver(message(notices[1:], {"succeeded": 1}))
    assert said[-1] == f"notify: command {sys.executable} could not start: no temporary file for its stderr: No such file or directory"


async def test_a_command_that_overruns_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    said: list[str] = []
    channel = CommandChannel(["sh", "-c", 'sleep 60 & echo $! > "$1"; wait', "sh", str(pid_file)], 0.5, said.append)
    one = message([Notice("succeeded", "task.succeeded", 1, title="t")], {"succeeded": 1})
    assert not await asyncio.wait_for(channel.deliver(one), 20)
    assert said == ["notify: command sh was killed after 0.5s"]
    child = int(pid_file.read_text())
    async with asyncio.timeout(10):
        while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
            await asyncio.sleep(0.02)


async def test_a_command_that_exits_leaving_a_child_behind_is_judged_by_its_own_exit(tmp_path: Path) -> None:
    """`cmd &` leaves a child holding the command's stderr: its exit (3, and what it said)
    is reported at once, not "killed after 5s" when the bound runs out."""
    pid_file = tmp_path / "child.pid"
    said: list[str] = []
    channel = CommandChannel(["sh", "-c", 'sleep 60 & echo $! > "$1"; echo no display >&2; exit 3', "sh", str(pid_file)],
                             5, said.append)
    try:
        assert not await channel.deliver(message([Notice("succeeded", "task.succeeded", 1, title="t")], {"succeeded": 1}))
        assert said == ["notify: command sh exited 3: no display"]
    finally:
        psutil.Process(int(pid_file.read_text())).kill()


# -- the terminal ----------------------------------------------------------------------------------


async def test_the_terminal_gets_a_bell_and_osc_9_and_777_without_a_hostile_titles_escapes() -> None:
    written: list[str] = []
    bells: list[int] = []
    toasts: list[str] = []
    channel = TerminalChannel(written.append, lambda: bells.append(1), toasts.append)
    msg = message([Notice("failed", "task.failed", 7, title=HOSTILE, status="failed", error="boom\x07")], {"failed": 1})
    assert await channel.deliver(msg)
    text = f"task 7 failed: {CLEAN} — boom"
    assert written == [f"\x1b]9;tacx: {text}\x07\x1b]777;notify;tacx;{text}\x07"] and bells == [1]
    assert toasts == ["task 7 failed: ]0;pwned $(touch pwned) `touch pwned2`; Fix 31m it now — boom"]
    # Exactly two ESCs and two BELs: the sequences' own; none from the title.
    assert written[0].count("\x1b") == 2 and written[0].count("\x07") == 2 and "\x9b" not in written[0]
    assert sequences("a\nb\x1b[2Jc") == "\x1b]9;tacx: a b [2Jc\x07\x1b]777;notify;tacx;a b [2Jc\x07"


async def test_headless_the_terminal_channel_writes_to_stderr_only_when_it_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert stderr_terminal() is None  # a file or a pipe would only collect escape sequences
    monkeypatch.setattr(sys, "stderr", Tty())
    channel = stderr_terminal()
    assert channel is not None
    assert await channel.deliver(message([Notice("succeeded", "task.succeeded", 2, title="ok")], {"succeeded": 1}))
    assert sys.stderr.getvalue() == "\a\x1b]9;tacx: task 2 succeeded: ok\x07\x1b]777;notify;tacx;task 2 succeeded: ok\x07"


# -- waiting for input, on real agent streams --------------------------------------------------------


def output_event(kind: str, lines: list[dict[str, Any]]) -> EngineEvent:
    """What attempt.py publishes for a batch of a parser's events."""
    parser = make_parser(kind)
    batch = Batch()
    for line in lines:
        batch.add(parser.feed(json.dumps(line).encode()))
    return EngineEvent("agent.output", 1, "build", {"attempt": 1, "events": [(e.kind, e.data) for e in batch.shown]})


def test_waiting_is_seen_in_claude_codex_and_gemini_streams() -> None:
    denied = output_event("claude-stream-json", [
        {"type": "system", "subtype": "init", "session_id": "s1", "model": "claude-sonnet-4-5"},
        {"type": "result", "subtype": "success", "is_error": False, "result": "I could not write the file.",
         "session_id": "s1", "num_turns": 2, "usage": {"input_tokens": 1, "output_tokens": 2},
         "permission_denials": [{"tool_name": "Write", "tool_use_id": "t", "tool_input": {"file_path": "src/app.py"}}]},
    ])
    assert waiting_reason(denied.data["events"]) == (
        "the agent was refused 1 tool call(s): Write (src/app.py) (allow them with the stage's permission_mode,"
        " or extra_args such as --allowedTools)")
    codex = output_event("codex-json", [
        {"type": "thread.started", "thread_id": "th"},
        {"type": "item.completed", "item": {"id": "i1", "type": "agent_message",
                                            "text": "Two ways fit.\nShould I keep the old API or break it?"}},
        {"type": "turn.completed", "usage": {"input_tokens": 10, "cached_input_tokens": 0, "output_tokens": 3}},
    ])
    assert waiting_reason(codex.data["events"]) == "the agent ended with a question: Should I keep the old API or break it?"
    gemini_done = output_event("gemini-stream-json", [
        {"type": "init", "session_id": "g", "model": "gemini-2.5-pro"},
        {"type": "message", "role": "assistant", "content": "All 3 tests pass."},
        {"type": "result", "status": "success", "stats": {"total_tokens": 3, "input_tokens": 2, "output_tokens": 1}},
    ])
    assert waiting_reason(gemini_done.data["events"]) is None


# -- tacx.yaml -----------------------------------------------------------------------------------------

BAD = """\
max_workers: 2
notify:
  - on: [succeeded, faild]
    webhook: https://hooks.example/tacx
  - on: [budget]
    webhook: ftp://user:pw@hooks.example/tacx/SECRET
  - on: all
    command: notify-send tacx
  - on: [waiting]
    terminal: true
    command: [notify-send, tacx]
  - on: [failed]
    webhook: https://user:secret@hooks.example:99999/x
  - on: [failed]
    command: [true]
    workflows: []
  - on: [failed]
    webhook: http://a..b/x
  - off: [failed]
    terminal: true
"""


def test_notify_mistakes_in_tacx_yaml_are_located_and_the_cli_exits_2(project: Project) -> None:
    (project.root / "tacx.yaml").write_text(BAD)
    path = project.root / "tacx.yaml"
    result = project.tacx("--no-ui", "--exit-when-idle", check=2)
    assert result.stderr.splitlines() == [
        f"tacx: {path}:3:21: notify[0].on[1]: unknown event 'faild' (did you mean 'failed'?); known: succeeded, failed,"
        " cancelled, timed_out, budget, waiting, source_error, all",
        f"{path}:6:14: notify[1].webhook: a webhook is an http:// or https:// URL with a host, got ftp://hooks.example/…",
        f"{path}:8:14: notify[2].command: command is a list of arguments, never a shell string: e.g. [notify-send, tacx]"
        " (the facts come in TACX_* environment variables)",
        f"{path}:9:5: notify[3]: a rule has exactly one channel, webhook: URL, command: [argv] or terminal: true;"
        " this one has command and terminal",
        f"{path}:13:14: notify[4].webhook: a webhook URL's port is a number from 1 to 65535",
        f"{path}:15:14: notify[5].command: YAML reads a bare true, false, yes, no, on or off as a boolean: quote the"
        ' program, e.g. ["true"]',
        f"{path}:16:16: notify[5].workflows: name at least one workflow, or leave workflows out for every workflow",
        f"{path}:18:14: notify[6].webhook: 'a..b' is not a host name",
        f"{path}:19:5: notify[7]: a key YAML reads as false (off, no, false): the events key is on:",
    ]
    assert not (project.home / "tacx.db").exists()  # nothing written


def test_a_good_notify_section_reads_with_yamls_bare_on(tmp_path: Path) -> None:
    (tmp_path / "tacx.yaml").write_text("notify:\n  - on: [succeeded, budget]\n    command: [notify-send, tacx]\n"
                                        "    workflows: [fix]\n    burst: 10s\n  - {on: all, terminal: true}\n")
    first, every = load_settings(tmp_path).notify
    assert first.on == ["succeeded", "budget"] and first.command == ["notify-send", "tacx"] and first.burst == 10.0
    assert first.kinds == ["task.budget_exceeded", "task.succeeded"] and first.delivery_timeout == 10.0
    assert every.channel == "terminal" and len(every.kinds) == 8
    (tmp_path / "tacx.yaml").write_text("notify:\n  - on: [failed]\n    webhook: https://h.example/x\n    burst: 2h\n")
    with pytest.raises(SettingsError, match=r"tacx.yaml:4:12: notify\[0\].burst: a burst window is at most 3600s"):
        load_settings(tmp_path)


async def test_the_dashboard_shows_a_terminal_rules_message_as_a_toast(project: Project) -> None:
    from tacx.ui.app import make_app

    home = Home(project.home)
    # Square brackets are Textual markup: "[/x]" closes no tag, and a toast read as markup
    # would raise MarkupError as it is drawn (notifications=True draws the toasts).
    queue(home, "name: quick\nstages:\n  - {name: go, provider: shell, run: echo ok}\n", [HOSTILE + " [/x] [b]"])
    settings = Settings(notify=[rule(on=["succeeded"], terminal=True, burst=0)])
    app = make_app(home, settings, refresh_seconds=0.2)
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        async with asyncio.timeout(20):
            while not any(n.title == "tacx notify" for n in app._notifications):
                await asyncio.sleep(0.05)
        (toast,) = [n for n in app._notifications if n.title == "tacx notify"]
        assert toast.message.startswith("task 1 succeeded: ]0;pwned $(touch pwned) `touch pwned2`; Fix 31m it now [/x] [b] (quick, $0.00, ")
        await pilot.pause()  # the toast is drawn: as text, not markup
        assert "\x1b" not in toast.message and "\x07" not in toast.message
        await pilot.press("q")
        async with asyncio.timeout(20):
            while app.is_running:
                await asyncio.sleep(0.05)
    assert app.notifier is not None and app.notifier.senders[0].delivered == 1


async def test_notify_test_sends_through_each_channel_and_says_what_happened(project: Project) -> None:
    out = project.root / "command.out"
    async with Hook([200, 400]) as hook:
        (project.root / "tacx.yaml").write_text(textwrap.dedent(f"""\
            notify:
              - {{on: [failed], webhook: "{hook.url}/ok"}}
              - {{on: [failed], webhook: "{hook.url}/refused"}}
              - on: [failed]
                command: [./notify.sh, {out}]  # the project's script, run from a subfolder too
              - {{on: all, terminal: true}}
        """))
        script = project.root / "notify.sh"
        script.write_text('#!/bin/sh\nprintf "%s|%s|%s" "$TACX_EVENT" "$TACX_COUNT" "$TACX_MESSAGE" > "$1"\n')
        script.chmod(0o755)
        (project.root / "sub").mkdir()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tacx", "notify", "test", cwd=project.root / "sub", env=project.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    said = f"tacx test notification from {project.home}: notify works"
    assert proc.returncode == 1, stderr.decode()
    assert stdout.decode().splitlines() == [
        f"notify[0] webhook {hook.url}/…: delivered",
        f"notify[1] webhook {hook.url}/…: failed: webhook {hook.url}/… gave up after 1 try: HTTP 400 (the message was: {said})",
        "notify[2] command ./notify.sh: delivered",
        "notify[3] terminal: skipped (stderr is not a terminal)",
    ]
    assert hook.bodies["/ok"][0] == {"event": "test", "text": said, "count": 1, "events": [],
                                      "tacx": {"project": project.root.name, "version": tacx.__version__}}
    assert out.read_text() == f"test|1|{said}"


async def test_a_rule_for_some_workflows_hears_only_their_tasks_and_a_refusal_is_said(tmp_path: Path) -> None:
    home = Home(tmp_path / ".tacx")
    quick = queue(home, "name: quick\nstages:\n  - {name: go, provider: shell, run: echo ok}\n", ["q1", "q2"])
    other = queue(home, "name: other\nstages:\n  - {name: go, provider: shell, run: echo ok}\n", ["o1"])
    bus = EventBus()
    said: list[str] = []
    async with Hook([200, 400]) as hook:
        rules = [rule(on=["succeeded", "source_error"], workflows=["quick"], webhook=hook.url + "/quick", burst="200ms"),
                 rule(on=["budget"], webhook=hook.url + "/budget", burst=0)]
        notifier = start_notifications(home, rules, bus, None, terminal=None, say=said.append)
        assert notifier is not None
        for task_id in (quick[0], other[0], quick[1]):
            bus.publish(ended("succeeded", task_id, ""))
        for failures in range(1, 7):  # a source failing again and again: its 1st, 2nd and 4th failure are said
            bus.publish(EngineEvent("source.failed", data={"source": "github:o/r", "error": "gh: not logged in",
                                                          "failures": failures}))
        (body,) = await hook.received("/quick")
        bus.publish(EngineEvent("task.budget_exceeded", other[0], data={"error": "budget exceeded", "cost_usd": 2.5}))
        async with asyncio.timeout(20):
            while not said:
                await asyncio.sleep(0.02)
        await bus.drain(5)
        await notifier.close()
    assert [(e["task_id"], e["title"], e["workflow"]) for e in body["events"]] == [
        (1, "q1", "quick"), (2, "q2", "quick"), (None, None, None), (None, None, None), (None, None, None)]
    assert body["text"] == ("5 notifications: 2 succeeded, 3 source errors — github:o/r (gh: not logged in),"
                            " github:o/r (gh: not logged in), github:o/r (gh: not logged in), #1 q1 (succeeded),"
                            " #2 q2 (succeeded)")
    assert said == [f"notify: webhook {hook.url}/… gave up after 1 try: HTTP 400 (the message was: task 3 stopped by its budget:"
                    " o1 (other, $2.50) — budget exceeded)"]


async def test_the_dashboards_own_finished_toast_draws_a_title_with_square_brackets_as_text() -> None:
    """tacx/ui/notices.py announces each finished task with its title: an issue title is not
    Textual markup ("[/x]" closes no tag and raised MarkupError as the toast was drawn)."""
    from textual.app import App

    from tacx.ui.notices import FinishedNotices

    app = App()
    async with app.run_test(size=(100, 20), notifications=True) as pilot:
        notices = FinishedNotices(app.notify, app.set_timer)
        notices.add(EngineEvent("task.failed", 3, data={"title": "Fix [/x] [@click=app.quit]this[/]", "error": "[b"}))
        notices._announce()
        await pilot.pause()
        assert [n.message for n in app._notifications] == ["task 3 failed: Fix [/x] [@click=app.quit]this[/]\n[b"]
        assert app.is_running


async def test_a_burst_of_10000_huge_hostile_ends_stays_bounded_and_a_lone_surrogate_reaches_a_command(tmp_path: Path) -> None:
    """A megabyte error on each of 10,000 ends: the message, the webhook body and the
    command's TACX_EVENTS_JSON stay small. A title with a lone surrogate (JSON's "\\ud800")
    cannot be encoded in UTF-8: the command's environment says "?" instead of raising."""
    from tacx.server.notify.command import facts_env
    from tacx.server.notify.notifier import Burst
    from tacx.server.notify.webhook import payload

    burst = Burst(0.0)
    huge = "boom " * 200_000
    for i in range(1, 10_001):
        burst.add(Notice("failed", "task.failed", i, title="T\ud800" + "x" * 100_000, status="failed", error=huge))
    msg = message(burst.notices, burst.tally)
    assert msg.count == 10_000 and len(msg.notices) == 100 and len(msg.text) < 2000
    # 150 successes, then a failure: the message names the failure, not five successes.
    burst = Burst(0.0)
    for i in range(1, 151):
        burst.add(Notice("succeeded", "task.succeeded", i, title=f"t{i}", status="succeeded"))
    burst.add(Notice("failed", "task.failed", 151, title="broke", status="failed", error="exit code 2"))
    assert len(burst.notices) == 100 and burst.notices[-1].task_id == 151 and burst.notices[-2].task_id == 99
    assert message(burst.notices, burst.tally).text == ("151 tasks ended: 150 succeeded, 1 failed — #151 broke (failed:"
                                                         " exit code 2), #1 t1 (succeeded), #2 t2 (succeeded), #3 t3"
                                                         " (succeeded), #4 t4 (succeeded), and 146 more")
    body = json.dumps(payload(msg, "/h"))
    assert len(body) < 100 * 5000 and json.loads(body)["events"][99]["error"] == huge[:2000]
    assert "\\ud800" not in body and json.loads(body)["events"][0]["title"].startswith("T?xxx")
    env = facts_env(msg)
    assert len(env["TACX_EVENTS_JSON"]) <= 100_000 and json.loads(env["TACX_EVENTS_JSON"])[0]["task_id"] == 1
    out = tmp_path / "title"
    argv = [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(os.environ['TACX_TASK_TITLE'][:3])"]
    one = message([Notice("failed", "task.failed", 1, title="T\ud800!")], {"failed": 1})
    said: list[str] = []
    assert await CommandChannel(argv, 10, said.append).deliver(one) and said == []
    assert out.read_text() == "T?!"


async def test_a_webhook_url_that_cannot_be_posted_to_is_said_without_its_secrets_and_not_retried() -> None:
    """aiohttp's InvalidURL says the whole URL (a password, Slack's secret path): the report
    names the channel instead, and a URL that cannot work is not tried again."""
    url = "http://user:hunter2@127.0.0.1:x/services/T0/B0/SECRETPATH"
    said: list[str] = []
    channel = WebhookChannel(url, {}, 30, "/h", "webhook http://127.0.0.1:x/…", said.append)
    try:
        assert not await channel.deliver(message([Notice("failed", "task.failed", 1, title="t")], {"failed": 1}))
    finally:
        await channel.close()
    # A host IDNA refuses (an empty label) raised UnicodeError out of the channel.
    channel = WebhookChannel("http://a..b/x", {}, 30, "/h", "webhook http://a..b/…", said.append)
    try:
        assert not await channel.deliver(message([Notice("failed", "task.failed", 1, title="t")], {"failed": 1}))
    finally:
        await channel.close()
    assert said == ["notify: webhook http://127.0.0.1:x/… gave up after 1 try: the URL cannot be posted to"
                    " (InvalidUrlClientError) (the message was: task 1 failed: t)",
                    "notify: webhook http://a..b/… gave up after 1 try: the URL cannot be posted to (UnicodeError)"
                    " (the message was: task 1 failed: t)"]


async def test_a_tasks_unpriced_usage_is_said_unpriced_never_as_zero_dollars(tmp_path: Path) -> None:
    """As ls and show: usage of a model without a price is not "$0.00"."""
    from tacx.server.notify.facts import TaskFacts

    home = Home(tmp_path / ".tacx")
    (task,) = queue(home, "name: wf\nstages:\n  - {name: go, provider: shell, run: echo ok}\n", ["house work"])
    conn = connect(home.db_path)
    with transaction(conn):
        (stage,) = conn.execute("SELECT id FROM stages WHERE task_id = ?", (task,)).fetchone()
        conn.execute("INSERT INTO usage (task_id, stage_id, ts, model, input_tokens) VALUES (?, ?, 0, 'house-1', 10)",
                     (task, stage))
    conn.close()
    notice = Notice("failed", "task.failed", task, status="failed")
    await TaskFacts(home.db_path).fill([notice])
    assert sentence(notice) == "task 1 failed: house work (wf, unpriced (house-1))" and notice.unpriced == ["house-1"]


async def test_the_webhook_goes_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server behind a proxy: HTTP_PROXY is honoured as curl honours it (the hook's host is
    never resolved here; the proxy, a server in the test, gets the request for it)."""
    msg = message([Notice("failed", "task.failed", 4, title="t4", status="failed", error="exit code 1")], {"failed": 1})
    async with Hook([200]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        channel = WebhookChannel("http://hooks.example.invalid/via-proxy", {}, 10, "/h", "webhook p", print)
        assert await channel.deliver(msg)
        await channel.close()
        assert proxy.bodies["/via-proxy"][0]["text"] == "task 4 failed: t4 — exit code 1"
        assert proxy.headers[0]["Host"] == "hooks.example.invalid"
