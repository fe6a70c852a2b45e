"""GitHub pick-up: how long from an issue labelled to its task started, and what an idle
source spends.

The real headless engine runs in this process with one GitHub source (poll: 5s) talking to
the fake `gh` of the tests (tests/fakes/gh: a repository kept in a JSON file, answering as
gh 2.63 does, 304s and rate-limit headers included). Each run labels a new issue at a random
moment of the poll cycle and times label -> `task.started` (the event the engine publishes
once the task's first stage has a worker). The expected figure is half a poll plus the cost
of one poll and one claim (about six gh calls); the ratio printed is the median latency
over the poll interval (at most 1.0 means picked up within one poll).

Then the source idles: every request it makes and every rate-limit point it spends are
counted and given per hour.

    python bench/pickup.py            # 20 runs, 60 s idle
    python bench/pickup.py --quick    # 5 runs, 15 s idle
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tacx.engine.coordinator import Coordinator  # noqa: E402
from tacx.home import Home  # noqa: E402
from tacx.settings import Settings  # noqa: E402
from tacx.sources.config import GitHubSourceSettings  # noqa: E402
from tacx.sources.github import GitHubSource  # noqa: E402
from tacx.store.writer import Store  # noqa: E402
from tests.fakegh import FakeGitHub  # noqa: E402

POLL = 5.0
WORKFLOW = "name: quick\ninputs:\n  title: {required: true}\nstages:\n  - {name: say, provider: shell, run: 'true'}\n"


async def main(runs: int, idle: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="tacx-pickup-"))
    fake = FakeGitHub(folder / "gh.json", folder / "gh.log")
    os.environ.update(fake.env())
    os.environ.update(FakeGitHub.path_env(dict(os.environ)))
    home = Home(folder / ".tacx")
    (home.root / "workflows").mkdir(parents=True)
    (home.root / "workflows" / "quick.yaml").write_text(WORKFLOW)
    conf = GitHubSourceSettings(github="octo/widgets", workflow="quick", inputs={"title": "{{ issue.title }}"}, poll=POLL)
    source = GitHubSource(conf, home="bench")
    store = await Store(home.db_path).open()
    coordinator = Coordinator(home, store, Settings(), sources=[source])
    started: dict[int, float] = {}
    coordinator.bus.subscribe(lambda e: started.setdefault(e.task_id or 0, time.monotonic()), kinds=("task.started",))
    engine = asyncio.create_task(coordinator.run())
    await asyncio.sleep(1.0)
    latencies = []
    for i in range(runs):
        await asyncio.sleep(random.uniform(0, POLL))
        number = await asyncio.to_thread(fake.add_issue, f"issue {i}")
        labelled = time.monotonic()
        await asyncio.to_thread(fake.label, number, "tacx")
        while len(started) <= i:
            await asyncio.sleep(0.01)
        latencies.append(max(started.values()) - labelled)
        print(f"  run {i + 1}/{runs}: picked up in {latencies[-1]:.2f}s", flush=True)
    await asyncio.sleep(POLL * 2)  # the ends told back: the idle count starts quiet
    calls_before, rate_before = len(fake.calls()), fake.rate()["remaining"]
    await asyncio.sleep(idle)
    calls, spent = len(fake.calls()) - calls_before, rate_before - fake.rate()["remaining"]
    coordinator.stop()
    await engine
    await store.close()
    median = statistics.median(latencies)
    p90 = sorted(latencies)[max(0, int(len(latencies) * 0.9) - 1)]
    print(f"pick-up latency (label -> task started), {runs} runs, poll {POLL:g}s: median {median:.2f}s,"
          f" p90 {p90:.2f}s, min {min(latencies):.2f}s, max {max(latencies):.2f}s")
    print(f"idle for {idle:g}s: {calls} requests ({calls * 3600 / idle:.0f} per hour),"
          f" {spent} rate-limit points spent ({spent * 3600 / idle:.0f} per hour)")
    print(f"ratio median latency / poll interval: {median / POLL:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(5 if args.quick else 20, 15.0 if args.quick else 60.0))
