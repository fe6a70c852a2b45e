"""FakeGitHub: the test side of the fake `gh` (tests/fakes/gh), sharing its state file and lock.

Put ``tests/fakes`` first on PATH and merge ``FakeGitHub.env()`` into the environment of whatever
runs `gh`; every method here holds the same exclusive flock on ``<state>.lock`` as the fake, so
tests can change the world while tacx's gh processes run. The world operations (events, ids,
timestamps, how an issue is rendered) are the fake's own code, loaded from tests/fakes/gh.

State file format (JSON object; every key optional, defaults filled on read):

* ``repo`` "owner/name" ("octo/widgets"), ``user`` the logged-in login ("maintainer"),
  ``default_branch`` ("main").
* ``logged_in`` (true), ``network_down`` (false).
* ``fail_next``: list of ``{"status": 502, "message": "Bad Gateway"}``; each api call pops one.
* ``rate``: ``{"limit": 5000, "remaining": 5000, "reset": <unix seconds>}``.
* ``issues``: ``[{"number", "title", "body", "state": "open"|"closed", "user": login,
  "labels": [name], "assignees": [login], "author_association", "created_at", "updated_at",
  "closed_at"}]`` (stored form; ``issue()`` and gh answer the rendered REST form).
* ``comments``: ``[{"id", "issue": number, "body", "user": login, "author_association",
  "created_at", "updated_at"}]``.
* ``events``: ``[{"id", "issue": number, "event": "labeled"|"unlabeled"|"closed"|"reopened",
  "actor": login, "label": name (label events only), "created_at"}]``.
* ``pulls``: ``[{"number", "title", "body", "head": "owner:branch", "base", "draft", "state",
  "user", "created_at", "updated_at"}]``.
* ``labels``: ``{name: id}`` of every label ever used.
* ``next_number`` (issues and PRs share it), ``next_comment_id``, ``next_event_id``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

FAKES = Path(__file__).resolve().parent / "fakes"
GH = FAKES / "gh"


def _load_fake() -> Any:
    loader = importlib.machinery.SourceFileLoader("fake_gh_cli", str(GH))
    spec = importlib.util.spec_from_loader("fake_gh_cli", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


gh = _load_fake()


class FakeGitHub:
    def __init__(self, state_path: Path, log_path: Path | None = None, repo: str = "octo/widgets",
                 user: str = "maintainer") -> None:
        self.state_path = Path(state_path)
        self.log_path = Path(log_path) if log_path is not None else None
        self.repo, self.user = repo, user
        if not self.state_path.exists():
            with self._state() as state:
                state["repo"], state["user"] = repo, user
        else:
            self.repo, self.user = self.state()["repo"], self.state()["user"]

    def _state(self, write: bool = True):
        return gh.locked_state(str(self.state_path), write=write)

    def state(self) -> dict:
        """The raw stored state (a copy)."""
        with self._state(write=False) as state:
            return state

    def _issue(self, state: dict, number: int) -> dict:
        issue = gh.find_issue(state, number)
        if issue is None:
            raise KeyError(f"no issue #{number}")
        return issue

    # ---- changing the world
    def add_issue(self, title: str, body: str = "", labels=(), author: str = "alice",
                  association: str = "NONE") -> int:
        with self._state() as state:
            return gh.new_issue(state, title, body, labels, author, association)["number"]

    def label(self, number: int, name: str, actor: str = "maintainer") -> None:
        with self._state() as state:
            gh.add_label(state, self._issue(state, number), name, actor)

    def unlabel(self, number: int, name: str, actor: str = "maintainer") -> None:
        with self._state() as state:
            gh.remove_label(state, self._issue(state, number), name, actor)

    def comment(self, number: int, body: str, author: str = "alice", association: str = "NONE") -> int:
        with self._state() as state:
            return gh.new_comment(state, self._issue(state, number), body, author, association)["id"]

    def close(self, number: int, actor: str = "maintainer") -> None:
        with self._state() as state:
            issue = self._issue(state, number)
            if issue["state"] != "closed":
                issue["state"], issue["closed_at"] = "closed", gh.iso()
                issue["updated_at"] = issue["closed_at"]
                gh.add_event(state, number, "closed", actor)

    def set(self, **fields: Any) -> None:
        """Top-level fields: logged_in, network_down, fail_next, rate (merged into the current), ..."""
        with self._state() as state:
            for key, value in fields.items():
                if key == "rate":
                    state["rate"].update(value)
                else:
                    state[key] = value

    # ---- reading it (the REST forms gh answers)
    def issue(self, number: int) -> dict:
        with self._state(write=False) as state:
            return gh.render_issue(state, self._issue(state, number))

    def comments(self, number: int) -> list[dict]:
        with self._state(write=False) as state:
            return [gh.render_comment(state, c) for c in state["comments"] if c["issue"] == number]

    def events(self, number: int) -> list[dict]:
        with self._state(write=False) as state:
            return [gh.render_event(e) for e in state["events"] if e["issue"] == number]

    def pulls(self) -> list[dict]:
        with self._state(write=False) as state:
            return [gh.render_pull(state, p) for p in state["pulls"]]

    def rate(self) -> dict:
        return dict(self.state()["rate"])

    def calls(self) -> list[dict]:
        """Every logged gh call, oldest first: {"argv", "ts", "status"}."""
        if self.log_path is None or not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def env(self) -> dict[str, str]:
        env = {"FAKE_GH_STATE": str(self.state_path)}
        if self.log_path is not None:
            env["FAKE_GH_LOG"] = str(self.log_path)
        return env

    @staticmethod
    def path_env(base: dict[str, str] | None = None) -> dict[str, str]:
        """A copy of base (os.environ) with the fake gh first on PATH: a `gh` that runs
        tests/fakes/gh with this Python directly (no `env python3` shim to start each call:
        tacx makes hundreds of calls in the tests), then tests/fakes itself."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([str(_fast_bin()), str(FAKES), env.get("PATH", "")])
        return env


_BIN: Path | None = None


def _fast_bin() -> Path:
    global _BIN
    if _BIN is None:
        folder = Path(tempfile.mkdtemp(prefix="fakegh-bin-"))
        wrapper = folder / "gh"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{GH}" "$@"\n')
        wrapper.chmod(0o755)
        _BIN = folder
    return _BIN
