"""GitHub issues as a source of tasks: an open issue carrying the source's label becomes
one task of its workflow, and the story is told back on the issue.

Each poll asks for the labelled open issues and for the comments since the source started,
both as conditional requests (`If-None-Match`): while nothing changes GitHub answers 304,
which costs no rate limit.

An issue is taken by one tacx home only. The home posts its comment (which starts with a
marker naming the home) and reads the comments back. The earliest marked comment wins; a
home that lost deletes its own. A home that finds its own comment after a restart knows
the issue is its own. The task is made under the key `owner/repo#N` (one task per issue,
ever, by the store). When the task ends, the trigger label goes and `tacx:done` or
`tacx:failed` comes. Labelling the issue again, or a `/tacx retry` comment from someone
with write access, retries the same task; `/tacx cancel` cancels it.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tacx.bounds import TEXT_VALUE_LIMIT
from tacx.sources import story
from tacx.sources.base import TaskEnd, TaskRequest
from tacx.sources.config import GitHubSourceSettings
from tacx.sources.gh import Gh, GhError, GhHttpError
from tacx.workflow.templates import render
from tacx.home import make_home_dir

log = logging.getLogger(__name__)

WORKING, DONE, FAILED = "tacx:working", "tacx:done", "tacx:failed"
# Opens (or finds) the pull request of a task that succeeded: (its URL, a note for the issue).
PullOpener = Callable[["GitHubSource", int, dict[str, Any]], Awaitable[tuple[str | None, str | None]]]
WRITERS = ("OWNER", "MEMBER", "COLLABORATOR")  # author_association of people with write access
COMMAND = re.compile(r"^/tacx (retry|cancel)\b", re.IGNORECASE)
MAX_PAGES = 30  # pages of 100 comments read back when claiming an issue
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_LAST = re.compile(r'<([^>]+)>;\s*rel="last"')
SINCE_MOVES_AT = 50  # comments in the list of comments since ... before its `since` moves forward


def home_id(root: Path) -> str:
    """This tacx home's name in its claim comments: made once at random and kept in the home
    (a hostname changes with every container and network; a claim must not)."""
    path = root / "home-id"
    try:
        found = path.read_text().strip()
        if len(found) == 12 and all(c in "0123456789abcdef" for c in found):
            return found
    except OSError:
        pass
    made = secrets.token_hex(6)
    make_home_dir(root)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(made + "\n")
    try:
        os.link(temporary, path)  # the first home id written wins; a racing one reads it
    except FileExistsError:
        return path.read_text().strip()
    finally:
        temporary.unlink(missing_ok=True)
    return made


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_iso(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def fit(text: str, limit: int, url: str) -> str:
    """An issue's text within an input's limit (UTF-8 bytes), saying where the rest is."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    note = f"\n\n[... cut: the issue's text is {len(data) // 1024} KiB; read all of it at {url}]"
    return data[: limit - len(note.encode())].decode("utf-8", errors="ignore") + note


class GitHubSource:
    """One repository's labelled issues (see the module's docstring)."""

    def __init__(self, conf: GitHubSourceSettings, *, home: str, gh: Gh | None = None,
                 opener: PullOpener | None = None) -> None:
        self.conf = conf
        self.opener = opener
        self.name = conf.source_name
        self.interval = conf.poll
        self.repo = conf.github
        self.home = home
        self.gh = gh or Gh()
        self.started = time.time()
        self._etags: dict[str, tuple[str, Any]] = {}  # endpoint -> (etag, body)
        self._claimed: dict[int, int] = {}  # issue -> our comment's id
        self._others: set[int] = set()  # issues another home took
        self._handled: set[int] = set()  # command comments acted on
        self._comments_since = iso(self.started - 60)
        self._issues: dict[int, dict[str, Any]] = {}
        self._edits: dict[int, asyncio.Lock] = {}
        self._working: set[int] = set()  # issues labelled tacx:working by this run
        self.seen = 0  # issues seen carrying the label
        self.last_error: str | None = None

    # -- polling ------------------------------------------------------------------------

    async def _get(self, endpoint: str) -> Any:
        """A GET as a conditional request: an unchanged answer is the one kept."""
        etag, kept = self._etags.get(endpoint, (None, None))
        response = await self.gh.api("GET", endpoint, etag=etag)
        if response.status == 304:
            return kept
        if response.etag:
            self._etags = {k: v for k, v in self._etags.items() if k != endpoint} | {endpoint: (response.etag, response.body)}
        return response.body

    async def poll(self) -> Sequence[TaskRequest]:
        try:
            issues = await self._get(f"repos/{self.repo}/issues?labels={quote(self.conf.label, safe='')}&state=open"
                                     "&per_page=100&sort=created&direction=asc")
        except GhHttpError as exc:
            if exc.status == 404:
                raise GhError(f"{self.repo} was not found, or the account gh is logged in as cannot see it"
                              " (`gh auth status`; check the name in tacx.yaml)") from None
            raise
        requests: list[TaskRequest] = []
        labelled = [i for i in issues or [] if isinstance(i, dict) and "pull_request" not in i
                    and isinstance(i.get("number"), int)]
        self.seen = len(labelled)
        for issue in labelled:
            number = issue["number"]
            self._issues[number] = issue
            if number in self._others:
                continue
            try:
                if number not in self._claimed and not await self._claim(number):
                    continue
            except GhHttpError as exc:  # a locked, moved or deleted issue: the others go on
                self.last_error = f"issue #{number}: {exc}"
                log.warning("%s: issue #%s: %s", self.name, number, exc)
                continue
            requests.append(self._request(issue))
        requests += await self._commands()
        return requests

    def _request(self, issue: dict[str, Any], action: str = "run") -> TaskRequest:
        url = str(issue.get("html_url") or f"https://github.com/{self.repo}/issues/{issue['number']}")
        values = {
            "issue.title": fit(str(issue.get("title") or ""), TEXT_VALUE_LIMIT // 8, url),
            "issue.body": fit(str(issue.get("body") or ""), TEXT_VALUE_LIMIT - 1024, url),
            "issue.number": str(issue["number"]),
            "issue.url": url,
            "issue.author": str((issue.get("user") or {}).get("login") or ""),
            "issue.labels": ",".join(str(label.get("name")) for label in issue.get("labels") or []
                                     if isinstance(label, dict)),
        }
        inputs = {key: render(template, values) for key, template in self.conf.inputs.items()}
        title = f"#{issue['number']} {values['issue.title']}"[:200]
        return TaskRequest(key=f"{self.repo}#{issue['number']}", workflow=self.conf.workflow, inputs=inputs,
                           title=title, priority=self.conf.priority, action=action, url=url)

    async def _claim(self, number: int) -> bool:
        """Take the issue for this home, or learn another home has it (see the docstring)."""
        comments = await self._marked(number)
        mine = [c for c in comments if story.home_of(c.get("body")) == self.home]
        posted_now = not mine
        if not mine:
            if comments:  # another home's, and nothing of ours: it is theirs
                self._others.add(number)
                return False
            posted = await self.gh.api("POST", f"repos/{self.repo}/issues/{number}/comments",
                                       body={"body": story.comment(self.home, None)})
            ours = posted.body.get("id") if isinstance(posted.body, dict) else None
            comments = await self._marked(number)
            mine = [c for c in comments if c.get("id") == ours]
        first = comments[0] if comments else None
        if first is None or story.home_of(first.get("body")) != self.home:
            for c in mine:  # lost the race: our comment goes
                await self._quietly("DELETE", f"repos/{self.repo}/issues/comments/{c['id']}")
            self._others.add(number)
            return False
        self._claimed[number] = int(first["id"])
        if posted_now:  # a new claim; an old one (a restart) keeps the labels its task's state gave
            self._working.add(number)
            await self._labels(number, add=[WORKING], remove=[DONE, FAILED])
        return True

    async def _marked(self, number: int) -> list[dict[str, Any]]:
        """The issue's claim comments, oldest first: every page of its comments, and only
        those written by people with write access (a marker anyone can paste is no claim)."""
        endpoint = f"repos/{self.repo}/issues/{number}/comments?per_page=100"
        found: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            response = await self.gh.api("GET", endpoint)
            found += [c for c in response.body if isinstance(c, dict)] if isinstance(response.body, list) else []
            following = _NEXT.search(response.headers.get("link", ""))
            if following is None:
                break
            endpoint = following.group(1).split("api.github.com/", 1)[-1]
        marked = [c for c in found if story.home_of(c.get("body")) and isinstance(c.get("id"), int)
                  and c.get("author_association") in WRITERS]
        return sorted(marked, key=lambda c: c["id"])

    async def _commands(self) -> list[TaskRequest]:
        """`/tacx retry` and `/tacx cancel` from people with write access, on our issues."""
        endpoint = f"repos/{self.repo}/issues/comments?since={self._comments_since}&per_page=100"
        comments = await self._get(endpoint)
        requests = []
        stamps = [t for c in comments or [] if isinstance(c, dict) and (t := parse_iso(c.get("updated_at")))]
        if len(stamps) >= SINCE_MOVES_AT and max(stamps) - 1 > (parse_iso(self._comments_since) or 0):
            # The list stays under a page; a new URL costs one answer, so only when it grows.
            self._comments_since = iso(max(stamps) - 1)
        for c in comments or []:
            if not isinstance(c, dict) or not isinstance(c.get("id"), int) or c["id"] in self._handled:
                continue
            found = COMMAND.match(str(c.get("body") or "").strip())
            number = _issue_number(c.get("issue_url"))
            if found is None or number is None:
                continue
            self._handled.add(c["id"])
            if c.get("author_association") not in WRITERS:
                log.info("ignored /tacx %s on %s#%s from %s (%s): no write access", found.group(1), self.repo, number,
                         (c.get("user") or {}).get("login"), c.get("author_association"))
                continue
            if number not in self._claimed:  # after a restart, or its label gone: ours if our claim is there
                mine = [m for m in await self._marked(number) if story.home_of(m.get("body")) == self.home]
                if not mine:
                    continue
                self._claimed[number] = int(mine[0]["id"])
            issue = self._issues.get(number) or {"number": number}
            requests.append(self._request(issue, found.group(1).lower()))  # type: ignore[arg-type]
        return requests

    # -- telling the story back ------------------------------------------------------------

    async def task_progress(self, key: str, task: Mapping[str, Any]) -> None:
        number = self._number(key)
        if number is None:
            return
        if task.get("status") == "running" and number not in self._working:  # also when retried
            self._working.add(number)
            await self._labels(number, add=[WORKING], remove=[DONE, FAILED])
        await self._edit(number, dict(task))

    async def task_ended(self, end: TaskEnd) -> None:
        number = self._number(end.key)
        if number is None:
            return
        good = end.status == "succeeded"
        pull_url, note = None, None
        if good and end.task is not None and end.task.get("branch") and self.opener is not None:
            pull_url, note = await self.opener(self, number, dict(end.task))
        if end.task is not None:
            await self._edit(number, dict(end.task), pull_url=pull_url, note=note)
        self._working.discard(number)
        await self._labels(number, add=[DONE if good else FAILED], remove=[WORKING, FAILED if good else DONE,
                                                                           self.conf.label])

    async def wanted_again(self, key: str, ended_at: float) -> bool:
        """Labelled again after its task ended? The end took the label off: a `labeled`
        event after the last `unlabeled` one (events in GitHub's own order, so no clock
        is compared), or, when tacx never took it off, one after the end."""
        number = self._number(key)
        if number is None:
            return False
        endpoint = f"repos/{self.repo}/issues/{number}/events?per_page=100"
        response = await self.gh.api("GET", endpoint)
        last = _LAST.search(response.headers.get("link", ""))
        if last is not None:  # the newest events are on the last page
            response = await self.gh.api("GET", last.group(1).split("api.github.com/", 1)[-1])
        events = [e for e in response.body if isinstance(e, dict) and (e.get("label") or {}).get("name") == self.conf.label] \
            if isinstance(response.body, list) else []
        kinds = [e.get("event") for e in events]
        if "unlabeled" in kinds:
            return "labeled" in kinds[len(kinds) - kinds[::-1].index("unlabeled"):]
        return any(e.get("event") == "labeled" and (parse_iso(e.get("created_at")) or 0) > ended_at for e in events)

    async def rejected(self, key: str, error: str) -> None:
        """No task could be made for the issue (a workflow or input tacx.yaml names is
        wrong): said on the issue, which leaves the working state."""
        number = self._number(key)
        comment_id = self._claimed.get(number) if number is not None else None
        if number is None or comment_id is None:
            return
        body = story.marker(self.home) + f"\n**tacx** could not make a task for this issue:\n{story.fence(error)}\n" \
            "Fix tacx.yaml, then label the issue again."
        await self.gh.api("PATCH", f"repos/{self.repo}/issues/comments/{comment_id}", body={"body": body})
        await self._labels(number, add=[FAILED], remove=[WORKING, self.conf.label])
        self._claimed.pop(number, None)

    def _number(self, key: str) -> int | None:
        repo, _, number = key.rpartition("#")
        return int(number) if repo == self.repo and number.isdigit() else None

    async def _edit(self, number: int, task: dict[str, Any], *, pull_url: str | None = None,
                    note: str | None = None) -> None:
        """Our one comment on the issue, made to say where the task is (edits in order)."""
        comment_id = self._claimed.get(number)
        if comment_id is None:
            comments = await self._marked(number)
            mine = [c for c in comments if story.home_of(c.get("body")) == self.home]
            if not mine:
                return
            comment_id = self._claimed[number] = int(mine[0]["id"])
        hint = f"Label the issue `{self.conf.label}` again, or comment `/tacx retry`, to run it again."
        body = story.comment(self.home, task, pull_url=pull_url, note=note, retry_hint=hint)
        async with self._edits.setdefault(number, asyncio.Lock()):
            await self.gh.api("PATCH", f"repos/{self.repo}/issues/comments/{comment_id}", body={"body": body})

    async def _labels(self, number: int, *, add: list[str], remove: list[str]) -> None:
        if add:
            await self.gh.api("POST", f"repos/{self.repo}/issues/{number}/labels", body={"labels": add})
        for label in remove:
            await self._quietly("DELETE", f"repos/{self.repo}/issues/{number}/labels/{quote(label, safe='')}")

    async def _quietly(self, method: str, endpoint: str) -> None:
        """A request whose 404 means it is done already (a label not there, a comment gone)."""
        try:
            await self.gh.api(method, endpoint)
        except GhHttpError as exc:
            if exc.status != 404:
                raise

    def issue(self, number: int) -> dict[str, Any]:
        """The issue as the last poll saw it (empty when it did not)."""
        return dict(self._issues.get(number) or {})

    # -- what `tacx sources` shows -----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        rate = self.gh.rate
        return {"repository": self.repo, "label": self.conf.label, "workflow": self.conf.workflow,
                "issues_seen": self.seen, "issues_taken": len(self._claimed), "taken_elsewhere": len(self._others),
                "requests": self.gh.calls, "last_issue_error": self.last_error,
                "rate_limit_left": rate[0] if rate else None, "rate_limit_resets": rate[1] if rate else None}


def _issue_number(url: Any) -> int | None:
    tail = str(url or "").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None
