"""Ray's job server as the Ray executor uses it: JobSubmissionClient's blocking calls, run
in threads, with its failures turned into words a person can act on. Ray is imported here,
on first use, never when tacx starts."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

REQUEST_TIMEOUT = 30.0  # seconds for one answer of the job server
LIVE = frozenset({"PENDING", "RUNNING"})


class RayUnreachable(OSError):
    """The cluster's job server did not answer (or Ray is not installed here)."""


class JobExists(Exception):
    """Ray already has a job under this submission id."""


@dataclass
class Job:
    """What tacx reads of a Ray job."""

    submission_id: str
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str
    exit_code: int | None
    metadata: dict[str, str]

    @property
    def live(self) -> bool:
        return self.status in LIVE


def _status_name(status: Any) -> str:
    return str(getattr(status, "value", status))


def _job(details: Any) -> Job:
    return Job(
        submission_id=details.submission_id or "",
        status=_status_name(details.status),
        message=details.message or "",
        exit_code=getattr(details, "driver_exit_code", None),
        metadata=dict(details.metadata or {}),
    )


def _not_found(exc: BaseException) -> bool:
    text = str(exc)
    return "404" in text or "does not exist" in text


class JobServer:
    """One cluster's job server. Every method but `tail` blocks: call them in a thread."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: Any = None

    def _unreachable(self, exc: BaseException) -> RayUnreachable:
        if type(exc).__name__ == "AuthenticationError":  # Ray's, on a 401 or 403 (RAY_AUTH_MODE=token)
            return RayUnreachable(
                f"the Ray cluster's job server at {self.address} wants a token it was not given "
                f"({str(exc).splitlines()[0][:200]}): run tacx with RAY_AUTH_MODE=token and the cluster's "
                "token in RAY_AUTH_TOKEN (or ~/.ray/auth_token)")
        answered = _ANSWERED.match(str(exc))
        if answered:  # it answered, refusing: its own words, not a claim it cannot be reached
            return RayUnreachable(f"the Ray cluster's job server at {self.address} answered HTTP "
                                  f"{answered.group(1)}: {_reason(exc)}")
        return RayUnreachable(f"cannot reach the Ray cluster's job server at {self.address}: {_reason(exc)}")

    def connect(self) -> None:
        """Open the client (it asks the server for its version): RayUnreachable if it cannot."""
        if self._client is not None:
            return
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as exc:
            raise RayUnreachable(f"executor ray needs Ray, which is not installed here ({exc}): "
                                 "pip install 'tacx[ray]'") from None

        class BoundedClient(JobSubmissionClient):  # type: ignore[misc, valid-type]
            """Ray's client waits for an answer without end: a head that accepts and never
            answers would hold a thread (and a stage) forever."""

            def _do_request(self, *args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", REQUEST_TIMEOUT)
                return super()._do_request(*args, **kwargs)

        try:
            self._client = BoundedClient(self.address)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError from the client
            raise self._unreachable(exc) from None

    def _call(self, method: str, *args: Any, missing: bool = True, **kwargs: Any) -> Any:
        """The client's answer; LookupError (when `missing` may be) for a job Ray does not
        have, RayUnreachable for the rest of its failures."""
        self.connect()
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:
            if missing and isinstance(exc, RuntimeError) and _not_found(exc):
                raise LookupError(str(exc)) from None
            if isinstance(exc, RuntimeError) and "already exists" in str(exc):
                raise JobExists(str(exc)) from None
            if isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "AuthenticationError":
                raise self._unreachable(exc) from None
            raise

    def submit(self, **kwargs: Any) -> str:
        return self._call("submit_job", missing=False, **kwargs)  # never a missing job: a refusal

    def job(self, submission_id: str) -> Job | None:
        """The job, or None when Ray has no such job (never had it, or lost it)."""
        try:
            return _job(self._call("get_job_info", submission_id))
        except LookupError:
            return None

    def stop(self, submission_id: str) -> bool:
        try:
            return bool(self._call("stop_job", submission_id))
        except LookupError:
            return False

    def delete(self, submission_id: str) -> None:
        """Forget an ended job (Ray keeps every job's record until deleted)."""
        try:
            self._call("delete_job", submission_id)
        except LookupError:
            pass

    def jobs(self) -> list[Job]:
        return [_job(d) for d in self._call("list_jobs") if d.submission_id]

    async def tail(self, submission_id: str) -> AsyncIterator[str]:
        """The job's log from its start, as Ray's tail gives it, until the job ended."""
        await asyncio.to_thread(self.connect)
        try:
            async for chunk in self._client.tail_job_logs(submission_id):
                yield chunk
        except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
            if isinstance(exc, RuntimeError) and _not_found(exc):
                raise LookupError(str(exc)) from None
            raise self._unreachable(exc) from None
        except Exception as exc:  # aiohttp's errors that are not OSErrors
            if type(exc).__module__.startswith("aiohttp"):
                if getattr(exc, "status", None) == 404:  # the websocket's handshake: no such job
                    raise LookupError(str(exc)) from None
                raise self._unreachable(exc) from None
            raise


def _reason(exc: BaseException) -> str:
    """The last, most specific words of a failure: requests nests its causes, and a job
    server that refuses sends its traceback, whose last `Error: words` line says why."""
    text = str(exc).strip() or type(exc).__name__
    if "Connection refused" in text or "ECONNREFUSED" in text:
        return "connection refused (is the Ray head running?)"
    if text.startswith("Failed to connect to Ray"):  # Ray's client says no more than this
        return "it did not answer (is the Ray head running, and is this its dashboard's address?)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip(" .")]
    said = [m.group(1) for m in map(_RAISED.match, lines) if m]
    if said:
        return said[-1][:300]
    last = lines[-1] if lines else type(exc).__name__
    answered = _ANSWERED.match(last)
    return (last[answered.end():].strip() or last)[:300] if answered else last[:300]


_ANSWERED = re.compile(r"Request failed with status code (\d+):")
_RAISED = re.compile(r"(?:\w+\.)*\w*(?:Error|Exception): (?!Request failed with status code)(.+)")
