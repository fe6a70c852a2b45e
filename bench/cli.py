"""How long the reading commands take from start to exit: `tacx ls`, `tacx ls --json`,
`tacx show 1`, `tacx --help` — what scripts, a shell's completion (one tacx per TAB) and the
tests run hundreds of times.

A home is seeded as bench/ui.py seeds it (1,000 tasks). Each command runs as a new process
(`python -m tacx ...`), `--runs` times, alternating between this checkout and, with
`--against DIR`, another checkout of tacx (its folder put first on PYTHONPATH; its own copy
of the home, at schema 3), so both sides meet the same machine; medians and the ratio are
printed.

    python bench/cli.py                          # this checkout alone
    python bench/cli.py --against /tmp/base      # this checkout against another
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.ui import seed_store  # noqa: E402
from tacx.home import Home  # noqa: E402

COMMANDS = (["ls"], ["ls", "--json"], ["show", "1"], ["--help"])


def once(tree: Path, args: list[str], project: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tacx", *args], cwd=project, env=env, check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command and side (default 10)")
    parser.add_argument("--against", type=Path, help="another checkout of tacx to compare with")
    args = parser.parse_args()
    sides = {"this": HERE} | ({"other": args.against.resolve()} if args.against else {})
    with tempfile.TemporaryDirectory(prefix="tacx-bench-cli-") as tmp:
        projects = {side: Path(tmp) / side for side in sides}
        seed_store(Home(projects["this"] / ".tacx"), 1000)
        if "other" in sides:  # its own copy, at the schema it knows (an older tacx refuses a newer one)
            shutil.copytree(projects["this"], projects["other"])
            conn = sqlite3.connect(projects["other"] / ".tacx" / "tacx.db")
            conn.execute("DROP INDEX IF EXISTS daughters_task")
            conn.execute("PRAGMA user_version = 3")
            conn.commit()
            conn.close()
        print(f"cli: 1,000 tasks; {args.runs} runs per command and side, alternating")
        for command in COMMANDS:
            times: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(args.runs):
                for side, tree in sides.items():
                    times[side].append(once(tree, command, projects[side]))
            medians = {side: statistics.median(values) for side, values in times.items()}
            line = "  ".join(f"{side} {m * 1000:.0f} ms" for side, m in medians.items())
            ratio = f"  ratio other / this: {medians['other'] / medians['this']:.2f}" if "other" in medians else ""
            print(f"  tacx {' '.join(command):<12} median {line}{ratio}")


if __name__ == "__main__":
    main()
