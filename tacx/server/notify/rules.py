"""What `notify:` in tacx.yaml says: which events reach which channel. Checked when tacx.yaml
is read, like every other setting, so a typo is `tacx.yaml:LINE:COL: notify[0].on[1]: ...`
before anything runs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from tacx.durations import setting_duration

if TYPE_CHECKING:
    from tacx.workflow.document import Document

# The names a rule's `on` may hold, and the engine events each one hears.
TASK_ENDS = ("succeeded", "failed", "cancelled", "timed_out")
EVENT_KINDS: dict[str, tuple[str, ...]] = {
    **{name: (f"task.{name}",) for name in TASK_ENDS},
    "budget": ("task.budget_exceeded",),
    "waiting": ("agent.output",),  # only those that show the agent waiting (waiting.py)
    "source_error": ("source.failed", "source.rate_limited"),
}
ALL = "all"
EVENT_NAMES = (*EVENT_KINDS, ALL)
CHANNELS = ("webhook", "command", "terminal")
DEFAULT_BURST = 5.0
MAX_BURST = 3600.0
DEFAULT_TIMEOUT = {"webhook": 30.0, "command": 10.0, "terminal": 1.0}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


Duration = Annotated[float, BeforeValidator(setting_duration)]


def _event_name(name: str) -> str:
    if name not in EVENT_NAMES:
        from tacx.workflow.document import suggest  # the YAML reader: loaded when a mistake is said

        raise ValueError(f"unknown event '{name}'{suggest(name, EVENT_NAMES)}; known: {', '.join(EVENT_NAMES)}")
    return name


EventName = Annotated[str, AfterValidator(_event_name)]  # checked one by one: an error names its item


class NotifyRule(BaseModel):
    """Events of ``on`` (optionally only of ``workflows``) reach one channel; those within
    ``burst`` of the first are summarised in one message."""

    model_config = ConfigDict(extra="forbid")
    on: list[EventName] = Field(description=f"the events: {', '.join(EVENT_NAMES)}")
    webhook: str | None = Field(default=None, description="an http(s) URL: a JSON POST of each message")
    headers: dict[str, str] = Field(default_factory=dict, description="the webhook's extra HTTP headers")
    command: list[str] | None = Field(default=None, description="argv run with the facts in TACX_* variables")
    terminal: bool | None = Field(default=None, description="true: a bell and a desktop notification")
    workflows: list[str] | None = Field(default=None, description="only tasks of these workflows")
    burst: Duration = Field(default=DEFAULT_BURST, description="events within this of the first make one message")
    timeout: Duration | None = Field(default=None, description="the most one delivery may take, retries included")

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        """YAML 1.1 reads a bare `on:` key as true: it is this rule's `on`. Other keys YAML
        reads as booleans (`off:`, `yes:`; `on:` beside a quoted "on":) are said in words,
        not as pydantic's "Keys should be strings"."""
        if not isinstance(data, dict):
            return data
        if True in data and "on" in data:
            raise ValueError('on: is given twice (YAML reads a bare on, On, yes or true as the same key)')
        if False in data:
            raise ValueError("a key YAML reads as false (off, no, false): the events key is on:")
        if True in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @field_validator("on", mode="before")
    @classmethod
    def _on_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("on")
    @classmethod
    def _some_events(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError(f"name at least one event: {', '.join(EVENT_NAMES)}")
        return names

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…" if parts.scheme else "a URL without a scheme"
            raise ValueError(f"a webhook is an http:// or https:// URL with a host, got {shown}")  # its path may be a secret
        try:
            port = parts.port  # urlsplit reads the port only when asked: a bad one would fail every post
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("a webhook URL's port is a number from 1 to 65535")
        try:
            parts.hostname.encode("idna")  # an empty or over-long label fails every post
        except UnicodeError:
            raise ValueError(f"{parts.hostname!r} is not a host name") from None
        if any(ord(c) < 33 or ord(c) == 127 for c in url):
            raise ValueError("a webhook URL has no spaces or control characters")
        return url

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
                raise ValueError(f"header {name}: no line breaks or control characters in a value")
        return headers

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("command is a list of arguments, never a shell string: e.g. [notify-send, tacx]"
                             " (the facts come in TACX_* environment variables)")
        if isinstance(value, list) and value and isinstance(value[0], bool):
            raise ValueError("YAML reads a bare true, false, yes, no, on or off as a boolean: quote the program,"
                             " e.g. [\"true\"]")
        if isinstance(value, list) and (not value or not isinstance(value[0], str) or not value[0].strip()):
            raise ValueError("command starts with the program to run, e.g. [notify-send, tacx]")
        if isinstance(value, list) and any(isinstance(a, str) and "\0" in a for a in value):
            raise ValueError("command arguments cannot hold a NUL character")
        return value

    @field_validator("workflows")
    @classmethod
    def _some_workflows(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and not names:
            raise ValueError("name at least one workflow, or leave workflows out for every workflow")
        return names

    @field_validator("terminal")
    @classmethod
    def _terminal_true(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("write terminal: true, or leave the rule out")
        return value

    @field_validator("burst")
    @classmethod
    def _burst(cls, value: float) -> float:
        if value > MAX_BURST:
            raise ValueError(f"a burst window is at most {MAX_BURST:g}s: the first event waits that long")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value <= 600:
            raise ValueError("a timeout is more than 0 and at most 10m")
        return value

    @model_validator(mode="after")
    def _one_channel(self) -> NotifyRule:
        given = [name for name in CHANNELS if getattr(self, name) is not None]
        if len(given) != 1:
            found = f"this one has {' and '.join(given)}" if given else "this one has none"
            raise ValueError(f"a rule has exactly one channel, webhook: URL, command: [argv] or terminal: true; {found}")
        if self.headers and self.webhook is None:
            raise ValueError("headers are for a webhook")
        return self

    @property
    def channel(self) -> str:
        return next(name for name in CHANNELS if getattr(self, name) is not None)

    @property
    def kinds(self) -> list[str]:
        """The engine event kinds this rule hears (exact kinds for the bus's filter)."""
        names = EVENT_KINDS if ALL in self.on else self.on
        return sorted({kind for name in names for kind in EVENT_KINDS[name]})

    @property
    def delivery_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT[self.channel]

    def event_name(self, kind: str) -> str | None:
        """The rule's name for an engine kind it hears (None: not one it asked for)."""
        for name in (EVENT_KINDS if ALL in self.on else self.on):
            if kind in EVENT_KINDS[name]:
                return name
        return None

    def describe(self) -> str:
        """The channel in words for messages about it; a webhook's path and query may hold
        a secret (Slack's hook URLs do), so only its scheme and host are said."""
        if self.webhook is not None:
            parts = urlsplit(self.webhook)
            return f"webhook {parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"
        if self.command is not None:
            return f"command {self.command[0]}"
        return "terminal"


def place_on_keys(doc: Document) -> None:
    """YAML 1.1 reads a bare `on:` key as true, so the document does not know where a rule's
    `on` sits; tell it, so that `notify[0].on[1]` is located at that item."""
    import yaml

    for where, node in list(doc.values.items()):
        if len(where) != 2 or where[0] != "notify" or not isinstance(node, yaml.MappingNode):
            continue
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in ("on", "On", "ON") and key.tag.endswith(":bool"):
                path = (*where, "on")
                doc.keys[path], doc.values[path] = key, value
                if isinstance(value, yaml.SequenceNode):
                    for i, item in enumerate(value.value):
                        doc.values[path + (i,)] = item
