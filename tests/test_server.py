"""The HTTP API (`--listen`): a real coordinator on a temporary home, its server on
127.0.0.1 with a free port, in the test's own loop, and a real aiohttp client. Each route,
each refusal, the token's file and the command line's listening line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tacx.engine.coordinator import Coordinator
from tacx.engine.events import EngineEvent
from tacx.home import CoordinatorLock, Home
from tacx.server.address import ListenError, listen, parse_listen
from tacx.server.app import ApiServer
from tacx.server.context import Limits
from tacx.server.streams import Feed
from tacx.server.token import ensure_token, rotate_token, token_path
from tacx.store.writer import Store
from tests.conftest import Project

QUICK = """\
name: quick
inputs:
  word: {default: hello}
stages:
  - {name: say, provider: shell, run: 'echo "$TACX_INPUT_WORD"'}
"""
GATED = """\
name: gated
stages:
  - {{name: wait, provider: shell, run: 'echo first; while [ ! -e {gate} ]; do sleep 0.02; done; echo second'}}
"""


@dataclass
class Served:
    root: Path
    home: Home
    coordinator: Coordinator
    server: ApiServer
    http: aiohttp.ClientSession
    token: str

    def ended(self, task_id: int) -> asyncio.Future[str]:
        """The kind of the task's end, when it comes (heard on the engine's bus)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def hear(event: EngineEvent) -> None:
            if event.task_id == task_id and event.kind in ("task.succeeded", "task.failed", "task.cancelled") \
                    and not future.done():
                future.set_result(event.kind)

        self.coordinator.bus.subscribe(hear, kinds=["task."])
        return future

    async def submit(self, body: dict[str, Any]) -> int:
        async with self.http.post("/tasks", json=body) as r:
            assert r.status == 201, await r.text()
            return int((await r.json())["id"])


async def _serve(tmp_path: Path, limits: Limits) -> AsyncIterator[Served]:
    root = tmp_path / "proj"
    (root / "workflows").mkdir(parents=True)
    (root / "workflows" / "quick.yaml").write_text(QUICK)
    (root / "workflows" / "gated.yaml").write_text(GATED.format(gate=tmp_path / "gate"))
    home = Home(root / ".tacx")
    token = ensure_token(home)
    store = await Store(home.db_path).open()
    coordinator = Coordinator(home, store)
    server = ApiServer(coordinator, listen("127.0.0.1:0"), limits=limits)
    await server.start()
    running = asyncio.create_task(coordinator.run())
    http = aiohttp.ClientSession(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    try:
        yield Served(root, home, coordinator, server, http, token)
    finally:
        await http.close()
        coordinator.stop("stop")
        await asyncio.wait_for(running, 30)
        await server.stop()
        await store.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async for s in _serve(tmp_path, Limits(streams=2, heartbeat=0.2)):
        yield s


def _tacx(project_root: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = Project(project_root).env
    return subprocess.run([sys.executable, "-m", "tacx", *args], cwd=project_root, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# -- the routes ------------------------------------------------------------------------------


async def test_tasks_submitted_listed_and_shown_in_the_cli_shapes(served: Served) -> None:
    ended = [served.ended(i) for i in (1, 2, 3)]
    ids = [await served.submit({"workflow": "quick", "inputs": {"word": w}, "priority": p})
           for w, p in (("one", 0), ("two", 5), ("three", 0))]
    assert ids == [1, 2, 3]
    assert [await e for e in ended] == ["task.succeeded"] * 3
    async with served.http.get("/tasks") as r:
        listed = await r.json()
    cli = await asyncio.to_thread(_tacx, served.root, "ls", "--json")
    assert listed == json.loads(cli.stdout)  # exactly `tacx ls --json`
    assert [t["id"] for t in listed] == [3, 2, 1]
    async with served.http.get("/tasks", params={"limit": "1", "offset": "1"}) as r:
        assert [t["id"] for t in await r.json()] == [2]
    async with served.http.get("/tasks", params={"status": "queued"}) as r:
        assert await r.json() == []
    async with served.http.get("/tasks", params={"since": "1h", "workflow": "quick"}) as r:
        assert [t["id"] for t in await r.json()] == [3, 2, 1]
    async with served.http.get("/tasks", params={"source": "any"}) as r:
        assert await r.json() == []  # none came from a source
    async with served.http.get("/tasks/2") as r:
        shown = await r.json()
    cli = await asyncio.to_thread(_tacx, served.root, "show", "2", "--json")
    assert shown == json.loads(cli.stdout)  # exactly `tacx show 2 --json`
    assert shown["inputs"] == {"word": "two"} and shown["priority"] == 5
    async with served.http.get("/tasks/2/logs/say") as r:
        assert r.status == 200 and await r.read() == b"two\n"
        assert r.headers["X-Tacx-Log-Size"] == "4" and r.headers["X-Tacx-Attempt"] == "1"
    async with served.http.get("/tasks/2/logs/say", params={"offset": "1", "limit": "2"}) as r:
        assert await r.read() == b"wo" and r.headers["X-Tacx-Next-Offset"] == "3"
    # A path inside the project's workflows/ is taken too.
    async with served.http.post("/tasks", json={"workflow": "workflows/quick.yaml", "title": "by path"}) as r:
        assert r.status == 201 and (await r.json())["id"] == 4


async def test_workflows_validate_and_schema(served: Served) -> None:
    async with served.http.get("/workflows") as r:
        found = {w["name"]: w for w in await r.json()}
    assert found["quick"]["valid"] and found["quick"]["stages"] == ["say"]
    assert found["quick"]["inputs"]["word"]["default"] == "hello"
    assert "demo" in found  # the shipped ones too
    bad = "name: x\nstages:\n  - {name: s, provider: shel, run: 'true'}\n"
    async with served.http.post("/validate", params={"name": "x.yaml"}, data=bad) as r:
        answer = await r.json()
    assert answer["ok"] is False and answer["errors"][0].startswith("x.yaml:3:25: stages[0].provider")
    async with served.http.post("/validate", data=QUICK) as r:
        assert await r.json() == {"ok": True, "errors": [], "name": "quick", "stages": ["say"]}
    async with served.http.get("/schema") as r:
        schema = await r.json()
    cli = await asyncio.to_thread(_tacx, served.root, "schema")
    assert schema == json.loads(cli.stdout)


async def test_cancel_retry_pause_and_resume_through_the_coordinator(served: Served, tmp_path: Path) -> None:
    async with served.http.post("/pause") as r:
        assert await r.json() == {"paused": True}
    assert served.coordinator.paused
    task_id = await served.submit({"workflow": "gated"})
    ended = served.ended(task_id)
    async with served.http.get("/events", params={"kinds": "stage.started"}) as events:
        async with served.http.post("/resume") as r:
            assert await r.json() == {"paused": False}
        await _sse(events, until="stage.started")  # the stage runs: its daughter waits at the gate
    async with served.http.post(f"/tasks/{task_id}/retry") as r:
        assert r.status == 409 and "only failed, cancelled or timed-out" in (await r.json())["error"]
    async with served.http.post(f"/tasks/{task_id}/cancel") as r:
        assert await r.json() == {"id": task_id, "status": "running", "cancel_requested": True}
    assert await ended == "task.cancelled"
    async with served.http.post(f"/tasks/{task_id}/cancel") as r:
        assert r.status == 409 and (await r.json())["error"] == f"task {task_id} is already cancelled"
    (tmp_path / "gate").touch()
    ended = served.ended(task_id)
    async with served.http.post(f"/tasks/{task_id}/retry") as r:
        assert await r.json() == {"id": task_id, "status": "queued"}
    assert await ended == "task.succeeded"
    for verb in ("cancel", "retry"):
        async with served.http.post(f"/tasks/99/{verb}") as r:
            assert r.status == 404 and (await r.json())["error"] == "no task 99"


# -- streams ---------------------------------------------------------------------------------


async def _sse(response: aiohttp.ClientResponse, until: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, kind, data) of each event up to the first of kind `until`."""
    found: list[tuple[int, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if fields:
            found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            fields = {}
            if found[-1][1] == until:
                return found
    raise AssertionError(f"the stream ended before {until}: {found}")


async def test_events_of_a_real_task_in_order(served: Served) -> None:
    async with served.http.get("/events", params={"kinds": "task.,stage."}) as events:
        assert events.headers["Content-Type"] == "text/event-stream"
        task_id = await served.submit({"workflow": "quick"})
        seen = await _sse(events, until="task.succeeded")
    kinds = [kind for _, kind, _ in seen]
    assert kinds == ["task.submitted", "task.started", "stage.started", "stage.succeeded", "task.succeeded"]
    assert all(data["task_id"] == task_id and data["kind"] == kind for _, kind, data in seen)
    numbers = [n for n, _, _ in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_a_slow_client_loses_the_oldest_events_and_is_told_how_many() -> None:
    feed = Feed(("task.",), limit=2)
    assert feed.wants("task.started") and not feed.wants("stage.started") and not feed.wants("taskx")
    for n in range(1, 6):
        feed.put(n, EngineEvent("task.started", n))
    assert feed.missed == 3 and [n for n, _ in feed.queue] == [4, 5]


async def test_a_followed_log_streams_the_stage_to_its_end(served: Served, tmp_path: Path) -> None:
    await served.coordinator.set_paused(True)
    task_id = await served.submit({"workflow": "gated"})
    async with served.http.get(f"/tasks/{task_id}/logs/wait", params={"follow": "1"}) as log:
        assert log.status == 200  # asked before the stage began: the stream waits for it
        await served.coordinator.set_paused(False)
        assert await log.content.readline() == b"first\n"  # streamed while the stage runs
        (tmp_path / "gate").touch()
        assert await log.content.read() == b"second\n"  # then to the stage's end, and the stream ends
    await served.coordinator.set_paused(True)
    never = await served.submit({"workflow": "gated"})
    async with served.http.get(f"/tasks/{never}/logs/wait", params={"follow": "1"}) as log:
        async with served.http.post(f"/tasks/{never}/cancel") as r:
            assert (await r.json())["status"] == "cancelled"  # cancelled while queued: the stage never starts
        assert await log.content.read() == b""


# -- refusals --------------------------------------------------------------------------------


async def test_every_route_but_health_needs_the_token(served: Served) -> None:
    async with aiohttp.ClientSession(base_url=served.server.url) as anonymous:
        async with anonymous.get("/health") as r:  # 503 until the coordinator has recovered: not a 401
            assert r.status in (200, 503) and r.headers["Content-Type"].startswith("application/json")
            public = await r.json()  # the verdict and each part's state; no names, errors or figures
            assert set(public) == {"status", "coordinator", "store", "sources"}
            assert set(public["coordinator"]) == {"running", "paused"} and set(public["store"]) == {"writable"}
        async with anonymous.get("/health", headers={"Authorization": f"Bearer {served.token}"}) as r:
            told = await r.json()  # with the token: everything (version, workers, the store's free bytes...)
            assert {"version", "python"} <= set(told) and "max_workers" in told["coordinator"]
            assert "free_bytes" in told["store"]
        for method, path in (("GET", "/tasks"), ("GET", "/metrics"), ("POST", "/tasks"), ("GET", "/events"),
                             ("GET", "/nowhere")):
            async with anonymous.request(method, path) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
                assert "bearer token is needed" in (await r.json())["error"]
        for header in (f"Bearer {served.token}x", f"Basic {served.token}", served.token, "Bearer "):
            async with anonymous.get("/tasks", headers={"Authorization": header}) as r:
                assert r.status == 401 and "error" in await r.json()
        new = rotate_token(served.home)  # a rotated token works at once; the old one no more
        async with anonymous.get("/tasks", headers={"Authorization": f"Bearer {served.token}"}) as r:
            assert r.status == 401
        async with anonymous.get("/tasks", headers={"Authorization": f"Bearer {new}"}) as r:
            assert r.status == 200
        async with anonymous.get("/metrics", headers={"Authorization": f"Bearer {new}"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            assert "tacx_build_info{" in await r.text()
        token_path(served.home).chmod(0o644)  # loosened while the server runs: nobody gets in
        async with anonymous.get("/tasks", headers={"Authorization": f"Bearer {new}"}) as r:
            assert r.status == 401


async def _refused(http: aiohttp.ClientSession, method: str, path: str, status: int, **kwargs: Any) -> str:
    async with http.request(method, path, **kwargs) as r:
        assert r.status == status, await r.text()
        assert r.headers["Content-Type"].startswith("application/json")
        return str((await r.json())["error"])


async def test_bad_requests_are_refused_with_a_sentence(served: Served, tmp_path: Path) -> None:
    http = served.http
    assert await _refused(http, "POST", "/tasks", 400, data=b'{"workflow": "quick",\n  "inputs": {') == \
        "the body is not JSON: line 2, column 14: Expecting property name enclosed in double quotes"
    assert "must be a JSON object" in await _refused(http, "POST", "/tasks", 400, json=["quick"])
    assert "at most 1,048,576 bytes" in await _refused(http, "POST", "/tasks", 413, data=b"x" * ((1 << 20) + 1))
    assert "unknown field 'command'" in await _refused(http, "POST", "/tasks", 400, json={"workflow": "quick", "command": "x"})
    assert "priority must be a whole number" in await _refused(http, "POST", "/tasks", 400, json={"workflow": "quick", "priority": "9"})
    assert "inputs must be a JSON object" in await _refused(http, "POST", "/tasks", 400, json={"workflow": "quick", "inputs": [1]})
    assert "has no input 'colour'" in await _refused(http, "POST", "/tasks", 400, json={"workflow": "quick", "inputs": {"colour": "red"}})
    assert "no workflow named 'nope'" in await _refused(http, "POST", "/tasks", 400, json={"workflow": "nope"})
    # Files outside the project's workflows/ cannot be named, whatever the path's spelling.
    outside = tmp_path / "outside.yaml"
    outside.write_text(QUICK)
    (served.root / "workflows" / "link.yaml").symlink_to(outside)
    (served.root / "loose.yaml").write_text(QUICK)
    for path in (str(outside), "../outside.yaml", "workflows/../../outside.yaml", "workflows/link.yaml", "loose.yaml",
                 "/etc/passwd", "workflows/quick.txt/"):
        assert "must be a .yaml file in" in await _refused(http, "POST", "/tasks", 400, json={"workflow": path}), path
    (served.root / "workflows" / "broken.yaml").write_text("name: broken\nstages:\n  - {name: s, provider: shell}\n")
    async with http.post("/tasks", json={"workflow": "broken"}) as r:
        answer = await r.json()
    assert r.status == 400 and answer["errors"][0].startswith(f"{served.root / 'workflows' / 'broken.yaml'}:3:5: ")
    assert await _refused(http, "GET", "/tasks/7", 404) == "no task 7"
    assert "positive whole number" in await _refused(http, "GET", "/tasks/seven", 400)
    assert "limit must be from 1 to 1000" in await _refused(http, "GET", "/tasks", 400, params={"limit": "1001"})
    assert "status is one of" in await _refused(http, "GET", "/tasks", 400, params={"status": "done"})
    assert "since is an age" in await _refused(http, "GET", "/tasks", 400, params={"since": "soon"})
    assert "no route /tasks/1/nothing" in await _refused(http, "GET", "/tasks/1/nothing", 404)
    assert "does not take DELETE" in await _refused(http, "DELETE", "/tasks/1", 405)
    assert await served.coordinator.store.read(lambda c: c.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]) == 0
    task_id = await served.submit({"workflow": "quick"})
    await served.ended(task_id)
    assert "at most 1048576 bytes" in await _refused(http, "GET", f"/tasks/{task_id}/logs/say", 400,
                                                     params={"limit": str((1 << 20) + 1)})
    assert "has no stage 'build'" in await _refused(http, "GET", f"/tasks/{task_id}/logs/build", 404)
    assert "no attempt 2" in await _refused(http, "GET", f"/tasks/{task_id}/logs/say", 404, params={"attempt": "2"})


async def test_streams_beyond_the_limit_are_refused(served: Served) -> None:
    async with served.http.get("/events") as first, served.http.get("/events") as second:
        assert first.status == 200 and second.status == 200
        assert "streams are open" in await _refused(served.http, "GET", "/events", 429)

    async def released() -> None:  # the server learns within a second that both clients left
        while served.server.context.streams:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(released(), 10)
    async with served.http.get("/events", params={"kinds": "nothing.at.all"}) as again:  # closed ones give their place back
        assert again.status == 200
        assert await again.content.readline() == b": tacx events\n"
        assert await again.content.readline() == b"\n"
        assert await again.content.readline() == b": keepalive\n"  # an idle stream hears a heartbeat


# -- the token and the command line ---------------------------------------------------------------


def test_tacx_token_makes_a_private_file_and_refuses_a_loose_one(project: Project) -> None:
    first = project.tacx("token").stdout
    assert len(first.strip()) == 43 and project.tacx("token").stdout == first
    path = project.home / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rotated = project.tacx("token", "--rotate").stdout
    assert rotated != first and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    refused = project.tacx("token", check=2)
    assert refused.stdout == "" and "may have leaked; `tacx token --rotate`" in refused.stderr
    assert project.tacx("token", "--rotate").stdout.strip() != rotated.strip()


def test_the_token_file_is_never_readable_by_others(tmp_path: Path) -> None:
    home = Home(tmp_path / ".tacx")
    old = os.umask(0)  # the most permissive umask: the file is made 0600 all the same
    try:
        ensure_token(home)
    finally:
        os.umask(old)
    assert stat.S_IMODE(token_path(home).stat().st_mode) == 0o600
    assert [p.name for p in home.root.iterdir() if p.name.startswith(".token")] == []  # no temporary file left


def test_listen_addresses() -> None:
    assert (parse_listen("8080").host, parse_listen("8080").port) == ("127.0.0.1", 8080)
    assert parse_listen(":0").host == "127.0.0.1" and not parse_listen(":0").exposed
    assert parse_listen("[::1]:9").url() == "http://[::1]:9" and not parse_listen("[::1]:9").exposed
    assert parse_listen("0.0.0.0:80").exposed and parse_listen("example.org:80").exposed
    for bad in ("", "host:", "host:http", "1:2:3", "[::1]", "[nope]:1", "70000", "a b:1"):
        with pytest.raises(ListenError):
            parse_listen(bad)


def test_no_ui_listens_says_where_and_warns_beyond_loopback(project: Project) -> None:
    token = project.tacx("token").stdout.strip()
    proc = project.start("--no-ui", "--json", "--listen", "0.0.0.0:0")
    assert proc.stdout is not None and proc.stderr is not None
    announced = json.loads(proc.stdout.readline())
    assert announced["kind"] == "server.listening" and announced["url"].startswith("http://0.0.0.0:")
    warning = proc.stderr.readline()
    assert warning.startswith("tacx: WARNING: listening on http://0.0.0.0:")
    assert "anyone who can reach this port and has the token can start work" in warning
    assert proc.stderr.readline() == f"tacx: listening on {announced['url']} (token: tacx token)\n"
    port = int(announced["url"].rsplit(":", 1)[1])

    async def ask() -> tuple[int, int, list[Any]]:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            for _ in range(200):  # 503 while the coordinator recovers, then 200
                async with http.get("/health") as health:
                    if health.status == 200:
                        break
                await asyncio.sleep(0.05)
            async with http.get("/tasks") as anonymous:
                async with http.get("/tasks", headers={"Authorization": f"Bearer {token}"}) as tasks:
                    return health.status, anonymous.status, await tasks.json()

    assert asyncio.run(ask()) == (200, 401, [])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130


def test_listen_refusals_start_nothing(project: Project) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        refused = project.tacx("--no-ui", "--listen", f"127.0.0.1:{port}", check=2)
    finally:
        taken.close()
    assert refused.stderr == f"tacx: cannot listen on 127.0.0.1:{port}: the port is in use (another tacx? pick another port, or 0 for a free one)\n"
    assert not (project.home / "tacx.db").exists()  # no store opened, no coordinator started
    with_command = project.tacx("--listen", "8080", "ls", check=2)
    assert with_command.stderr == "tacx: --listen serves a coordinator: `tacx --no-ui --listen ...` or the dashboard, not `tacx ls`\n"
    bad = project.tacx("--no-ui", "--listen", "localhost:http", check=2)
    assert bad.stderr.count("\n") == 1 and "the port is a number from 0 to 65535" in bad.stderr
    lock = CoordinatorLock(Home(project.home))  # another coordinator holds the home: the viewer cannot serve
    lock.acquire()
    try:
        viewer = project.tacx("--listen", "127.0.0.1:0", check=2)
    finally:
        lock.release()
    assert viewer.stderr.startswith("tacx: --listen serves this home's coordinator, which runs elsewhere: another tacx coordinator holds")
    assert viewer.stderr.count("\n") == 1


async def test_requests_take_turns_in_the_api_share_of_the_loop() -> None:
    from tacx.server.context import ApiError, FairShare

    share = FairShare(0.5, waiting=1)
    async with share.turn():
        pass
    assert share._turn.locked()  # the next request waits out the engine's share of the time
    second = asyncio.create_task(share.turn().__aenter__())
    await asyncio.sleep(0)
    assert share.waiting == 1 and not second.done()
    with pytest.raises(ApiError) as refused:  # beyond the line's limit: refused, not queued
        async with share.turn():
            pass
    assert refused.value.status == 503
    await asyncio.wait_for(second, 5)  # then its turn comes


async def test_the_dashboard_serves_beside_its_coordinator_and_stops_with_it(project: Project) -> None:
    from tacx.settings import Settings
    from tacx.ui.app import make_app

    (project.root / "workflows").mkdir()
    (project.root / "workflows" / "quick.yaml").write_text(QUICK)
    home = Home(project.home)
    token = ensure_token(home)
    listener = listen("0.0.0.0:0")  # beyond loopback: the dashboard says so (traffic stays on loopback)
    local = f"http://127.0.0.1:{listener.sock.getsockname()[1]}"
    app = make_app(home, Settings(), refresh_seconds=0.2, listener=listener)
    async with app.run_test(size=(160, 40)) as pilot:
        assert app.server is not None and app.coordinator is not None
        said = [str(n.message) for n in app._notifications]
        assert any(m.startswith("WARNING: listening on http://0.0.0.0:") and "anyone who can reach" in m for m in said)
        assert any(m.startswith("listening on http://0.0.0.0:") for m in said)
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        app.coordinator.bus.subscribe(lambda e: ended.done() or ended.set_result(e.kind), kinds=["task.succeeded"])
        async with aiohttp.ClientSession(local, headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.post("/tasks", json={"workflow": "quick"}) as r:
                assert r.status == 201
            assert await asyncio.wait_for(ended, 30) == "task.succeeded"
            async with http.get("/tasks/1/logs/say") as r:
                assert await r.read() == b"hello\n"
        await pilot.press("q")
        for _ in range(400):
            if not app.is_running:
                break
            await asyncio.sleep(0.05)
    async with aiohttp.ClientSession(local) as http:
        with pytest.raises(aiohttp.ClientConnectionError):  # the server ended with the dashboard
            await http.get("/health")


async def test_a_bug_is_a_json_500_with_a_sentence_never_a_traceback(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from tacx.store import records

    def broken(conn: Any, task_id: int) -> None:
        raise RuntimeError("a bug in show_task")

    monkeypatch.setattr(records, "show_task", broken)
    async with served.http.get("/tasks/1") as r:
        body = await r.text()
    assert r.status == 500 and json.loads(body) == {
        "error": "tacx failed on this request (a bug; its traceback is in the home's crash.log)"}
    async with served.http.get("/tasks") as r:  # the server goes on
        assert r.status == 200


async def test_ipv6_loopback_serves(served: Served) -> None:
    try:
        found = listen("[::1]:0")
    except ListenError:
        pytest.skip("this machine has no IPv6 loopback")
    assert not found.address.exposed and found.warning() is None
    second = ApiServer(served.coordinator, found)
    await second.start()
    try:
        async with aiohttp.ClientSession(second.url, headers={"Authorization": f"Bearer {served.token}"}) as http:
            async with http.get("/tasks") as r:
                assert second.url.startswith("http://[::1]:") and r.status == 200 and await r.json() == []
    finally:
        await second.stop()
