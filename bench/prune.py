"""`tacx prune`: how long deleting thousands of ended tasks takes, with and without the
schema-4 index of daughters by task.

One store is seeded as bench/ui.py seeds it (10,000 tasks over 30 days, with stages, usage,
events and some logs), given a daughter row per stage as a real run leaves, and copied;
the copy loses the index. Each round prunes both copies afresh with the real command
(`tacx prune --older-than 1d` in a subprocess), alternating which goes first, and the
medians and their ratio are printed.

    python bench/prune.py              # 10,000 tasks, 3 rounds
    python bench/prune.py --quick      # 2,000 tasks, 2 rounds
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ui import seed_store  # noqa: E402
from tacx.home import Home  # noqa: E402


def seeded(folder: Path, tasks: int) -> tuple[Path, int]:
    """A project folder whose home holds `tasks` tasks; the number that ended over a day ago."""
    project = folder / "seed"
    project.mkdir()
    home = Home(project / ".tacx")
    seed_store(home, tasks)
    conn = sqlite3.connect(home.db_path)
    conn.execute(
        "INSERT INTO daughters (task_id, stage_id, stage, attempt, pid, create_time, argv, log_path, status_path,"
        " started_at, ended_at) SELECT task_id, id, name, 1, 1, 0, '[]', '', '', started_at, ended_at"
        " FROM stages WHERE started_at IS NOT NULL")
    conn.commit()
    old = conn.execute("SELECT COUNT(*) FROM tasks WHERE ended_at < ?", (time.time() - 86400,)).fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return project, old


def copy_of(seed: Path, where: Path, index: bool) -> Path:
    shutil.copytree(seed, where)
    if not index:
        conn = sqlite3.connect(where / ".tacx" / "tacx.db")
        conn.execute("DROP INDEX daughters_task")
        conn.commit()
        conn.close()
    return where


def prune(project: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tacx", "prune", "--older-than", "1d"], cwd=project, check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, 2 rounds")
    parser.add_argument("--tasks", type=int, help="tasks in the store (default 10,000)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3)")
    args = parser.parse_args()
    tasks = args.tasks or (2000 if args.quick else 10_000)
    rounds = args.rounds or (2 if args.quick else 3)
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="tacx-bench-prune-") as tmp:
        seed, old = seeded(Path(tmp), tasks)
        print(f"prune: {tasks:,} tasks, {old:,} of them ended over a day ago; {rounds} rounds")
        for round_ in range(rounds):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for index in order:
                project = copy_of(seed, Path(tmp) / f"r{round_}-{index}", index)
                times[index].append(prune(project))
                shutil.rmtree(project)
    with_index, without = statistics.median(times[True]), statistics.median(times[False])
    print(f"  without the index: median {without:.2f} s  ({', '.join(f'{t:.2f}' for t in times[False])})")
    print(f"  with the index:    median {with_index:.2f} s  ({', '.join(f'{t:.2f}' for t in times[True])})")
    print(f"  ratio without / with: {without / with_index:.1f}x")


if __name__ == "__main__":
    main()
