"""`tacx clean`: remove the workspaces of tasks that have ended, never losing work.

A git worktree is removed only when it has no uncommitted change and every commit on its
branch is pushed or was there before the task (tacx.workspace.worktree decides and says why it
keeps one). A plain `dir` workspace of an ended task is removed.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from tacx.store import records
from tacx.workspace import worktree
from tacx.home import Home
from tacx.store.database import transaction


def clean(home: Home, conn: sqlite3.Connection, task_ids: list[int] | None) -> list[dict[str, Any]]:
    """Clean the given ended tasks (or every ended task); one entry per workspace looked at."""
    marks = ", ".join("?" for _ in records.TERMINAL_TASK_STATES)
    sql = (
        "SELECT id, status, workspace, branch, base_commit, project_root, workflow_text FROM tasks"
        f" WHERE status IN ({marks})"
    )
    params: list[Any] = list(records.TERMINAL_TASK_STATES)
    if task_ids:
        sql += f" AND id IN ({', '.join('?' for _ in task_ids)})"
        params += task_ids
    results = []
    for row in conn.execute(sql + " ORDER BY id", params).fetchall():
        entry = remove_workspace(home, row)
        if entry is None:
            continue  # ran in the project itself: nothing of tacx's to remove
        results.append(entry)
        with transaction(conn):
            records.add_event(conn, row["id"], None, "workspace.removed" if entry["removed"] else "workspace.kept",
                              {k: entry[k] for k in ("path", "branch", "branch_deleted", "reason")})
    if task_ids:
        found = {r["task"] for r in results}
        for task_id in task_ids:
            if task_id not in found:
                status = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
                reason = "no such task" if status is None else (
                    f"the task is {status[0]}: only ended tasks are cleaned"
                    if status[0] not in records.TERMINAL_TASK_STATES else "it has no workspace of its own"
                )
                results.append({"task": task_id, "path": None, "branch": None, "removed": False,
                                "branch_deleted": False, "reason": reason})
    return results


def remove_workspace(home: Home, row: Any, force: bool = False) -> dict[str, Any] | None:
    """Remove one ended task's workspace (a row of tasks with id, workspace, branch,
    base_commit, project_root, workflow_text); None when it has none of its own under the
    home's trees. ``unsaved`` in the entry: kept because of work found nowhere else, which
    ``force`` removes too."""
    path = Path(row["workspace"]) if row["workspace"] else None
    if path is None or not path.resolve().is_relative_to(home.trees.resolve()):
        return None
    kind = _workspace_kind(row["workflow_text"])
    try:
        if kind == "worktree" and row["branch"]:
            repo = worktree.git_root(Path(row["project_root"])) or Path(row["project_root"])
            outcome = worktree.cleanup_worktree(repo, path, row["branch"], row["base_commit"])
            if not outcome.removed and _orphaned(path):
                outcome = _remove_orphan(path) if force else worktree.CleanupResult(
                    path, False, False, f"{path}: its repository is gone ({outcome.reason}); what it holds is"
                    " found nowhere else", unsaved=True)
            elif outcome.unsaved and force:
                outcome = worktree.discard_worktree(repo, path, row["branch"])
        elif kind == "worktree":  # git never made it: whatever is there is not tacx's
            outcome = worktree.CleanupResult(path, False, False, "the task's worktree was never made; left alone")
        else:
            outcome = worktree.remove_dir_workspace(path)
        return {"task": row["id"], "path": str(path), "branch": row["branch"], "removed": outcome.removed,
                "branch_deleted": outcome.branch_deleted, "reason": outcome.reason, "unsaved": outcome.unsaved}
    except worktree.WorkspaceError as exc:
        return {"task": row["id"], "path": str(path), "branch": row["branch"], "removed": False,
                "branch_deleted": False, "reason": str(exc), "unsaved": False}


def _orphaned(path: Path) -> bool:
    """A worktree folder whose repository is gone (deleted, moved): its `.git` file names a
    git dir that is not there, so git can neither judge it nor remove it; without this,
    not even `tacx rm --force` could delete the task."""
    marker = path / ".git"
    if path.is_symlink() or not marker.is_file() or marker.is_symlink():
        return False
    try:
        text = marker.read_text(errors="replace").strip()
    except OSError:
        return False
    return text.startswith("gitdir:") and not Path(text[len("gitdir:"):].strip()).exists()


def _remove_orphan(path: Path) -> worktree.CleanupResult:
    try:
        shutil.rmtree(path)
    except OSError as exc:
        return worktree.CleanupResult(path, False, False, f"could not delete {path}: {exc}")
    return worktree.CleanupResult(path, True, False, f"deleted {path}, a worktree of a repository that is gone (--force)")


def _workspace_kind(workflow_text: str) -> str:
    """The task's `workspace:` as submitted (the stored workflow text decides, not the file)."""
    kind = records.submitted_workflow(workflow_text).get("workspace", "none")
    return kind if kind in ("none", "dir", "worktree") else "none"


def describe(entry: dict[str, Any]) -> str:
    what = "removed" if entry["removed"] else "kept"
    where = entry["path"] or "-"
    return f"task {entry['task']}: {what} {where}: {entry['reason']}"
