"""Whether an agent can work now, beyond being installed and logged in: a stage of it that
failed on its credentials (a key the API refused, an expired login) or could not reach its
API marks it troubled, since that moment, until one of its stages succeeds. The scheduler
passes a troubled agent over for a while when a stage names others (`provider: [claude,
codex]`), and `tacx providers` and the dashboard say since when it has been failing.

Marks are events (`provider.health`) in the store, so a restart and other terminals see them.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Literal

from tacx.agents.errors import human_error, unreachable

TroubleKind = Literal["auth", "network"]
TROUBLE_HOLD = 300.0  # a troubled agent is passed over this long after its last failure, then tried again
RESTORE_WINDOW = 86400.0  # marks older than this are not read back after a restart

# What an agent's own error (its API's answer, as its parser read it) says when its
# credentials are refused or missing: claude's "Not logged in · Please run /login", "Invalid
# API key", "API status 401"; codex's "unexpected status 401 Unauthorized: Missing bearer
# ..." and refresh-token errors; gemini's "API key not valid" (HTTP 400); litellm's
# AuthenticationError (aider).
_AUTH_OWN = re.compile(
    r"not logged in|please run /login|invalid (?:x-)?api[ _-]?key|api key not valid|incorrect api key"
    r"|invalid_api_key|authentication_?error|authentication_failed|invalid authentication|missing bearer"
    r"|oauth token (?:has )?expired|could not be refreshed|refresh token was already used"
    r"|\b(?:api status|unexpected status|http) 40[13]\b",
    re.IGNORECASE,
)
# What the CLIs themselves print outside their stream (stderr) about their own login; only
# these phrases, since tools and servers the agent ran write their own 401s there too.
_AUTH_CLI = re.compile(
    r"Please set an Auth method|FatalAuthenticationError|Manual authorization is required"
    r"|When using Vertex AI, you must specify|GEMINI_API_KEY environment variable not found"
    r"|Not logged in · Please run /login|Invalid API key · |litellm\.AuthenticationError"
)

KIND_WORDS = {"auth": "failing on auth", "network": "cannot reach its API"}


def failure_kind(
    *, cause: str | None, exit_code: int | None, auth_exit_codes: frozenset[int], own_error: str | None,
    cli_lines: list[str],
) -> tuple[TroubleKind, str] | None:
    """Why an attempt failed, when it is the agent's access and not the work: "auth" (its
    credentials) or "network" (no answer from its API), with the words that tell it.
    ``own_error`` is the agent's own error as its parser read it; ``cli_lines`` are the
    lines the CLI wrote outside its stream. Neither is its conversation or its tools' output."""
    if cause is not None and cause.startswith("unreachable: "):
        return "network", cause.removeprefix("unreachable: ")
    if own_error and _AUTH_OWN.search(own_error):
        return "auth", human_error(own_error)
    for text in cli_lines:
        if _AUTH_CLI.search(text):
            return "auth", human_error(text)
    if exit_code is not None and exit_code in auth_exit_codes:
        return "auth", human_error(cli_lines[-1]) if cli_lines else f"exited with code {exit_code} (an authentication error)"
    if own_error and unreachable("error", {"message": own_error}):
        return "network", human_error(own_error)
    return None


@dataclass
class Trouble:
    kind: TroubleKind
    since: float  # the first failure of this kind in a row
    last: float  # the latest
    detail: str

    def words(self) -> str:
        return f"{KIND_WORDS[self.kind]} since {time.strftime('%H:%M', time.localtime(self.since))}: {self.detail}"

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since, "last": self.last, "detail": self.detail}


class ProviderHealth:
    """Agents whose stages lately failed on access, and since when."""

    def __init__(self) -> None:
        self._trouble: dict[str, Trouble] = {}

    def failed(self, name: str, kind: TroubleKind, detail: str, now: float | None = None) -> dict[str, Any]:
        """A stage of ``name`` failed on access: the mark (as its event's data) to record."""
        now = time.time() if now is None else now
        old = self._trouble.get(name)
        since = old.since if old is not None and old.kind == kind else now
        self._trouble[name] = Trouble(kind, since, now, detail[:300])
        return {"provider": name, "state": kind, **self._trouble[name].as_json()}

    def succeeded(self, name: str) -> dict[str, Any] | None:
        """A stage of ``name`` succeeded: the clearing event's data, when it was troubled."""
        if self._trouble.pop(name, None) is None:
            return None
        return {"provider": name, "state": "ok", "since": time.time()}

    def held(self, name: str, now: float | None = None) -> str | None:
        """Why ``name`` is passed over while another candidate can run: it failed on access
        less than TROUBLE_HOLD ago. After that it is tried again (the network may be back)."""
        trouble = self._trouble.get(name)
        now = time.time() if now is None else now
        if trouble is None or now - trouble.last > TROUBLE_HOLD:
            return None
        return f"{name} is {trouble.words()}"

    def trouble(self, name: str) -> Trouble | None:
        return self._trouble.get(name)

    def names(self) -> list[str]:
        """The agents with a mark."""
        return list(self._trouble)

    def restore(self, conn: sqlite3.Connection) -> None:
        """The marks recorded before a restart (or by the coordinator another terminal runs)."""
        self._trouble.clear()
        for (text,) in conn.execute(  # only each agent's latest mark, which carries its `since`
            "SELECT data FROM events WHERE id IN (SELECT MAX(id) FROM events WHERE task_id IS NULL"
            " AND kind = 'provider.health' AND ts > ?"
            " GROUP BY CASE WHEN json_valid(data) THEN json_extract(data, '$.provider') END)",
            (time.time() - RESTORE_WINDOW,),
        ):
            try:
                data = json.loads(text)
            except ValueError:
                continue
            name = data.get("provider") if isinstance(data, dict) else None
            if not isinstance(name, str):
                continue
            if data.get("state") in KIND_WORDS:
                try:
                    self._trouble[name] = Trouble(data["state"], float(data["since"]), float(data.get("last", data["since"])),
                                                  str(data.get("detail", "")))
                except (KeyError, TypeError, ValueError):
                    continue
            else:
                self._trouble.pop(name, None)
