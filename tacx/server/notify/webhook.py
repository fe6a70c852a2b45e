"""The webhook channel: each message as a JSON POST, retried with exponential backoff on
connection errors, 5xx and 429 (Retry-After honoured within the bound), never on another
4xx; the whole delivery, retries included, bounded in time."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tacx import __version__
from tacx.server.notify.message import Message

log = logging.getLogger(__name__)

TRIES = 3
FIRST_DELAY = 1.0  # then 2 s, 4 s, ...
MAX_RESPONSE_WAIT = 10.0  # one try's share when the bound is larger: a hung hook is tried again


def payload(msg: Message, project: str) -> dict[str, Any]:
    """The JSON body; "text" is what Slack, Mattermost and Discord-compatible hooks show. The
    project is named by its folder's name only: the body goes to a third party, and a full path
    tells it a user name and a machine's layout."""
    return {
        "event": msg.event,
        "text": msg.text,
        "count": msg.count,
        "events": [n.as_json() for n in msg.notices],
        "tacx": {"project": project, "version": __version__},
    }


def retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now) if when is not None else None


class WebhookChannel:
    def __init__(
        self, url: str, headers: dict[str, str], timeout: float, project: str, describe: str,
        report: Callable[[str], None], *, tries: int = TRIES, first_delay: float = FIRST_DELAY,
        try_timeout: float = MAX_RESPONSE_WAIT,
    ) -> None:
        self.url = url
        self.headers = headers
        self.timeout = timeout
        self.project = project
        self.describe = describe
        self.report = report
        self.tries = tries
        self.first_delay = first_delay
        self.try_timeout = try_timeout
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, msg: Message) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body = payload(msg, self.project)
        why = "no try fitted in the time"
        tried = 0
        while tried < self.tries and (left := deadline - loop.time()) > 0:
            tried += 1
            wait: float | None = None
            try:
                async with asyncio.timeout(min(left, self.try_timeout)):
                    status, wait = await self._post(body)
            except ValueError as exc:  # InvalidURL, a host IDNA refuses: it would fail again; its text may hold secrets
                why = f"the URL cannot be posted to ({type(exc).__name__})"
                break
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                why = "no answer in time" if isinstance(exc, TimeoutError) else \
                    f"{type(exc).__name__}: {exc}".replace(self.url, self.describe)
            else:
                if 200 <= status < 300:
                    return True
                why = f"HTTP {status}" + (" (a redirect, not followed: write the URL it points to)" if 300 <= status < 400 else "")
                if status != 429 and status < 500:  # the hook refused this message: again would not help
                    break
            delay = wait if wait is not None else self.first_delay * 2 ** (tried - 1)
            if tried >= self.tries or loop.time() + delay >= deadline:
                break
            await asyncio.sleep(delay)
        self.report(f"notify: {self.describe} gave up after {tried} tr{'y' if tried == 1 else 'ies'}: {why}"
                    f" (the message was: {msg.text[:200]})")
        return False

    async def _post(self, body: dict[str, Any]) -> tuple[int, float | None]:
        if self._session is None:
            # trust_env: HTTPS_PROXY / NO_PROXY are honoured, as curl does (a server behind a proxy).
            self._session = aiohttp.ClientSession(headers={"User-Agent": f"tacx/{__version__}"}, trust_env=True)
        async with self._session.post(self.url, json=body, headers=self.headers, allow_redirects=False) as resp:
            return resp.status, retry_after(resp.headers.get("Retry-After"), time.time())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
