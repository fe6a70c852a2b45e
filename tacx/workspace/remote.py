"""A worktree stage that runs on another machine: its branch goes out through the project's
remote before the stage (the node clones it there) and comes back after (the node pushed
it). Work a local stage left uncommitted is committed first, so the node sees it; the node
commits its own the same way. Blocking: called in a thread."""

from __future__ import annotations

from pathlib import Path

from tacx.workspace.worktree import WorkspaceError, _failure, _git, _run, _sha

AUTHOR = ("tacx", "tacx@localhost")


def _as_tacx() -> tuple[str, ...]:
    """git's options that make tacx the author of what it commits."""
    name, email = AUTHOR
    return ("-c", f"user.name={name}", "-c", f"user.email={email}")


def remote_url(project: Path, remote: str) -> str:
    """The URL nodes clone from: a remote's name in the project, or a URL or path as given
    (a local path made absolute, so a node on a shared filesystem finds it)."""
    proc = _run(project, "remote", "get-url", "--", remote)
    if proc.returncode == 0 and proc.stdout.strip():
        url = proc.stdout.strip()
    elif "/" in remote or ":" in remote:
        url = remote
    else:
        raise WorkspaceError(
            f"the project at {project} has no git remote {remote!r}: a worktree stage on Ray needs one the nodes "
            "can clone and push to (executors.ray.remote in tacx.yaml: a remote's name or a URL)"
        )
    if "://" not in url and ":" not in url.split("/")[0] and not Path(url).is_absolute():
        url = str((project / url).resolve())
    return url


def commit_all(tree: Path, message: str) -> bool:
    """Commit every change in the tree, untracked files included (.gitignore honoured):
    True when there was something to commit."""
    if not _git(tree, "status", "--porcelain", "--untracked-files=all").strip():
        return False
    _git(tree, "add", "-A")
    _git(tree, *_as_tacx(), "commit", "--quiet", "--no-verify", "-m", message,
         what=f"could not commit the work in {tree} before sending it to the cluster")
    return True


def send_branch(tree: Path, url: str, branch: str, stage: str) -> str:
    """Commit what the tree holds and push its branch, so a node can clone it: the commit
    the node starts from. A branch there that has commits this tree lacks (a node pushed,
    and its end never reached tacx: the head went away, or bringing its work back failed)
    is brought in first, as the work a local attempt leaves in its tree would stay."""
    commit_all(tree, f"tacx: work in progress before stage {stage}")
    if _sha(tree, "HEAD") is None:
        raise WorkspaceError(f"the worktree {tree} has no commit to send")
    what = f"could not push branch {branch} to {url} for the cluster"
    push = ("push", "--quiet", "--", url, f"HEAD:refs/heads/{branch}")
    refused = _run(tree, *push)
    if refused.returncode != 0:
        fetched = _run(tree, "fetch", "--quiet", "--", url, f"refs/heads/{branch}").returncode == 0
        there = _sha(tree, "FETCH_HEAD") if fetched else None
        if there is None:  # nothing there to bring in: the push's own failure says why
            raise _failure(tree, push, refused, what)
        _bring_in(tree, there, branch)
        _git(tree, *push, what=what)
    return _sha(tree, "HEAD") or ""


def take_back(tree: Path, url: str, branch: str, sha: str) -> None:
    """Bring the node's pushed commit into the local worktree, so expects, later stages and
    the pull request see it."""
    _git(tree, "fetch", "--quiet", "--", url, f"refs/heads/{branch}",
         what=f"could not fetch branch {branch} back from {url}")
    _bring_in(tree, sha, branch)


def _bring_in(tree: Path, sha: str, branch: str) -> None:
    """A fast-forward to `sha` (the node started from what was sent), or, when a local stage
    of the same task committed meanwhile, a merge of the two."""
    if _run(tree, "merge", "--ff-only", "--quiet", sha).returncode == 0:
        return
    merged = _run(tree, *_as_tacx(), "merge", "--no-edit", "--quiet",
                  "-m", f"tacx: merge the node's work ({sha[:12]}) on {branch}", sha)
    if merged.returncode != 0:
        _run(tree, "merge", "--abort")
        detail = (merged.stderr or merged.stdout).strip().splitlines()
        raise WorkspaceError(f"could not bring the node's work ({sha[:12]}) into {tree}: "
                             f"{detail[-1] if detail else 'git merge failed'}")
