"""The pull request of an issue's task that succeeded in a worktree: what the agents left
uncommitted is committed, the branch is pushed to the project's remote, and a pull request
is opened (a draft by default), unless one is open for that branch already (a stage may
have opened it with `gh pr create`). Its body says `Closes #N`, the plan in short, and the
cost table."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tacx.sources import story
from tacx.sources.gh import GhError
from tacx.workspace import publish
from tacx.workspace.worktree import WorkspaceError

if TYPE_CHECKING:
    from tacx.sources.github import GitHubSource


def _plan(task: dict[str, Any]) -> str | None:
    stages = task.get("stages") or []
    named = [s for s in stages if s.get("name") == "plan" and s.get("result")]
    return (named or [s for s in stages if s.get("result")] or [{}])[0].get("result")


async def open_pull(source: GitHubSource, number: int, task: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the pull request's URL, None), or (None, why there is none) for the issue's comment."""
    branch, workspace = task.get("branch"), task.get("workspace")
    if not branch or not workspace or not Path(workspace).is_dir():
        return None, None
    issue = source.issue(number)
    title = str(issue.get("title") or task.get("title") or f"issue {number}")[:200]
    try:
        await asyncio.to_thread(publish.commit_leftovers, Path(workspace),
                                f"{title}\n\nMade by tacx task {task['id']} for #{number}.")
        await asyncio.to_thread(publish.push, Path(workspace), branch, source.repo)
        owner = source.repo.split("/")[0]
        found = await source.gh.api("GET", f"repos/{source.repo}/pulls?head={quote(f'{owner}:{branch}', safe='')}&state=open")
        if isinstance(found.body, list) and found.body and isinstance(found.body[0], dict):
            return str(found.body[0].get("html_url")), None
        base = source.conf.base
        if not base:
            repo = await source.gh.api("GET", f"repos/{source.repo}")
            base = str(repo.body.get("default_branch") or "main") if isinstance(repo.body, dict) else "main"
        made = await source.gh.api("POST", f"repos/{source.repo}/pulls", body={
            "title": title, "head": branch, "base": base, "draft": source.conf.draft,
            "body": story.pull_body(task, number, _plan(task)),
        })
        url = made.body.get("html_url") if isinstance(made.body, dict) else None
        return (str(url), None) if url else (None, "GitHub opened no pull request and said nothing of it")
    except (WorkspaceError, GhError) as exc:
        return None, f"The work is on branch `{branch}`, but no pull request was opened:\n{story.fence(str(exc))}"
