"""Task worktrees against real git repositories: names, creation, reuse, and a cleanup that
never loses work."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from tacx.workspace.worktree import (
    CleanupResult,
    WorkspaceError,
    branch_name,
    cleanup_worktree,
    ensure_worktree,
    exclude_home,
    git_root,
    remove_dir_workspace,
    require_git_repo,
    slugify,
)


@pytest.fixture(autouse=True)
def hermetic_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config; an identity through the environment."""
    empty = tmp_path_factory.mktemp("gitconfig") / "config"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.com")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


def git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", "-C", str(cwd), *args], check=False, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def commit(cwd: Path, name: str, text: str = "x\n") -> str:
    (cwd / name).write_text(text)
    git(cwd, "add", name)
    git(cwd, "commit", "-q", "-m", f"add {name}")
    return git(cwd, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "-c", "init.defaultBranch=main", "init", "-q")
    commit(root, "README.md", "hello\n")
    return root


@pytest.fixture
def home(repo: Path) -> Path:
    h = repo / ".tacx"
    (h / "logs").mkdir(parents=True)
    (h / "tacx.db").write_text("")
    return h


def branches(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())


def registered(repo: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


# ---------------------------------------------------------------- names

NASTY = [
    "Fix the login page", "Ünïcödé façade — naïve café", "日本語のタイトル", "🚀🔥 launch 🎉", "🚀",
    "../../etc/passwd", "a..b", ".lock", "x.lock", "foo.lock", ".hidden", "-rf", "500" + "x" * 500,
    "word " * 100, "", "   ", "---", "HEAD", "head", "@", "@{", "@{-1}", "a@{b", "$(rm -rf /)",
    "`reboot`; rm -rf ~ && echo | cat > /dev/null", "line one\nline two\r\n\tthree", "a\x00b\x7f",
    "refs/heads/main", "trailing/", "back\\slash", "what?*[]~^:", "ÆØÅ ßẞ ﬁ", "ＦＵＬＬ　ＷＩＤＴＨ",
]


@pytest.mark.parametrize("title", NASTY)
def test_slugify_always_gives_a_valid_branch(tmp_path: Path, title: str) -> None:
    slug = slugify(title)
    assert slug and len(slug) <= 40
    assert set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not slug.startswith(("-", ".")) and not slug.endswith("-")
    assert ".." not in slug and not slug.endswith(".lock")
    name = branch_name(1, title)
    assert name == f"tacx/1-{slug}"
    proc = subprocess.run(
        ["git", "check-ref-format", "--branch", name], check=False, capture_output=True, text=True,
        cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=60,
    )
    assert proc.returncode == 0, (title, name, proc.stderr)
    assert proc.stdout.strip() == name


def test_slugify_examples() -> None:
    assert slugify("Fix the login page!") == "fix-the-login-page"
    assert slugify("Ünïcödé façade — naïve café") == "unicode-facade-naive-cafe"
    assert slugify("../../etc/passwd") == "etc-passwd"
    assert slugify("a..b") == "a-b"
    assert slugify("") == slugify("---") == slugify("🚀") == slugify("日本語") == "task"
    assert slugify("HEAD") == "head"
    assert slugify("$(rm -rf /)") == "rm-rf"
    # Cut on a word boundary.
    assert slugify("alpha beta gamma delta", max_len=14) == "alpha-beta"
    assert slugify("x" * 500) == "x" * 40
    assert branch_name(42, "Fix login") == "tacx/42-fix-login"


# ---------------------------------------------------------------- repositories


def test_git_root_and_require_git_repo(tmp_path: Path, repo: Path) -> None:
    (repo / "sub" / "deeper").mkdir(parents=True)
    assert git_root(repo / "sub" / "deeper") == Path(git(repo, "rev-parse", "--show-toplevel").strip())
    assert git_root(repo / "sub" / "not-yet-made.txt") == git_root(repo)
    assert require_git_repo(repo / "sub") == git_root(repo)

    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_root(outside) is None
    with pytest.raises(WorkspaceError, match="is not inside a git repository.*workspace: dir"):
        require_git_repo(outside)

    unborn = tmp_path / "unborn"
    unborn.mkdir()
    git(unborn, "-c", "init.defaultBranch=main", "init", "-q")
    assert git_root(unborn) is not None
    with pytest.raises(WorkspaceError, match="has no commits yet; commit something first"):
        require_git_repo(unborn)


# ---------------------------------------------------------------- ensure_worktree


def test_creates_a_branch_at_head_in_its_own_folder(repo: Path, home: Path) -> None:
    head = commit(repo, "app.py", "print(1)\n")
    exclude_home(repo, home)
    path = home / "trees" / "7"
    wt = ensure_worktree(repo, path, "tacx/7-fix-login")

    assert wt.created and wt.path == path and wt.branch == "tacx/7-fix-login" and wt.base == head
    assert git(path, "rev-parse", "HEAD").strip() == head
    assert git(path, "branch", "--show-current").strip() == "tacx/7-fix-login"
    assert (path / "app.py").read_text() == "print(1)\n"

    (path / "new.txt").write_text("from the agent\n")
    (path / "app.py").write_text("print(2)\n")
    assert not (repo / "new.txt").exists()
    assert (repo / "app.py").read_text() == "print(1)\n"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(repo, "branch", "--show-current").strip() == "main"


def test_exclude_home_is_idempotent_and_leaves_gitignore_alone(repo: Path, home: Path, tmp_path: Path) -> None:
    assert "?? .tacx/" in git(repo, "status", "--porcelain")
    exclude_home(repo, home)
    exclude_home(repo, home)
    exclude = repo / ".git" / "info" / "exclude"
    assert exclude.read_text().count("/.tacx/") == 1
    assert not (repo / ".gitignore").exists()
    assert git(repo, "status", "--porcelain") == ""

    # A home outside the repository: nothing to do.
    before = exclude.read_text()
    exclude_home(repo, tmp_path / "elsewhere" / ".tacx")
    assert exclude.read_text() == before

    # Deeper homes are anchored and escaped.
    odd = repo / "tools" / "my home[1]"
    (odd / "trees").mkdir(parents=True)
    (odd / "db").write_text("")
    exclude_home(repo, odd)
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_reuse_keeps_the_work(repo: Path, home: Path) -> None:
    path = home / "trees" / "3"
    first = ensure_worktree(repo, path, "tacx/3-x")
    (path / "wip.txt").write_text("half done\n")
    own = commit(path, "done.txt")
    commit(repo, "main-moved-on.txt")

    again = ensure_worktree(repo, path, "tacx/3-x")
    assert not again.created
    assert again.base == first.base
    assert (path / "wip.txt").read_text() == "half done\n"
    assert git(path, "rev-parse", "HEAD").strip() == own


def test_recreated_when_the_folder_was_deleted_but_the_branch_exists(repo: Path, home: Path) -> None:
    import shutil

    path = home / "trees" / "4"
    first = ensure_worktree(repo, path, "tacx/4-y")
    own = commit(path, "kept.txt")
    shutil.rmtree(path)

    again = ensure_worktree(repo, path, "tacx/4-y")
    assert again.created and again.base == first.base
    assert git(path, "rev-parse", "HEAD").strip() == own
    assert (path / "kept.txt").exists()
    assert len(registered(repo)) == 2


def test_branch_claimed_by_a_stale_entry_elsewhere_is_checked_out_again(repo: Path, home: Path) -> None:
    import shutil

    old = home / "trees" / "13"
    ensure_worktree(repo, old, "tacx/13-moved")
    own = commit(old, "work.txt")
    shutil.rmtree(old)
    new = home / "trees" / "13b"
    wt = ensure_worktree(repo, new, "tacx/13-moved")
    assert wt.created and git(new, "rev-parse", "HEAD").strip() == own
    assert len(registered(repo)) == 2


def test_an_empty_folder_is_used(repo: Path, home: Path) -> None:
    path = home / "trees" / "5"
    path.mkdir(parents=True)
    assert ensure_worktree(repo, path, "tacx/5-z").created
    assert (path / "README.md").exists()


def test_occupied_path_is_an_error_and_nothing_is_deleted(repo: Path, home: Path) -> None:
    path = home / "trees" / "6"
    path.mkdir(parents=True)
    (path / "precious.txt").write_text("mine\n")
    with pytest.raises(WorkspaceError, match="already exists and is not a git worktree"):
        ensure_worktree(repo, path, "tacx/6-a")
    assert (path / "precious.txt").read_text() == "mine\n"
    assert "tacx/6-a" not in branches(repo)

    # A worktree of this repo on another branch: also an error, also untouched.
    other = home / "trees" / "8"
    ensure_worktree(repo, other, "tacx/8-b")
    (other / "wip.txt").write_text("wip\n")
    with pytest.raises(WorkspaceError, match="on branch tacx/8-b, not tacx/8-c"):
        ensure_worktree(repo, other, "tacx/8-c")
    assert (other / "wip.txt").exists()

    # The branch already checked out in another worktree.
    with pytest.raises(WorkspaceError, match="already checked out"):
        ensure_worktree(repo, home / "trees" / "9", "tacx/8-b")

    # A worktree of another repository at the path.
    elsewhere = repo.parent / "other-repo"
    elsewhere.mkdir()
    git(elsewhere, "-c", "init.defaultBranch=main", "init", "-q")
    commit(elsewhere, "f.txt")
    foreign = home / "trees" / "10"
    git(elsewhere, "worktree", "add", "-q", "-b", "tacx/10-d", str(foreign))
    with pytest.raises(WorkspaceError, match="not a git worktree of"):
        ensure_worktree(repo, foreign, "tacx/10-d")
    assert (foreign / "f.txt").exists()


def test_invalid_branch_name_is_refused(repo: Path, home: Path) -> None:
    for bad in ("@{-1}", "a..b", "-x", "x.lock"):
        with pytest.raises(WorkspaceError, match="not a valid git branch name"):
            ensure_worktree(repo, home / "trees" / "1", bad)
    assert not (home / "trees" / "1").exists()


def test_concurrent_worktree_adds(repo: Path, home: Path) -> None:
    git(repo, "pack-refs", "--all")
    results: dict[int, object] = {}

    def add(n: int) -> None:
        try:
            results[n] = ensure_worktree(repo, home / "trees" / str(n), branch_name(n, f"task {n}"))
        except Exception as exc:  # noqa: BLE001 - reported below
            results[n] = exc

    threads = [threading.Thread(target=add, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = {n: r for n, r in results.items() if isinstance(r, Exception)}
    assert not failures
    assert len(registered(repo)) == 13


# ---------------------------------------------------------------- cleanup


def test_cleanup_refuses_a_modified_tracked_file(repo: Path, home: Path) -> None:
    path = home / "trees" / "1"
    wt = ensure_worktree(repo, path, "tacx/1-a")
    (path / "README.md").write_text("changed\n")
    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert isinstance(result, CleanupResult)
    assert not result.removed and not result.branch_deleted
    assert result.reason.startswith("1 uncommitted change (git status --porcelain)")
    assert (path / "README.md").read_text() == "changed\n"
    assert "tacx/1-a" in branches(repo)


def test_cleanup_refuses_untracked_files_but_not_ignored_ones(repo: Path, home: Path) -> None:
    commit(repo, ".gitignore", "*.log\n")
    path = home / "trees" / "2"
    wt = ensure_worktree(repo, path, "tacx/2-a")
    (path / "build.log").write_text("ignored\n")
    (path / "new" / "deep").mkdir(parents=True)
    (path / "new" / "deep" / "a.txt").write_text("a\n")
    (path / "new" / "b.txt").write_text("b\n")
    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert not result.removed
    assert "2 uncommitted changes" in result.reason
    assert (path / "new" / "deep" / "a.txt").exists()

    import shutil
    shutil.rmtree(path / "new")
    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert result.removed and result.branch_deleted, result.reason
    assert not path.exists()


def test_cleanup_refuses_unpushed_commits(repo: Path, home: Path) -> None:
    path = home / "trees" / "4"
    wt = ensure_worktree(repo, path, "tacx/4-fix-login")
    commit(path, "one.txt")
    commit(path, "two.txt")
    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert not result.removed and not result.branch_deleted
    assert result.reason == "2 commits not pushed to any remote (tacx/4-fix-login); kept"
    # Also without a recorded base (the repo's HEAD is used).
    assert not cleanup_worktree(repo, path, wt.branch, None).removed

    # Commits made on a detached HEAD in the worktree count too.
    git(path, "checkout", "-q", "--detach")
    commit(path, "three.txt")
    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert not result.removed and "3 commits not pushed" in result.reason
    assert path.exists() and "tacx/4-fix-login" in branches(repo)


def test_cleanup_removes_a_clean_unchanged_worktree_and_its_branch(repo: Path, home: Path) -> None:
    exclude_home(repo, home)
    path = home / "trees" / "5"
    wt = ensure_worktree(repo, path, "tacx/5-nothing")
    commit(repo, "later.txt")  # main moves on; the task branch has nothing of its own
    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert result.removed and result.branch_deleted, result.reason
    assert "deleted branch tacx/5-nothing" in result.reason
    assert not path.exists()
    assert "tacx/5-nothing" not in branches(repo)
    assert registered(repo) == [str(Path(git(repo, "rev-parse", "--show-toplevel").strip()))]
    assert git(repo, "status", "--porcelain") == ""


def test_cleanup_removes_merged_work(repo: Path, home: Path) -> None:
    path = home / "trees" / "6"
    wt = ensure_worktree(repo, path, "tacx/6-merged")
    commit(path, "feature.txt")
    git(repo, "merge", "-q", "--ff-only", "tacx/6-merged")
    result = cleanup_worktree(repo, path, wt.branch, None)
    assert result.removed and result.branch_deleted, result.reason


def test_cleanup_removes_a_pushed_worktree_and_keeps_its_branch(repo: Path, home: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "-c", "init.defaultBranch=main", "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    path = home / "trees" / "7"
    wt = ensure_worktree(repo, path, "tacx/7-pushed")
    commit(path, "feature.txt")
    git(path, "push", "-q", "origin", "tacx/7-pushed")

    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert result.removed and not result.branch_deleted, result.reason
    assert "kept branch tacx/7-pushed (1 commit of its own, pushed to a remote)" in result.reason
    assert not path.exists()
    assert "tacx/7-pushed" in branches(repo)


def test_cleanup_of_a_folder_deleted_by_hand(repo: Path, home: Path) -> None:
    import shutil

    # Nothing of its own: the stale entry is cleared and the branch deleted.
    path = home / "trees" / "8"
    wt = ensure_worktree(repo, path, "tacx/8-gone")
    shutil.rmtree(path)
    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert result.removed and result.branch_deleted, result.reason
    assert "already gone" in result.reason and "stale worktree entry" in result.reason
    assert len(registered(repo)) == 1

    # Commits of its own: the branch survives (the commits live in it).
    path = home / "trees" / "9"
    wt = ensure_worktree(repo, path, "tacx/9-gone")
    own = commit(path, "work.txt")
    shutil.rmtree(path)
    result = cleanup_worktree(repo, path, wt.branch, wt.base)
    assert result.removed and not result.branch_deleted
    assert "1 commit not pushed" in result.reason
    assert git(repo, "rev-parse", "tacx/9-gone").strip() == own
    assert len(registered(repo)) == 1

    # Called again: still fine.
    assert cleanup_worktree(repo, path, wt.branch, wt.base).removed


def test_cleanup_leaves_what_is_not_its_own(repo: Path, home: Path) -> None:
    plain = home / "trees" / "11"
    plain.mkdir(parents=True)
    (plain / "f.txt").write_text("f\n")
    result = cleanup_worktree(repo, plain, "tacx/11-x", None)
    assert not result.removed and "not a worktree" in result.reason
    assert (plain / "f.txt").exists()

    result = cleanup_worktree(repo, repo, "main", None)
    assert not result.removed and "main work tree" in result.reason
    assert (repo / "README.md").exists()


# ---------------------------------------------------------------- dir workspaces


def test_remove_dir_workspace_guard(tmp_path: Path, repo: Path, home: Path) -> None:
    ws = tmp_path / ".tacx" / "trees" / "3"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "f.txt").write_text("x\n")
    result = remove_dir_workspace(ws)
    assert result.removed and not ws.exists()
    assert remove_dir_workspace(ws).removed  # already gone

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "f.txt").write_text("keep\n")
    for bad in (precious, tmp_path, tmp_path / ".tacx" / "trees" / "..", Path("/")):
        with pytest.raises(WorkspaceError, match="refusing"):
            remove_dir_workspace(bad)
    assert (precious / "f.txt").exists()

    link = tmp_path / ".tacx" / "trees" / "link"
    link.symlink_to(precious)
    with pytest.raises(WorkspaceError, match="symbolic link"):
        remove_dir_workspace(link)
    assert (precious / "f.txt").exists()

    wt = ensure_worktree(repo, home / "trees" / "12", "tacx/12-w")
    with pytest.raises(WorkspaceError, match="git worktree"):
        remove_dir_workspace(wt.path)
    assert (wt.path / "README.md").exists()
