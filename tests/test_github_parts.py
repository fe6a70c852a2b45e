"""The parts of the GitHub source on their own: reading `gh api -i`, telling gh's failures
apart, fitting an issue's text into an input, and the story's Markdown."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tacx.sources import story
from tacx.sources.base import RateLimited
from tacx.sources.gh import Gh, GhHttpError, GhLoggedOut, GhMissing, GhUnreachable, parse_included
from tacx.sources.github import fit, parse_iso
from tests.fakegh import FakeGitHub


def test_parse_included_reads_real_gh_output() -> None:
    out = (b"HTTP/2.0 304 Not Modified\r\nEtag: W/\"abc\"\r\nX-Ratelimit-Remaining: 4999\r\n"
           b"X-Ratelimit-Reset: 1790000000\r\n\r\n")
    response = parse_included(out)
    assert response is not None and response.status == 304 and response.etag == 'W/"abc"'
    assert response.rate_left() == (4999, 1790000000.0) and response.body is None
    ok = parse_included(b'HTTP/2.0 200 OK\r\nContent-Type: application/json\r\n\r\n[{"number": 1}]\n')
    assert ok is not None and ok.body == [{"number": 1}]
    assert parse_included(b"error connecting to api.github.com\n") is None


def test_gh_failures_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGitHub(tmp_path / "gh.json", tmp_path / "gh.log")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GhMissing, match="install GitHub CLI"):
        asyncio.run(Gh().api("GET", "repos/octo/widgets"))
    for name, value in {**FakeGitHub.path_env(dict(os.environ, PATH=os.defpath)), **fake.env()}.items():
        monkeypatch.setenv(name, value)
    gh = Gh()
    assert asyncio.run(gh.api("GET", "repos/octo/widgets")).body["full_name"] == "octo/widgets"
    fake.set(logged_in=False)
    with pytest.raises(GhLoggedOut, match="gh auth login"):
        asyncio.run(gh.api("GET", "repos/octo/widgets"))
    fake.set(logged_in=True, network_down=True)
    with pytest.raises(GhUnreachable, match="cannot reach GitHub"):
        asyncio.run(gh.api("GET", "repos/octo/widgets"))
    fake.set(network_down=False, fail_next=[{"status": 502, "message": "Bad Gateway"}])
    with pytest.raises(GhHttpError, match="HTTP 502: Bad Gateway"):
        asyncio.run(gh.api("GET", "repos/octo/widgets"))
    with pytest.raises(GhHttpError, match="HTTP 404"):
        asyncio.run(gh.api("GET", "repos/octo/elsewhere"))
    fake.set(rate={"remaining": 0, "reset": 4102444800})  # far ahead: told how long to wait
    with pytest.raises(RateLimited) as limited:
        asyncio.run(gh.api("GET", "repos/octo/widgets"))
    assert limited.value.retry_after > 3600


def test_an_issue_too_long_for_an_input_is_cut_with_its_link() -> None:
    body = "é" * 100_000  # 200,000 bytes
    cut = fit(body, 64 * 1024 - 1024, "https://github.com/o/r/issues/7")
    assert len(cut.encode()) <= 64 * 1024 - 1024 and cut.endswith("read all of it at https://github.com/o/r/issues/7]")
    assert fit("short", 100, "u") == "short"


def test_story_fences_what_agents_said_and_marks_its_home() -> None:
    task = {"id": 3, "workflow": "fix", "status": "failed", "error": "```\n@everyone <img src=x>\n```",
            "tokens": {"input": 1, "output": 2, "cache_read": 0, "cache_write": 0}, "cost_usd": 0.5, "unpriced": [],
            "stages": [{"name": "build", "status": "failed", "started_at": 1000, "ended_at": 1125, "cost_usd": 0.5,
                        "tokens": {"input": 1, "output": 2, "cache_read": 0, "cache_write": 0}, "unpriced": []}]}
    body = story.comment("abc123", task, retry_hint="comment /tacx retry")
    assert story.home_of(body) == "abc123" and story.home_of("a human comment") is None
    assert "~~~~text\n```\n@everyone <img src=x>\n```\n~~~~" in body  # fenced: no mention, no HTML acts
    assert "| build | failed | 2.1 min | 3 | $0.5000 |" in body and body.endswith("comment /tacx retry")
    assert parse_iso("2026-11-30T21:05:03Z") == 1796072703.0


def test_a_repository_gh_cannot_see_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tacx.sources.config import GitHubSourceSettings
    from tacx.sources.gh import GhError
    from tacx.sources.github import GitHubSource

    fake = FakeGitHub(tmp_path / "gh.json", tmp_path / "gh.log")
    for name, value in {**FakeGitHub.path_env(dict(os.environ)), **fake.env()}.items():
        monkeypatch.setenv(name, value)
    source = GitHubSource(GitHubSourceSettings(github="octo/typo"), home="h")
    with pytest.raises(GhError, match="octo/typo was not found, or the account gh is logged in as cannot see it"):
        asyncio.run(source.poll())


def _source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: str = "me") -> tuple[FakeGitHub, object]:
    from tacx.sources.config import GitHubSourceSettings
    from tacx.sources.github import GitHubSource

    fake = FakeGitHub(tmp_path / "gh.json", tmp_path / "gh.log")
    for name, value in {**FakeGitHub.path_env(dict(os.environ)), **fake.env()}.items():
        monkeypatch.setenv(name, value)
    return fake, GitHubSource(GitHubSourceSettings(github="octo/widgets", workflow="fix"), home=home)


def test_a_restart_between_claim_and_task_finds_its_own_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 after the claim comment, before the task: the next tacx takes the issue back
    by its own marker, posting nothing new (the store's key then makes the one task)."""
    fake, source = _source(tmp_path, monkeypatch)
    number = fake.add_issue("Claimed before a crash", labels=["tacx"])
    fake.comment(number, story.comment("me", None), author="maintainer", association="OWNER")
    (request,) = asyncio.run(source.poll())  # type: ignore[attr-defined]
    assert request.key == f"octo/widgets#{number}" and len(fake.comments(number)) == 1
    # Its labels are left as they are: tacx:working comes when the task runs (task_progress).
    assert [lb["name"] for lb in fake.issue(number)["labels"]] == ["tacx"]


def test_a_home_that_claims_second_backs_off_and_removes_its_comment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, source = _source(tmp_path, monkeypatch)
    number = fake.add_issue("Contested", labels=["tacx"])
    fake.comment(number, story.comment("someone-else", None), author="maintainer", association="OWNER")
    assert asyncio.run(source.poll()) == []  # type: ignore[attr-defined]
    assert [story.home_of(c["body"]) for c in fake.comments(number)] == ["someone-else"]
    # A race: both post, the other home's comment is older: ours goes.
    other = fake.add_issue("Raced", labels=["tacx"])
    real_api = source.gh.api  # type: ignore[attr-defined]

    async def racing(method: str, endpoint: str, **kw: object):  # type: ignore[no-untyped-def]
        if method == "POST" and endpoint.endswith(f"issues/{other}/comments"):
            fake.comment(other, story.comment("someone-else", None), author="maintainer", association="OWNER")
        return await real_api(method, endpoint, **kw)

    source.gh.api = racing  # type: ignore[attr-defined]
    assert asyncio.run(source.poll()) == []  # type: ignore[attr-defined]
    assert [story.home_of(c["body"]) for c in fake.comments(other)] == ["someone-else"]
    assert "tacx:working" not in [lb["name"] for lb in fake.issue(other)["labels"]]


def test_leftovers_are_committed_but_never_secrets(tmp_path: Path) -> None:
    import subprocess

    from tacx.workspace.publish import commit_leftovers

    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(tmp_path / "none"), GIT_CONFIG_NOSYSTEM="1")
    repo = tmp_path / "wt"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    (repo / ".env").write_text("TOKEN=secret\n")  # what a workflow's setup copies in
    (repo / "keys").mkdir()
    (repo / "keys" / "deploy.pem").write_text("-----BEGIN-----\n")
    (repo / "FIX.md").write_text("the fix\n")
    assert commit_leftovers(repo, "Fix it") is True  # with no git identity configured, tacx's
    shown = subprocess.run(["git", "-C", str(repo), "show", "--name-only", "--format=%s", "HEAD"],
                           capture_output=True, text=True, check=True, env=env).stdout.split()
    assert shown[:2] == ["Fix", "it"] and "FIX.md" in shown
    assert ".env" not in shown and "keys/deploy.pem" not in shown
    assert commit_leftovers(repo, "again") is False  # nothing left but the secrets


def test_a_marker_pasted_by_someone_without_write_access_claims_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, source = _source(tmp_path, monkeypatch)
    number = fake.add_issue("Squatted", labels=["tacx"], author="mallory")
    fake.comment(number, story.comment("someone-else", None), author="mallory", association="NONE")
    fake.comment(number, story.comment("me", None), author="mallory", association="NONE")  # our id, copied
    (request,) = asyncio.run(source.poll())  # type: ignore[attr-defined]
    ours = [c for c in fake.comments(number) if c["user"]["login"] == "maintainer"]
    assert request.key.endswith(f"#{number}") and len(ours) == 1 and story.home_of(ours[0]["body"]) == "me"


def test_an_issue_with_hundreds_of_comments_is_claimed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, source = _source(tmp_path, monkeypatch)
    number = fake.add_issue("Long thread", labels=["tacx"])
    for i in range(120):
        fake.comment(number, f"me too {i}")
    assert len(asyncio.run(source.poll())) == 1  # type: ignore[attr-defined]
    source2 = type(source)(source.conf, home="me")  # type: ignore[attr-defined]  # a restart: finds its claim on page 2
    assert len(asyncio.run(source2.poll())) == 1
    assert len([c for c in fake.comments(number) if story.home_of(c["body"])]) == 1


def test_one_issue_that_fails_does_not_stop_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, source = _source(tmp_path, monkeypatch)
    locked = fake.add_issue("Locked", labels=["tacx"])
    fine = fake.add_issue("Fine", labels=["tacx"])
    real_api = source.gh.api  # type: ignore[attr-defined]

    async def refusing(method: str, endpoint: str, **kw: object):  # type: ignore[no-untyped-def]
        if method == "POST" and endpoint.endswith(f"issues/{locked}/comments"):
            raise GhHttpError(403, "Issue is locked")
        return await real_api(method, endpoint, **kw)

    source.gh.api = refusing  # type: ignore[attr-defined]
    (request,) = asyncio.run(source.poll())  # type: ignore[attr-defined]
    assert request.key.endswith(f"#{fine}") and "Issue is locked" in (source.last_error or "")  # type: ignore[attr-defined]
    assert "Issue is locked" in source.state()["last_issue_error"]  # type: ignore[attr-defined]  # for `tacx sources`


def test_the_home_id_is_made_once_and_kept(tmp_path: Path) -> None:
    from tacx.sources.github import home_id

    first = home_id(tmp_path / "home")
    assert len(first) == 12 and home_id(tmp_path / "home") == first and home_id(tmp_path / "other") != first


def test_the_branch_goes_to_the_remote_of_the_sources_repository(tmp_path: Path) -> None:
    import subprocess

    from tacx.workspace.publish import remote_of

    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for name, url in (("origin", "https://github.com/someone/fork.git"), ("upstream", "git@github.com:Octo/Widgets.git")):
        subprocess.run(["git", "-C", str(repo), "remote", "add", name, url], check=True)
    assert remote_of(repo, "octo/widgets") == "upstream"
    assert remote_of(repo, "other/repo") == remote_of(repo) == "origin"
