"""Agents' error texts as a person reads them. CLIs pass their API's error body on as it
came: codex as "unexpected status 400 Bad Request: {JSON}", gemini as JSON whose message
is a string holding more JSON. What a person acts on is the innermost "message" (or
"detail"), then, where one is named, the HTTP status."""

from __future__ import annotations

import json
import re
from typing import Any

_DECODER = json.JSONDecoder()
# What agents print when their API cannot be reached at all (not an overloaded or failing
# API, which answers): codex's "Reconnecting... waiting for network", node's ECONNREFUSED,
# ENOTFOUND and EAI_AGAIN, "fetch failed", claude's "Connection error.", "stream disconnected".
_UNREACHABLE = re.compile(
    r"reconnecting|waiting for network|connection (?:error|refused|reset|closed)|econnrefused|econnreset|enotfound"
    r"|eai_again|getaddrinfo|fetch failed|network (?:is )?unreachable|stream disconnected|could not resolve"
    r"|name resolution|timed? ?out connecting|socket hang up",
    re.IGNORECASE,
)
_STATUS = re.compile(r"\b(?:unexpected )?status[: ]+(\d{3})(?: ([A-Z][A-Za-z ]{1,40}?))?(?=[:;,.)\]]|\s*$|\s*\{)")
_MESSAGE_KEYS = ("message", "detail", "error_description", "msg")
MAX_DEPTH = 8  # JSON in a string in JSON ...: deep enough for every CLI seen, bounded for the rest
MAX_TEXT = 64 * 1024  # an error longer than this is shown as it came (looking is quadratic at worst)


def _json_in(text: str) -> Any:
    """The first JSON object in text, or None."""
    start = text.find("{")
    while start != -1:
        try:
            return _DECODER.raw_decode(text, start)[0]
        except ValueError:
            start = text.find("{", start + 1)
    return None


def _innermost(value: Any, depth: int = 0) -> tuple[str | None, int | None]:
    """(message, HTTP status code) from the deepest error object found."""
    if depth > MAX_DEPTH:
        return None, None
    if isinstance(value, str):
        nested = _json_in(value) if "{" in value else None
        if nested is not None:
            message, code = _innermost(nested, depth + 1)
            if message:
                return message, code
        return (value.strip() or None), None
    if not isinstance(value, dict):
        return None, None
    code = value.get("code") if isinstance(value.get("code"), int) and 100 <= value["code"] <= 599 else None
    inner = value.get("error")
    if isinstance(inner, (dict, str)):
        message, inner_code = _innermost(inner, depth + 1)
        if message:
            return message, inner_code or code
    for key in _MESSAGE_KEYS:
        if isinstance(value.get(key), str):
            message, inner_code = _innermost(value[key], depth + 1)
            if message:
                return message, inner_code or code
    return None, code


def human_error(text: str) -> str:
    """The innermost human message of an agent's error text, with the HTTP status after it
    when the text names one; the text as it came when it holds no JSON."""
    found = _json_in(text) if "{" in text and len(text) <= MAX_TEXT else None
    if found is None:
        return text
    message, code = _innermost(found)
    if not message:
        return text
    status = _STATUS.search(text)
    reason = status.group(2) if status else None
    said = f"HTTP {status.group(1)}" + (f" {reason}" if reason else "") if status else (f"HTTP {code}" if code else "")
    if not said:
        return message
    if reason and message.rstrip(".").lower() == reason.lower():  # {"detail":"Bad Request"}: nothing more
        return said
    return f"{message} ({said})"


def unreachable(kind: str, data: dict[str, Any]) -> str | None:
    """The words of a parsed event that says the agent's API cannot be reached, or None.
    A retry with an HTTP status (529 overloaded, 5xx, 429) came from an API that answered;
    one without came from no answer at all (claude's api_retry with error_status null)."""
    if kind == "retry":
        if data.get("status") not in (None, 0, "0", ""):
            return None
        text = data.get("error")
        return text if isinstance(text, str) and text.strip() and text != "unknown" else "no answer from the API"
    if kind == "error":
        text = data.get("message")
        if isinstance(text, str) and _UNREACHABLE.search(text):
            return text
    return None
