"""Load and hostile input: worker limits under 300 tasks, floods of output, injection."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from tests.conftest import Project


def test_300_tasks_never_more_than_4_daughters(project: Project) -> None:
    running = project.root / "running"
    running.mkdir()
    seen = project.root / "seen.log"
    project.workflow("tick", f"""
        name: tick
        stages:
          - name: s
            provider: shell
            run: |
              touch {running}/$$
              ls {running} | wc -l >> {project.root}/concurrency.log
              echo "$TACX_TASK_ID" >> {seen}
              sleep 0.01
              rm {running}/$$
    """)
    lines = "\n".join(json.dumps({}) for _ in range(300))
    (project.root / "many.jsonl").write_text(lines + "\n")
    ids = project.tacx("submit", "tick.yaml", "--each", "many.jsonl").stdout.split()
    assert len(ids) == 300
    project.tacx("--no-ui", "--exit-when-idle", "--max-workers", "4", timeout=300)
    tasks = project.ls()
    assert len(tasks) == 300 and {t["status"] for t in tasks} == {"succeeded"}
    # Inside the daughters: never more than 4 alive at once.
    assert max(int(n) for n in (project.root / "concurrency.log").read_text().split()) <= 4
    # As recorded by tacx: [spawn, reap] intervals never overlap more than 4 deep.
    edges = []
    for started, ended in project.query("SELECT started_at, ended_at FROM daughters"):
        edges += [(started, 1), (ended, -1)]
    depth = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        depth += step
        peak = max(peak, depth)
    assert 1 <= peak <= 4
    # None ran twice.
    runs = seen.read_text().split()
    assert len(runs) == 300 and len(set(runs)) == 300
    assert project.query("SELECT MAX(attempt) FROM stages")[0][0] == 1


FLOOD = r'''
import os, sys
out = sys.stdout.buffer
line = b"%07d the quick brown fox jumps over the lazy dog\n"
for i in range(300_000):              # ~15 MB of ordinary lines
    out.write(line % i)
out.write(b"x" * (10 * 2**20) + b"\n")  # one 10 MB line
bad = bytes(range(256)) * 4 + b"\xff\xfe\xc3\x28\xa0\xa1\n"
for i in range(24_000):               # ~25 MB with invalid UTF-8
    out.write(bad)
out.write(b"last \xff line")
'''


def expected_flood() -> bytes:
    namespace: dict[str, object] = {}

    class Sink:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.parts.append(data)

    sink = Sink()

    class FakeStdout:
        buffer = sink

    real = sys.stdout
    sys.stdout = FakeStdout  # type: ignore[assignment]
    try:
        exec(FLOOD, namespace)
    finally:
        sys.stdout = real
    return b"".join(sink.parts)


def test_flood_with_a_huge_line_and_invalid_utf8(project: Project) -> None:
    project.workflow("flood", "name: flood\nstages:\n  - name: s\n    provider: python\n    run: |\n"
                     + "".join(f"      {line}\n" for line in FLOOD.strip().splitlines()))
    proc = project.start("run", "flood.yaml", "--no-ui")
    peak = 0
    tacx = psutil.Process(proc.pid)
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tacx.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        done.set()
        watcher.join()
    expected = expected_flood()
    assert len(expected) > 50_000_000
    log = project.home / "logs" / "1" / "s.1.log"
    assert log.stat().st_size == len(expected)
    assert hashlib.sha256(log.read_bytes()).digest() == hashlib.sha256(expected).digest()
    assert peak < 150 * 2**20, f"tacx peaked at {peak / 2**20:.0f} MB"
    stage = project.show(1)["stages"][0]
    assert stage["status"] == "succeeded"
    assert stage["result"] == "last \ufffd line"
    # `tacx logs` gives back every byte.
    out = subprocess.run([sys.executable, "-m", "tacx", "logs", "1"], env=project.env, capture_output=True, check=True)
    assert hashlib.sha256(out.stdout).digest() == hashlib.sha256(expected).digest()


INJECTIONS = ["$(touch pwned)", '"; touch pwned; "', "`touch pwned`", "'; touch pwned; '", "a\ntouch pwned"]


def test_inputs_never_execute(project: Project) -> None:
    project.workflow("inject", """
        name: inject
        title: "{{ inputs.x }}"
        inputs:
          x: {required: true}
        stages:
          - name: sh
            provider: shell
            env: {COPY: "{{ inputs.x }}"}
            run: 'printf "%s|%s\\n" "$TACX_INPUT_X" "$COPY"'
          - name: bash
            provider: bash
            run: 'echo "$TACX_INPUT_X"; eval_me="$TACX_INPUT_X"; echo "${eval_me}"'
          - name: py
            provider: python
            run: |
              import os
              print(os.environ["TACX_INPUT_X"])
    """)
    for value in INJECTIONS:
        project.tacx("run", "inject.yaml", "-i", f"x={value}", "--no-ui")
    (project.root / "each.jsonl").write_text("".join(json.dumps({"x": v}) + "\n" for v in INJECTIONS))
    project.tacx("submit", "inject.yaml", "--each", "each.jsonl")
    project.tacx("--no-ui", "--exit-when-idle")
    tasks = project.ls()
    assert len(tasks) == 2 * len(INJECTIONS)
    assert {t["status"] for t in tasks} == {"succeeded"}
    for task in tasks:
        shown = project.show(task["id"])
        value = shown["inputs"]["x"]
        first_line = value.splitlines()[0]
        assert task["title"] == first_line
        sh, bash, py = (s["result"] for s in shown["stages"])
        assert py == value.splitlines()[-1]
        log = (project.home / "logs" / str(task["id"]) / "sh.1.log").read_text()
        assert log == f"{value}|{value}\n"
    assert not list(Path(project.root).rglob("pwned"))
    assert not Path("pwned").exists()
