"""Git worktrees as task workspaces: one branch and one folder per task, never losing work.

Blocking engine code (the caller runs it in a thread). Every git call goes through `_git`:
an argv list, no shell, no stdin, a timeout, no prompts, C locale, and none of the caller's
GIT_DIR-style variables (they would point git at another repository).

Safety rules:
- `ensure_worktree` never deletes, resets or cleans anything; a folder it does not own is an error.
- `cleanup_worktree` removes a worktree only when nothing in it would be lost: no uncommitted or
  untracked files, and no commit that is neither on a remote-tracking branch nor in `base`.
  It removes with `git worktree remove` (no --force) and deletes the branch with `git branch -d`
  only when the branch has no commits of its own, so git itself double-checks both steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT = 60.0
# Checking out (or removing) a whole tree of a large repository can take a while.
CHECKOUT_TIMEOUT = 600.0
LOCK_RETRIES = 6

# Variables that would make git look at another repository than the one we name with -C.
_GIT_LOCATION_VARS = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
)

# stderr of a git that lost a race with another git on the same repository: a lock file held,
# or (seen with concurrent `git worktree add`) another worktree's admin folder caught half
# written ("fatal: failed to read .git/worktrees/11/commondir: Success") or removed under its
# feet ("fatal: Invalid path '/r/.git/worktrees/24': No such file or directory").
# Within this process the per-repository lock below avoids these; the retries are for other
# processes (a second coordinator, the user's own git).
_LOCK_ERROR = re.compile(
    r"could not lock|cannot lock|unable to lock|unable to create '[^']*\.lock'|\.lock': File exists"
    r"|failed to read [^\n]*worktrees/|invalid path '[^']*worktrees/",
    re.IGNORECASE,
)


_locks_guard = threading.Lock()
_repo_locks: dict[str, threading.Lock] = {}


def _repo_lock(repo: Path) -> threading.Lock:
    """One lock per repository (its common git dir): git's worktree commands trip over each
    other's half-made or half-removed admin folders, so this process runs them one at a time."""
    try:
        key = os.path.realpath(_common_dir(repo))
    except WorkspaceError:
        key = os.path.realpath(repo)
    with _locks_guard:
        return _repo_locks.setdefault(key, threading.Lock())


class WorkspaceError(Exception):
    """A workspace could not be made or removed; the message tells the user what to do."""


# ---------------------------------------------------------------- names


def slugify(title: str, max_len: int = 40) -> str:
    """A piece of branch and folder name made of [a-z0-9-] from any title; "task" when empty."""
    text = unicodedata.normalize("NFKD", str(title)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    max_len = max(1, max_len)
    if len(slug) > max_len:
        cut = slug[:max_len]
        # End on a word boundary when the word cut in half is not most of the slug.
        if slug[max_len] != "-" and "-" in cut and cut.rindex("-") >= max_len // 2:
            cut = cut[: cut.rindex("-")]
        slug = cut.strip("-")
    # Only [a-z0-9-] is left, so "..", a leading ".", "@{" and ".lock" cannot occur;
    # strip("-") took care of a leading "-".
    return slug or "task"


def branch_name(task_id: int, title: str) -> str:
    return f"tacx/{int(task_id)}-{slugify(title)}"


# ---------------------------------------------------------------- running git


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _trim(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _run_once(cwd: Path, args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess[str]:
    argv = ["git", "-C", str(cwd), *args]
    try:
        return subprocess.run(
            argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            errors="replace", timeout=timeout, env=_env(),
        )
    except FileNotFoundError as exc:
        raise WorkspaceError("git is not installed (or not on PATH): worktree workspaces need it") from exc
    except subprocess.TimeoutExpired as exc:
        raise WorkspaceError(f"`git {' '.join(args)}` in {cwd} took more than {timeout:.0f} s; gave up") from exc


def _run(cwd: Path, *args: str, timeout: float = GIT_TIMEOUT, retry: bool = True) -> subprocess.CompletedProcess[str]:
    """`git -C cwd args...`, retried a few times when it lost a race with another git on the
    repository (see _LOCK_ERROR); WorkspaceError only when git cannot be run at all."""
    for attempt in range(LOCK_RETRIES + 1):
        proc = _run_once(cwd, args, timeout)
        if proc.returncode == 0 or not retry or attempt == LOCK_RETRIES or not _LOCK_ERROR.search(proc.stderr):
            return proc
        time.sleep(0.05 * (2 ** attempt))
    return proc


def _git(cwd: Path, *args: str, timeout: float = GIT_TIMEOUT, what: str | None = None) -> str:
    """Run git (see _run); its stdout, or WorkspaceError with git's stderr."""
    proc = _run(cwd, *args, timeout=timeout)
    if proc.returncode != 0:
        raise _failure(cwd, args, proc, what)
    return proc.stdout


def _failure(cwd: Path, args: tuple[str, ...], proc: subprocess.CompletedProcess[str], what: str | None) -> WorkspaceError:
    detail = _trim(proc.stderr) or _trim(proc.stdout) or f"exit status {proc.returncode}"
    head = what or f"`git {' '.join(args)}` failed in {cwd}"
    return WorkspaceError(f"{head}: {detail}")


def _ok(cwd: Path, *args: str) -> bool:
    return _run(cwd, *args).returncode == 0


def _sha(cwd: Path, rev: str) -> str | None:
    proc = _run(cwd, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _count(cwd: Path, *revs: str) -> int:
    return int(_git(cwd, "rev-list", "--count", *revs).strip() or "0")


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


# ---------------------------------------------------------------- repositories


def git_root(path: Path) -> Path | None:
    """Top of the git work tree containing `path`; None outside one or without git."""
    path = Path(path).absolute()
    while not path.is_dir():
        if path.parent == path:
            return None
        path = path.parent
    try:
        proc = _run(path, "rev-parse", "--show-toplevel")
    except WorkspaceError:
        return None
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out:
        return None
    return Path(out)


def require_git_repo(project_root: Path) -> Path:
    """The git root of `project_root`, which must have a commit to branch from."""
    root = git_root(project_root)
    if root is None:
        raise WorkspaceError(
            f"{project_root} is not inside a git repository: a `workspace: worktree` workflow needs one "
            "(run `git init` and commit, or use workspace: dir)"
        )
    if _sha(root, "HEAD") is None:
        raise WorkspaceError(
            f"the git repository at {root} has no commits yet; commit something first "
            "(a `workspace: worktree` task branches from HEAD)"
        )
    return root


def _common_dir(repo: Path) -> Path:
    out = _git(repo, "rev-parse", "--git-common-dir").strip()
    common = Path(out)
    return common if common.is_absolute() else (Path(repo) / common)


def _exclude_pattern(rel: str) -> str:
    escaped = re.sub(r"([\\*?\[\]!#])", r"\\\1", rel)
    escaped = re.sub(r" $", r"\\ ", escaped)
    return "/" + escaped + "/"


def exclude_home(repo: Path, home: Path) -> None:
    """Hide the home folder from the repository's `git status` through `.git/info/exclude`.

    Only when the home sits inside the repository's work tree; idempotent; the user's
    .gitignore is never touched. info/ lives in the common git dir, so this also works when
    `repo` is itself a linked worktree.
    """
    top = git_root(repo)
    if top is None:
        return
    real_top, real_home = Path(os.path.realpath(top)), Path(os.path.realpath(home))
    try:
        rel = real_home.relative_to(real_top)
    except ValueError:
        return
    if not rel.parts or "\n" in str(rel):
        return
    pattern = _exclude_pattern(rel.as_posix())
    exclude = _common_dir(top) / "info" / "exclude"
    try:
        text = exclude.read_text(errors="replace") if exclude.exists() else ""
        if pattern in (line.strip() for line in text.splitlines()):
            return
        exclude.parent.mkdir(parents=True, exist_ok=True)
        prefix = "" if not text or text.endswith("\n") else "\n"
        with exclude.open("a") as fh:
            fh.write(f"{prefix}# tacx home (task worktrees live here)\n{pattern}\n")
    except OSError as exc:
        raise WorkspaceError(f"could not add {pattern} to {exclude}: {exc}") from exc


# ---------------------------------------------------------------- worktrees


@dataclass
class Worktree:
    path: Path
    branch: str
    base: str       # the commit the task started from
    created: bool   # False when an existing worktree was reused as it was


@dataclass
class _Entry:
    path: Path
    head: str | None = None
    branch: str | None = None   # short name; None when detached
    bare: bool = False
    locked: bool = False
    prunable: bool = False


def _worktrees(repo: Path) -> list[_Entry]:
    out = _git(repo, "worktree", "list", "--porcelain", "-z")
    entries: list[_Entry] = []
    for field in out.split("\0"):
        if not field:
            continue
        key, _, value = field.partition(" ")
        if key == "worktree":
            entries.append(_Entry(Path(value)))
        elif not entries:
            continue
        elif key == "HEAD":
            entries[-1].head = value
        elif key == "branch":
            entries[-1].branch = value.removeprefix("refs/heads/")
        elif key == "bare":
            entries[-1].bare = True
        elif key == "locked":
            entries[-1].locked = True
        elif key == "prunable":
            entries[-1].prunable = True
    return entries


def _find(repo: Path, path: Path) -> _Entry | None:
    for entry in _worktrees(repo):
        if _same(entry.path, path):
            return entry
    return None


def _branch_exists(repo: Path, branch: str) -> bool:
    return _ok(repo, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}")


def _check_branch_name(repo: Path, branch: str) -> None:
    # --branch expands "@{-1}" and friends; the name must come back unchanged.
    proc = _run(repo, "check-ref-format", "--branch", branch)
    if proc.returncode != 0 or proc.stdout.strip() != branch or branch.startswith("-"):
        raise WorkspaceError(f"{branch!r} is not a valid git branch name")


def _base_of(repo: Path, branch: str) -> str:
    """Where an existing branch started, as far as we can tell: its merge-base with HEAD."""
    proc = _run(repo, "merge-base", f"refs/heads/{branch}", "HEAD")
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip().splitlines()[0]
    # Unrelated histories: HEAD is the conservative choice (cleanup then keeps all its commits).
    head = _sha(repo, "HEAD")
    if head is None:
        raise WorkspaceError(f"the git repository at {repo} has no commits yet; commit something first")
    return head


def _is_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def ensure_worktree(repo: Path, path: Path, branch: str) -> Worktree:
    """The task's worktree at `path` on `branch`: created, recreated, or reused untouched.

    - `path` already a worktree of `repo` on `branch`: returned as is (created=False).
    - `path` missing (or an empty folder) and `branch` missing: `git worktree add -b branch path
      <HEAD sha>`; base = that sha.
    - `path` missing and `branch` existing (the folder was deleted): the stale entry is cleared
      and the branch checked out again; base = merge-base(branch, HEAD).
    - anything else (a folder that is not this repository's worktree, a worktree on another
      branch, the branch checked out elsewhere): WorkspaceError, nothing deleted.
    Thread-safe: calls on one repository run one at a time in this process; races with other
    processes (git's lock files, half-made worktree entries) are retried a few times.
    """
    repo = Path(repo)
    path = Path(path).absolute()
    _check_branch_name(repo, branch)
    with _repo_lock(repo):
        last: WorkspaceError | None = None
        for attempt in range(LOCK_RETRIES + 1):
            try:
                return _ensure_once(repo, path, branch)
            except _Retry as exc:
                last = exc.error
                time.sleep(0.05 * (2 ** attempt))
        assert last is not None
        raise last


class _Retry(Exception):
    def __init__(self, error: WorkspaceError) -> None:
        self.error = error


def _add(repo: Path, *args: str, what: str) -> None:
    # Not retried here: a failed `add -b` may already have made the branch, so the caller
    # looks at the repository again before the next try.
    proc = _run(repo, "worktree", "add", *args, timeout=CHECKOUT_TIMEOUT, retry=False)
    if proc.returncode != 0:
        error = _failure(repo, ("worktree", "add", *args), proc, what)
        if _LOCK_ERROR.search(proc.stderr):
            raise _Retry(error)
        raise error


def _ensure_once(repo: Path, path: Path, branch: str) -> Worktree:
    entry = _find(repo, path)
    present = path.exists() or path.is_symlink()

    if entry is not None and present and not entry.prunable:
        if entry.bare:
            raise WorkspaceError(f"{path} is the bare repository itself, not a task worktree")
        if entry.branch != branch:
            on = f"branch {entry.branch}" if entry.branch else f"a detached HEAD ({(entry.head or '')[:12]})"
            raise WorkspaceError(
                f"{path} is already a worktree of {repo} but on {on}, not {branch}; "
                "left it alone (remove it with `git worktree remove` if it is not needed)"
            )
        return Worktree(path=path, branch=branch, base=_base_of(repo, branch), created=False)

    if present and not _is_empty_dir(path):
        raise WorkspaceError(
            f"{path} already exists and is not a git worktree of {repo}; left it alone "
            "(move it away, or remove it if it holds nothing you need)"
        )

    if entry is not None:
        # Registered but its folder is gone (or empty): clear just that entry. `worktree remove`
        # of a missing folder only deletes git's admin files; prune is the fallback.
        if entry.locked:
            raise WorkspaceError(
                f"{path} is registered as a locked worktree of {repo} but its folder is missing; "
                f"run `git worktree unlock {path}` and `git worktree prune`"
            )
        if not _ok(repo, "worktree", "remove", str(path)):
            _git(repo, "worktree", "prune")
    path.parent.mkdir(parents=True, exist_ok=True)

    if _branch_exists(repo, branch):
        holder = next((e for e in _worktrees(repo) if e.branch == branch), None)
        if holder is not None and not holder.prunable:
            raise WorkspaceError(
                f"branch {branch} is already checked out in {holder.path}; "
                f"cannot also check it out in {path}"
            )
        if holder is not None and not _ok(repo, "worktree", "remove", str(holder.path)):
            # A stale entry elsewhere still claims the branch. `worktree remove` refuses a folder
            # without .git, so nothing is deleted either way; prune clears git's admin files only.
            _git(repo, "worktree", "prune")
        _add(repo, str(path), branch, what=f"could not check out branch {branch} into {path}")
        return Worktree(path=path, branch=branch, base=_base_of(repo, branch), created=True)

    head = _sha(repo, "HEAD")
    if head is None:
        raise WorkspaceError(f"the git repository at {repo} has no commits yet; commit something first")
    _add(repo, "-b", branch, str(path), head, what=f"could not create worktree {path} on new branch {branch}")
    return Worktree(path=path, branch=branch, base=head, created=True)


# ---------------------------------------------------------------- cleanup


@dataclass
class CleanupResult:
    path: Path
    removed: bool          # the workspace folder is gone now (also when it already was)
    branch_deleted: bool
    reason: str            # what was done, or exactly why it was kept
    unsaved: bool = False  # kept because of work found nowhere else (uncommitted, or unpushed commits)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _unpushed(cwd: Path, tips: list[str], base: str) -> int:
    """Commits reachable from `tips` but neither from a remote-tracking branch nor from base."""
    if not tips:
        return 0
    return _count(cwd, *tips, "--not", "--remotes", base)


def _settle_branch(repo: Path, branch: str, base: str) -> tuple[bool, str]:
    """Delete `branch` (git branch -d) when it has no commits beyond base: (deleted, what happened)."""
    if not _branch_exists(repo, branch):
        return False, f"branch {branch} was already gone"
    own = _count(repo, f"{base}..refs/heads/{branch}")
    if own:
        return False, f"kept branch {branch} ({_plural(own, 'commit')} of its own, pushed to a remote)"
    proc = _run(repo, "branch", "-d", branch)
    # `branch -d` can warn (exit 0) about locking .git/config while another deletion runs.
    if proc.returncode != 0 and _branch_exists(repo, branch):
        return False, f"kept branch {branch}: git branch -d refused: {_trim(proc.stderr)}"
    return True, f"deleted branch {branch} (no commits beyond {base[:12]})"


def cleanup_worktree(repo: Path, path: Path, branch: str, base: str | None) -> CleanupResult:
    """Remove the task's worktree (and its branch if it has nothing of its own) when no work is lost.

    Kept, with the reason, when the worktree has uncommitted or untracked files (ignored files do
    not count, as with `git worktree remove`), or when the branch or the worktree's HEAD has
    commits that are on no remote-tracking branch and not in `base` (None: the repo's HEAD).
    A folder deleted by hand: its stale entry is cleared and the branch settled the same way.
    Thread-safe like ensure_worktree.
    """
    repo = Path(repo)
    path = Path(path).absolute()
    with _repo_lock(repo):
        return _cleanup(repo, path, branch, base)


def _cleanup(repo: Path, path: Path, branch: str, base: str | None) -> CleanupResult:
    base_sha = _sha(repo, base) if base else None
    if base_sha is None:
        base_sha = _sha(repo, "HEAD")
        if base_sha is None:
            return CleanupResult(path, False, False, f"the repository at {repo} has no HEAD commit to compare with; kept everything")

    entries = _worktrees(repo)
    entry = next((e for e in entries if _same(e.path, path)), None)
    present = path.exists() or path.is_symlink()

    if not present:
        # Deleted by hand (or by an earlier cleanup): clear git's stale entry, settle the branch.
        notes = [f"{path} was already gone"]
        if entry is not None:
            if entry.locked:
                return CleanupResult(
                    path, True, False,
                    f"{path} was already gone; its worktree entry is locked (git worktree lock), "
                    f"so it and branch {branch} were kept",
                )
            if not _ok(repo, "worktree", "remove", str(path)):
                _git(repo, "worktree", "prune")
            notes.append("cleared its stale worktree entry")
        if _branch_exists(repo, branch):
            unpushed = _unpushed(repo, [f"refs/heads/{branch}"], base_sha)
            if unpushed:
                notes.append(f"kept branch {branch} ({_plural(unpushed, 'commit')} not pushed to any remote)")
                return CleanupResult(path, True, False, "; ".join(notes), unsaved=True)
        deleted, what = _settle_branch(repo, branch, base_sha)
        return CleanupResult(path, True, deleted, "; ".join([*notes, what]))

    if entry is None:
        return CleanupResult(path, False, False, f"{path} is not a worktree of {repo}; left it alone")
    if entry.bare or entry is entries[0]:
        return CleanupResult(path, False, False, f"{path} is the main work tree of {repo}; never removed")
    if entry.prunable:
        return CleanupResult(
            path, False, False,
            f"{path} exists but git no longer sees it as a worktree of {repo} (its .git is missing); left it alone",
        )
    if entry.locked:
        return CleanupResult(path, False, False, f"{path} is a locked worktree (git worktree lock); kept")

    status = _git(path, "status", "--porcelain", "--untracked-files=all", "--ignore-submodules=none")
    changes = [line for line in status.splitlines() if line.strip()]
    if changes:
        return CleanupResult(
            path, False, False,
            f"{_plural(len(changes), 'uncommitted change')} (git status --porcelain) in {path}; kept",
            unsaved=True,
        )

    tips = ["HEAD"]
    if _branch_exists(repo, branch):
        tips.append(f"refs/heads/{branch}")
    unpushed = _unpushed(path, tips, base_sha)
    if unpushed:
        where = entry.branch or f"detached HEAD {(entry.head or '')[:12]}"
        if entry.branch != branch and _branch_exists(repo, branch):
            where = f"{where} / {branch}"
        return CleanupResult(
            path, False, False, f"{_plural(unpushed, 'commit')} not pushed to any remote ({where}); kept",
            unsaved=True,
        )

    proc = _run(repo, "worktree", "remove", str(path), timeout=CHECKOUT_TIMEOUT)
    if proc.returncode != 0:
        return CleanupResult(path, False, False, f"git worktree remove refused: {_trim(proc.stderr)}; kept")
    deleted, what = _settle_branch(repo, branch, base_sha)
    return CleanupResult(path, True, deleted, f"removed worktree {path}; {what}")


def discard_worktree(repo: Path, path: Path, branch: str) -> CleanupResult:
    """Remove a task's worktree and its branch with whatever unsaved work they hold (the user
    said --force, after cleanup_worktree said what would be lost)."""
    repo, path = Path(repo), Path(path).absolute()
    with _repo_lock(repo):
        if path.exists() or path.is_symlink():
            proc = _run(repo, "worktree", "remove", "--force", "--force", str(path), timeout=CHECKOUT_TIMEOUT)
            if proc.returncode != 0:
                return CleanupResult(path, False, False, f"git worktree remove --force refused: {_trim(proc.stderr)}")
        _ok(repo, "worktree", "prune")
        deleted = _branch_exists(repo, branch) and _ok(repo, "branch", "-D", branch)
        what = f"; deleted branch {branch} with its commits" if deleted else ""
        return CleanupResult(path, True, deleted, f"removed worktree {path} with its unsaved work (--force){what}")


def remove_dir_workspace(path: Path) -> CleanupResult:
    """Delete a plain `dir` workspace; only folders inside a `trees` folder, never a git worktree."""
    path = Path(path).absolute()
    parent = Path(os.path.realpath(path.parent))
    if path.name in ("", ".", "..") or "trees" not in parent.parts:
        raise WorkspaceError(f"refusing to delete {path}: task workspaces live under a `trees` folder")
    if path.is_symlink():
        raise WorkspaceError(f"refusing to delete {path}: it is a symbolic link, not a task workspace")
    if not path.exists():
        return CleanupResult(path, True, False, f"{path} was already gone")
    if not path.is_dir():
        raise WorkspaceError(f"refusing to delete {path}: not a folder")
    if (path / ".git").is_file():
        raise WorkspaceError(f"refusing to delete {path}: it is a git worktree (use cleanup_worktree)")
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise WorkspaceError(f"could not delete {path}: {exc}") from exc
    return CleanupResult(path, True, False, f"deleted {path}")
