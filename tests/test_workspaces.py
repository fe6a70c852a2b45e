"""Task workspaces end to end, through the real `tacx` command against real git repositories:
worktrees per task, `setup:` once per worktree, resuming an interrupted agent session after a
crash, `tacx clean` never losing work, and worktree workflows refused outside a repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import REPO, Project, wait_for

FAKES = REPO / "tests" / "fakes"
SLUG_TITLE = "Fix: the login (again)!"


# ---------------------------------------------------------------- helpers


def git(project: Project, cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", "-C", str(cwd), *args], env=project.env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=60, check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {cwd}: {proc.stderr}")
    return proc.stdout


def hermetic_git(project: Project, tmp_path: Path) -> None:
    """No user or system git config for tacx, its daughters and our own git calls."""
    config = tmp_path / "gitconfig"
    config.write_text("")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_CEILING_DIRECTORIES"):
        project.env.pop(var, None)
    project.env.update(GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    for who in ("AUTHOR", "COMMITTER"):
        project.env[f"GIT_{who}_NAME"] = "Test"
        project.env[f"GIT_{who}_EMAIL"] = "test@example.com"


def init_repo(project: Project, tmp_path: Path, *, commit: bool = True) -> None:
    hermetic_git(project, tmp_path)
    git(project, project.root, "init", "-q", "-b", "main")
    if commit:
        (project.root / "README.md").write_text("hello\n")
        git(project, project.root, "add", "README.md")
        git(project, project.root, "commit", "-q", "-m", "initial")


def use_fakes(project: Project, *first: Path) -> None:
    project.env["PATH"] = os.pathsep.join([*map(str, first), str(FAKES), project.env.get("PATH", "")])


def workflow(tmp_path: Path, name: str, text: str) -> str:
    """A workflow file outside the project root, so the repository's `git status` stays clean."""
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def real(path: str | Path) -> str:
    return os.path.realpath(path)


def stages(shown: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in shown["stages"]}


def events(shown: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in shown["events"] if e["kind"] == kind]


def worktree_paths(project: Project) -> list[str]:
    out = git(project, project.root, "worktree", "list", "--porcelain")
    return [real(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("worktree ")]


def branch_exists(project: Project, branch: str) -> bool:
    proc = subprocess.run(
        ["git", "-C", str(project.root), "show-ref", "--verify", "--quiet", f"refs/heads/{branch}"],
        env=project.env, capture_output=True, stdin=subprocess.DEVNULL, timeout=60, check=False,
    )
    return proc.returncode == 0


def argv_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def clean(project: Project, *ids: int) -> dict[int, dict[str, Any]]:
    entries = json.loads(project.tacx("clean", *map(str, ids), "--json").stdout)
    return {e["task"]: e for e in entries}


# ---------------------------------------------------------------- 1. a task in its own worktree

TWO_STAGES = """
name: wt
workspace: worktree
inputs:
  title: {required: true}
defaults: {retries: 0}
stages:
  - name: agent
    provider: claude
    prompt: "Fix this: {{ inputs.title }}"
    env: {FAKE_WRITE: agent.txt}
  - name: where
    provider: bash
    run: echo "$(git branch --show-current) $(pwd -P)"
"""


def test_worktree_task_runs_on_its_own_branch_and_leaves_the_repo_clean(project: Project, tmp_path: Path) -> None:
    init_repo(project, tmp_path)
    use_fakes(project)
    argv_file = tmp_path / "argv.jsonl"
    project.env["FAKE_ARGV_FILE"] = str(argv_file)
    wf = workflow(tmp_path, "wt", TWO_STAGES)

    project.tacx("run", wf, "-i", f"title={SLUG_TITLE}", "--no-ui")

    (task,) = project.ls()
    task_id = task["id"]
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown
    tree = project.home / "trees" / str(task_id)
    branch = f"tacx/{task_id}-fix-the-login-again"
    assert shown["branch"] == branch
    assert real(shown["workspace"]) == real(tree)
    assert tree.is_dir()
    assert git(project, tree, "branch", "--show-current").strip() == branch
    assert real(tree) in worktree_paths(project)
    # The agent wrote into the worktree, not into the project.
    assert (tree / "agent.txt").is_file()
    assert not (project.root / "agent.txt").exists()
    by_name = stages(shown)
    assert by_name["where"]["result"] == f"{branch} {real(tree)}"
    assert len(events(shown, "workspace.created")) == 1
    assert events(shown, "workspace.reused") == []
    # The home (and the trees in it) does not show in the main repository's status.
    assert git(project, project.root, "status", "--porcelain") == ""
    assert "/.tacx/" in (project.root / ".git" / "info" / "exclude").read_text()
    (claude_run,) = [r for r in argv_records(argv_file) if r["tool"] == "claude"]
    assert real(claude_run["cwd"]) == real(tree)
    assert "--resume" not in claude_run["argv"]
    prompt = claude_run["argv"][claude_run["argv"].index("-p") + 1]
    assert prompt == f"Fix this: {SLUG_TITLE}"


# ---------------------------------------------------------------- 2. setup: once per worktree

SETUP = """
name: with-setup
workspace: worktree
defaults: {retries: 0}
setup: |
  echo "ran in $TACX_WORKSPACE" >> "$TACX_PROJECT_ROOT/setup-runs.txt"
  cp "$TACX_PROJECT_ROOT/.env" "$TACX_WORKSPACE/.env"
stages:
  - name: first
    provider: bash
    run: |
      test -f .env || { echo "no .env in $(pwd)"; exit 4; }
      echo made > made.txt
      cat .env
  - name: flaky
    provider: bash
    run: |
      if [ ! -e "$TACX_PROJECT_ROOT/failed-once" ]; then
        touch "$TACX_PROJECT_ROOT/failed-once"
        echo "failing the first time"
        exit 3
      fi
      test -f made.txt && test -f .env && echo "still here"
"""


def test_setup_runs_once_per_worktree_and_a_retry_reuses_the_tree(project: Project, tmp_path: Path) -> None:
    init_repo(project, tmp_path)
    (project.root / ".env").write_text("SECRET=swordfish\n")
    wf = workflow(tmp_path, "with-setup", SETUP)
    runs = project.root / "setup-runs.txt"

    project.tacx("run", wf, "--no-ui", check=1)
    (task,) = project.ls()
    task_id = task["id"]
    tree = project.home / "trees" / str(task_id)
    shown = project.show(task_id)
    assert shown["status"] == "failed"
    by_name = stages(shown)
    assert [s["name"] for s in shown["stages"]] == ["setup", "first", "flaky"]
    assert by_name["setup"]["status"] == "succeeded"
    assert by_name["first"]["status"] == "succeeded" and by_name["first"]["result"] == "SECRET=swordfish"
    assert by_name["flaky"]["status"] == "failed"
    assert runs.read_text().splitlines() == [f"ran in {tree}"]
    assert (tree / ".env").read_text() == "SECRET=swordfish\n"
    assert (tree / "made.txt").is_file()

    project.tacx("retry", str(task_id))
    project.tacx("--no-ui", "--exit-when-idle")

    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown
    by_name = stages(shown)
    assert by_name["setup"]["attempt"] == 1
    assert by_name["first"]["attempt"] == 1
    assert by_name["flaky"]["attempt"] == 2 and by_name["flaky"]["result"] == "still here"
    assert len(runs.read_text().splitlines()) == 1  # setup did not run again
    assert len(events(shown, "workspace.created")) == 1
    (reused,) = events(shown, "workspace.reused")
    assert real(reused["data"]["path"]) == real(tree)
    assert real(shown["workspace"]) == real(tree)
    assert (tree / "made.txt").is_file() and (tree / ".env").is_file()


SETUP_IGNORED = """
name: setup-ignored
workspace: worktree
defaults: {retries: 0}
setup: |
  echo "ran in $TACX_WORKSPACE" >> "$TACX_PROJECT_ROOT/setup-runs.txt"
  cp "$TACX_PROJECT_ROOT/.env" "$TACX_WORKSPACE/.env"
stages:
  - name: check
    provider: bash
    run: |
      test -f .env || { echo "no .env in $(pwd): setup did not run in this worktree"; exit 5; }
      if [ ! -e "$TACX_PROJECT_ROOT/failed-once" ]; then
        touch "$TACX_PROJECT_ROOT/failed-once"
        echo "failing the first time"
        exit 3
      fi
      echo "has .env"
"""


def test_setup_runs_again_in_a_worktree_made_anew(project: Project, tmp_path: Path) -> None:
    """setup: is once per worktree: when `tacx clean` removed a failed task's worktree (only
    ignored files in it, such as the .env setup copied), a retry makes a new worktree and
    that one needs its setup too."""
    init_repo(project, tmp_path)
    (project.root / ".gitignore").write_text(".env\nsetup-runs.txt\nfailed-once\n")
    git(project, project.root, "add", ".gitignore")
    git(project, project.root, "commit", "-q", "-m", "ignore")
    (project.root / ".env").write_text("SECRET=swordfish\n")
    wf = workflow(tmp_path, "setup-ignored", SETUP_IGNORED)
    runs = project.root / "setup-runs.txt"

    project.tacx("run", wf, "--no-ui", check=1)
    (task,) = project.ls()
    task_id = task["id"]
    tree = project.home / "trees" / str(task_id)
    assert (tree / ".env").is_file()
    entry = clean(project, task_id)[task_id]
    assert entry["removed"] is True and entry["branch_deleted"] is True, entry  # ignored files only
    assert not tree.exists()

    project.tacx("retry", str(task_id))
    project.tacx("--no-ui", "--exit-when-idle", check=None)

    shown = project.show(task_id)
    assert len(events(shown, "workspace.created")) == 2  # a new worktree ...
    assert (tree / ".env").is_file(), stages(shown)["check"]["error"]  # ... set up like the first
    assert runs.read_text().splitlines() == [f"ran in {tree}"] * 2
    assert shown["status"] == "succeeded", shown


# ---------------------------------------------------------------- 3. resume after a crash

# A `claude` that prints an init line with a fixed session id; its first run then hangs, any
# later run records that it ran, writes resumed.txt and ends with a result.
CRASHY_CLAUDE = '''\
#!{python}
import json, os, sys, time
argv = sys.argv[1:]
if "--version" in argv:
    print("2.0.14 (Claude Code)")
    sys.exit(0)
runs = os.environ["CRASHY_RUNS"]
first = not os.path.exists(runs)
with open(runs, "a") as f:
    f.write(json.dumps({{"argv": argv, "cwd": os.getcwd()}}) + "\\n")
print(json.dumps({{"type": "system", "subtype": "init", "session_id": "sess-1", "cwd": os.getcwd(),
                  "model": "claude-sonnet-4-5-20250929", "tools": []}}), flush=True)
if first:
    while True:
        time.sleep(3600)
with open("resumed.txt", "w") as f:
    f.write("resumed\\n")
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                  "result": "resumed", "session_id": "sess-1", "total_cost_usd": 0.01,
                  "usage": {{"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 0,
                            "cache_creation_input_tokens": 0}}}}), flush=True)
'''

RESUMING = """
name: resuming
workspace: worktree
defaults: {{retries: 0}}
stages:
  - name: work
    provider: claude
    prompt: "Refactor the parser."
    {resume}
"""


def crash_everything(project: Project, coordinator: subprocess.Popen[str], task_id: int) -> str:
    """SIGKILL tacx, its keeper and the agent's whole process group once the session id is
    in the store: as a power cut would, nothing is left to say how the agent ended."""

    def hanging() -> dict[str, Any] | None:
        stage = project.show(task_id)["stages"][0]
        live = stage["status"] == "running" and stage["session_id"] == "sess-1" and stage["daughters"]
        return stage if live else None

    stage = wait_for(hanging, timeout=30, what="the agent running with session sess-1 in the store")
    pids = [d["pid"] for d in stage["daughters"] if d["ended_at"] is None]
    assert pids
    keepers = project.keepers()
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait(timeout=20)
    for keeper in keepers:
        keeper.kill()
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                             for p in pids), what="the daughters gone")
    assert project.show(task_id)["status"] == "running"  # as the crash left it
    return stage["daughters"][0]["argv"]


def crash_and_restart(project: Project, tmp_path: Path, resume: str) -> tuple[int, list[dict[str, Any]]]:
    init_repo(project, tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text(CRASHY_CLAUDE.format(python=sys.executable))
    fake.chmod(0o755)
    use_fakes(project, bin_dir)
    runs = tmp_path / "crashy-runs.jsonl"
    project.env["CRASHY_RUNS"] = str(runs)
    wf = workflow(tmp_path, "resuming", RESUMING.format(resume=resume))

    task_id = project.submit(wf)
    coordinator = project.start("--no-ui")
    crash_everything(project, coordinator, task_id)

    project.tacx("--no-ui", "--exit-when-idle", timeout=120)
    return task_id, argv_records(runs)


def test_an_interrupted_session_is_resumed_in_the_same_worktree(project: Project, tmp_path: Path) -> None:
    task_id, runs = crash_and_restart(project, tmp_path, "resume: true")

    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown
    stage = shown["stages"][0]
    assert stage["attempt"] == 2 and stage["result"] == "resumed" and stage["session_id"] == "sess-1"
    tree = project.home / "trees" / str(task_id)
    assert len(runs) == 2
    first, second = runs
    assert "--resume" not in first["argv"]
    assert first["argv"][first["argv"].index("-p") + 1] == "Refactor the parser."
    argv = second["argv"]
    assert "--resume" in argv and argv[argv.index("--resume") + 1] == "sess-1"
    prompt = argv[argv.index("-p") + 1]
    assert prompt.startswith("You were interrupted")
    assert prompt.endswith("Refactor the parser.")
    # The same worktree, reused as the crash left it.
    assert real(first["cwd"]) == real(second["cwd"]) == real(tree)
    assert (tree / "resumed.txt").read_text() == "resumed\n"
    assert len(events(shown, "workspace.created")) == 1
    assert len(events(shown, "workspace.reused")) == 1
    started = [e for e in events(shown, "stage.started") if e["stage"] == "work"]
    assert [e["data"].get("resume_session") for e in started] == [None, "sess-1"]
    assert project.marked_processes() == []


def test_without_resume_an_interrupted_session_starts_afresh(project: Project, tmp_path: Path) -> None:
    task_id, runs = crash_and_restart(project, tmp_path, "")

    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown
    assert len(runs) == 2
    argv = runs[1]["argv"]
    assert "--resume" not in argv
    assert argv[argv.index("-p") + 1] == "Refactor the parser."
    assert real(runs[1]["cwd"]) == real(project.home / "trees" / str(task_id))
    assert project.marked_processes() == []


def test_a_session_stopped_with_tacx_is_resumed_at_the_next_start(project: Project, tmp_path: Path) -> None:
    """Not only a crash: tacx stopped (SIGINT) ends the agent, and the next start resumes it."""
    init_repo(project, tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text(CRASHY_CLAUDE.format(python=sys.executable))
    fake.chmod(0o755)
    use_fakes(project, bin_dir)
    runs = tmp_path / "crashy-runs.jsonl"
    project.env["CRASHY_RUNS"] = str(runs)
    wf = workflow(tmp_path, "resuming", RESUMING.format(resume="resume: true"))

    task_id = project.submit(wf)
    coordinator = project.start("--no-ui")
    wait_for(lambda: project.show(task_id)["stages"][0]["session_id"] == "sess-1", timeout=30,
             what="the session id in the store")
    coordinator.send_signal(signal.SIGINT)
    assert coordinator.wait(timeout=30) == 130
    shown = project.show(task_id)
    assert shown["status"] == "queued" and project.marked_processes() == []

    project.tacx("--no-ui", "--exit-when-idle", timeout=120)
    shown = project.show(task_id)
    assert shown["status"] == "succeeded", shown
    first, second = argv_records(runs)
    assert "--resume" not in first["argv"]
    argv = second["argv"]
    assert argv[argv.index("--resume") + 1] == "sess-1"
    assert argv[argv.index("-p") + 1].startswith("You were interrupted")
    tree = project.home / "trees" / str(task_id)
    assert real(second["cwd"]) == real(tree) and (tree / "resumed.txt").is_file()


# ---------------------------------------------------------------- 4. tacx clean

LEAVES_A_FILE = """
name: leaves-a-file
workspace: worktree
defaults: {retries: 0}
stages:
  - name: agent
    provider: claude
    prompt: "Write notes."
    env: {FAKE_WRITE: notes.txt}
"""

CHANGES_NOTHING = """
name: changes-nothing
workspace: worktree
stages:
  - {name: look, provider: bash, run: "git status --porcelain; echo looked"}
"""

IN_A_DIR = """
name: in-a-dir
workspace: dir
stages:
  - {name: scratch, provider: bash, run: "echo tmp > scratch.txt; echo done"}
"""

GATED = """
name: gated
workspace: worktree
stages:
  - name: wait
    provider: bash
    run: "while [ ! -e \\"$GATE\\" ]; do sleep 0.05; done; echo through"
"""


def test_clean_removes_only_what_loses_no_work(project: Project, tmp_path: Path) -> None:
    init_repo(project, tmp_path)
    use_fakes(project)
    leaves = workflow(tmp_path, "leaves-a-file", LEAVES_A_FILE)
    nothing = workflow(tmp_path, "changes-nothing", CHANGES_NOTHING)
    in_dir = workflow(tmp_path, "in-a-dir", IN_A_DIR)

    project.tacx("run", leaves, "--no-ui")
    project.tacx("run", nothing, "--no-ui")
    project.tacx("run", in_dir, "--no-ui")
    a, b, c = (t["id"] for t in sorted(project.ls(), key=lambda t: t["id"]))
    tree_a, tree_b, tree_c = (project.home / "trees" / str(i) for i in (a, b, c))
    branch_a, branch_b = project.show(a)["branch"], project.show(b)["branch"]
    assert project.show(c)["branch"] is None
    assert (tree_a / "notes.txt").is_file() and (tree_c / "scratch.txt").is_file()

    # An untracked file: kept.
    entry = clean(project, a)[a]
    assert entry["removed"] is False and entry["branch_deleted"] is False
    assert "uncommitted" in entry["reason"]
    assert (tree_a / "notes.txt").is_file()

    # Committed but not pushed: kept.
    git(project, tree_a, "add", "notes.txt")
    git(project, tree_a, "commit", "-q", "-m", "notes")
    entry = clean(project, a)[a]
    assert entry["removed"] is False and "not pushed" in entry["reason"]
    assert (tree_a / "notes.txt").is_file() and branch_exists(project, branch_a)

    # Pushed: the worktree goes, the branch (with a commit of its own) stays.
    origin = tmp_path / "origin.git"
    git(project, tmp_path, "init", "-q", "--bare", str(origin))
    git(project, project.root, "remote", "add", "origin", str(origin))
    git(project, tree_a, "push", "-q", "origin", branch_a)
    entries = clean(project)  # every ended task
    assert entries[a]["removed"] is True and entries[a]["branch_deleted"] is False
    assert not tree_a.exists()
    assert real(tree_a) not in worktree_paths(project)
    assert branch_exists(project, branch_a)

    # Nothing changed: the worktree and its branch go.
    assert entries[b]["removed"] is True and entries[b]["branch_deleted"] is True
    assert not tree_b.exists() and not branch_exists(project, branch_b)
    assert real(tree_b) not in worktree_paths(project)

    # A plain dir workspace of an ended task goes.
    assert entries[c]["removed"] is True
    assert not tree_c.exists()

    for task_id, kind in ((a, "workspace.removed"), (b, "workspace.removed"), (c, "workspace.removed")):
        assert events(project.show(task_id), kind)
    assert worktree_paths(project) == [real(project.root)]
    assert git(project, project.root, "status", "--porcelain") == ""


def test_clean_never_touches_a_queued_or_running_task(project: Project, tmp_path: Path) -> None:
    init_repo(project, tmp_path)
    gate = tmp_path / "gate"
    project.env["GATE"] = str(gate)
    wf = workflow(tmp_path, "gated", GATED)

    task_id = project.submit(wf)
    entry = clean(project, task_id)[task_id]
    assert entry["removed"] is False and "queued" in entry["reason"]

    project.start("--no-ui")
    tree = project.home / "trees" / str(task_id)
    wait_for(lambda: project.show(task_id)["stages"][0]["status"] == "running" and tree.is_dir(),
             timeout=30, what="the gated stage running in its worktree")
    assert task_id not in clean(project)  # a plain `tacx clean` skips it
    entry = clean(project, task_id)[task_id]
    assert entry["removed"] is False and "running" in entry["reason"]
    assert tree.is_dir() and real(tree) in worktree_paths(project)
    gate.touch()
    wait_for(lambda: project.show(task_id)["status"] == "succeeded", timeout=30, what="the task's end")
    assert tree.is_dir()


# ---------------------------------------------------------------- 5. no git repository

ONE_WORKTREE_STAGE = """
name: needs-git
workspace: worktree
stages:
  - {name: s, provider: shell, run: "echo hi"}
"""


def _outside_any_repo(path: Path) -> bool:
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    return proc.returncode != 0


def test_worktree_workflow_refused_outside_a_repository_and_nothing_written(project: Project, tmp_path: Path) -> None:
    if not _outside_any_repo(tmp_path):
        pytest.skip(f"{tmp_path} lies inside a git repository")
    hermetic_git(project, tmp_path)
    wf = workflow(tmp_path, "needs-git", ONE_WORKTREE_STAGE)
    for args in (("submit", wf), ("run", wf, "--no-ui")):
        proc = project.tacx(*args, check=2)
        assert "not inside a git repository" in proc.stderr, proc.stderr
        assert not project.home.exists(), args

    git(project, project.root, "init", "-q", "-b", "main")
    for args in (("submit", wf), ("run", wf, "--no-ui")):
        proc = project.tacx(*args, check=2)
        assert "no commits yet" in proc.stderr, proc.stderr
        assert not project.home.exists(), args


def test_clean_leaves_alone_a_folder_the_worktree_could_not_take(project: Project, tmp_path: Path) -> None:
    """trees/<id> held something that is not the task's worktree (left over from an earlier
    home, say): the task fails without touching it, and `tacx clean` must not delete it either."""
    init_repo(project, tmp_path)
    wf = workflow(tmp_path, "needs-git", ONE_WORKTREE_STAGE)
    occupied = project.home / "trees" / "1"
    occupied.mkdir(parents=True)
    (occupied / "precious.txt").write_text("someone's work\n")

    project.tacx("run", wf, "--no-ui", check=1)
    shown = project.show(1)
    assert shown["status"] == "failed"
    assert "not a git worktree" in shown["stages"][0]["error"]
    assert (occupied / "precious.txt").is_file()

    entry = clean(project, 1)[1]
    assert (occupied / "precious.txt").is_file(), entry
    assert entry["removed"] is False


# ---------------------------------------------------------------- 6. two at once

SIDE_BY_SIDE = """
name: side-by-side
workspace: worktree
inputs:
  title: {required: true}
stages:
  - name: meet
    provider: bash
    run: |
      echo "$TACX_TASK_ID" > mine.txt
      touch "$SYNC/$TACX_TASK_ID"
      for i in $(seq 400); do
        [ "$(ls "$SYNC" | wc -l)" -ge 2 ] && break
        sleep 0.05
      done
      [ "$(ls "$SYNC" | wc -l)" -ge 2 ] || { echo "alone"; exit 9; }
      git branch --show-current
"""


def test_two_worktree_tasks_run_side_by_side(project: Project, tmp_path: Path) -> None:
    init_repo(project, tmp_path)
    sync = tmp_path / "sync"
    sync.mkdir()
    project.env["SYNC"] = str(sync)
    wf = workflow(tmp_path, "side-by-side", SIDE_BY_SIDE)
    ids = [project.submit(wf, "-i", "title=Same title"), project.submit(wf, "-i", "title=Same title")]

    project.tacx("--no-ui", "--exit-when-idle", "--max-workers", "2", timeout=120)

    shown = [project.show(i) for i in ids]
    assert [s["status"] for s in shown] == ["succeeded", "succeeded"], shown
    branches = [s["branch"] for s in shown]
    assert branches == [f"tacx/{i}-same-title" for i in ids]
    assert [s["stages"][0]["result"] for s in shown] == branches  # both met: they ran at once
    trees = [project.home / "trees" / str(i) for i in ids]
    assert [real(s["workspace"]) for s in shown] == [real(t) for t in trees]
    for task_id, tree in zip(ids, trees):
        assert (tree / "mine.txt").read_text() == f"{task_id}\n"
    assert sorted(worktree_paths(project)) == sorted([real(project.root), *map(real, trees)])
    assert git(project, project.root, "status", "--porcelain") == ""
