"""Durations as people write them in workflows, tacx.yaml and on the command line: ``90``,
``"90s"``, ``"20m"``, ``"1h30m"``, ``"500ms"``, ``"2d"``. Kept apart from the workflow model
so the command line can read `--since 2h` without building the model's schemas."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = list(_UNIT_SECONDS)
_DURATION_TEXT = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|d|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_HINT = "use seconds (90) or a number with units: 500ms, 90s, 20m, 1h30m, 2d"


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``90``, ``"90s"``, ``"20m"``, ``"1h30m"``, ``"500ms"`` or ``"2d"``."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"invalid duration {value!r}: a duration cannot be negative")
        if _NUMBER.fullmatch(text):
            return float(text)
        if not _DURATION_TEXT.fullmatch(text):
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
        seconds, last = 0.0, -1
        for number, unit in _DURATION_PART.findall(text):
            if _UNIT_ORDER.index(unit) <= last:
                raise ValueError(f"invalid duration {value!r}: give units largest first, once each")
            last = _UNIT_ORDER.index(unit)
            seconds += float(number) * _UNIT_SECONDS[unit]
        return seconds
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid duration {value!r}: a duration must be a finite number >= 0")
    return float(value)


def setting_duration(value: object) -> float:
    """A duration a settings file gave (tacx.yaml's intervals, a notify rule's burst): YAML
    hands over text or a number; anything else (a list, true) is a mistake said as such."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError("expected a duration such as 5s")
