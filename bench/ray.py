"""What running a stage on Ray costs: the overhead per stage, on a local Ray head against the
local executor, in the same process on the same machine.

Measured: 200 one-second stages (a shell stage: it prints the time, sleeps a second, prints
the time), 8 at a time, run by the real headless engine in this process from a fresh home,
once with `executor: ray` (a Ray head started here with tests/rayhead.py, on loopback) and
once with the local executor. The sides alternate over the rounds. For each stage:

- submit to running: from the stage's start as committed (`stages.started_at`, just before
  tacx asks its executor for the daughter) to the first thing the daughter did (its own
  clock, printed as its first line);
- end to recorded: from the daughter's last act (its own clock, its last line) to its outcome
  committed (`stages.ended_at`): for Ray, the runner's report travelling back through Ray's log
  tail (Ray polls the log file every second).

Both sides run on this machine, so the clocks are one clock. Medians and p95 are printed
per side, with the ratio ray / local of the medians. Every stage must succeed (the script
fails loudly otherwise).

    python bench/ray.py                 # 200 stages, 1 round per side
    python bench/ray.py --stages 40 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# This file is named ray.py: its folder, first on sys.path when it runs, would hide Ray itself.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from tacx.engine.coordinator import Coordinator  # noqa: E402
from tacx.home import Home  # noqa: E402
from tacx.settings import Settings  # noqa: E402
from tacx.store import records  # noqa: E402
from tacx.store.database import connect, transaction  # noqa: E402
from tacx.store.writer import Store  # noqa: E402
from tacx.workflow.loader import load_workflow_text  # noqa: E402

WORKERS = 8
WORKFLOW = """\
name: bench-second
workspace: none
defaults: {{executor: {executor}}}
stages:
  - name: second
    provider: shell
    run: |
      date +%s.%N
      sleep 1
      date +%s.%N
"""


@dataclass
class Side:
    name: str
    to_running: list[float]
    to_recorded: list[float]
    wall: float


def queue(home: Home, executor: str, count: int) -> None:
    text = WORKFLOW.format(executor=executor)
    path = home.project_root / "bench-second.yaml"
    path.write_text(text)
    wf = load_workflow_text(text, str(path))
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            records.queue_workflow(conn, wf, path=str(path), text=text, project_root=str(home.project_root),
                                   inputs=[{}] * count, titles=[f"second #{i}" for i in range(count)])
    finally:
        conn.close()


async def run_engine(home: Home, settings: Settings) -> float:
    store = await Store(home.db_path).open()
    try:
        coordinator = Coordinator(home, store, settings, max_workers=WORKERS, exit_when_idle=True)
        start = time.perf_counter()
        await coordinator.run()
        return time.perf_counter() - start
    finally:
        await store.close()


def overheads(home: Home, count: int) -> tuple[list[float], list[float]]:
    conn = connect(home.db_path, create=False)
    try:
        rows = conn.execute(
            "SELECT s.task_id, s.status, s.started_at, s.ended_at, s.error FROM stages s ORDER BY s.task_id"
        ).fetchall()
    finally:
        conn.close()
    bad = [r for r in rows if r[1] != "succeeded"]
    if len(rows) != count or bad:
        raise SystemExit(f"FAIL: {len(bad)} of {len(rows)} stages did not succeed: {bad[:3]}")
    to_running, to_recorded = [], []
    for task_id, _, started_at, ended_at, _ in rows:
        first, last = (float(x) for x in home.stage_log(task_id, "second", 1).read_text().split())
        to_running.append(first - started_at)
        to_recorded.append(ended_at - last)
    return to_running, to_recorded


def one_side(name: str, executor: str, count: int, settings: Settings, parent: str) -> Side:
    home = Home(Path(tempfile.mkdtemp(prefix=f"tacx-bench-ray-{name}-", dir=parent)) / ".tacx")
    queue(home, executor, count)
    wall = asyncio.run(run_engine(home, settings))
    to_running, to_recorded = overheads(home, count)
    return Side(name, to_running, to_recorded, wall)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def describe(sides: list[Side]) -> str:
    to_running = [v for s in sides for v in s.to_running]
    to_recorded = [v for s in sides for v in s.to_recorded]
    walls = ", ".join(f"{s.wall:.1f}" for s in sides)
    return (f"submit->running median {statistics.median(to_running) * 1e3:7.0f} ms  p95 {p95(to_running) * 1e3:7.0f} ms"
            f" | end->recorded median {statistics.median(to_recorded) * 1e3:6.0f} ms  p95 {p95(to_recorded) * 1e3:6.0f} ms"
            f" | wall {walls} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from tests.rayhead import RayHead

    parent = tempfile.mkdtemp(prefix="tacx-bench-ray-")
    head = RayHead(num_cpus=WORKERS * 2)
    print(f"starting a local Ray head ({WORKERS * 2} CPUs) ...", flush=True)
    head.start()
    try:
        ray_settings = Settings.model_validate({
            "kill_grace": 2, "executors": {"ray": {"address": head.address, "shared_filesystem": True}},
        })
        local_settings = Settings(kill_grace=2)
        sides: dict[str, list[Side]] = {"local": [], "ray": []}
        for round_no in range(args.rounds):
            for name, executor, settings in (("local", "local", local_settings), ("ray", "ray", ray_settings)):
                side = one_side(name, executor, args.stages, settings, parent)
                sides[name].append(side)
                print(f"round {round_no + 1} {name:<5} {describe([side])}", flush=True)
    finally:
        head.stop()
        shutil.rmtree(parent, ignore_errors=True)
    print(f"\n{args.stages} one-second stages, {WORKERS} at a time, {args.rounds} round(s) per side:")
    for name in ("local", "ray"):
        print(f"{name:<5} {describe(sides[name])}")
    local_run = statistics.median(v for s in sides["local"] for v in s.to_running)
    ray_run = statistics.median(v for s in sides["ray"] for v in s.to_running)
    local_rec = statistics.median(v for s in sides["local"] for v in s.to_recorded)
    ray_rec = statistics.median(v for s in sides["ray"] for v in s.to_recorded)
    print(f"ratio ray / local (medians): submit->running {ray_run / local_run:.1f}x,"
          f" end->recorded {ray_rec / local_rec:.1f}x")


if __name__ == "__main__":
    main()
