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
