"""A notification's facts and its words: one event reads as a sentence, a burst as one
message that counts them. Text that came from outside (issue titles, agents' errors) is
made plain here, before any channel sees it: no escape sequence reaches a terminal."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from tacx.agents.prices import cost_text
from tacx.engine.events import EngineEvent
from tacx.server.notify.rules import TASK_ENDS

TITLE_LIMIT = 120
ERROR_LIMIT = 200
FIELD_LIMIT = 2000  # characters of one text in a notice's JSON (webhook body, TACX_EVENTS_JSON)
LISTED = 5  # the items a burst's message names; the others are counted
# C0 (tab and newline too), DEL, C1 (0x9b is CSI on 8-bit terminals), bidi overrides and
# isolates, line and paragraph separators: each becomes a space.
_STRIP = {c: " " for c in (*range(32), 127, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F,
                            *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)}
_SPACES = re.compile(r"\s{2,}")


def _utf8(text: str) -> str:
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def plain(text: Any, limit: int = 1000) -> str:
    """One line without control characters, at most ``limit`` characters. A lone surrogate
    (JSON's "\\ud800", undecodable bytes) becomes "?": UTF-8 cannot encode it, and the command
    channel's environment would raise as it is built."""
    if text is None:
        return ""
    line = _utf8(_SPACES.sub(" ", str(text).translate(_STRIP)).strip())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class Notice:
    """One event a rule heard, with the task's facts once they are read from the store."""

    event: str  # the rule's name for it: succeeded, failed, ..., budget, waiting, source_error
    kind: str  # the engine's event kind
    task_id: int | None = None
    stage: str | None = None
    title: str | None = None
    workflow: str | None = None
    status: str | None = None
    error: str | None = None
    cost_usd: float | None = None
    duration_s: float | None = None
    url: str | None = None
    source: str | None = None
    ts: float = 0.0
    unpriced: list[str] = field(default_factory=list)  # models of its usage whose price is not known

    def as_json(self) -> dict[str, Any]:
        """Every field, a text cut to FIELD_LIMIT (an agent's error can be megabytes, and a
        burst's webhook body and TACX_EVENTS_JSON carry up to a hundred notices) and valid
        UTF-8 (a lone surrogate would be written as "\\ud800", which strict JSON readers refuse)."""
        return {k: _utf8(v[:FIELD_LIMIT]) if isinstance(v, str) else v for k, v in asdict(self).items()}


def notice_from(event_name: str, event: EngineEvent, reason: str | None = None) -> Notice:
    """The facts the event itself carries; the store adds the task's (facts.py)."""
    data = event.data
    error = reason if reason is not None else data.get("error")
    return Notice(
        event=event_name, kind=event.kind, task_id=event.task_id, stage=event.stage,
        title=data.get("title"), status=event.kind[5:] if event_name in TASK_ENDS else None,
        error=str(error) if error else None, source=data.get("source"), ts=event.ts,
        cost_usd=data.get("cost_usd") if event_name == "budget" else None,
    )


def duration_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _facts(n: Notice) -> str:
    """(workflow, $0.42, 3m12s) from what is known."""
    parts = [plain(n.workflow, 60)] if n.workflow else []
    if n.cost_usd is not None:
        parts.append(cost_text(n.cost_usd, n.unpriced, digits=2))
    if n.duration_s is not None and n.event in TASK_ENDS:
        parts.append(duration_text(n.duration_s))
    return f" ({', '.join(parts)})" if parts else ""


def _error(n: Notice) -> str:
    first = (n.error or "").strip().splitlines()
    return plain(first[0], ERROR_LIMIT) if first else ""


def sentence(n: Notice) -> str:
    """One notice as a sentence: "task 12 succeeded: Fix the off-by-one (demo, $0.42, 3m12s)"."""
    title = f": {plain(n.title, TITLE_LIMIT)}" if n.title else ""
    error = _error(n)
    if n.event == "source_error":
        what = "is rate limited" if n.kind == "source.rate_limited" else "failed to poll"
        return f"source {plain(n.source, 100) or '?'} {what}" + (f": {error}" if error else "")
    if n.event == "budget":
        return f"task {n.task_id} stopped by its budget{title}{_facts(n)}" + (f" — {error}" if error else "")
    if n.event == "waiting":
        where = f" at stage {plain(n.stage, 60)}" if n.stage else ""
        return f"task {n.task_id} needs you{where}{title}{_facts(n)}" + (f" — {error}" if error else "")
    said = f"task {n.task_id} {(n.status or n.event).replace('_', ' ')}{title}{_facts(n)}"
    return said + (f" — {error}" if error and n.event != "succeeded" else "")


_NOUNS = {"budget": "budget stop", "waiting": "agent waiting", "source_error": "source error"}


def _item(n: Notice) -> str:
    """A burst's item: "#41 fix pagination (failed: exit code 1)"."""
    if n.event == "source_error":
        return f"{plain(n.source, 100)} ({_error(n) or 'failed'})"
    label = _NOUNS.get(n.event, n.event.replace("_", " "))
    error = _error(n)
    why = f"{label}: {error}" if error and n.event != "succeeded" else label
    return f"#{n.task_id} {plain(n.title, 60) or '(untitled)'} ({why})"


def summary(notices: list[Notice], tally: dict[str, int]) -> str:
    """A burst as one message: "12 tasks ended: 10 succeeded, 2 failed — #41 ... (failed: ...)".
    ``tally`` counts every notice of the burst by event; ``notices`` may keep only the first."""
    count = sum(tally.values())
    if count == 1 and notices:
        return sentence(notices[0])
    words = ", ".join(f"{k} {_NOUNS.get(name, name.replace('_', ' '))}{'s' if k > 1 and name in _NOUNS else ''}"
                      for name, k in tally.items())
    head = f"{count} tasks ended" if all(name in TASK_ENDS for name in tally) else f"{count} notifications"
    # The ones that need a look first: failures, budget stops, waiting agents, then the rest.
    shown = sorted(notices, key=lambda n: n.event == "succeeded")[:LISTED]
    rest = count - len(shown)
    return f"{head}: {words} — " + ", ".join(_item(n) for n in shown) + (f", and {rest} more" if rest else "")


@dataclass
class Message:
    """What a channel sends: the words, and the facts of every notice in them."""

    text: str
    notices: list[Notice]  # the first of the burst (bounded)
    tally: dict[str, int]  # every notice of the burst, by event

    @property
    def count(self) -> int:
        return sum(self.tally.values())

    @property
    def event(self) -> str:
        """The event's name, or "burst" when the message counts several kinds."""
        return next(iter(self.tally)) if len(self.tally) == 1 else "burst"


def message(notices: list[Notice], tally: dict[str, int]) -> Message:
    return Message(summary(notices, tally), notices, tally)
