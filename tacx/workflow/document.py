"""A workflow's YAML read as plain data that remembers where each value and key sits, so
every mistake is reported as ``file:line:col: loc: message``; pydantic's errors are put in
a user's words here.
"""

from __future__ import annotations

import bisect
import difflib
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from tacx import bounds, userfiles
from tacx.workflow.model import Budget, Defaults, InputSpec, Loop, Setup, StageSpec, Workflow, describe_value

Loc = tuple[str | int, ...]
"""Where a value sits in the file: ("stages", 1, "timeout")."""


# --- issues ------------------------------------------------------------------------------


class Issue(NamedTuple):
    """One mistake in a workflow file; line and col are 1-based."""

    source: str
    line: int
    col: int
    loc: str
    message: str

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{self.source}:{self.line}:{self.col}: {where}{self.message}"


# --- reading YAML with positions ---------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_NODES = 100_000


class _TooLarge(Exception):
    """Aliases expanded into more nodes than any workflow needs."""


def _loc_text(path: Loc) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _find_all(text: str, sub: str) -> list[int]:
    found, pos = [], text.find(sub)
    while pos >= 0:
        found.append(pos)
        pos = text.find(sub, pos + len(sub))
    return found


class Document:
    """A YAML text as plain data, plus where each value and key sits, plus issues found."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.values: dict[Loc, yaml.Node] = {}
        self.keys: dict[Loc, yaml.Node] = {}
        self.issues: list[Issue] = []
        self._seen: set[tuple[int, int, str]] = set()
        self._line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
        self._constructor = yaml.SafeLoader("")
        self._nodes_left = _MAX_NODES
        self.keys_allowed: Callable[[Loc], list[str]] = _keys_allowed  # for "did you mean" (tacx.yaml has its own)

    def load(self) -> Any:
        """The document as dicts, lists and scalars; None (with an issue) if unusable."""
        try:
            root = userfiles.compose_yaml(self.text)
        except userfiles.TooDeep as err:
            self._add(err.problem_mark.line + 1, err.problem_mark.column + 1, (), str(err.problem))
            return None
        except yaml.MarkedYAMLError as err:
            self._syntax_error(err)
            return None
        except yaml.reader.ReaderError as err:  # a control character, before any parsing
            line = bisect.bisect_right(self._line_starts, err.position) - 1
            self._add(line + 1, err.position - self._line_starts[line] + 1, (), f"invalid YAML: {err.reason}")
            return None
        if root is None:
            self._add(1, 1, (), "the file is empty; a workflow needs at least name: and stages:")
            return None
        try:
            data = self._build(root, (), ())
        except _TooLarge:
            self._add(1, 1, (), f"more than {_MAX_NODES} values once aliases are expanded")
            return None
        if not isinstance(data, dict):
            self._add(1, 1, (), f"a workflow file is a mapping (name:, stages:, ...), not {describe_value(data)}")
            return None
        return data

    def _syntax_error(self, err: yaml.MarkedYAMLError) -> None:
        mark = err.problem_mark or err.context_mark
        message = err.problem or err.context or "unreadable YAML"
        if err.problem and err.context:
            where = err.context_mark
            on_line = f" on line {where.line + 1}" if where and mark and where.line != mark.line else ""
            message = f"{err.context}{on_line}, {err.problem}"
        if "'\\t'" in message:
            message += "; indent with spaces, not tabs"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        self._add(line, col, (), f"invalid YAML: {message}")

    def _build(self, node: yaml.Node, path: Loc, active: tuple[yaml.Node, ...]) -> Any:
        self._nodes_left -= 1
        if self._nodes_left < 0:
            raise _TooLarge
        self.values[path] = node
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if len(active) >= userfiles.MAX_DEPTH:  # the text is bounded as composed; aliases and merges nest further
            self._add_node(node, path, f"nested more than {userfiles.MAX_DEPTH} levels deep through aliases or merges")
            return {} if isinstance(node, yaml.MappingNode) else []
        if any(node is outer for outer in active):
            self._add_node(node, path, "an alias refers to a value that contains it")
            return {} if isinstance(node, yaml.MappingNode) else []
        active += (node,)
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, path + (i,), active) for i, item in enumerate(node.value)]
        return self._build_mapping(node, path, active)

    def _scalar(self, node: yaml.ScalarNode, path: Loc) -> Any:
        """The scalar's value; its plain text, with an issue, when YAML cannot read it."""
        try:
            value = self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError) as err:  # an unknown !tag, a date like 2024-13-45
            self._add_node(node, path, f"cannot read this value: {getattr(err, 'problem', None) or err}")
            return node.value
        problem = bounds.unusable_text(value) if isinstance(value, str) else None
        if isinstance(value, bytes):
            problem = "is binary (!!binary); workflow values are text"
        if problem:
            self._add_node(node, path, problem)
        return value

    def _build_mapping(self, node: yaml.MappingNode, path: Loc, active: tuple[yaml.Node, ...]) -> dict:
        result: dict[str, Any] = {}
        own = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            # `<<: *base` merges keys the mapping does not set itself; earlier sources win.
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for src in sources:
                if isinstance(src, yaml.MappingNode):
                    for key, value in self._build(src, path, active).items():
                        result.setdefault(key, value)
                else:
                    self._add_node(src, path, "'<<' merges mappings only")
        self.values[path] = node
        first_line: dict[str, int] = {}
        for key_node, value_node in own:
            key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self._add_node(key_node, path, self._bad_key(key_node, key))
                continue
            if key in first_line:
                self._add_node(key_node, path + (key,), f"duplicate key '{key}' (first on line {first_line[key]})")
                continue
            first_line[key] = key_node.start_mark.line + 1
            self.keys[path + (key,)] = key_node
            result[key] = self._build(value_node, path + (key,), active)
        return result

    @staticmethod
    def _bad_key(node: yaml.Node, key: Any) -> str:
        if isinstance(node, yaml.ScalarNode):
            return f"key {node.value!r} is read as {describe_value(key)}; keys must be text, so quote it"
        return "keys must be text; a value starting with '{{' or '[' must be quoted"

    # positions and issues

    def _add(self, line: int, col: int, path: Loc, message: str) -> None:
        if (line, col, message) not in self._seen:
            if len(self.issues) >= bounds.MAX_ISSUES:
                raise bounds.TooManyIssues
            self._seen.add((line, col, message))
            self.issues.append(Issue(self.source, line, col, _loc_text(path), message))

    def _add_node(self, node: yaml.Node, path: Loc, message: str) -> None:
        self._add(node.start_mark.line + 1, node.start_mark.column + 1, path, message)

    def _node_at(self, path: Loc) -> yaml.Node | None:
        """The value at ``path``, or of its nearest enclosing value when it is absent."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return None

    def add(self, path: Loc, message: str, at: Literal["value", "key", "parent"] = "value") -> None:
        """An issue about the value at ``path``, its key, or the mapping that lacks it."""
        if at == "key" and path in self.keys:
            node = self.keys[path]
        else:
            node = self._node_at(path[:-1] if at == "parent" else path)
        if node is None:
            self._add(1, 1, path, message)
        else:
            self._add_node(node, path, message)

    def add_in_text(self, path: Loc, offset: int, message: str) -> None:
        """An issue about the ``{{`` at ``offset`` in the text at ``path``.

        The n-th ``{{`` of the value is the n-th in its source text unless escapes or a
        comment get in the way; then the value's start is reported instead.
        """
        node = self.values.get(path)
        if isinstance(node, yaml.ScalarNode):
            in_value = _find_all(node.value, "{{")
            start = node.start_mark.index
            in_source = _find_all(self.text[start : node.end_mark.index], "{{")
            if offset in in_value and len(in_value) == len(in_source):
                index = start + in_source[in_value.index(offset)]
                line = bisect.bisect_right(self._line_starts, index) - 1
                self._add(line + 1, index - self._line_starts[line] + 1, path, message)
                return
        self.add(path, message)

    def add_validation_errors(self, err: ValidationError) -> None:
        for error in err.errors():
            loc = tuple(error["loc"])
            if loc and loc[-1] == "[key]":  # a dict key failed, e.g. a bad env name
                self.add(loc[:-1], error["msg"].removeprefix("Value error, "), at="key")
                continue
            message, at = _pydantic_message(error, self.keys_allowed)
            self.add(loc, message, at=at)


_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def _keys_allowed(parent: Loc) -> list[str]:
    """The keys the mapping at ``parent`` may hold, for "did you mean" suggestions."""
    match parent:
        case ():
            model: type[BaseModel] = Workflow
        case ("defaults",):
            model = Defaults
        case ("budget",):
            model = Budget
        case ("inputs", _):
            model = InputSpec
        case ("stages", int()):
            model = StageSpec
        case ("stages", int(), "loop"):
            model = Loop
        case ("setup",):
            model = Setup
        case _:
            return []
    return [name for name in model.model_fields if name != "source"]


def suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _pydantic_message(
    error: Any, keys_allowed: Callable[[Loc], list[str]] = _keys_allowed
) -> tuple[str, Literal["value", "key", "parent"]]:
    """A pydantic error in a user's words, and which node it is about."""
    kind, loc, ctx, value = error["type"], error["loc"], error.get("ctx", {}), error.get("input")
    if kind == "missing":
        return f"missing required key '{loc[-1]}'", "parent"
    if kind == "extra_forbidden":
        return f"unknown key '{loc[-1]}'" + suggest(str(loc[-1]), keys_allowed(loc[:-1])), "key"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe_value(value)}", "value"
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {describe_value(value)}", "value"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']:g}, got {describe_value(value)}", "value"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']:g}, got {describe_value(value)}", "value"
    return error["msg"].removeprefix("Value error, "), "value"
