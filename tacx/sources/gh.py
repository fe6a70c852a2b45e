"""GitHub's REST API through the user's own `gh` CLI: tacx stores no token, and every call
is `gh api -i ...` with an argv (a body goes in on stdin as JSON, never through a shell).

`-i` gives the status line and headers, so an unchanged answer to a conditional request
(`If-None-Match: <etag>`, HTTP 304, which costs no rate limit) and the rate-limit headers
are read. gh exits 1 on a 304, as on any error; what went wrong is told apart here, in
words a person acts on: gh missing, logged out, GitHub unreachable, rate limited (until
when), or the API's own message.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from tacx.sources.base import RateLimited

CALL_TIMEOUT = 60.0  # seconds for one gh call
OUTPUT_LIMIT = 32 * 1024 * 1024  # bytes of one answer (100 issues with long bodies fit many times)


class GhError(Exception):
    """A call that did not get an answer tacx can use; str() says what to do."""


class GhMissing(GhError):
    pass


class GhLoggedOut(GhError):
    pass


class GhUnreachable(GhError):
    pass


class GhHttpError(GhError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"GitHub answered HTTP {status}: {message}")
        self.status = status


@dataclass
class GhResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: Any = None

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    def rate_left(self) -> tuple[int, float] | None:
        """(requests left, Unix time the window resets) from the headers, when given."""
        try:
            return int(self.headers["x-ratelimit-remaining"]), float(self.headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return None


def parse_included(stdout: bytes) -> GhResponse | None:
    """`gh api -i` output: status line, headers, a blank line, the body. None when it holds
    no status line (gh failed before GitHub answered)."""
    text = stdout.decode("utf-8", errors="replace")
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    if not lines or not lines[0].startswith("HTTP/"):
        return None
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    parsed: Any = None
    if body.strip():
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body
    return GhResponse(status, headers, parsed)


def _api_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        extra = body.get("errors")
        details = [e.get("message") for e in extra if isinstance(e, dict) and isinstance(e.get("message"), str)] \
            if isinstance(extra, list) else []
        return body["message"] + (f" ({'; '.join(details)})" if details else "")
    return str(body)[:300] if body else "no message"


class Gh:
    """Runs `gh api`. ``program`` is looked up on PATH at each call (installing gh while
    tacx runs is noticed); ``calls`` counts the requests sent, for the figures."""

    def __init__(self, program: str = "gh", host: str = "github.com") -> None:
        self.program = program
        self.host = host
        self.calls = 0
        self.rate: tuple[int, float] | None = None  # the latest (left, resets at) GitHub reported

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(GH_PROMPT_DISABLED="1", GH_NO_UPDATE_NOTIFIER="1", NO_COLOR="1", GH_PAGER="cat", PAGER="cat")
        return env

    async def api(self, method: str, endpoint: str, *, body: Any = None, etag: str | None = None) -> GhResponse:
        """One request. A 304 is returned (status 304, no body); other errors raise."""
        path = shutil.which(self.program)
        if path is None:
            raise GhMissing(f"`{self.program}` is not installed (no `{self.program}` on PATH): install GitHub CLI"
                            " (https://cli.github.com), then run `gh auth login`")
        argv = [path, "api", "-i", "-X", method, "-H", "Accept: application/vnd.github+json"]
        if etag:
            argv += ["-H", f"If-None-Match: {etag}"]
        if body is not None:
            argv += ["--input", "-"]
        argv.append(endpoint)
        self.calls += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if body is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self._env(),
                start_new_session=True, limit=OUTPUT_LIMIT,
            )
        except OSError as exc:
            raise GhMissing(f"cannot run {path}: {exc.strerror}") from None
        data = json.dumps(body).encode() if body is not None else None
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(data), CALL_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise GhUnreachable(f"gh did not answer within {CALL_TIMEOUT:g}s ({method} {endpoint})") from None
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        response = parse_included(stdout)
        said = stderr.decode("utf-8", errors="replace").strip()
        if response is not None:
            if (left := response.rate_left()) is not None:
                self.rate = left
            if response.status < 300 or response.status == 304:
                return response
            self._raise_for(response)
        self._raise_for_failure(proc.returncode or 0, said)
        raise GhError(f"gh exited {proc.returncode} without an answer: {said[-300:] or 'no message'}")

    def _raise_for(self, response: GhResponse) -> None:
        message = _api_message(response.body)
        limited = response.rate_left()
        if response.status in (403, 429) and (
            (limited is not None and limited[0] == 0) or "rate limit" in message.lower()
        ):
            wait = 60.0
            if response.headers.get("retry-after", "").isdigit():
                wait = float(response.headers["retry-after"])
            elif limited is not None:
                wait = max(1.0, limited[1] - time.time() + 1)
            raise RateLimited(wait, f"GitHub's rate limit is spent ({message}); polling again in {wait:.0f}s")
        if response.status == 401:
            raise GhLoggedOut(f"gh's login was refused (HTTP 401: {message}): run `gh auth login`")
        raise GhHttpError(response.status, message)

    @staticmethod
    def _raise_for_failure(code: int, said: str) -> None:
        lowered = said.lower()
        if code == 4 or "gh auth login" in lowered:
            raise GhLoggedOut("gh is not logged in: run `gh auth login` (or set GH_TOKEN)")
        if "error connecting" in lowered or "could not resolve" in lowered or "timeout" in lowered:
            first = said.splitlines()[0] if said else "no answer"
            raise GhUnreachable(f"cannot reach GitHub: {first}")
