"""GET /metrics's cost: `EngineMetrics.exposition()` over a store of 100,000 tasks.

The store is seeded as bench/ui.py seeds it (tasks with stages, usage and events over 30
days); the metrics hear the events of 2,000 tasks first (20 workflows, 4 providers, 3
models), so the registry holds the series a busy server has. Then each scrape is timed,
rendered afresh (`uncached`: the store's counts read and the text made, what a scrape costs
at most, once a second under a hammering client) and within the 1 s cache (`cached`: the
last text served again); medians and the p95 are printed, with the two parts of a render
timed alone (the store's counts, the text), and the goal: well under 50 ms. The machine may
be shared: run it twice.

    python bench/metrics.py              # 100,000 tasks, 30 scrapes each way
    python bench/metrics.py --quick      # 10,000 tasks, 10 scrapes
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import generate_latest  # noqa: E402

from bench.ui import seed_store  # noqa: E402
from tacx.engine.coordinator import Coordinator  # noqa: E402
from tacx.home import Home  # noqa: E402
from tacx.server import metrics as metrics_module  # noqa: E402
from tacx.server.metrics import EngineMetrics  # noqa: E402
from tacx.store.writer import Store  # noqa: E402

GOAL_MS = 50.0


def hear_a_busy_day(coordinator: Coordinator, tasks: int) -> None:
    """Events of `tasks` tasks through the real bus, spread over workflows, providers, models."""
    providers, models = ("claude", "codex", "shell", "mock"), ("opus", "sonnet", "gpt")
    outcomes = ("succeeded", "failed", "timed_out")
    for task in range(1, tasks + 1):
        provider = providers[task % 4]
        coordinator.publish("task.started", task, workflow=f"workflow-{task % 20}")
        coordinator.publish("stage.started", task, "work", attempt=1, provider=provider)
        coordinator.publish("agent.output", task, "work", events=[("session", {"model": models[task % 3]})])
        coordinator.publish("stage.usage", task, "work", attempt=1, tokens={"input": 10, "output": 20, "cache_read": 300,
                                                                             "cache_write": 40}, cost_usd=0.01)
        coordinator.publish(f"stage.{outcomes[task % 3]}", task, "work", attempt=1, duration=task % 4000)
        coordinator.publish(f"task.{outcomes[task % 3]}", task)


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"  {name:<9} median {statistics.median(times) * 1e3:6.2f} ms   p95 {p95 * 1e3:6.2f} ms   ({len(times)} scrapes)"


async def measure(home: Home, scrapes: int) -> tuple[list[float], list[float], int]:
    store = await Store(home.db_path).open()
    try:
        coordinator = Coordinator(home, store)
        metrics = EngineMetrics(coordinator)
        metrics.attach()
        hear_a_busy_day(coordinator, 2000)
        size = len(await metrics.exposition())
        uncached, cached = [], []
        for _ in range(scrapes):
            metrics_module.CACHE_SECONDS = 0.0
            start = time.perf_counter()
            await metrics.exposition()
            uncached.append(time.perf_counter() - start)
            metrics_module.CACHE_SECONDS = 3600.0
            start = time.perf_counter()
            await metrics.exposition()
            cached.append(time.perf_counter() - start)
        counts, render = [], []  # the parts of an uncached scrape, on this thread
        for _ in range(scrapes):
            start = time.perf_counter()
            metrics.store_counts.counts()
            counts.append(time.perf_counter() - start)
            start = time.perf_counter()
            generate_latest(metrics.registry)
            render.append(time.perf_counter() - start)
        metrics.detach()
        print(summary("counts", counts))
        print(summary("text", render))
        return uncached, cached, size
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 tasks, 10 scrapes")
    args = parser.parse_args()
    tasks, scrapes = (10_000, 10) if args.quick else (100_000, 30)
    with tempfile.TemporaryDirectory(prefix="tacx-bench-metrics-") as folder:
        home = Home(Path(folder) / ".tacx")
        start = time.perf_counter()
        seed_store(home, tasks)
        print(f"seeded {tasks:,} tasks in {time.perf_counter() - start:.1f} s")
        uncached, cached, size = asyncio.run(measure(home, scrapes))
    print(f"exposition() at {tasks:,} tasks, {size:,} bytes of text (its parts above):")
    print(summary("uncached", uncached))
    print(summary("cached", cached))
    worst = statistics.median(uncached) * 1e3
    print(f"goal: under {GOAL_MS:g} ms: {'met' if worst < GOAL_MS else 'NOT met'} ({worst:.2f} ms uncached)")
    return 0 if worst < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
