"""Hostile use of issue 12's commands (init, rm/prune, colour, pipes), through the real `tacx`:
each test here broke once."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.conftest import Project, wait_for


def test_init_force_refuses_a_folder_named_tacx_yaml_and_replaces_a_link_not_its_target(project: Project, tmp_path: Path) -> None:
    (project.root / "tacx.yaml").mkdir()
    refused = project.tacx("init", "--force", check=2)  # was exit 70: IsADirectoryError
    assert "tacx.yaml" in refused.stderr and "folder" in refused.stderr
    assert not (project.root / "workflows").exists()
    (project.root / "tacx.yaml").rmdir()

    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me\n")
    (project.root / "tacx.yaml").symlink_to(elsewhere)
    project.tacx("init", "--force")
    assert elsewhere.read_text() == "keep me\n"  # was overwritten through the link
    assert not (project.root / "tacx.yaml").is_symlink()
    assert "max_workers" in (project.root / "tacx.yaml").read_text()


def test_followers_of_a_task_deleted_meanwhile_end_quietly(project: Project) -> None:
    """`tacx run` handed to a running coordinator and `tacx logs -f` follow a task; it ends and
    `tacx rm` deletes it before they look again (they are stopped meanwhile, so the order is
    certain). Both read its row as if it were always there: exit 70, TypeError."""
    nap = project.workflow("nap", """
        name: nap
        stages:
          - {name: nap, provider: bash, run: 'echo started; sleep 60'}
    """)
    project.start("--no-ui")
    wait_for(lambda: (project.home / "lock").exists() and (project.home / "lock").read_text(), what="lock")
    runner = project.start("run", str(nap))
    assert "handed to the running coordinator" in runner.stderr.readline()
    task_id = 1
    wait_for(lambda: project.query("SELECT 1 FROM stages WHERE task_id = ? AND status = 'running'", task_id))
    follower = project.start("logs", str(task_id), "-f")
    assert follower.stdout is not None and follower.stdout.readline().strip() == "started"
    for proc in (runner, follower):
        proc.send_signal(signal.SIGSTOP)
    project.tacx("cancel", str(task_id))
    wait_for(lambda: project.query("SELECT 1 FROM tasks WHERE id = ? AND status = 'cancelled'", task_id))
    assert "deleted its records" in project.tacx("rm", str(task_id)).stdout
    for proc in (runner, follower):
        proc.send_signal(signal.SIGCONT)
    runner_err, follower_err = runner.communicate(timeout=30)[1], follower.communicate(timeout=30)[1]
    assert runner.returncode == 1 and "was deleted" in runner_err and "Traceback" not in runner_err, runner_err
    assert follower.returncode == 0 and "was deleted" in follower_err, follower_err


_SNEAKY = "\u202eevil\u2066 \x9b31mred \u2028next"  # a bidi override and isolate, C1 CSI, a line separator


def _sneaky_free(text: str) -> bool:
    return not any(c in text for c in "\u202e\u2066\x9b\u2028")


async def test_titles_with_bidi_overrides_and_c1_controls_reach_no_terminal(project: Project) -> None:
    """printable() escaped C0 controls only: U+202E reversed the rest of a `tacx ls` line (and
    shifted the dashboard's columns), and 0x9b is CSI on 8-bit terminals."""
    from tacx.home import Home
    from tacx.settings import Settings
    from tacx.ui.app import make_app
    from tests.test_ui_app import screen_text, until

    quick = project.workflow("quick", """
        name: quick
        stages:
          - {name: say, provider: shell, run: 'echo said'}
    """)
    task_id = project.submit(str(quick), "--title", _SNEAKY)
    listed, shown = project.tacx("ls").stdout, project.tacx("show", str(task_id)).stdout
    assert "\\u202eevil" in listed and "\\x9b31mred" in listed and _sneaky_free(listed), listed
    assert "\\u202eevil" in shown and _sneaky_free(shown), shown
    app = make_app(Home(project.home), Settings(), refresh_seconds=0.2)
    async with app.run_test(size=(160, 40)):
        text = await until(lambda: (t := screen_text(app)) and "evil" in t and t, what="the title on screen")
        assert "\\u202eevil" in text and _sneaky_free(text), text


def test_the_dashboards_today_forgets_usage_that_tacx_rm_deleted_and_counts_rows_that_reuse_its_ids(project: Project) -> None:
    """TodayUsage summed only usage rows with ids above the last it read, sure rows were
    never deleted. `tacx rm` deletes them: the deleted task's tokens stayed in today's
    figures, and the next rows (usage has no AUTOINCREMENT: they reuse the freed ids) were
    never counted."""
    import time

    from tacx.store.database import connect, transaction
    from tacx.ui.data import TodayUsage

    quick = project.workflow("quick", """
        name: quick
        stages:
          - {name: say, provider: shell, run: 'echo said'}
    """)
    first, second = project.submit(str(quick)), project.submit(str(quick))
    project.tacx("--no-ui", "--exit-when-idle")
    conn = connect(project.home / "tacx.db")

    def add_usage(task_id: int, tokens: int) -> None:
        stage = conn.execute("SELECT id FROM stages WHERE task_id = ?", (task_id,)).fetchone()[0]
        with transaction(conn):
            conn.execute("INSERT INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens, cost_usd)"
                         " VALUES (?, ?, 1, ?, ?, 'claude-sonnet-4-5', ?, 0.01)",
                         (task_id, stage, time.time(), f"m{tokens}", tokens))

    add_usage(first, 100)
    add_usage(second, 20)
    today = TodayUsage()
    today.update(conn, time.time())
    assert today.tokens == 120
    project.tacx("rm", str(second))
    add_usage(first, 3)  # takes the id the deleted row had
    today.update(conn, time.time())
    assert today.tokens == 103
    conn.close()


def test_init_refuses_workflows_or_home_that_are_links_to_nothing_before_writing_anything(project: Project) -> None:
    """A dangling `workflows` link made mkdir raise FileExistsError, a dangling `.tacx` one
    FileNotFoundError: exit 70 each, after tacx.yaml (and the starter) had been written."""
    project.env.pop("TACX_HOME")  # the home is ./.tacx, as for a person starting a project
    for name in ("workflows", ".tacx"):
        link = project.root / name
        link.symlink_to(project.root / "nowhere" / name)
        refused = project.tacx("init", check=2)
        assert "link to nothing" in refused.stderr and name in refused.stderr, refused.stderr
        assert not (project.root / "tacx.yaml").exists() and not (project.root / "nowhere").exists()
        link.unlink()


def test_a_task_another_rm_deleted_meanwhile_is_reported_deleted_not_kept(project: Project) -> None:
    """Two `tacx prune` at once: each listed the same tasks, and for every task the other got
    to first it said "kept: could not delete ... No such file" or "it was queued again
    meanwhile (tacx retry); kept", about a task that was gone (rm's exit said some were kept).
    The rows one prune read are handed to the deleting step after a real `tacx rm` took them."""
    import argparse
    import time

    from tacx.cli.removal import _remove
    from tacx.home import Home
    from tacx.store import removal
    from tacx.store.database import connect

    made = project.workflow("made", """
        name: made
        workspace: dir
        stages:
          - {name: make, provider: shell, run: 'echo made > out.txt'}
    """)
    for _ in range(2):
        project.submit(str(made))
    project.tacx("--no-ui", "--exit-when-idle")
    conn = connect(project.home / "tacx.db")
    stale = removal.ended_before(conn, time.time() + 60)
    assert [r["id"] for r in stale] == [1, 2]
    project.tacx("rm", "1", "2")  # the other prune, first
    args = argparse.Namespace(force=False, dry_run=False, json=False)
    results = _remove(Home(project.home), conn, stale, args)
    conn.close()
    assert [(r["deleted"], r["reason"]) for r in results] == [(True, "already deleted (by another tacx rm or prune meanwhile)")] * 2


def test_ls_keeps_its_columns_after_a_workflow_name_in_wide_characters(project: Project) -> None:
    """The WORKFLOW column was padded with len(): 6 CJK characters (12 columns) got 12
    spaces, and TIME, TOKENS and COST moved 6 columns right on that line."""
    import unicodedata

    wide = project.workflow("wide", """
        name: 漢字漢字漢字漢字漢字漢字
        stages:
          - {name: s, provider: shell, run: 'echo x'}
    """)
    project.submit(str(wide))
    project.submit(str(project.workflow("narrow", """
        name: narrow
        stages:
          - {name: s, provider: shell, run: 'echo x'}
    """)))

    def columns(line: str) -> int:  # where TIME ends, in terminal columns
        head = line[:line.index(" -") if " -" in line else len(line)]
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in head)

    lines = project.tacx("ls").stdout.splitlines()
    assert len({columns(line) for line in lines[1:]}) == 1, "\n".join(lines)


def test_a_retry_while_rm_removes_the_workspace_is_refused(project: Project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """rm removed the workspace first and checked the task was still ended after: a `tacx
    retry` from another terminal in between queued it again with its workspace gone (the
    succeeded stages' files lost) and rm said "kept". The retry runs, a real tacx, while rm
    is removing the workspace."""
    import argparse

    from tacx.cli.removal import _remove
    from tacx.home import Home
    from tacx.store import removal
    from tacx.store.database import connect
    from tacx.workspace import cleanup

    failing = project.workflow("failing", """
        name: failing
        workspace: dir
        stages:
          - {name: make, provider: shell, run: 'echo made > out.txt'}
          - {name: check, provider: shell, run: 'exit 1'}
    """)
    task_id = project.submit(str(failing))
    project.tacx("--no-ui", "--exit-when-idle", check=None)
    retried = []
    real = cleanup.remove_workspace

    def remove_meanwhile(home, row, force=False):  # type: ignore[no-untyped-def]
        retried.append(project.tacx("retry", str(task_id), check=None))
        return real(home, row, force)

    monkeypatch.setattr(cleanup, "remove_workspace", remove_meanwhile)
    conn = connect(project.home / "tacx.db")
    rows = removal.tasks_by_id(conn, [task_id])
    results = _remove(Home(project.home), conn, [rows[task_id]], argparse.Namespace(force=False, dry_run=False, json=False))
    conn.close()
    assert retried[0].returncode == 2 and "being deleted" in retried[0].stderr, retried[0].stderr
    assert results[0]["deleted"] and not project.query("SELECT 1 FROM tasks WHERE id = ?", task_id)
    assert not project.query("SELECT 1 FROM meta WHERE key LIKE 'deleting:%'")
    project.tacx("retry", str(task_id), check=2)  # no such task now


def test_a_mark_left_by_an_rm_killed_midway_does_not_block_retry(project: Project) -> None:
    import subprocess
    import sys

    failing = project.workflow("failing", """
        name: failing
        stages:
          - {name: check, provider: shell, run: 'exit 1'}
    """)
    task_id = project.submit(str(failing))
    project.tacx("--no-ui", "--exit-when-idle", check=None)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    conn = project.db()
    with conn:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"deleting:{task_id}", gone.stdout.strip()))
    conn.close()
    project.tacx("retry", str(task_id))  # the rm that marked it is dead (SIGTERM, SIGKILL)


def test_rm_force_deletes_a_worktree_whose_repository_was_deleted(project: Project, tmp_path: Path) -> None:
    """The project's .git deleted by hand: git could neither judge nor remove the task's
    worktree, so `tacx rm` kept the task ("no HEAD commit to compare with; kept everything"),
    --force too, and `tacx prune` listed it as kept forever."""
    import shutil

    from tests.test_workspaces import init_repo, workflow

    init_repo(project, tmp_path)
    tree = workflow(tmp_path, "tree", """
        name: tree
        workspace: worktree
        stages:
          - {name: edit, provider: bash, run: 'echo draft > notes.txt'}
    """)
    task_id = project.submit(str(tree))
    project.tacx("--no-ui", "--exit-when-idle")
    folder = project.home / "trees" / str(task_id)
    assert (folder / "notes.txt").exists()
    shutil.rmtree(project.root / ".git")
    kept = project.tacx("rm", str(task_id), check=2)
    assert "repository is gone" in kept.stderr and "--force" in kept.stderr and folder.exists()
    assert "deleted" in project.tacx("rm", "--force", str(task_id)).stdout
    assert not folder.exists() and not project.query("SELECT 1 FROM tasks WHERE id = ?", task_id)
