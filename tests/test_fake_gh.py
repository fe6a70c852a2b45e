"""The fake `gh` (tests/fakes/gh) run as a real process from PATH, checked against FakeGitHub."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakegh import FakeGitHub

R = "repos/octo/widgets"


class Run:
    def __init__(self, fake: FakeGitHub) -> None:
        self.fake = fake
        self.env = {**FakeGitHub.path_env(), **fake.env()}

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["gh", *args], env=self.env, capture_output=True, text=True, check=False,
                              input=stdin if stdin is not None else "", timeout=20)

    def json(self, *args: str) -> object:
        proc = self(*args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.endswith("\n") and proc.stdout.count("\n") == 1  # compact, one line
        return json.loads(proc.stdout)


def split_include(stdout: str) -> tuple[str, dict[str, str], str]:
    """Status line, headers, body of `gh api -i` (text mode turns real gh's \\r\\n into \\n)."""
    head, _, body = stdout.partition("\n\n")
    status, *lines = head.split("\n")
    return status, dict(line.split(": ", 1) for line in lines), body


@pytest.fixture
def fake(tmp_path: Path) -> FakeGitHub:
    return FakeGitHub(tmp_path / "gh-state.json", tmp_path / "gh-calls.jsonl")


@pytest.fixture
def gh(fake: FakeGitHub) -> Run:
    return Run(fake)


def test_version_and_unsupported(gh: Run) -> None:
    proc = gh("--version")
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["gh version 2.63.0 (2026-11-01)",
                                        "https://github.com/cli/cli/releases/tag/v2.63.0"]
    proc = gh("pr", "list")
    assert proc.returncode == 2 and proc.stderr == 'fake gh: unsupported: ["pr", "list"]\n'
    proc = gh("api", "--jq", ".x", "user")
    assert proc.returncode == 2 and "fake gh: --jq unsupported" in proc.stderr
    assert [c["argv"] for c in gh.fake.calls()] == [["--version"], ["pr", "list"], ["api", "--jq", ".x", "user"]]


def test_missing_state_env(tmp_path: Path) -> None:
    proc = subprocess.run(["gh", "--version"], env=FakeGitHub.path_env(), capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "FAKE_GH_STATE" in proc.stderr


def test_auth_status_both_ways(gh: Run, fake: FakeGitHub) -> None:
    proc = gh("auth", "status", "--hostname", "github.com")
    assert proc.returncode == 0
    assert proc.stdout.startswith("github.com\n  ✓ Logged in to github.com account maintainer (keyring)\n")
    fake.set(logged_in=False)
    proc = gh("auth", "status")
    assert proc.returncode == 1
    assert proc.stderr == "You are not logged into any GitHub hosts. To log in, run: gh auth login\n"
    proc = gh("api", "user")
    assert proc.returncode == 4 and proc.stderr.startswith("To get started with GitHub CLI, please run:  gh auth login\n")
    assert fake.calls()[-1]["status"] is None


def test_list_labeled_issues(gh: Run, fake: FakeGitHub) -> None:
    a = fake.add_issue("Crash on start", "trace", labels=["bug", "tacx"])
    fake.add_issue("Docs", labels=["docs"])
    c = fake.add_issue("Slow", labels=["tacx"], author="bob", association="CONTRIBUTOR")
    fake.add_issue("Old", labels=["tacx"])
    fake.close(4)
    issues = gh.json("api", f"/{R}/issues?labels=tacx&state=open&per_page=100")
    assert [i["number"] for i in issues] == [c, a]
    assert issues[0]["user"] == {"login": "bob"} and issues[0]["author_association"] == "CONTRIBUTOR"
    assert issues[0]["html_url"] == f"https://github.com/octo/widgets/issues/{c}"
    assert [i["number"] for i in gh.json("api", f"{R}/issues", "-X", "GET", "-f", "labels=tacx,bug")] == [a]
    assert [i["number"] for i in gh.json("api", f"{R}/issues?labels=tacx&state=all")] == [4, c, a]
    one = gh.json("api", f"{R}/issues/{a}")
    assert one["title"] == "Crash on start" and [lb["name"] for lb in one["labels"]] == ["bug", "tacx"]
    assert one == fake.issue(a)
    proc = gh("api", f"{R}/issues/99")
    assert proc.returncode == 1 and proc.stderr == "gh: Not Found (HTTP 404)\n"
    assert json.loads(proc.stdout)["message"] == "Not Found"
    assert gh("api", "repos/other/repo/issues").returncode == 1


def test_etag_304(gh: Run, fake: FakeGitHub) -> None:
    fake.add_issue("One", labels=["tacx"])
    proc = gh("api", "-i", f"{R}/issues?labels=tacx")
    status, headers, body = split_include(proc.stdout)
    assert proc.returncode == 0 and status == "HTTP/2.0 200 OK"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["X-Ratelimit-Remaining"] == "4999" and headers["X-Ratelimit-Resource"] == "core"
    etag = headers["Etag"]
    assert etag.startswith('W/"') and json.loads(body)[0]["title"] == "One"
    proc = gh("api", "-i", "-H", f"If-None-Match: {etag}", f"{R}/issues?labels=tacx")
    status, headers, body = split_include(proc.stdout)
    assert proc.returncode == 1 and proc.stderr == "gh: HTTP 304\n"
    assert status == "HTTP/2.0 304 Not Modified" and body == ""
    assert headers["X-Ratelimit-Remaining"] == "4999" and fake.rate()["remaining"] == 4999
    fake.comment(1, "news")  # the issue changes, so does its ETag
    proc = gh("api", "-i", "-H", f"If-None-Match: {etag}", f"{R}/issues?labels=tacx")
    assert proc.returncode == 0 and split_include(proc.stdout)[1]["Etag"] != etag
    raw = subprocess.run(["gh", "api", "-i", "user"], env=gh.env, capture_output=True, check=False).stdout
    assert raw.startswith(b"HTTP/2.0 200 OK\n") and b"X-Ratelimit-Used: 3\r\n\r\n{" in raw  # real gh's bytes
    assert [c["status"] for c in fake.calls()] == [200, 304, 200, 200]


def test_rate_limit_exhaustion_and_refill(gh: Run, fake: FakeGitHub) -> None:
    fake.set(rate={"limit": 60, "remaining": 1, "reset": int(time.time()) + 600})
    assert gh("api", "user").returncode == 0
    proc = gh("api", "-i", "user")
    assert proc.returncode == 1
    assert proc.stderr == "gh: API rate limit exceeded for user ID 1. (HTTP 403)\n"
    status, headers, body = split_include(proc.stdout)
    assert status == "HTTP/2.0 403 Forbidden" and headers["X-Ratelimit-Remaining"] == "0"
    assert json.loads(body)["message"] == "API rate limit exceeded for user ID 1."
    core = gh.json("api", "rate_limit")["resources"]["core"]
    assert (core["remaining"], core["used"]) == (0, 60)
    fake.set(rate={"reset": int(time.time()) - 1})
    assert gh.json("api", "user") == {"login": "maintainer", "id": 1, "type": "User"}
    rate = fake.rate()
    assert rate["remaining"] == 59 and rate["reset"] >= time.time() + 3500


def test_network_down_and_fail_next(gh: Run, fake: FakeGitHub) -> None:
    fake.set(network_down=True)
    proc = gh("api", "user")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "error connecting to api.github.com\ncheck your internet connection or https://githubstatus.com\n"
    fake.set(network_down=False, fail_next=[{"status": 502, "message": "Bad Gateway"},
                                            {"status": 503, "message": "Service Unavailable"}])
    proc = gh("api", "user")
    assert proc.returncode == 1 and proc.stderr == "gh: Bad Gateway (HTTP 502)\n"
    assert gh("api", "user").stderr == "gh: Service Unavailable (HTTP 503)\n"
    assert gh("api", "user").returncode == 0 and fake.state()["fail_next"] == []
    assert [c["status"] for c in fake.calls()] == [None, 502, 503, 200]
    assert fake.rate()["remaining"] == 4999


def test_comments_create_edit_delete(gh: Run, fake: FakeGitHub, tmp_path: Path) -> None:
    n = fake.add_issue("Task")
    first = fake.comment(n, "please do it")
    c = gh.json("api", f"{R}/issues/{n}/comments", "-f", "body=On it")
    assert c["id"] > first and c["user"] == {"login": "maintainer"} and c["author_association"] == "OWNER"
    assert c["html_url"] == f"https://github.com/octo/widgets/issues/{n}#issuecomment-{c['id']}"
    (tmp_path / "body.json").write_text(json.dumps({"body": "Done: PR #2"}))
    edited = gh.json("api", "-X", "PATCH", f"{R}/issues/comments/{c['id']}", "--input", str(tmp_path / "body.json"))
    assert edited["body"] == "Done: PR #2"
    since = gh.json("api", f"{R}/issues/comments?since=2000-01-01T00:00:00Z")
    assert [x["id"] for x in since] == [first, c["id"]]
    proc = gh("api", "-X", "DELETE", f"{R}/issues/comments/{c['id']}")
    assert proc.returncode == 0 and proc.stdout == ""
    assert [x["body"] for x in fake.comments(n)] == ["please do it"]
    assert gh("api", "-X", "DELETE", f"{R}/issues/comments/{c['id']}").returncode == 1


def test_labels_add_remove_with_events(gh: Run, fake: FakeGitHub) -> None:
    n = fake.add_issue("Task", labels=["tacx"])
    labels = gh.json("api", f"{R}/issues/{n}/labels", "-f", "labels[]=tacx:running", "-f", "labels[]=x")
    assert [lb["name"] for lb in labels] == ["tacx", "tacx:running", "x"]
    proc = gh("api", f"{R}/issues/{n}/labels", "--input", "-", stdin='{"labels": ["done"]}')
    assert [lb["name"] for lb in json.loads(proc.stdout)][-1] == "done"
    left = gh.json("api", "-X", "DELETE", f"{R}/issues/{n}/labels/tacx:running")
    assert [lb["name"] for lb in left] == ["tacx", "x", "done"]
    proc = gh("api", "-X", "DELETE", f"{R}/issues/{n}/labels/nope")
    assert proc.returncode == 1 and proc.stderr == "gh: Label does not exist (HTTP 404)\n"
    fake.unlabel(n, "x", actor="bob")
    events = gh.json("api", f"{R}/issues/{n}/events")
    assert [(e["event"], e["label"]["name"], e["actor"]["login"]) for e in events] == [
        ("labeled", "tacx", "alice"), ("labeled", "tacx:running", "maintainer"), ("labeled", "x", "maintainer"),
        ("labeled", "done", "maintainer"), ("unlabeled", "tacx:running", "maintainer"), ("unlabeled", "x", "bob")]
    assert [e["id"] for e in events] == sorted({e["id"] for e in events}) and events == fake.events(n)


def test_patch_issue(gh: Run, fake: FakeGitHub) -> None:
    n = fake.add_issue("Task")
    out = gh.json("api", "-X", "PATCH", f"{R}/issues/{n}", "-f", "state=closed", "-f", "assignees[]=bob")
    assert out["state"] == "closed" and out["assignees"] == [{"login": "bob"}]
    assert fake.events(n)[-1]["event"] == "closed"


def test_pull_create_and_duplicate(gh: Run, fake: FakeGitHub) -> None:
    n = fake.add_issue("Task")
    args = ("api", f"{R}/pulls", "-f", "title=Fix #1", "-f", "head=tacx/issue-1", "-f", "base=main",
            "-f", "body=Closes #1", "-F", "draft=true")
    pr = gh.json(*args)
    assert pr["number"] == n + 1 and pr["draft"] is True and pr["state"] == "open"
    assert pr["head"] == {"ref": "tacx/issue-1", "label": "octo:tacx/issue-1"} and pr["base"]["ref"] == "main"
    assert pr["html_url"] == f"https://github.com/octo/widgets/pull/{n + 1}"
    proc = gh(*args)
    assert proc.returncode == 1
    assert proc.stderr == "gh: Validation Failed\nA pull request already exists for octo:tacx/issue-1. (HTTP 422)\n"
    assert json.loads(proc.stdout)["errors"][0]["message"] == "A pull request already exists for octo:tacx/issue-1."
    found = gh.json("api", f"{R}/pulls?head=octo:tacx/issue-1&state=open")
    assert [p["number"] for p in found] == [pr["number"]] and fake.pulls() == found
    assert gh.json("api", f"{R}/pulls?head=octo:other") == []
    assert fake.add_issue("Next") == n + 2


def test_concurrent_comments(gh: Run, fake: FakeGitHub) -> None:
    n = fake.add_issue("Busy")
    with ThreadPoolExecutor(20) as pool:
        procs = list(pool.map(lambda i: gh("api", f"{R}/issues/{n}/comments", "-f", f"body=c{i}"), range(20)))
    assert [p.returncode for p in procs] == [0] * 20, [p.stderr for p in procs]
    ids = [json.loads(p.stdout)["id"] for p in procs]
    assert len(set(ids)) == 20
    stored = fake.comments(n)
    assert sorted(c["id"] for c in stored) == sorted(ids)
    assert sorted(c["body"] for c in stored) == sorted(f"c{i}" for i in range(20))
    assert fake.rate()["remaining"] == 5000 - 20 and len(fake.calls()) == 20
