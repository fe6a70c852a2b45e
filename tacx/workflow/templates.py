"""The ``{{ dotted.name }}`` template language of prompts, env values and titles.

Templates are plain substitution in one pass, never evaluated: a value inserted is never
expanded again, so no text from an issue turns into code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

_SEGMENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_TEMPLATE_NAME = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")


class Token(NamedTuple):
    """One ``{{ ... }}`` in a text, at ``start``."""

    start: int
    text: str
    name: str | None  # None when the text between the braces is not a plain dotted name
    closed: bool


def scan(text: str) -> list[Token]:
    """Every ``{{ ... }}`` in ``text``, valid or not, in order."""
    tokens: list[Token] = []
    pos = 0
    while (start := text.find("{{", pos)) >= 0:
        end = text.find("}}", start + 2)
        if end < 0:
            tokens.append(Token(start, text[start:], None, closed=False))
            break
        inner = text[start + 2 : end].strip()
        name = inner if _TEMPLATE_NAME.fullmatch(inner) else None
        tokens.append(Token(start, text[start : end + 2], name, closed=True))
        pos = end + 2
    return tokens


def not_plain_message(token: Token) -> str:
    """Why a token is not a plain dotted name, in a user's words."""
    if not token.closed:
        return "not a plain {{ dotted.name }}: '{{' is never closed with '}}'"
    shown = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return f"not a plain {{{{ dotted.name }}}}: {shown!r} (templates are substituted, never evaluated)"


def template_names(template: str) -> list[str]:
    """The dotted names a template uses, each once, in order of first use."""
    names: list[str] = []
    for token in scan(template):
        if token.name is None:
            raise ValueError(not_plain_message(token))
        if token.name not in names:
            names.append(token.name)
    return names


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``{{ name }}`` in one pass: inserted values are never expanded again."""
    parts: list[str] = []
    pos = 0
    for token in scan(template):
        if token.name is None:
            raise ValueError(not_plain_message(token))
        parts += [template[pos : token.start], values[token.name]]
        pos = token.start + len(token.text)
    parts.append(template[pos:])
    return "".join(parts)
