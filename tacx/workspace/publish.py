"""A finished task's work leaves its worktree: what the agents left uncommitted is committed
(the message from the task's title), and the branch is pushed to the project's remote.
Blocking git, run in a thread by the caller; every call is an argv (`worktree._git`)."""

from __future__ import annotations

from pathlib import Path

from tacx.workspace.worktree import WorkspaceError, _git, _ok, _run

PUSH_TIMEOUT = 300.0
# Never committed by tacx, tracked or not: a workflow's setup copies .env into the worktree,
# and what is pushed is public on most repositories.
SECRETS = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ed25519*", ".netrc", ".npmrc", ".pypirc")


def commit_leftovers(workspace: Path, message: str) -> bool:
    """Commit every change in the worktree (tracked or new; ignored files and SECRETS
    excepted); False when there was nothing to commit. A missing git identity gets tacx's."""
    _git(workspace, "add", "-A", "--", ".", *(f":(exclude,glob)**/{name}" for name in SECRETS))
    if _ok(workspace, "diff", "--cached", "--quiet"):
        return False
    identity: tuple[str, ...] = ()
    if not (_ok(workspace, "config", "--get", "user.email") and _ok(workspace, "config", "--get", "user.name")):
        identity = ("-c", "user.name=tacx", "-c", "user.email=tacx@localhost")
    _git(workspace, *identity, "commit", "-q", "--no-verify", "-m", message, what="committing the agents' work")
    return True


def remote_of(workspace: Path) -> str | None:
    """The remote to push to: `origin` when there is one, else the only one."""
    remotes = [r for r in _git(workspace, "remote").split() if r]
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else None


def has_commits_beyond(workspace: Path, base: str) -> bool:
    proc = _run(workspace, "rev-list", "--count", f"{base}..HEAD")
    return proc.returncode != 0 or int(proc.stdout.strip() or "0") > 0


def push(workspace: Path, branch: str) -> str:
    """Push HEAD to `branch` on the project's remote; the remote's name."""
    remote = remote_of(workspace)
    if remote is None:
        raise WorkspaceError(f"the repository of {workspace} has no remote (or several, none named origin) to push to")
    _git(workspace, "push", "--quiet", "--no-verify", remote, f"HEAD:refs/heads/{branch}", timeout=PUSH_TIMEOUT,
         what=f"pushing {branch} to {remote}")
    return remote
