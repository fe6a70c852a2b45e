"""The source seam with a real engine: a source made here (a list of wanted items) is
polled by a real coordinator, its requests become tasks through the same path as `tacx
submit`, a poll that sees an item again submits nothing, and the source hears how each of
its tasks ended, also after a restart. What goes wrong in a source stays in the source."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from tacx.engine.coordinator import Coordinator
from tacx.engine.events import EngineEvent
from tacx.home import Home
from tacx.settings import Settings
from tacx.sources.base import RateLimited, TaskEnd, TaskRequest
from tacx.sources.poller import SourcePoller
from tacx.store.writer import Store
from tests.conftest import Project

ECHO = """\
name: echo
inputs:
  word: {required: true}
stages:
  - name: say
    provider: shell
    run: 'sleep 0.3; test "$TACX_INPUT_WORD" != fail && echo "$TACX_INPUT_WORD"'
"""


class ListSource:
    """Wants one task per item in `items`; remembers what it heard."""

    def __init__(self, name: str, items: list[str], interval: float = 0.05, workflow: str = "echo") -> None:
        self.name, self.interval, self.items, self.workflow = name, interval, items, workflow
        self.polls = 0
        self.fail_next: Exception | None = None
        self.ended: list[TaskEnd] = []

    async def poll(self) -> Sequence[TaskRequest]:
        self.polls += 1
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return [TaskRequest(key=f"item-{w}", workflow=self.workflow, inputs={"word": w}, title=f"say {w}")
                for w in self.items]

    async def task_ended(self, end: TaskEnd) -> None:
        self.ended.append(end)  # it keeps asking: an item runs once all the same


async def until(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def run_with(home: Home, sources: list[ListSource], stop_when) -> tuple[Coordinator, list[EngineEvent]]:  # type: ignore[no-untyped-def]
    store = await Store(home.db_path).open()
    events: list[EngineEvent] = []
    try:
        coordinator = Coordinator(home, store, Settings(sample_interval=0.2), sources=sources)
        coordinator.bus.subscribe(events.append, kinds=["source.", "task."])
        running = asyncio.create_task(coordinator.run())
        try:
            await until(lambda: stop_when(events) or running.done(), 30)
        finally:
            coordinator.stop()
            await running
    finally:
        await store.close()
    return coordinator, events


async def test_a_source_submits_once_per_item_and_hears_each_end(project: Project) -> None:
    (project.root / "workflows").mkdir()
    project.workflow("workflows/echo", ECHO)
    home = Home(project.home)
    source = ListSource("list", ["hello", "fail"])
    coordinator, events = await run_with(home, [source], lambda _: len(source.ended) == 2 and source.polls >= 12)
    tasks = {t["title"]: t for t in project.ls()}
    assert set(tasks) == {"say hello", "say fail"}  # polled again while they ran and after: one each
    assert coordinator.sources.status["list"].already >= 10
    rows = project.query("SELECT title, dedupe_key, status FROM tasks ORDER BY id")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("say hello", "list:item-hello", "succeeded"), ("say fail", "list:item-fail", "failed"),
    ]
    ends = {e.key: e for e in source.ended}
    assert ends["item-hello"].status == "succeeded" and ends["item-hello"].error is None
    assert ends["item-fail"].status == "failed" and ends["item-fail"].error == "stage say failed: exited with code 1"
    status = coordinator.sources.status["list"]
    assert status.made == 2 and status.failures == 0 and status.last_error is None
    assert any(e.kind == "source.polled" and e.data["made"] == 2 for e in events)


async def test_a_failing_source_a_rate_limited_one_and_a_bad_request_stay_theirs(project: Project) -> None:
    (project.root / "workflows").mkdir()
    project.workflow("workflows/echo", ECHO)
    home = Home(project.home)
    broken = ListSource("broken", ["one"])
    broken.fail_next = ConnectionError("api.example: connection refused")
    limited = ListSource("limited", ["two"])
    limited.fail_next = RateLimited(3600, "secondary rate limit")
    wrong = ListSource("wrong", ["three"], workflow="no-such-workflow")
    hostile = ListSource("hostile", ["x\x00y", "z" * 600])
    _, events = await run_with(home, [broken, limited, wrong, hostile], lambda ev: len(broken.ended) == 1)
    kinds = [e.kind for e in events]
    assert "source.failed" in kinds and "source.rate_limited" in kinds and "source.rejected" in kinds
    failed = next(e for e in events if e.kind == "source.failed")
    assert failed.data == {"source": "broken", "error": "api.example: connection refused", "failures": 1}
    assert broken.ended[0].status == "succeeded"  # polled again after its failure, with backoff
    assert limited.polls == 1  # it asked for an hour's rest and gets it
    rejected = next(e for e in events if e.kind == "source.rejected" and e.data["source"] == "wrong")
    assert rejected.data["key"] == "item-three" and "no-such-workflow" in rejected.data["error"]
    said = {e.data["error"] for e in events if e.kind == "source.rejected" and e.data["source"] == "hostile"}
    assert said == {"the key holds control characters", "the key is 605 characters long; at most 512"}
    assert [r[0] for r in project.query("SELECT title FROM tasks")] == ["say one"]


async def test_after_a_restart_a_source_still_hears_the_end_of_a_task_it_submitted(project: Project) -> None:
    (project.root / "workflows").mkdir()
    project.workflow("workflows/echo", ECHO)
    project.tacx("pause")  # the first run only submits
    home = Home(project.home)
    source = ListSource("list", ["later"])
    await run_with(home, [source], lambda ev: any(e.kind == "source.polled" and e.data["made"] for e in ev))
    assert [r[0] for r in project.query("SELECT status FROM tasks")] == ["queued"]
    project.tacx("resume")
    again = ListSource("list", ["later"])  # still listed: its task is ours, and is not made twice
    await run_with(home, [again], lambda _: len(again.ended) == 1)
    assert again.ended[0].key == "item-later" and again.ended[0].status == "succeeded"
    assert [r[0] for r in project.query("SELECT status FROM tasks")] == ["succeeded"]


async def test_two_sources_with_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two sources are named list"):
        SourcePoller([ListSource("list", []), ListSource("list", [])], submit=None, read=None, bus=None, publish=None)  # type: ignore[arg-type]


def test_the_headless_reporter_says_what_sources_do() -> None:
    import io

    from tacx.cli.reporter import ConsoleReporter

    out = io.StringIO()
    report = ConsoleReporter(out, progress=False)
    report(EngineEvent("source.polled", data={"source": "gh", "asked": 3, "made": 0}))  # nothing new: quiet
    report(EngineEvent("source.polled", data={"source": "gh", "asked": 3, "made": 2}))
    report(EngineEvent("source.failed", data={"source": "gh", "error": "HTTP 502", "failures": 2}))
    report(EngineEvent("source.rate_limited", data={"source": "gh", "retry_after": 600.0, "error": "secondary rate limit"}))
    report(EngineEvent("source.rejected", data={"source": "gh", "key": "o/r#7", "error": "no workflow named 'fix'"}))
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "source gh made 2 task(s)",
        "source gh failed (2 in a row): HTTP 502",
        "source gh rests 600s: secondary rate limit",
        "source gh: o/r#7 not submitted: no workflow named 'fix'",
    ]


async def test_submit_workflow_takes_names_only_and_keeps_the_workflows_dedupe_key(project: Project) -> None:
    from tacx.submission import SubmissionError

    (project.root / "workflows").mkdir()
    project.workflow("workflows/echo", ECHO.replace("inputs:", 'dedupe_key: "{{ inputs.word }}"\ninputs:'))
    outside = project.workflow("elsewhere", ECHO)
    store = await Store(Home(project.home).db_path).open()
    try:
        coordinator = Coordinator(Home(project.home), store, Settings())
        first = await coordinator.submit_workflow("echo", {"word": "hi"})
        again = await coordinator.submit_workflow("echo", {"word": "hi"}, title="the same item")
        assert first[1] and again == (first[0], False)
        for name in (str(outside), "../elsewhere", "elsewhere.yaml", ".hidden", ""):
            with pytest.raises(SubmissionError, match="a workflow is named here, not given as a file"):
                await coordinator.submit_workflow(name, {"word": "x"})
    finally:
        await store.close()
    assert [r[0] for r in project.query("SELECT dedupe_key FROM tasks")] == ["echo:hi"]
