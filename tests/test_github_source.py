"""GitHub issues in, pull requests out (issue 11), end to end: a real git repository with a
bare remote, the real headless coordinator, and the fake `gh` (tests/fakes/gh) holding the
repository's issues, comments, labels and pull requests in a file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import Project
from tests.fakegh import FakeGitHub
from tests.test_workspaces import git, init_repo

FIX = """\
name: fix
workspace: worktree
inputs:
  title: {required: true}
  body: {default: ""}
  number: {default: ""}
stages:
  - name: plan
    provider: mock
    prompt: "Plan: {{ inputs.title }}"
    extra_args: [--think, 0.2s]
  - name: build
    provider: bash
    run: |
      printf '%s\\n' "$TACX_INPUT_TITLE" > FIX.md
      printf '%s\\n' "$TACX_INPUT_BODY" > BODY.md
"""


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def github(project: Project, tmp_path: Path) -> FakeGitHub:
    """The project: a git repository with a bare `origin`, the `fix` workflow, a GitHub
    source polling octo/widgets through the fake gh."""
    init_repo(project, tmp_path)
    remote = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True, env=project.env)
    git(project, project.root, "remote", "add", "origin", str(remote))
    git(project, project.root, "push", "-q", "origin", "main")
    (project.root / ".tacx").mkdir(exist_ok=True)
    workflows = project.root / ".tacx" / "workflows"
    workflows.mkdir()
    (workflows / "fix.yaml").write_text(FIX)
    (project.root / "tacx.yaml").write_text(textwrap.dedent("""\
        sources:
          - github: octo/widgets
            label: tacx
            workflow: fix
            inputs: {title: "{{ issue.title }}", body: "{{ issue.body }}", number: "{{ issue.number }}"}
            poll: 2s
        """))
    fake = FakeGitHub(tmp_path / "gh.json", tmp_path / "gh.log")
    project.env.update(FakeGitHub.path_env(project.env))
    project.env.update(fake.env())
    project.env["TACX_REMOTE"] = str(remote)
    return fake


def building(project: Project) -> bool:
    """The build stage runs (False while the store is not made yet)."""
    try:
        return bool(project.query("SELECT 1 FROM stages WHERE name = 'build' AND status = 'running'"))
    except sqlite3.Error:
        return False


def branches(remote: str) -> list[str]:
    out = subprocess.run(["git", "--git-dir", remote, "branch", "--format=%(refname:short)"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


def test_a_labelled_issue_becomes_a_task_a_pull_request_and_one_edited_comment(project: Project, github: FakeGitHub) -> None:
    hostile = '"; rm -rf / $(touch pwned) `touch pwned` && echo'
    number = github.add_issue("Fix the parser", f"It breaks on {hostile}", labels=["tacx"], author="alice")
    coordinator = project.start("--no-ui")
    try:
        task = wait_for(lambda: [t for t in project.ls() if t["status"] == "succeeded"], 60, "the task to succeed")[0]
        wait_for(lambda: "tacx:done" in [lb["name"] for lb in github.issue(number)["labels"]], 30, "tacx:done")
    finally:
        coordinator.send_signal(signal.SIGINT)
        coordinator.wait(30)
    shown = project.show(task["id"])
    assert shown["title"] == f"#{number} Fix the parser" and shown["inputs"]["number"] == str(number)
    url = f"https://github.com/octo/widgets/issues/{number}"
    assert shown["source"] == {"name": "github:octo/widgets", "url": url}
    assert f"from github:octo/widgets: {url}" in project.tacx("show", str(task["id"])).stdout
    assert [t["id"] for t in json.loads(project.tacx("ls", "--source", "--json").stdout)] == [task["id"]]
    assert json.loads(project.tacx("ls", "--source", "github:other/repo", "--json").stdout) == []
    assert not (project.root / "pwned").exists() and not list(project.home.rglob("pwned"))

    # One pull request: the task's branch into main, a draft, closing the issue, with the cost table.
    (pull,) = github.pulls()
    assert pull["head"]["label"] == f"octo:{shown['branch']}" and pull["base"]["ref"] == "main" and pull["draft"] is True
    assert f"Closes #{number}" in pull["body"] and "| **total** |" in pull["body"]
    # The branch was pushed with the agents' work committed.
    remote = project.env["TACX_REMOTE"]
    assert shown["branch"] in branches(remote)
    files = subprocess.run(["git", "--git-dir", remote, "ls-tree", "--name-only", shown["branch"]],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "FIX.md" in files and "BODY.md" in files

    # One comment, edited as the task went, ending with the pull request's link.
    (comment,) = github.comments(number)
    assert comment["user"]["login"] == "maintainer"
    assert "**done**" in comment["body"] and pull["html_url"] in comment["body"]
    assert "| plan | succeeded |" in comment["body"] and "| build | succeeded |" in comment["body"]
    edits = [c for c in github.calls() if c["argv"][:5] == ["api", "-i", "-X", "PATCH", "-H"]]
    assert len(edits) >= 3  # picked up, stages, the end
    labels = [lb["name"] for lb in github.issue(number)["labels"]]
    assert "tacx:done" in labels and "tacx" not in labels and "tacx:working" not in labels


def test_an_outsiders_retry_is_ignored_and_a_writers_retry_runs_the_task_again(project: Project, github: FakeGitHub) -> None:
    (project.root / ".tacx" / "workflows" / "fix.yaml").write_text(FIX.replace(
        "printf '%s\\n' \"$TACX_INPUT_TITLE\" > FIX.md", "test -e \"$TACX_PROJECT_ROOT/go\" || exit 3"))
    number = github.add_issue("Flaky", labels=["tacx"])
    coordinator = project.start("--no-ui")
    try:
        wait_for(lambda: [t for t in project.ls() if t["status"] == "failed"], 60, "the task to fail")
        wait_for(lambda: "tacx:failed" in [lb["name"] for lb in github.issue(number)["labels"]], 30, "tacx:failed")
        assert "/tacx retry" in github.comments(number)[0]["body"]
        seen = len(github.calls())
        github.comment(number, "/tacx retry", author="mallory", association="NONE")
        wait_for(lambda: any("issues/comments?since" in c["argv"][-1] and c["status"] == 200
                             for c in github.calls()[seen:]), 20, "a poll that reads the new comment")
        time.sleep(0.5)
        assert project.ls()[0]["status"] == "failed"
        (project.root / "go").write_text("")
        github.comment(number, "/tacx retry please", author="bob", association="COLLABORATOR")
        wait_for(lambda: project.ls()[0]["status"] == "succeeded", 60, "the retried task to succeed")
        wait_for(lambda: "tacx:done" in [lb["name"] for lb in github.issue(number)["labels"]], 30, "tacx:done")
    finally:
        coordinator.send_signal(signal.SIGINT)
        coordinator.wait(30)
    assert len(project.ls()) == 1  # one task per issue, ever
    assert len([c for c in github.comments(number) if c["user"]["login"] == "maintainer"]) == 1


def test_gh_logged_out_or_offline_is_said_in_tacx_sources_and_nothing_is_made(project: Project, github: FakeGitHub) -> None:
    github.add_issue("Waiting", labels=["tacx"])
    github.set(logged_in=False)
    coordinator = project.start("--no-ui")
    try:
        wait_for(lambda: "not logged in" in project.tacx("sources").stdout, 30, "sources to say gh is logged out")
        assert project.ls() == []
        from tacx.ui.data import DashboardData  # the dashboard's header says it too

        data = DashboardData(project.home / "tacx.db")
        try:
            alerts = data.snapshot().overview.source_alerts
        finally:
            data.close()
        assert alerts and alerts[0].startswith("github:octo/widgets: gh is not logged in")
        github.set(logged_in=True, network_down=True)
        wait_for(lambda: "cannot reach GitHub" in project.tacx("sources").stdout, 60, "sources to say offline")
        github.set(network_down=False)
        wait_for(lambda: project.ls(), 90, "the task once GitHub answers again")
    finally:
        coordinator.send_signal(signal.SIGINT)
        coordinator.wait(30)
    state = json.loads(project.tacx("sources", "--json").stdout)[0]["state"]
    assert state["issues_taken"] == 1


def test_an_idle_source_spends_no_rate_limit(project: Project, github: FakeGitHub) -> None:
    coordinator = project.start("--no-ui")
    try:
        wait_for(lambda: len([c for c in github.calls() if c["status"] == 304]) >= 2, 40, "a poll answered 304")
    finally:
        coordinator.send_signal(signal.SIGINT)
        coordinator.wait(30)
    served = [c for c in github.calls() if c["status"] not in (304, None)]
    assert len(served) <= 2  # the first answer to each of the two questions; then only 304s
    assert github.rate()["remaining"] >= github.rate()["limit"] - 2


def test_the_config_is_checked_with_line_and_column(project: Project, github: FakeGitHub) -> None:
    (project.root / "tacx.yaml").write_text("sources:\n  - github: octo\n    lable: tacx\n")
    out = project.tacx("sources", check=2)
    assert "tacx.yaml:2:13: sources[0].github: expected owner/repo" in out.stderr
    assert "tacx.yaml:3:5: sources[0].lable: unknown key 'lable'" in out.stderr
    assert os.path.exists(project.root / "tacx.yaml")


def killed_while_building(project: Project, github: FakeGitHub, title: str, build: str) -> int:
    """The fix workflow with `build` as its build step, an issue labelled, and a coordinator
    killed -9 while it builds: the issue's number."""
    (project.root / ".tacx" / "workflows" / "fix.yaml").write_text(FIX.replace(
        "printf '%s\\n' \"$TACX_INPUT_TITLE\" > FIX.md", build))
    number = github.add_issue(title, labels=["tacx"])
    first = project.start("--no-ui")
    wait_for(lambda: building(project), 60, "the build stage to run")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    return number


def test_kill_9_mid_task_then_restart_still_one_task_one_comment_one_pull(project: Project, github: FakeGitHub) -> None:
    number = killed_while_building(project, github, "Survive a crash",
                                   "sleep 2; printf '%s\\n' \"$TACX_INPUT_TITLE\" > FIX.md")
    second = project.start("--no-ui")
    try:
        wait_for(lambda: [t for t in project.ls() if t["status"] == "succeeded"], 90, "the task to succeed after restart")
        wait_for(lambda: github.pulls(), 30, "the pull request")
        wait_for(lambda: "**done**" in github.comments(number)[0]["body"], 30, "the comment to say done")
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(30)
    assert len(project.ls()) == 1 and len(github.pulls()) == 1 and len(github.comments(number)) == 1


def test_two_homes_polling_one_repository_take_each_issue_once(project: Project, github: FakeGitHub, tmp_path: Path) -> None:
    number = github.add_issue("Only once", labels=["tacx"])
    other_root = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", project.env["TACX_REMOTE"], str(other_root)], check=True, env=project.env)
    other = Project(other_root)
    other.env = dict(project.env, TACX_HOME=str(other_root / ".tacx"))
    (other_root / ".tacx" / "workflows").mkdir(parents=True)
    (other_root / ".tacx" / "workflows" / "fix.yaml").write_text(FIX)
    (other_root / "tacx.yaml").write_text((project.root / "tacx.yaml").read_text())
    one, two = project.start("--no-ui"), other.start("--no-ui")
    try:
        wait_for(lambda: "tacx:done" in [lb["name"] for lb in github.issue(number)["labels"]], 90, "the issue done")
        time.sleep(3)  # another poll of both homes
    finally:
        for proc in (one, two):
            proc.send_signal(signal.SIGINT)
        for proc in (one, two):
            proc.wait(30)
    assert len(project.ls()) + len(other.ls()) == 1
    assert len(github.comments(number)) == 1 and len(github.pulls()) == 1


def test_relabelling_after_the_end_retries_the_same_task(project: Project, github: FakeGitHub) -> None:
    (project.root / ".tacx" / "workflows" / "fix.yaml").write_text(FIX.replace(
        "printf '%s\\n' \"$TACX_INPUT_TITLE\" > FIX.md", "test -e \"$TACX_PROJECT_ROOT/go\" || exit 3"))
    number = github.add_issue("Try again", labels=["tacx"])
    coordinator = project.start("--no-ui")
    try:
        # the end puts tacx:failed on and takes the trigger and tacx:working off
        wait_for(lambda: [lb["name"] for lb in github.issue(number)["labels"]] == ["tacx:failed"], 60, "tacx:failed only")
        (project.root / "go").write_text("")
        github.label(number, "tacx")
        wait_for(lambda: "tacx:done" in [lb["name"] for lb in github.issue(number)["labels"]], 60, "tacx:done")
    finally:
        coordinator.send_signal(signal.SIGINT)
        coordinator.wait(30)
    (task,) = project.ls()
    assert task["status"] == "succeeded"
    assert [e["kind"] for e in project.show(task["id"])["events"] if e["kind"] == "task.retried"] == ["task.retried"]


def test_a_spent_rate_limit_is_waited_out_until_its_reset(project: Project, github: FakeGitHub) -> None:
    github.add_issue("Later", labels=["tacx"])
    github.set(rate={"limit": 5000, "remaining": 0, "reset": int(time.time()) + 4})
    coordinator = project.start("--no-ui")
    try:
        wait_for(lambda: "rate limited" in project.tacx("sources").stdout, 30, "sources to say rate limited")
        assert project.ls() == []
        wait_for(lambda: project.ls(), 40, "the task once the limit resets")
    finally:
        coordinator.send_signal(signal.SIGINT)
        coordinator.wait(30)


def test_an_issue_no_task_can_be_made_for_is_told_so_on_the_issue(project: Project, github: FakeGitHub) -> None:
    (project.root / "tacx.yaml").write_text("sources:\n  - github: octo/widgets\n    workflow: no-such-flow\n    poll: 2s\n")
    number = github.add_issue("Nowhere to go", labels=["tacx"])
    coordinator = project.start("--no-ui")
    try:
        wait_for(lambda: [lb["name"] for lb in github.issue(number)["labels"]] == ["tacx:failed"], 30, "tacx:failed")
    finally:
        coordinator.send_signal(signal.SIGINT)
        coordinator.wait(30)
    (comment,) = github.comments(number)
    assert "could not make a task" in comment["body"] and "no-such-flow" in comment["body"]
    assert project.ls() == []
    assert "no-such-flow" in project.tacx("sources").stdout


def test_a_task_that_ended_while_no_coordinator_listened_is_told_at_the_next_start(
    project: Project, github: FakeGitHub
) -> None:
    number = killed_while_building(project, github, "Cancelled offline", "sleep 30")
    task = project.ls()[0]["id"]
    project.tacx("cancel", str(task))  # no coordinator runs: nobody tells the issue
    assert "tacx:working" in [lb["name"] for lb in github.issue(number)["labels"]]
    second = project.start("--no-ui")
    try:
        wait_for(lambda: [lb["name"] for lb in github.issue(number)["labels"]] == ["tacx:failed"], 40, "told at start")
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(30)
    (comment,) = github.comments(number)
    assert "**cancelled**" in comment["body"]
