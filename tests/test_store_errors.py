"""Whatever state the store is in, every command ends: exit 2 and one sentence naming the
file and what to do (a corrupt or truncated tacx.db, a folder in its place, a home that is
a file, read-only files and folders, a full disk, a lock held too long), and a bug is one
line with its traceback in crash.log (exit 70). A hang fails through the timeouts here."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import select
import signal
import json
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tacx.store.errors import StoreError
from tacx.store.writer import Store
from tests.conftest import Project

QUICK = """
    name: quick
    stages:
      - {name: one, provider: shell, run: "echo one"}
      - {name: two, provider: shell, run: "echo two"}
"""
PATCHED_MAIN = "\nfrom tacx.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"


def tacx(
    project: Project,
    *args: str,
    check: int = 2,
    prelude: str | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """The real CLI (with `prelude` run first to stand in for a disk or a bug), which must
    end with exit `check` and never show a traceback."""
    argv = ["-m", "tacx", *args] if prelude is None else ["-c", "import sys\n" + prelude + PATCHED_MAIN, *args]
    proc = subprocess.run(
        [sys.executable, *argv], check=False, cwd=project.root, env=project.env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=preexec_fn,
    )
    assert proc.returncode == check, f"tacx {' '.join(args)} exited {proc.returncode}, expected {check}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def said(proc: subprocess.CompletedProcess[str], *needles: str | Path) -> str:
    """The last line on stderr, which must carry every needle."""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tacx: "), proc.stderr
    for needle in needles:
        assert str(needle) in last, f"{needle!r} not in {last!r}"
    return last


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under folder with a hash of its bytes: to prove nothing was written."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def with_task(project: Project) -> Path:
    """A home whose store holds one queued task; the path of its tacx.db."""
    project.workflow("quick", QUICK)
    project.submit("quick.yaml")
    return project.home / "tacx.db"


# -- corrupt stores ------------------------------------------------------------------------


def corrupt(project: Project, kind: str) -> Path:
    db = project.home / "tacx.db"
    if kind == "random":
        project.home.mkdir()
        db.write_bytes(os.urandom(16384))
    elif kind == "truncated":
        with_task(project)
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    elif kind == "zero-header":
        with_task(project)
        with open(db, "r+b") as f:
            f.write(bytes(100))
    elif kind == "folder":
        db.mkdir(parents=True)
    project.workflow("quick", QUICK)
    return db


@pytest.mark.parametrize("kind", ["random", "truncated", "zero-header", "folder"])
def test_a_corrupt_store_is_named_with_its_remedy_and_left_as_it_is(project: Project, kind: str) -> None:
    db = corrupt(project, kind)
    before = snapshot(project.home)
    remedy = ("is a folder, not a database file", f"mv {db} {db}.broken") if kind == "folder" else (
        "is corrupt", f"mv {db} {db}.broken", "restore it from a backup")
    for args in (["ls"], ["show", "1"], ["submit", "quick.yaml"], ["--no-ui", "--exit-when-idle"], ["run", "quick.yaml", "--no-ui"]):
        said(tacx(project, *args), db, *remedy)
    after = snapshot(project.home)
    assert after.pop("lock", None) in (None, hashlib.sha256(b"").hexdigest())  # the coordinators' lock, released
    assert after == before


def test_every_command_ends_on_a_corrupt_store(project: Project) -> None:
    db = corrupt(project, "random")
    for args in (["logs", "1"], ["cancel", "1"], ["retry", "1"], ["pause"], ["resume"], ["providers"],
                 ["clean"], ["demo", "--no-ui"], ["--no-ui"]):
        said(tacx(project, *args), db, "is corrupt", "mv ")
    assert tacx(project, "validate", "quick.yaml", check=0)  # commands that need no store still work


def test_a_page_garbled_under_a_running_engine_stops_it(project: Project) -> None:
    """The file opens (its first pages are sound) but a page the engine needs to claim a
    task is not: the coordinator stops at once instead of retrying, says why, ends."""
    project.workflow("q", "name: q\ninputs: {title: {required: true}}\nstages:\n  - {name: a, provider: shell, run: 'echo a'}\n")
    each = project.root / "each.jsonl"
    each.write_text("".join(f'{{"title": "task {i} {"x" * 300}"}}\n' for i in range(300)))
    project.tacx("submit", "q.yaml", "--each", str(each))
    db = project.home / "tacx.db"
    with open(db, "r+b") as f:
        f.seek(db.stat().st_size // 2 // 4096 * 4096)
        f.write(b"\xff" * 4096)  # a page whose type byte no b-tree page has
    ran = tacx(project, "--no-ui", "--exit-when-idle")
    said(ran, db, "is corrupt", "mv ")
    said(tacx(project, "ls", "--json"), db, "is corrupt")
    crash_log = project.home / "crash.log"
    assert not crash_log.exists() or crash_log.read_text().count("Traceback") <= 20  # never a log that fills the disk


def test_the_dashboard_on_a_corrupt_store_says_so_before_taking_the_screen(project: Project) -> None:
    db = corrupt(project, "truncated")
    code, output = on_a_terminal(project, ["-m", "tacx"])
    assert code == 2, output
    assert "Traceback" not in output
    assert f"{db} is corrupt" in output and "mv " in output


def test_the_dashboard_ends_when_its_engine_cannot_open_the_store(project: Project) -> None:
    """Past the CLI's own check, the store refuses the engine inside the running app (a disk
    that filled meanwhile, say): Textual's traceback gives way to the sentence, exit 2."""
    prelude = (
        "import tacx.store.errors as errors, tacx.store.writer as writer\n"
        "async def refuse(self): raise errors.StoreError(f'{self.path} refused the engine: the test says so')\n"
        "writer.Store.open = refuse\n"
    )
    code, output = on_a_terminal(project, ["-c", "import sys\n" + prelude + PATCHED_MAIN])
    assert code == 2, output
    assert "Traceback" not in output
    assert f"tacx: {project.home / 'tacx.db'} refused the engine: the test says so" in output


def test_a_newer_schema_names_the_file(project: Project) -> None:
    db = with_task(project)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    said(tacx(project, "ls"), db, "newer", "upgrade tacx")
    said(tacx(project, "--no-ui", "--exit-when-idle"), db, "newer")


def test_a_store_of_each_older_schema_is_brought_forward_with_its_tasks(project: Project) -> None:
    """A home made by an earlier tacx (each schema version from 1 on) is migrated in place
    by the first command and keeps its tasks; rm then finds the version 4 index, and the
    reports the version 5 rollup of the usage it had."""
    from tacx.store.schema import MIGRATIONS, SCHEMA_VERSION

    for version in range(1, SCHEMA_VERSION):
        project.home.mkdir(exist_ok=True)
        db = project.home / "tacx.db"
        db.unlink(missing_ok=True)
        conn = sqlite3.connect(db)
        for script in MIGRATIONS[:version]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("INSERT INTO tasks (id, trace_id, workflow, workflow_path, workflow_text, workflow_hash, title,"
                     " inputs, status, project_root, created_at, ended_at)"
                     " VALUES (1, 't', 'w', 'w.yaml', 'name: w', 'h', ?, '{}', 'succeeded', ?, 1, 1)",
                     (f"from v{version}", str(project.root)))
        conn.execute("INSERT INTO stages (id, task_id, name, position, provider) VALUES (1, 1, 's', 0, 'codex')")
        conn.execute("INSERT INTO usage (task_id, stage_id, ts, model, input_tokens, cost_usd) VALUES (1, 1, 5, 'm', 7, 0.5)")
        conn.commit()
        conn.close()
        assert json.loads(tacx(project, "ls", "--json", check=0).stdout)[0]["title"] == f"from v{version}"
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        plan = conn.execute("EXPLAIN QUERY PLAN DELETE FROM daughters WHERE task_id IN (1)").fetchall()
        conn.close()
        assert "daughters_task" in str(plan), plan
        # Version 5: the usage written before is in the rollup the reports read.
        spent = json.loads(tacx(project, "report", "cost", "--by", "provider", "--json", check=0).stdout)
        assert [(r["key"], r["input"], r["cost_usd"], r["tasks"]) for r in spent] == [("codex", 7, 0.5, 1)]
        assert "task 1: deleted" in tacx(project, "rm", "1", check=0).stdout


# -- the home itself -------------------------------------------------------------------------------


def test_reading_a_home_without_a_store_makes_none(project: Project) -> None:
    for args in (["ls"], ["ls", "--json"], ["providers"], ["clean"]):
        tacx(project, *args, check=0)
    for args in (["show", "1"], ["logs", "1"], ["cancel", "1"], ["retry", "1"]):
        said(tacx(project, *args), "1" if args[0] in ("show", "logs") else project.home)
    assert not project.home.exists()


def test_a_home_that_is_a_file(project: Project) -> None:
    home = project.root / "not-a-folder"
    home.write_text("precious\n")
    project.env["TACX_HOME"] = str(home)
    project.workflow("quick", QUICK)
    for args in (["ls"], ["show", "1"], ["submit", "quick.yaml"], ["--no-ui", "--exit-when-idle"], ["run", "quick.yaml", "--no-ui"], ["cancel", "1"]):
        said(tacx(project, *args), home, "is a file, not a folder", "--home")
    assert home.read_text() == "precious\n"


def test_a_home_in_a_read_only_folder_is_refused_and_nothing_is_made(project: Project) -> None:
    project.workflow("quick", QUICK)
    parent = project.root / "shelf"
    parent.mkdir()
    project.env["TACX_HOME"] = str(parent / ".tacx")
    with read_only_mount(parent):
        for args in (["submit", "quick.yaml"], ["--no-ui", "--exit-when-idle"], ["run", "quick.yaml", "--no-ui"], ["pause"]):
            said(tacx(project, *args), parent / ".tacx", "read-only", "--home")
        assert tacx(project, "ls", check=0).stdout.strip() == "no tasks"
    assert not (parent / ".tacx").exists()


def test_a_home_in_a_folder_not_ours_is_refused(project: Project) -> None:
    project.workflow("quick", QUICK)
    parent = project.root / "theirs"
    parent.mkdir(mode=0o555)
    project.env["TACX_HOME"] = str(parent / ".tacx")
    said(tacx(project, "submit", "quick.yaml", preexec_fn=without_override()), parent, "permission denied", "--home")
    assert tacx(project, "ls", check=0, preexec_fn=without_override()).stdout.strip() == "no tasks"
    assert not (parent / ".tacx").exists()


def test_a_read_only_home_can_still_be_read(project: Project) -> None:
    db = with_task(project)
    project.tacx("--no-ui", "--exit-when-idle")  # the task runs: a log to read; tacx.db closed cleanly
    assert not Path(f"{db}-wal").exists()
    before = snapshot(project.home)
    with read_only_mount(project.home):
        assert "succeeded" in tacx(project, "ls", check=0).stdout
        assert tacx(project, "show", "1", "--json", check=0).stdout.startswith("{")
        assert tacx(project, "logs", "1", "one", check=0).stdout == "one\n"
        for args in (["submit", "quick.yaml"], ["retry", "1"], ["--no-ui", "--exit-when-idle"]):
            said(tacx(project, *args), project.home, "read-only file system", "make it writable")
    assert snapshot(project.home) == before


def test_a_read_only_home_with_changes_left_in_its_wal_says_it_cannot_read_them(project: Project) -> None:
    db = with_task(project)
    leave_a_wal(db)
    Path(f"{db}-shm").unlink()
    with read_only_mount(project.home):
        said(tacx(project, "ls"), db, f"{db.name}-wal", "make", "writable")


def test_a_read_only_home_with_its_wal_and_shm_reads_the_latest(project: Project) -> None:
    db = with_task(project)
    leave_a_wal(db)
    with read_only_mount(project.home):
        assert "changed in the wal" in tacx(project, "ls", check=0).stdout


def test_a_read_only_database_file(project: Project) -> None:
    db = with_task(project)
    db.chmod(0o444)
    nobody = without_override()
    assert "queued" in tacx(project, "ls", check=0, preexec_fn=nobody).stdout
    said(tacx(project, "submit", "quick.yaml", preexec_fn=nobody), db, "is read-only", f"chmod u+w {db}")
    said(tacx(project, "cancel", "1", preexec_fn=nobody), db, "is read-only")
    db.chmod(0o644)
    assert len(project.ls()) == 1


def test_an_unreadable_database_file(project: Project) -> None:
    db = with_task(project)
    db.chmod(0)
    nobody = without_override()
    for args in (["ls"], ["show", "1"], ["submit", "quick.yaml"]):
        said(tacx(project, *args, preexec_fn=nobody), db, "permission denied")


# -- a full disk ----------------------------------------------------------------------------------


def test_submit_on_a_full_disk_writes_nothing(project: Project, tiny_disk: Path) -> None:
    db = with_task(project)
    fill(tiny_disk)
    said(tacx(project, "submit", "quick.yaml"), db, "is full", "free space")
    (tiny_disk / "filler").unlink()
    assert [t["id"] for t in project.ls()] == [1]


def test_the_engine_stops_when_its_disk_fills_up(project: Project, tiny_disk: Path) -> None:
    project.workflow("fill", f"""
        name: fill
        stages:
          - {{name: fill, provider: bash, run: "head -c 5000000 /dev/zero > {tiny_disk}/filler; echo filled"}}
          - {{name: after, provider: bash, run: "echo after"}}
    """)
    ran = tacx(project, "run", "fill.yaml", "--no-ui")
    said(ran, project.home / "tacx.db", "is full", "free space")
    (tiny_disk / "filler").unlink()
    assert project.ls()[0]["status"] == "running"  # as after a crash: the next start recovers it


def test_the_engine_stops_when_the_database_cannot_grow(project: Project) -> None:
    """SQLITE_FULL without mounting anything: the engine's connection may not grow the file
    (max_page_count), so the first write that needs a new page fails like on a full disk."""
    project.workflow("quick", QUICK)
    for _ in range(10):
        project.submit("quick.yaml")
    prelude = (
        "import tacx.store.database as database, tacx.store.writer as writer\n"
        "configure = database.configure\n"
        "def no_growth(conn):\n"
        "    configure(conn)\n"
        "    conn.execute(f'PRAGMA max_page_count = {conn.execute(\"PRAGMA page_count\").fetchone()[0]}')\n"
        "database.configure = writer.configure = no_growth\n"
    )
    ran = tacx(project, "--no-ui", "--exit-when-idle", prelude=prelude)
    said(ran, project.home / "tacx.db", "cannot grow", "quota")
    assert {t["status"] for t in project.ls()} <= {"queued", "running", "succeeded"}  # the next start goes on


def test_optimize_failing_at_close_ends_the_run(project: Project) -> None:
    """The last statement before the connection closes fails (a genuine SQLITE_FULL): the
    run's outcome is already committed, the process ends and says why."""
    project.workflow("quick", QUICK)
    prelude = (
        "import tacx.store.writer as writer\n"
        "def full_at_close(conn):\n"
        "    conn.execute(f'PRAGMA max_page_count = {conn.execute(\"PRAGMA page_count\").fetchone()[0]}')\n"
        "    conn.execute('CREATE TABLE filler AS SELECT zeroblob(100000) AS b')\n"
        "writer._optimize = full_at_close\n"
    )
    ran = tacx(project, "run", "quick.yaml", "--no-ui", prelude=prelude)
    said(ran, project.home / "tacx.db", "cannot grow")
    assert project.ls()[0]["status"] == "succeeded"


# -- locks and threads ------------------------------------------------------------------------------


def test_a_write_lock_held_too_long(project: Project) -> None:
    db = with_task(project)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert "queued" in tacx(project, "ls", check=0).stdout  # readers are never blocked
        # SQLite's busy handler waits the whole busy timeout first: 0.3 s here, not tacx's 10 s.
        waited = tacx(project, "submit", "quick.yaml", prelude="import tacx.store.database as d\nd.BUSY_TIMEOUT_MS = 300\n")
        said(waited, db, "is locked", "another process", f"fuser {db}")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(project.ls()) == 1


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


def _ended_since(before: set[threading.Thread]) -> bool:
    """Every thread started since `before` ends on its own (aiosqlite's ends right after
    handing back its last result): a thread still running would hold the process."""
    for thread in _threads() - before:
        thread.join(timeout=30)
    return _threads() <= before


async def test_a_failed_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    (tmp_path / "tacx.db").mkdir()
    before = _threads()
    with pytest.raises(StoreError, match="is a folder"):
        await Store(tmp_path / "tacx.db").open()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tacx.db").write_bytes(b"x" * 4096)
    with pytest.raises(StoreError, match="is corrupt"):
        await Store(tmp_path / "bad" / "tacx.db").open()
    assert _ended_since(before)


def test_a_failed_open_ends_its_thread_before_the_loop_closes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosqlite's thread hands its last result to the loop: a command that fails at open
    and ends its loop at once must not leave the thread to die on 'Event loop is closed'."""
    (tmp_path / "tacx.db").mkdir()
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))

    async def open_it() -> None:
        await Store(tmp_path / "tacx.db").open()

    before = _threads()
    for _ in range(30):
        with pytest.raises(StoreError):
            asyncio.run(open_it())
    assert _ended_since(before)
    assert died == []


async def test_a_failed_close_leaves_no_thread_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tacx.store.writer

    def full(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        conn.execute("CREATE TABLE filler AS SELECT zeroblob(100000) AS b")

    before = _threads()
    store = await Store(tmp_path / "tacx.db").open()
    await store.write(lambda conn: conn.execute("INSERT INTO meta VALUES ('k', 'v')"))
    monkeypatch.setattr(tacx.store.writer, "_optimize", full)
    with pytest.raises(StoreError, match="cannot grow"):
        await store.close()
    assert _ended_since(before)
    assert store.failure is not None


async def test_a_write_the_disk_refuses_fails_with_its_cause_and_the_batch_goes_on(tmp_path: Path) -> None:
    """SQLite rolls back the whole transaction on SQLITE_FULL: the writes batched with the
    failing one fail with the same sentence (not 'no such savepoint'), later ones commit."""
    store = await Store(tmp_path / "tacx.db").open()
    try:
        pages = await store.read(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        await store.read(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
        small = store.write(lambda conn: conn.execute("INSERT INTO meta VALUES ('a', 'b')"))
        big = store.write(lambda conn: conn.execute("INSERT INTO meta VALUES ('big', zeroblob(100000))"))
        results = await asyncio.gather(small, big, return_exceptions=True)
        assert all(isinstance(r, StoreError) and "cannot grow" in str(r) for r in results), results
        await store.write(lambda conn: conn.execute("INSERT INTO meta VALUES ('c', 'd')"))
        keys = await store.read(lambda conn: [r[0] for r in conn.execute("SELECT key FROM meta WHERE key IN ('a', 'big', 'c')")])
        assert keys == ["c"]
        assert store.failure is not None and "cannot grow" in str(store.failure)
    finally:
        await store.read(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        await store.close()


# -- the last resort -------------------------------------------------------------------------------


BUG = "import tacx.cli.tasks as tasks\ndef boom(home, args): raise RuntimeError('a bug in ls')\ntasks.cmd_ls = boom\n"


def test_a_bug_is_one_line_and_the_traceback_goes_to_crash_log(project: Project) -> None:
    with_task(project)
    ran = tacx(project, "ls", prelude=BUG, check=70)
    crash_log = project.home / "crash.log"
    assert ran.stderr.strip() == (
        f"tacx: internal error (a bug in tacx): RuntimeError: a bug in ls; the details are in {crash_log}"
    )
    logged = crash_log.read_text()
    assert "Traceback" in logged and "RuntimeError: a bug in ls" in logged and "tacx ls" in logged


def test_a_bug_without_a_home_goes_to_the_temp_folder_and_makes_no_home(project: Project) -> None:
    fallback = Path(tempfile.gettempdir()) / f"tacx-crash-{os.getuid()}.log"
    before = fallback.stat().st_size if fallback.exists() else 0
    ran = tacx(project, "ls", prelude=BUG, check=70)
    assert str(fallback) in ran.stderr
    assert "RuntimeError: a bug in ls" in fallback.read_bytes()[before:].decode()
    assert not project.home.exists()


@pytest.mark.parametrize(("raised", "code"), [("KeyboardInterrupt()", 130), ("SystemExit(5)", 5)])
def test_the_last_resort_hides_no_interrupt_and_no_exit(project: Project, raised: str, code: int) -> None:
    with_task(project)
    prelude = f"import tacx.cli.tasks as tasks\ndef stop(home, args): raise {raised}\ntasks.cmd_ls = stop\n"
    ran = tacx(project, "ls", prelude=prelude, check=code)
    assert "internal error" not in ran.stderr
    assert not (project.home / "crash.log").exists()


def test_a_bug_in_the_dashboard_is_one_line_and_crash_log(project: Project) -> None:
    prelude = (
        "import tacx.ui.app as app\n"
        "def boom(self): raise RuntimeError('a bug in the dashboard')\n"
        "app.TacxApp.load_workflows = boom\n"
    )
    code, output = on_a_terminal(project, ["-c", "import sys\n" + prelude + PATCHED_MAIN])
    assert code == 70, output
    assert "Traceback" not in output
    crash_log = project.home / "crash.log"
    assert f"tacx: internal error (a bug in tacx): RuntimeError: a bug in the dashboard; the details are in {crash_log}" in output
    assert "Traceback" in crash_log.read_text()


# -- helpers: disks, mounts, permissions, terminals --------------------------------------------------


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} is not permitted here: {done.stderr.strip()}")


@pytest.fixture
def tiny_disk(project: Project) -> Iterator[Path]:
    """The home on its own 1 MB tmpfs: filling it fills nothing else on the machine."""
    project.home.mkdir()
    _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(project.home))
    try:
        yield project.home
    finally:
        subprocess.run(["umount", "-l", str(project.home)], check=False)


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(65536))
                f.flush()
        except OSError:
            pass


@contextmanager
def read_only_mount(folder: Path) -> Iterator[None]:
    """folder, seen read-only through a bind mount (EROFS), whoever asks."""
    _mount("--bind", str(folder), str(folder))
    try:
        done = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=False, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount {folder} read-only: {done.stderr.strip()}")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def without_override() -> Callable[[], None] | None:
    """For root: a child that obeys file permissions (no CAP_DAC_OVERRIDE, no
    CAP_DAC_READ_SEARCH after exec); anyone else obeys them already."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                os._exit(99)

    return drop


def leave_a_wal(db: Path) -> None:
    """A change still in tacx.db-wal, as a coordinator killed with SIGKILL leaves it."""
    code = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA wal_autocheckpoint = 0')\n"
        "c.execute(\"UPDATE tasks SET title = 'changed in the wal'\")\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=30)
    assert Path(f"{db}-wal").stat().st_size > 0


def on_a_terminal(project: Project, argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run python argv on a pty (the dashboard wants one) until it ends; its exit code and output."""
    import fcntl
    import pty
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: the real CLI on a terminal
        os.chdir(project.root)
        os.execve(sys.executable, [sys.executable, *argv], project.env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    seen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    seen.extend(os.read(fd, 65536))
                except OSError:
                    pass
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                while select.select([fd], [], [], 0.2)[0]:  # what it wrote last
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    seen.extend(chunk)
                return os.waitstatus_to_exitcode(status), seen.decode("utf-8", "replace")
            if time.monotonic() > deadline:
                raise AssertionError(f"tacx did not end on the terminal: {seen.decode('utf-8', 'replace')[-2000:]}")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
