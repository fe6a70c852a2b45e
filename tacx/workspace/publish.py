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


def remote_of(workspace: Path, repo: str | None = None) -> str | None:
    """The remote to push to: the one whose URL names ``repo`` (owner/name), else `origin`,
    else the only one."""
    urls: dict[str, str] = {}
    for line in _git(workspace, "remote", "-v").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            urls.setdefault(parts[0], parts[1])
    if repo:
        wanted = repo.lower()
        for name, url in urls.items():
            tail = url.lower().removesuffix("/").removesuffix(".git")
            if tail.endswith("/" + wanted) or tail.endswith(":" + wanted):
                return name
    if "origin" in urls:
        return "origin"
    return next(iter(urls)) if len(urls) == 1 else None


def has_commits_beyond(workspace: Path, base: str) -> bool:
    proc = _run(workspace, "rev-list", "--count", f"{base}..HEAD")
    return proc.returncode != 0 or int(proc.stdout.strip() or "0") > 0


def push(workspace: Path, branch: str, repo: str | None = None) -> str:
    """Push HEAD to `branch` on the project's remote (the one of ``repo``); its name."""
    remote = remote_of(workspace, repo)
    if remote is None:
        raise WorkspaceError(f"the repository of {workspace} has no remote (or several, none named origin) to push to")
    _git(workspace, "push", "--quiet", "--no-verify", remote, f"HEAD:refs/heads/{branch}", timeout=PUSH_TIMEOUT,
         what=f"pushing {branch} to {remote}")
    return remote
