"""Whether an agent CLI is logged in, told from what each CLI offers offline: its environment
variables, its credentials and settings files. Nothing here talks to a network.

A verdict is "yes" (and how), "no" (and what to do), or "unknown" when the credentials may
be where tacx cannot look (the macOS keychain, a custom model provider). Only "no" keeps a
provider from being chosen, so a check that cannot tell never stops work.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

_TRAILING_COMMA = re.compile(r",\s*([}\]])")
READ_LIMIT = 256 * 1024  # a settings or .env file larger than this is not read (it is not one)

LoginState = Literal["yes", "no", "unknown"]


@dataclass(frozen=True)
class Login:
    """An agent's login as far as tacx can tell: ``how`` says how it is logged in, or why not."""

    state: LoginState
    how: str

    @property
    def problem(self) -> str | None:
        """Why the agent cannot work, when it surely cannot."""
        return self.how if self.state == "no" else None


@dataclass(frozen=True)
class Where:
    """What a login check reads: the environment daughters get, the user's home and the
    project (agents read `.env` and settings files there too)."""

    env: Mapping[str, str]
    home: Path
    project: Path | None = None

    @classmethod
    def here(cls, project: Path | None = None) -> Where:
        return cls(dict(os.environ), Path(os.environ.get("HOME") or Path.home()), project)

    def with_env(self, env: Mapping[str, str] | None) -> Where:
        """The same place seen with ``env`` (a stage's `env:`) over it; its HOME counts."""
        if not env:
            return self
        merged = {**self.env, **env}
        return Where(merged, Path(merged["HOME"]) if merged.get("HOME") else self.home, self.project)

    def set(self, name: str) -> bool:
        return bool(self.env.get(name, "").strip())

    def true(self, name: str) -> bool:
        return self.env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def read_text(path: Path) -> str | None:
    """A small text file's content, or None when it is missing, unreadable or not small."""
    try:
        if not path.is_file() or path.stat().st_size > READ_LIMIT:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_json(path: Path, comments: bool = False) -> dict[str, Any] | None:
    """A small JSON object file, or None. ``comments``: the file may hold // and /* */
    comments and trailing commas (gemini's settings.json does)."""
    text = read_text(path)
    if text is None:
        return None
    try:
        value = json.loads(strip_comments(text) if comments else text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def strip_comments(text: str) -> str:
    """JSON with comments made JSON: // and /* */ outside strings become spaces, and a comma
    before a closing bracket goes."""
    out: list[str] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end == -1 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end == -1 else end + 2
            out.append(" ")
            continue
        else:
            out.append(c)
        i += 1
    return _TRAILING_COMMA.sub(r"\1", "".join(out))


def nonempty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def dotenv(path: Path) -> dict[str, str]:
    """What a .env file sets (``NAME=value``, ``export NAME=value``); never shown, only
    looked at (is a key there, is a switch on)."""
    text = read_text(path)
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        name, value = name.removeprefix("export ").strip(), value.split(" #", 1)[0].strip().strip("'\"")
        if value and name.replace("_", "").isalnum():
            values[name] = value
    return values


def upward(start: Path | None, *names: str) -> Iterable[Path]:
    """``start/name`` for each name, then the same in every parent folder."""
    if start is None:
        return
    for folder in (start, *start.parents):
        for name in names:
            yield folder / name


def first_set(where: Where, names: Iterable[str]) -> str | None:
    return next((name for name in names if where.set(name)), None)
