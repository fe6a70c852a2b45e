"""The HTTP API under load: does serving it slow the engine?

Measured: the real headless engine (8 workers) runs trivial tasks (bench/dispatch.py's
one-stage `provider: shell`, `run: "true"` workflow, enough queued never to run dry) in
this process, with the API server listening on 127.0.0.1 (port 0) in the same loop, as
`tacx --no-ui --listen` runs it. After a second's warm-up, for `--seconds` (default 20):

- loaded: a client in a separate process (this script with --client) makes GET /tasks
  and GET /metrics requests, alternating, as fast as it can on `--connections` keep-alive
  connections (default 4), and reports requests per second and p50/p99 latency;
- unloaded: the same run with no client.

The dispatch rate is the tasks that succeeded in the window per second (counted from the
engine's `task.succeeded` events). The ratio printed is loaded / unloaded dispatch rate;
goal: >= 0.8. The runs alternate (unloaded first), `--rounds` each, and medians are
printed. Loopback only; every run is bounded in time.

    python bench/server.py                 # 20 s per run, 1 round of each
    python bench/server.py --seconds 5     # a smoke check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dispatch import DEFAULT_DIR, queue_tasks  # noqa: E402

from tacx.engine.coordinator import Coordinator  # noqa: E402
from tacx.engine.events import EngineEvent  # noqa: E402
from tacx.home import Home  # noqa: E402
from tacx.server.address import listen  # noqa: E402
from tacx.server.app import ApiServer  # noqa: E402
from tacx.server.context import Limits  # noqa: E402
from tacx.server.token import ensure_token  # noqa: E402
from tacx.settings import Settings  # noqa: E402
from tacx.store.writer import Store  # noqa: E402

WORKERS = 8
GOAL = 0.8
WARMUP_SECONDS = 1.0
TASKS_PER_SECOND_CEILING = 1500  # more than 8 workers on trivial tasks finish here: the queue never runs dry


@dataclass
class Run:
    loaded: bool
    seconds: float
    finished: int
    client: dict[str, float] | None

    @property
    def rate(self) -> float:
        return self.finished / self.seconds


# -- the client (a separate process) ----------------------------------------------------------


async def client(url: str, token: str, seconds: float, connections: int) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"}, connector=connector) as http:
        async with http.get("/tasks") as first:
            first.raise_for_status()
        print("ready", flush=True)
        deadline = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            nonlocal errors
            paths = ("/tasks", "/metrics") if n % 2 == 0 else ("/metrics", "/tasks")
            i = 0
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                async with http.get(paths[i % 2]) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - began)
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(connections)))
        took = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "per_second": len(latencies) / took,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
    }


# -- the engine and its server (this process) --------------------------------------------------


async def run_engine(home: Home, seconds: float, loaded: bool, connections: int, share: float) -> Run:
    token = ensure_token(home)
    store = await Store(home.db_path).open()
    coordinator = Coordinator(home, store, Settings(), max_workers=WORKERS)
    server = ApiServer(coordinator, listen("127.0.0.1:0"), limits=Limits(share=share))
    await server.start()
    finished = 0

    def count(event: EngineEvent) -> None:
        nonlocal finished
        finished += 1

    coordinator.bus.subscribe(count, kinds=["task.succeeded"])
    engine = asyncio.create_task(coordinator.run())
    report = None
    try:
        await asyncio.sleep(WARMUP_SECONDS)
        if loaded:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", server.url, token, str(seconds), str(connections),
                stdout=asyncio.subprocess.PIPE)
            assert proc.stdout is not None
            if await proc.stdout.readline() != b"ready\n":
                raise SystemExit("FAIL: the client did not start")
        start, began = finished, time.perf_counter()
        if loaded:
            out = await asyncio.wait_for(proc.stdout.read(), seconds + 30)
            await proc.wait()
            report = json.loads(out)
        else:
            await asyncio.sleep(seconds)
        took, done = time.perf_counter() - began, finished - start
        left = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM tasks WHERE status = 'queued'").fetchone()[0])
        if left == 0:
            raise SystemExit("FAIL: the queue ran dry during the window; raise TASKS_PER_SECOND_CEILING")
    finally:
        coordinator.stop("stop")
        await asyncio.wait_for(engine, 60)
        await server.stop()
        await store.close()
    return Run(loaded, took, done, report)


def one_run(parent: str, seconds: float, loaded: bool, connections: int, share: float) -> Run:
    home = Home(Path(tempfile.mkdtemp(prefix="tacx-bench-server-", dir=parent)) / ".tacx")
    queue_tasks(home, int(TASKS_PER_SECOND_CEILING * (seconds + WARMUP_SECONDS + 5)))
    return asyncio.run(run_engine(home, seconds, loaded, connections, share))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        url, token, seconds, connections = argv[1], argv[2], float(argv[3]), int(argv[4])
        print(json.dumps(asyncio.run(client(url, token, seconds, connections))), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="the window of each run (default 20)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each kind, alternating (default 1)")
    parser.add_argument("--connections", type=int, default=4, help="the client's concurrent connections (default 4)")
    parser.add_argument("--share", type=float, default=Limits().share,
                        help=f"the API's share of the loop (default {Limits().share}; 1: no turns, to see what they buy)")
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="where the temporary homes go (default bench/.runs)")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 600 or not 1 <= args.rounds <= 20 or not 1 <= args.connections <= 64 \
            or not 0.01 <= args.share <= 1:
        parser.error("--seconds 1..600, --rounds 1..20, --connections 1..64, --share 0.01..1")
    logging.basicConfig(level=logging.WARNING, format="tacx: %(levelname)s %(name)s: %(message)s")
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    session = tempfile.mkdtemp(prefix="server-", dir=args.dir)
    print(f"server: trivial tasks on {WORKERS} workers, {args.seconds:g} s windows, {args.rounds} round(s),"
          f" client: {args.connections} connections on 127.0.0.1 (GET /tasks, GET /metrics), API share {args.share:g}")
    runs: list[Run] = []
    try:
        for _ in range(args.rounds):
            for loaded in (False, True):
                run = one_run(session, args.seconds, loaded, args.connections, args.share)
                runs.append(run)
                extra = ""
                if run.client:
                    c = run.client
                    extra = (f"; client {c['per_second']:.0f} req/s, p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms,"
                             f" {c['errors']:.0f} errors of {c['requests']:.0f}")
                print(f"  {'loaded  ' if loaded else 'unloaded'}: {run.rate:6.1f} tasks/s ({run.finished} in {run.seconds:.1f} s){extra}")
    finally:
        shutil.rmtree(session, ignore_errors=True)
    unloaded = statistics.median(r.rate for r in runs if not r.loaded)
    loaded_runs = [r for r in runs if r.loaded]
    loaded = statistics.median(r.rate for r in loaded_runs)
    clients = [r.client for r in loaded_runs if r.client]
    print(f"requests served: {statistics.median(c['per_second'] for c in clients):.0f}/s,"
          f" p50 {statistics.median(c['p50_ms'] for c in clients):.1f} ms,"
          f" p99 {statistics.median(c['p99_ms'] for c in clients):.1f} ms (medians)")
    ratio = loaded / unloaded
    print(f"dispatch: {unloaded:.1f} tasks/s unloaded, {loaded:.1f} loaded; ratio {ratio:.2f}")
    print(f"verdict: {'MEETS' if ratio >= GOAL else 'MISSES'} the goal (dispatch under load >= {GOAL} of unloaded): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
