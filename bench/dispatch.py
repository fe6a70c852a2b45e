"""Dispatch throughput: how fast tacx runs trivial tasks, against spawning them raw.

Measured (tacx): 1,000 tasks of a one-stage workflow (`provider: shell`, `run: "true"`)
run by the real headless engine in this process: the tasks are inserted in one
transaction into a fresh home (not timed), then `Coordinator(max_workers=8,
exit_when_idle=True).run()` is timed from start to idle. Every state transition goes
through the store, every daughter gets a log file and a status file, as in production.
Afterwards all 1,000 tasks must be `succeeded` in the database (the script fails loudly
otherwise), and the store's group-commit figures (writes, batches) are printed.

Baseline: `asyncio.create_subprocess_exec("true")` driven by 8 worker coroutines over
the same number of jobs, in the same run. For scale, a second baseline spawns
`/bin/sh -c true` the same way (tacx's shell provider runs /bin/sh -c).

The sides alternate, several rounds each, so they share the machine's noise; medians
are printed with the ratio tacx / raw. Goal: tacx >= 0.5 of raw `true`.

Each tacx task creates a log folder, a log file and a status file, so the speed of file
creation where the home lives matters; the script prints it (`--dir` picks the folder;
the default is bench/.runs: inside the project, where a real home lives).

    python bench/dispatch.py            # 1,000 tasks, 5 rounds (under a minute)
    python bench/dispatch.py --quick    # 300 tasks, 2 rounds (a smoke check)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tacx.store import records
from tacx.engine.coordinator import Coordinator
from tacx.home import Home
from tacx.settings import Settings
from tacx.store.database import connect, transaction
from tacx.store.writer import Store
from tacx.workflow.loader import load_workflow_text

# A home lives inside its project: the benchmarks put theirs in bench/.runs by default.
DEFAULT_DIR = Path(__file__).resolve().parent / ".runs"

WORKERS = 8
CGROUPS = "auto"  # --cgroups off measures tacx without a cgroup per daughter
GOAL = 0.5
WORKFLOW = """\
name: bench-true
description: One trivial shell stage.
stages:
  - name: noop
    provider: shell
    run: "true"
"""


@dataclass
class Timing:
    seconds: float  # wall clock
    cpu: float  # CPU seconds of this process (all its threads, not the daughters)
    children_cpu: float  # CPU seconds of the processes it reaped: the daughters (and tacx's keeper)


@dataclass
class TacxRun(Timing):
    writes: int  # store.write calls (reads through the writer count too)
    batches: int  # transactions they were grouped into


# -- tacx --------------------------------------------------------------------------------------


def queue_tasks(home: Home, count: int) -> None:
    """Insert `count` tasks of WORKFLOW in one transaction, as `tacx submit --each` does."""
    path = home.project_root / "bench-true.yaml"
    path.write_text(WORKFLOW)
    wf = load_workflow_text(WORKFLOW, str(path))
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            records.queue_workflow(
                conn, wf, path=str(path), text=WORKFLOW, project_root=str(home.project_root),
                inputs=[{}] * count, titles=[f"true #{i}" for i in range(count)],
            )
    finally:
        conn.close()


def check_all_succeeded(home: Home, count: int) -> None:
    """Fail loudly unless every task and every daughter ended well."""
    conn = connect(home.db_path, create=False)
    try:
        by_status = dict(conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall())
        daughters = conn.execute(
            "SELECT COUNT(*) FROM daughters WHERE ended_at IS NOT NULL AND exit_code = 0"
        ).fetchone()[0]
        errors = conn.execute(
            "SELECT id, error FROM tasks WHERE status != 'succeeded' ORDER BY id LIMIT 3"
        ).fetchall()
    finally:
        conn.close()
    if by_status != {"succeeded": count} or daughters != count:
        detail = "; ".join(f"task {row[0]}: {row[1]}" for row in errors)
        raise SystemExit(
            f"FAIL: expected {count} succeeded tasks and daughters, got tasks {by_status}, "
            f"{daughters} daughters exited 0. {detail}"
        )


async def run_engine(home: Home) -> TacxRun:
    store = await Store(home.db_path).open()
    try:
        coordinator = Coordinator(home, store, Settings(cgroups=CGROUPS), max_workers=WORKERS, exit_when_idle=True)
        cpu, children, start = time.process_time(), children_cpu(), time.perf_counter()
        await coordinator.run()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        children = children_cpu() - children
    finally:
        await store.close()
    return TacxRun(seconds, cpu, children, store.writes, store.batches)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_tacx(count: int, parent: str) -> TacxRun:
    """One round in a fresh home. Homes are removed only after the last round: deleting
    thousands of files makes the file system slow for a while (seen here on ext4 with
    `discard`), which would burden the next round rather than this one."""
    home = Home(Path(tempfile.mkdtemp(prefix="tacx-bench-dispatch-", dir=parent)) / ".tacx")
    queue_tasks(home, count)
    result = asyncio.run(run_engine(home))
    check_all_succeeded(home, count)
    return result


# -- baselines ---------------------------------------------------------------------------------


async def spawn_all(argv: list[str], count: int, workers: int = WORKERS) -> None:
    """Run `argv` `count` times, `workers` at a time."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
            )
            if await proc.wait() != 0:
                raise SystemExit(f"FAIL: baseline {argv} exited {proc.returncode}")

    await asyncio.gather(*(worker() for _ in range(workers)))


def bench_raw(argv: list[str], count: int) -> Timing:
    cpu, children, start = time.process_time(), children_cpu(), time.perf_counter()
    asyncio.run(spawn_all(argv, count))
    return Timing(time.perf_counter() - start, time.process_time() - cpu, children_cpu() - children)


def file_create_cost(parent: str | None, n: int = 200) -> float:
    """Microseconds to create one folder with one file in it, where the homes will live."""
    with tempfile.TemporaryDirectory(prefix="tacx-bench-fs-", dir=parent) as tmp:
        start = time.perf_counter()
        for i in range(n):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            (folder / "x.log").touch()
        return (time.perf_counter() - start) / n * 1e6


# -- reporting ---------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return count / seconds


def median_rate(count: int, times: list[float]) -> float:
    return rate(count, statistics.median(times))


def describe(name: str, count: int, runs: Sequence[Timing]) -> str:
    times = [r.seconds for r in runs]
    rates = ", ".join(f"{rate(count, t):.0f}" for t in times)
    cpu_ms = statistics.median(r.cpu for r in runs) / count * 1e3
    children_ms = statistics.median(r.children_cpu for r in runs) / count * 1e3
    return (
        f"{name:<24} {median_rate(count, times):7.0f} tasks/s  {cpu_ms:5.2f} ms CPU/task"
        f" + {children_ms:4.2f} children"
        f"   (median of {len(times)}: {rates})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke check: 300 tasks, 2 rounds")
    parser.add_argument("--tasks", type=int, help="tasks per round (default 1000; 300 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds per side (default 5; 2 with --quick)")
    parser.add_argument("--cgroups", choices=("auto", "off"), default="auto",
                        help="a cgroup per daughter where the machine allows it (auto, as tacx.yaml's default) or not")
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="where the temporary homes go (default: bench/.runs, inside the project, where a home lives)")
    args = parser.parse_args(argv)
    global CGROUPS
    CGROUPS = args.cgroups
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    session = tempfile.mkdtemp(prefix="dispatch-", dir=args.dir)
    try:
        return measure(args, session)
    finally:
        shutil.rmtree(session, ignore_errors=True)


def measure(args: argparse.Namespace, session: str) -> int:
    count = args.tasks or (300 if args.quick else 1000)
    rounds = args.rounds or (2 if args.quick else 5)
    logging.basicConfig(level=logging.WARNING, format="tacx: %(levelname)s %(name)s: %(message)s")

    print(f"dispatch: {count} trivial tasks, {WORKERS} workers, {rounds} round(s) per side, alternating")
    where = args.dir
    print(f"homes in {where}: {file_create_cost(args.dir):.0f} us to create a folder and a file there")
    bench_raw(["true"], 16)  # warm the page cache and the asyncio child watcher
    tacx_runs: list[TacxRun] = []
    raw_runs: list[Timing] = []
    sh_runs: list[Timing] = []
    same_runs: list[Timing] = []
    # The very daughter tacx starts for `run: true`: /bin/sh with the exit-status trap,
    # which writes a status file beside the log (so a restarted tacx learns how it ended).
    status_file = Path(session) / "raw.status"
    os.environ["TACX_STATUS_FILE"] = str(status_file)
    same_daughter = ["/bin/sh", "-c", "trap 'echo $? > \"$TACX_STATUS_FILE\"' EXIT; true"]
    sides: list[Callable[[], None]] = [
        lambda: tacx_runs.append(bench_tacx(count, session)),
        lambda: raw_runs.append(bench_raw(["true"], count)),
        lambda: sh_runs.append(bench_raw(["/bin/sh", "-c", "true"], count)),
        lambda: same_runs.append(bench_raw(same_daughter, count)),
    ]
    for round_no in range(rounds):
        for side in sides if round_no % 2 == 0 else sides[::-1]:
            side()

    tacx_times = [r.seconds for r in tacx_runs]
    raw_times = [r.seconds for r in raw_runs]
    sh_times = [r.seconds for r in sh_runs]
    print(describe("tacx (engine, 8 workers)", count, tacx_runs))
    print(describe("raw exec true", count, raw_runs))
    print(describe("raw exec /bin/sh -c true", count, sh_runs) + "   [for scale]")
    print(describe("raw exec tacx's daughter", count, same_runs) + "   [for scale: sh -c with the status trap]")
    print("(CPU/task: this process, event loop and helper threads; + children: the processes it reaped,"
          " the daughters and, since the keeper, tacx's keeper with them)")
    last = tacx_runs[-1]
    print(
        f"store group commit: {last.writes} writes in {last.batches} batches "
        f"({last.writes / max(last.batches, 1):.1f} writes per commit, last round)"
    )
    print(f"all {count} tasks succeeded in every round (checked in the database)")
    ratio = median_rate(count, tacx_times) / median_rate(count, raw_times)
    ratio_sh = median_rate(count, tacx_times) / median_rate(count, sh_times)
    ratio_same = median_rate(count, tacx_times) / median_rate(count, [r.seconds for r in same_runs])
    print(
        f"ratio tacx / raw true: {ratio:.2f}   (tacx / raw sh -c true: {ratio_sh:.2f};"
        f" tacx / the same daughter raw: {ratio_same:.2f})"
    )
    verdict = "MEETS" if ratio >= GOAL else "MISSES"
    print(f"verdict: {verdict} the goal (tacx >= {GOAL} of raw): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
