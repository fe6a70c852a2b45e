"""Output capture: a daughter writing 200 MB to stdout as fast as it can, through tacx and
through a plain pipe into `cat`.

The generator is `dd if=/dev/zero bs=1000000 count=200 status=none`: exactly 200,000,000
bytes in 1 MB writes, quicker than `head -c` (8 KiB writes), so the generator is not what
is measured. The same generator runs on every side:

- tacx, command line: `tacx run WF.yaml --no-ui --home TMP` in a subprocess, wall clock
  from spawn to exit. The stage's log must be exactly 200,000,000 bytes. tacx's peak RSS
  is its VmHWM (kernel high-water mark) from /proc/<pid>/status, polled every 20 ms until
  it exits; the rusage of the exited process (max over tacx and its daughters) is shown too.
- tacx, in process: the same one-task workflow run by `Coordinator(...).run()` in this
  process, timed from start to idle, so the figure reflects capture speed without tacx's
  fixed startup cost (Python imports, ~0.3 s).
- baseline: `sh -c 'GENERATOR | cat > FILE'` in a subprocess, wall clock.

Nothing is subtracted: every side includes its own process startup (for the command line,
that is a whole Python interpreter and tacx's imports). The sides alternate, several rounds
each; medians are printed with the ratios to the baseline.
Goals: tacx >= 0.8 of the baseline's rate; tacx's peak RSS < 150 MB.

    python bench/output.py            # 15 rounds per side (about 15 s)
    python bench/output.py --quick    # 3 rounds per side (a smoke check)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tacx.store import records
from tacx.engine.coordinator import Coordinator
from tacx.home import Home
from tacx.settings import Settings
from tacx.store.database import connect, transaction
from tacx.store.writer import Store
from tacx.workflow.loader import load_workflow_text

# A home lives inside its project: the benchmarks put theirs in bench/.runs by default.
DEFAULT_DIR = Path(__file__).resolve().parent / ".runs"

MB = 1_000_000
TOTAL_BYTES = 200 * MB
GENERATOR = f"dd if=/dev/zero bs={MB} count={TOTAL_BYTES // MB} status=none"
GOAL_RATIO = 0.8
GOAL_RSS_MB = 150.0
POLL_SECONDS = 0.02
STAGE = "flood"
WORKFLOW = f"""\
name: bench-output
description: One shell stage writing {TOTAL_BYTES:,} bytes to stdout.
stages:
  - name: {STAGE}
    provider: shell
    run: "{GENERATOR}"
"""


@dataclass
class CliRun:
    seconds: float
    peak_rss: int  # bytes: VmHWM of the tacx process
    rusage_max_rss: int  # bytes: ru_maxrss of tacx and its daughters


# -- shared helpers ----------------------------------------------------------------------------


def stage_log(home: Home) -> Path:
    return home.stage_log(1, STAGE, 1)


def check_size(path: Path, what: str) -> None:
    size = path.stat().st_size if path.exists() else -1
    if size != TOTAL_BYTES:
        raise SystemExit(f"FAIL: {what}: {path} has {size:,} bytes, expected {TOTAL_BYTES:,}")


def tacx_command() -> list[str]:
    exe = shutil.which("tacx")
    return [exe] if exe else [sys.executable, "-m", "tacx"]


# -- tacx on the command line ------------------------------------------------------------------


def read_hwm(pid: int) -> int:
    """The process's peak resident set (VmHWM) in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def watch_peak(pid: int, stop: threading.Event, out: list[int]) -> None:
    """Poll VmHWM every POLL_SECONDS until stopped; VmHWM never falls, so the last is the peak."""
    peak = 0
    while not stop.is_set():
        peak = max(peak, read_hwm(pid))
        stop.wait(POLL_SECONDS)
    out.append(peak)


def bench_cli(parent: str | None) -> CliRun:
    with tempfile.TemporaryDirectory(prefix="tacx-bench-output-", dir=parent) as tmp:
        workflow = Path(tmp) / "bench-output.yaml"
        workflow.write_text(WORKFLOW)
        home = Home(Path(tmp) / ".tacx")
        console = Path(tmp) / "console.txt"
        argv = [*tacx_command(), "run", str(workflow), "--no-ui", "--home", str(home.root)]
        with open(console, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=tmp, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            stop, peak = threading.Event(), []
            watcher = threading.Thread(target=watch_peak, args=(proc.pid, stop, peak))
            watcher.start()
            _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves, for its rusage
            seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            stop.set()
            watcher.join()
        if proc.returncode != 0:
            raise SystemExit(f"FAIL: {shlex.join(argv)} exited {proc.returncode}:\n{console.read_text()}")
        check_size(stage_log(home), "tacx run")
        return CliRun(seconds, peak[0], usage.ru_maxrss * 1024)


# -- tacx in this process ----------------------------------------------------------------------


def queue_one(home: Home) -> None:
    path = home.project_root / "bench-output.yaml"
    path.write_text(WORKFLOW)
    conn = connect(home.db_path)
    try:
        with transaction(conn):
            records.queue_workflow(
                conn, load_workflow_text(WORKFLOW, str(path)), path=str(path), text=WORKFLOW,
                project_root=str(home.project_root), inputs=[{}], titles=["flood"],
            )
    finally:
        conn.close()


async def run_engine(home: Home) -> float:
    store = await Store(home.db_path).open()
    try:
        coordinator = Coordinator(home, store, Settings(), max_workers=1, exit_when_idle=True)
        start = time.perf_counter()
        await coordinator.run()
        return time.perf_counter() - start
    finally:
        await store.close()


def bench_engine(parent: str | None) -> float:
    with tempfile.TemporaryDirectory(prefix="tacx-bench-output-", dir=parent) as tmp:
        home = Home(Path(tmp) / ".tacx")
        queue_one(home)
        seconds = asyncio.run(run_engine(home))
        conn = connect(home.db_path, create=False)
        status = conn.execute("SELECT status FROM tasks WHERE id = 1").fetchone()[0]
        conn.close()
        if status != "succeeded":
            raise SystemExit(f"FAIL: in-process task ended {status}")
        check_size(stage_log(home), "tacx in process")
    return seconds


# -- baseline --------------------------------------------------------------------------------------


def bench_cat(parent: str | None) -> float:
    with tempfile.TemporaryDirectory(prefix="tacx-bench-output-", dir=parent) as tmp:
        target = Path(tmp) / "out"
        start = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", f"{GENERATOR} | cat > {shlex.quote(str(target))}"], check=True)
        seconds = time.perf_counter() - start
        check_size(target, "baseline")
    return seconds


# -- reporting ---------------------------------------------------------------------------------


def mb_per_s(seconds: float) -> float:
    return TOTAL_BYTES / MB / seconds


def describe(name: str, times: list[float]) -> str:
    median = statistics.median(times)
    spread = f"{mb_per_s(max(times)):.0f}-{mb_per_s(min(times)):.0f}"
    return f"{name:<34} {mb_per_s(median):6.0f} MB/s  {median:6.3f} s   (median of {len(times)}; range {spread} MB/s)"


def verdict(name: str, ok: bool) -> str:
    return f"{name} {'MEETS' if ok else 'MISSES'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke check: 3 rounds per side")
    parser.add_argument("--rounds", type=int, help="rounds per side (default 15; 3 with --quick)")
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="where the temporary homes and files go (default: bench/.runs, inside the project)")
    args = parser.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    rounds = args.rounds or (3 if args.quick else 15)
    logging.basicConfig(level=logging.WARNING, format="tacx: %(levelname)s %(name)s: %(message)s")

    print(f"output: {TOTAL_BYTES:,} bytes from `{GENERATOR}`, {rounds} round(s) per side, alternating")
    print(f"files in {args.dir}; every side includes its process startup")
    cli: list[CliRun] = []
    engine: list[float] = []
    cat: list[float] = []
    sides: list[Callable[[], None]] = [
        lambda: cli.append(bench_cli(args.dir)),
        lambda: engine.append(bench_engine(args.dir)),
        lambda: cat.append(bench_cat(args.dir)),
    ]
    bench_cat(args.dir)  # warm the page cache and the file system
    for round_no in range(rounds):
        for side in sides if round_no % 2 == 0 else sides[::-1]:
            side()

    cli_times = [r.seconds for r in cli]
    print(describe("tacx run (command line)", cli_times))
    print(describe("tacx engine (in process)", engine))
    print(describe("sh -c 'GENERATOR | cat > file'", cat))
    peak_mb = max(r.peak_rss for r in cli) / 2**20
    rusage_mb = max(r.rusage_max_rss for r in cli) / 2**20
    print(f"tacx peak RSS: {peak_mb:.1f} MiB (VmHWM of `tacx run`, worst round; "
          f"rusage max of tacx and its daughters: {rusage_mb:.1f} MiB)")
    print(f"every log was exactly {TOTAL_BYTES:,} bytes")
    cat_median = statistics.median(cat)
    ratio_cli = cat_median / statistics.median(cli_times)
    ratio_engine = cat_median / statistics.median(engine)
    print(f"ratio to cat: command line {ratio_cli:.2f}, in process {ratio_engine:.2f}")
    print(
        "verdict: "
        + ", ".join([
            verdict(f"in process {ratio_engine:.2f}", ratio_engine >= GOAL_RATIO),
            verdict(f"command line {ratio_cli:.2f}", ratio_cli >= GOAL_RATIO),
        ])
        + f" the goal (>= {GOAL_RATIO} of cat); "
        + verdict(f"peak RSS {peak_mb:.0f} MiB", peak_mb < GOAL_RSS_MB)
        + f" the goal (< {GOAL_RSS_MB:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
