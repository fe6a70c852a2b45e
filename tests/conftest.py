"""Shared fixtures: a project folder with its own home, and the real `tacx` command."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def _python_first_on_path() -> None:
    """`python3` on PATH is this interpreter for everything the tests start (the fake agent
    CLIs are `#!/usr/bin/env python3` scripts): a version manager's shim in front of the real
    one costs a shell and a lookup, about 0.1 s, on each of the suite's thousand launches."""
    folder = Path(tempfile.mkdtemp(prefix="tacx-tests-bin-"))
    for name in ("python3", "python"):
        (folder / name).symlink_to(sys.executable)
    os.environ["PATH"] = str(folder) + os.pathsep + os.environ.get("PATH", "")


_python_first_on_path()


class Project:
    """A project root with `.tacx/` as its home; runs `python -m tacx` against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / ".tacx"
        # Not TACX_*; nor what forces colour on a pipe (tests read tacx's plain output).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TACX_") and k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
        self.env["TACX_HOME"] = str(self.home)
        self.env["PYTHONPATH"] = str(REPO) + os.pathsep + self.env.get("PYTHONPATH", "")
        self._background: list[subprocess.Popen[str]] = []

    def workflow(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    def tacx(self, *args: str, timeout: float = 60, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "tacx", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check is not None and proc.returncode != check:
            raise AssertionError(
                f"tacx {' '.join(args)} exited {proc.returncode}, expected {check}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        """A background tacx (a coordinator), stopped at the end of the test."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "tacx", *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._background.append(proc)
        return proc

    def submit(self, workflow: str, *args: str) -> int:
        return int(self.tacx("submit", workflow, *args).stdout.split()[0])

    def show(self, task_id: int) -> dict[str, Any]:
        return json.loads(self.tacx("show", str(task_id), "--json").stdout)

    def ls(self) -> list[dict[str, Any]]:
        """Every task, oldest first (`tacx ls` lists the newest first)."""
        return sorted(json.loads(self.tacx("ls", "--json").stdout), key=lambda t: t["id"])

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.home / "tacx.db", timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        conn = self.db()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def marked_processes(self) -> list[psutil.Process]:
        """Live processes carrying this home's daughter marker."""
        prefix = f"{self.home}#"
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get("TACX_DAUGHTER", "").startswith(prefix):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def keepers(self) -> list[psutil.Process]:
        """Live keepers of this home (the processes that are the daughters' parent)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("TACX_KEEPER") == str(self.home) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def stop_background(self) -> None:
        for proc in self._background:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for proc in self.marked_processes():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def wait_for(predicate: Callable[[], Any], timeout: float = 20, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


# The fake agent CLIs need no credentials, but tacx does not start an agent that is surely
# logged out (tacx/agents/login.py): every test runs as a user whose agents hold a key.
FAKE_KEYS = {"ANTHROPIC_API_KEY": "sk-ant-test", "CODEX_API_KEY": "sk-test", "GEMINI_API_KEY": "test-key",
             "OPENAI_API_KEY": "sk-test"}


@pytest.fixture(autouse=True)
def agent_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    root.mkdir()
    p = Project(root)
    yield p
    p.stop_background()


# A real local Ray head per test module that asks for it (skipped where Ray is not installed).
from tests.rayhead import ray_head  # noqa: E402,F401
