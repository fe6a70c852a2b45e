"""Workflow files: load, validate and render the YAML that describes a task's stages.

Every mistake in a file is reported as ``file:line:col: loc: message``, all of them at
once, so a user fixes a file in one pass. Templates are plain ``{{ dotted.name }}``
substitution, never evaluated, and ``run:`` scripts take none at all: inputs reach
scripts only as environment variables, so no text from an issue is spliced into a shell.
"""

from __future__ import annotations

import bisect
import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from tacx import bounds, userfiles

__all__ = [
    "BUILTIN_PROVIDER_KINDS",
    "Budget",
    "Defaults",
    "InputSpec",
    "Issue",
    "Loop",
    "SETUP_STAGE",
    "Setup",
    "StageSpec",
    "Workflow",
    "WorkflowError",
    "input_env_name",
    "load_workflow",
    "load_workflow_text",
    "parse_duration",
    "read_workflow",
    "render",
    "resolve_inputs",
    "template_names",
    "workflow_json_schema",
]

BUILTIN_PROVIDER_KINDS: dict[str, str] = {
    "shell": "script",
    "bash": "script",
    "python": "script",
    "claude": "agent",
    "codex": "agent",
    "gemini": "agent",
    "aider": "agent",
    "mock": "agent",
}
"""Provider name -> kind. "script" stages need ``run:``, "agent" stages need ``prompt:``."""

SCRIPT_LANGUAGES: dict[str, str] = {"shell": "sh", "bash": "sh", "python": "python"}
"""The language a script provider's run: is written in (a POSIX sh script also runs in bash).
One run: script is never offered to two languages: python is never run by /bin/sh."""

_SEGMENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_TEMPLATE_NAME = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
_STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TASK_NAMES = ("task.id", "task.title", "task.trace_id")

_Loc = tuple[str | int, ...]
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


class WorkflowError(Exception):
    """A workflow file is invalid; ``issues`` lists every mistake found, in file order."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: list[Issue] = sorted(issues, key=lambda issue: (issue.line, issue.col))
        super().__init__("\n".join(map(str, self.issues)))


# --- durations ---------------------------------------------------------------------------

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


# --- field types -------------------------------------------------------------------------


def _describe(value: Any) -> str:
    """A value as a user would call it: "the text 'abc'", "a list", "nothing (null)"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value if len(value) <= 40 else value[:37] + '...'!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value:g}")
    return value


def _one_or_many(value: Any) -> Any:
    """``provider: bash`` and ``provider: [bash]`` mean the same; normalise to a list."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a name or a list of names, got {_describe(value)}")
    return value


def _provider_names(value: Any) -> Any:
    value = _one_or_many(value)
    if not value:
        raise ValueError("give at least one provider")
    return value


def _scalar_text(value: Any) -> Any:
    """YAML reads ``3`` or ``true`` as a number or bool; keep them as the text meant."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _pattern(regex: re.Pattern[str], what: str, rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: {rule}")
        return value

    return AfterValidator(check)


def _env_name(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"invalid environment variable name {value!r}: use letters, digits and '_'")
    if value.upper().startswith("TACX_"):
        raise ValueError(f"environment variable {value!r}: names starting with TACX_ are set by tacx")
    return value


def _relative_path(value: str) -> str:
    """Expected files live in the task's workspace; nothing outside it is checked."""
    if not value or value.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", value):
        raise ValueError(f"{value!r}: expects takes paths relative to the workspace")
    if ".." in re.split(r"[/\\]", value):
        raise ValueError(f"{value!r}: expects paths may not contain '..'")
    return value


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^(\d+(\.\d+)?|(\d+(\.\d+)?(ms|d|h|m|s))+)$"},
        {"type": "number", "minimum": 0},
    ],
    "description": "seconds, or text like 500ms, 90s, 20m, 1h30m, 2d",
}
_NAMES_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_SCALAR_SCHEMA = {"type": ["string", "number", "boolean"]}

_Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
_PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_positive), WithJsonSchema(_DURATION_SCHEMA)
]
_ProviderNames = Annotated[list[str], BeforeValidator(_provider_names), WithJsonSchema(_NAMES_SCHEMA)]
_StageNames = Annotated[list[str], BeforeValidator(_one_or_many), WithJsonSchema(_NAMES_SCHEMA)]
_ScalarText = Annotated[str, BeforeValidator(_scalar_text), WithJsonSchema(_SCALAR_SCHEMA)]
_NonBlank = Annotated[str, AfterValidator(_not_blank)]
_StageName = Annotated[
    str,
    bounds.refuse(bounds.max_length(bounds.MAX_NAME, "a stage's name is part of its log file's name")),
    _pattern(_STAGE_NAME, "stage name", "use letters, digits, '_' and '-', starting with a letter"),
    WithJsonSchema({"type": "string", "pattern": f"^{_STAGE_NAME.pattern}$"}),
]
_InputName = Annotated[
    str,
    _pattern(_IDENTIFIER, "input name", "use letters, digits and '_', not starting with a digit"),
    WithJsonSchema({"type": "string", "pattern": f"^{_IDENTIFIER.pattern}$"}),
]
_EnvName = Annotated[str, AfterValidator(_env_name)]
_RelativePath = Annotated[str, AfterValidator(_relative_path)]


# --- models ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    """A value given when a task is submitted; scripts see it as $TACX_INPUT_<NAME>."""

    required: bool = False
    default: Annotated[
        str | None, BeforeValidator(_scalar_text), WithJsonSchema({"type": ["string", "number", "boolean", "null"]})
    ] = None
    description: str = ""

    @field_validator("default")
    @classmethod
    def _not_required_and_default(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("required"):
            raise ValueError("a required input takes no default; drop one of the two")
        return value


class Budget(_Strict):
    """The task stops when its cost passes either limit."""

    usd: float | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)


class Loop(_Strict):
    """On failure, run again from an earlier stage, at most ``max`` times."""

    back_to: str
    max: int = Field(ge=1)


class Defaults(_Strict):
    """Settings every stage takes unless it sets its own."""

    provider: _ProviderNames | None = None
    timeout: _PositiveDuration | None = None
    idle_timeout: _PositiveDuration | None = None
    retries: int = Field(default=0, ge=0)
    backoff: _Duration = 2.0
    model: str | None = None
    env: dict[_EnvName, _ScalarText] = {}


class StageSpec(_Strict):
    """One step of a task: a script (``run:``) or an agent prompt (``prompt:``)."""

    name: _StageName
    provider: _ProviderNames = []
    run: _NonBlank | None = None
    prompt: _NonBlank | None = None
    needs: _StageNames | None = None
    when: Literal["success", "failure", "always"] = "success"
    expects: list[_RelativePath] = []
    retries: int = Field(default=0, ge=0)
    backoff: _Duration = 2.0
    timeout: _PositiveDuration | None = None
    idle_timeout: _PositiveDuration | None = None
    env: dict[_EnvName, _ScalarText] = {}
    model: str | None = None
    max_turns: int | None = Field(default=None, ge=1)
    allowed_tools: list[str] | None = None
    permission_mode: str | None = None
    extra_args: list[str] = []
    resume: bool = False
    loop: Loop | None = None


SETUP_STAGE = "setup"


class Setup(_Strict):
    """A script run once per workspace before the first stage (copy .env, install deps)."""

    run: _NonBlank
    provider: Literal["shell", "bash", "python"] = "shell"
    timeout: _PositiveDuration | None = None


def _setup_text(value: Any) -> Any:
    """``setup: npm ci`` is short for ``setup: {run: npm ci}``."""
    return {"run": value} if isinstance(value, str) else value


class Workflow(_Strict):
    """A workflow file: inputs, defaults and the stages a task runs."""

    name: Annotated[
        _NonBlank, bounds.refuse(bounds.max_length(bounds.MAX_NAME, "it heads listings"), bounds.control_characters)
    ]
    description: str = ""
    workspace: Literal["none", "dir", "worktree"] = "none"
    setup: Annotated[Setup | None, BeforeValidator(_setup_text)] = None
    title: str | None = None
    dedupe_key: str | None = None
    inputs: dict[_InputName, InputSpec] = {}
    defaults: Defaults = Field(default_factory=Defaults)
    budget: Budget | None = None
    stages: list[StageSpec]
    source: SkipJsonSchema[str] = ""

    @field_validator("stages")
    @classmethod
    def _at_least_one(cls, stages: list[StageSpec]) -> list[StageSpec]:
        if not stages:
            raise ValueError("a workflow needs at least one stage")
        return stages

    @model_validator(mode="after")
    def _apply_defaults(self) -> Workflow:
        """A key set on the stage wins (even ``timeout: null``); otherwise defaults apply."""
        for stage in self.stages:
            given = stage.model_fields_set
            if "provider" not in given and self.defaults.provider:
                stage.provider = list(self.defaults.provider)
            for key in ("timeout", "idle_timeout", "retries", "backoff", "model"):
                if key not in given:
                    setattr(stage, key, getattr(self.defaults, key))
            stage.env = {**self.defaults.env, **stage.env}
        if self.setup is not None and all(s.name != SETUP_STAGE for s in self.stages):
            self._add_setup_stage(self.setup)
        return self

    def _add_setup_stage(self, setup: Setup) -> None:
        """``setup:`` becomes a first stage named "setup": it is logged, timed, recorded
        and, having succeeded, never run again for this task (a resume reuses the tree)."""
        stage = StageSpec(
            name=SETUP_STAGE,
            provider=[setup.provider],
            run=setup.run,
            timeout=setup.timeout if setup.timeout is not None else self.defaults.timeout,
            env=dict(self.defaults.env),
        )
        if any(s.needs is not None for s in self.stages):
            stage.needs = []
            for other in self.stages:
                if not other.needs:
                    other.needs = [SETUP_STAGE]
        self.stages.insert(0, stage)

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"workflow {self.name!r} has no stage {name!r}")

    def needs_of(self, name: str) -> list[str]:
        """Explicit ``needs:``; with none anywhere in the workflow, the previous stage."""
        stage = self.stage(name)
        if any(s.needs is not None for s in self.stages):
            return list(stage.needs or [])
        index = next(i for i, s in enumerate(self.stages) if s.name == name)
        return [self.stages[index - 1].name] if index else []

    def upstream_of(self, name: str) -> set[str]:
        """Every stage that must finish before ``name`` can start."""
        seen: set[str] = set()
        todo = self.needs_of(name)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.needs_of(current))
        return seen

    def topo_order(self) -> list[str]:
        """Stages in an order that satisfies ``needs``, keeping file order where it can."""
        order: list[str] = []
        remaining = [s.name for s in self.stages]
        while remaining:
            ready = next((n for n in remaining if all(d in order for d in self.needs_of(n))), None)
            if ready is None:
                raise ValueError(f"needs form a cycle among: {', '.join(remaining)}")
            remaining.remove(ready)
            order.append(ready)
        return order


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of workflow files, for editors and ``tacx schema``."""
    schema = Workflow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tacx workflow"
    return schema


# --- templates ---------------------------------------------------------------------------


class _Token(NamedTuple):
    start: int
    text: str
    name: str | None  # None when the text between the braces is not a plain dotted name
    closed: bool


def _scan(text: str) -> list[_Token]:
    """Every ``{{ ... }}`` in ``text``, valid or not, in order."""
    tokens: list[_Token] = []
    pos = 0
    while (start := text.find("{{", pos)) >= 0:
        end = text.find("}}", start + 2)
        if end < 0:
            tokens.append(_Token(start, text[start:], None, closed=False))
            break
        inner = text[start + 2 : end].strip()
        name = inner if _TEMPLATE_NAME.fullmatch(inner) else None
        tokens.append(_Token(start, text[start : end + 2], name, closed=True))
        pos = end + 2
    return tokens


def _not_plain(token: _Token) -> str:
    if not token.closed:
        return "not a plain {{ dotted.name }}: '{{' is never closed with '}}'"
    shown = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return f"not a plain {{{{ dotted.name }}}}: {shown!r} (templates are substituted, never evaluated)"


def template_names(template: str) -> list[str]:
    """The dotted names a template uses, each once, in order of first use."""
    names: list[str] = []
    for token in _scan(template):
        if token.name is None:
            raise ValueError(_not_plain(token))
        if token.name not in names:
            names.append(token.name)
    return names


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``{{ name }}`` in one pass: inserted values are never expanded again."""
    parts: list[str] = []
    pos = 0
    for token in _scan(template):
        if token.name is None:
            raise ValueError(_not_plain(token))
        parts += [template[pos : token.start], values[token.name]]
        pos = token.start + len(token.text)
    parts.append(template[pos:])
    return "".join(parts)


# --- inputs ------------------------------------------------------------------------------


def input_env_name(name: str) -> str:
    """The environment variable a script reads an input from: title -> TACX_INPUT_TITLE."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"invalid input name {name!r}")
    return f"TACX_INPUT_{name.upper()}"


def _input_text(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    raise ValueError(f"input {name!r}: cannot use {_describe(value)} as a value")


def resolve_inputs(wf: Workflow, given: Mapping[str, object]) -> dict[str, str]:
    """Every declared input as text: given values, then defaults, "" for optional ones.

    A ``None`` value counts as not given, so a default or the required check applies.
    """
    unknown = [name for name in given if name not in wf.inputs]
    if unknown:
        known = ", ".join(wf.inputs) if wf.inputs else "none (it takes no inputs)"
        raise ValueError(
            f"workflow {wf.name!r} has no input {', '.join(map(repr, unknown))}; known inputs: {known}"
        )
    values: dict[str, str] = {}
    missing: list[str] = []
    for name, spec in wf.inputs.items():
        value = given.get(name)
        if value is not None:
            values[name] = _input_text(name, value)
        elif spec.default is not None:
            values[name] = spec.default
        elif spec.required:
            missing.append(name)
        else:
            values[name] = ""
    if missing:
        raise ValueError(f"workflow {wf.name!r} needs input {', '.join(map(repr, missing))}")
    return values


# --- reading YAML with positions ---------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_NODES = 100_000


class _TooLarge(Exception):
    """Aliases expanded into more nodes than any workflow needs."""


def _loc_text(path: _Loc) -> str:
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


class _Document:
    """A YAML text as plain data, plus where each value and key sits, plus issues found."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.values: dict[_Loc, yaml.Node] = {}
        self.keys: dict[_Loc, yaml.Node] = {}
        self.issues: list[Issue] = []
        self._seen: set[tuple[int, int, str]] = set()
        self._line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
        self._constructor = yaml.SafeLoader("")
        self._nodes_left = _MAX_NODES

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
            self._add(1, 1, (), f"a workflow file is a mapping (name:, stages:, ...), not {_describe(data)}")
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

    def _build(self, node: yaml.Node, path: _Loc, active: tuple[yaml.Node, ...]) -> Any:
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

    def _scalar(self, node: yaml.ScalarNode, path: _Loc) -> Any:
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

    def _build_mapping(self, node: yaml.MappingNode, path: _Loc, active: tuple[yaml.Node, ...]) -> dict:
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
            return f"key {node.value!r} is read as {_describe(key)}; keys must be text, so quote it"
        return "keys must be text; a value starting with '{{' or '[' must be quoted"

    # positions and issues

    def _add(self, line: int, col: int, path: _Loc, message: str) -> None:
        if (line, col, message) not in self._seen:
            if len(self.issues) >= bounds.MAX_ISSUES:
                raise bounds.TooManyIssues
            self._seen.add((line, col, message))
            self.issues.append(Issue(self.source, line, col, _loc_text(path), message))

    def _add_node(self, node: yaml.Node, path: _Loc, message: str) -> None:
        self._add(node.start_mark.line + 1, node.start_mark.column + 1, path, message)

    def _node_at(self, path: _Loc) -> yaml.Node | None:
        """The value at ``path``, or of its nearest enclosing value when it is absent."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return None

    def add(self, path: _Loc, message: str, at: Literal["value", "key", "parent"] = "value") -> None:
        """An issue about the value at ``path``, its key, or the mapping that lacks it."""
        if at == "key" and path in self.keys:
            node = self.keys[path]
        else:
            node = self._node_at(path[:-1] if at == "parent" else path)
        if node is None:
            self._add(1, 1, path, message)
        else:
            self._add_node(node, path, message)

    def add_in_text(self, path: _Loc, offset: int, message: str) -> None:
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
            message, at = _pydantic_message(error)
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


def _keys_allowed(parent: _Loc) -> list[str]:
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


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _pydantic_message(error: Any) -> tuple[str, Literal["value", "key", "parent"]]:
    """A pydantic error in a user's words, and which node it is about."""
    kind, loc, ctx, value = error["type"], error["loc"], error.get("ctx", {}), error.get("input")
    if kind == "missing":
        return f"missing required key '{loc[-1]}'", "parent"
    if kind == "extra_forbidden":
        return f"unknown key '{loc[-1]}'" + _suggest(str(loc[-1]), _keys_allowed(loc[:-1])), "key"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}", "value"
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {_describe(value)}", "value"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']:g}, got {_describe(value)}", "value"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']:g}, got {_describe(value)}", "value"
    return error["msg"].removeprefix("Value error, "), "value"


# --- checks that span fields -------------------------------------------------------------


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _entries(value: Any, path: _Loc) -> list[tuple[_Loc, str]]:
    """(path, name) for each name in ``x`` or ``[x, y]``, the forms provider and needs take."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [(path + (i,), item) for i, item in enumerate(value) if isinstance(item, str)]
    return []


class _References:
    """Checks pydantic cannot make field by field: names that must exist, agree or differ.

    They read the raw data, so they run (and report) even where pydantic found mistakes.
    """

    def __init__(self, data: dict, kinds: Mapping[str, str], doc: _Document) -> None:
        self.data, self.kinds, self.doc = data, kinds, doc
        stages = data.get("stages")
        stages = stages if isinstance(stages, list) else []
        self.stages = [(i, stage) for i, stage in enumerate(stages) if isinstance(stage, dict)]
        self.inputs = [name for name in _mapping(data.get("inputs")) if isinstance(name, str)]
        self.names: dict[str, int] = {}  # stage name -> index of the stage that first uses it

    def run(self) -> None:
        self._input_clashes()
        self._stage_names()
        if self.data.get("setup") is not None and SETUP_STAGE in self.names:
            self.doc.add(
                ("stages", self.names[SETUP_STAGE], "name"),
                f"a stage named '{SETUP_STAGE}' clashes with the workflow's setup: (which runs as a stage of that name)",
            )
        inputs = [f"inputs.{name}" for name in self.inputs]
        everywhere = inputs + [f"stages.{name}.result" for name in self.names] + [*_TASK_NAMES, "workflow.name"]
        for key in ("title", "dedupe_key"):
            self._template((key,), self.data.get(key), inputs + ["workflow.name"], submit_time=True)
        defaults = _mapping(self.data.get("defaults"))
        for key, value in _mapping(defaults.get("env")).items():
            self._template(("defaults", "env", key), value, everywhere)
        default_kind = self._provider_kind(defaults.get("provider"), ("defaults", "provider"))
        for i, stage in self.stages:
            path: _Loc = ("stages", i)
            self._template(path + ("prompt",), stage.get("prompt"), everywhere)
            for key, value in _mapping(stage.get("env")).items():
                self._template(path + ("env", key), value, everywhere)
            self._script(path + ("run",), stage.get("run"))
            self._stage_provider(i, stage, default_kind, defaults.get("provider") is not None)
            self._needs(i, stage)
            self._loop(i, stage)
        self._cycles()

    def _label(self, stage: dict) -> str:
        name = stage.get("name")
        return f"stage '{name}'" if isinstance(name, str) else "this stage"

    def _input_clashes(self) -> None:
        first: dict[str, str] = {}
        for name in self.inputs:
            if not _IDENTIFIER.fullmatch(name):
                continue
            env = input_env_name(name)
            if env in first:
                self.doc.add(("inputs", name), f"input '{name}' clashes with '{first[env]}': both become ${env}", at="key")
            else:
                first[env] = name

    def _stage_names(self) -> None:
        """Names must differ, also as $TACX_RESULT_<STAGE> (upper case, '-' as '_')."""
        by_env: dict[str, str] = {}
        for i, stage in self.stages:
            name = stage.get("name")
            if not isinstance(name, str):
                continue
            env = "TACX_RESULT_" + name.upper().replace("-", "_")
            if name in self.names:
                self.doc.add(("stages", i, "name"), f"duplicate stage name '{name}' (also stages[{self.names[name]}])")
                continue
            if env in by_env:
                self.doc.add(("stages", i, "name"), f"stage '{name}' clashes with '{by_env[env]}': both become ${env}")
            by_env[env] = name
            self.names[name] = i

    def _template(self, path: _Loc, value: Any, known: list[str], submit_time: bool = False) -> None:
        if not isinstance(value, str):
            return
        for token in _scan(value):
            if token.name is None:
                message = _not_plain(token)
            elif token.name in known:
                continue
            elif submit_time and not token.name.startswith("inputs."):
                message = (
                    f"'{token.name}' is not known when the task is submitted; "
                    f"{path[-1]} may use only {', '.join(known)}"
                )
            else:
                message = f"unknown name '{token.name}'{_suggest(token.name, known)}; known names: {', '.join(known)}"
            self.doc.add_in_text(path, token.start, message)

    def _script(self, path: _Loc, run: Any) -> None:
        """The security rule: no template reaches a shell; scripts read the environment."""
        tokens = _scan(run) if isinstance(run, str) else []
        if not tokens:
            return
        name = tokens[0].name or ""
        input_name = name.removeprefix("inputs.")
        is_input = name.startswith("inputs.") and _IDENTIFIER.fullmatch(input_name)
        example = input_env_name(input_name) if is_input else "TACX_INPUT_<NAME>"
        self.doc.add_in_text(
            path,
            tokens[0].start,
            "scripts take no {{ }} substitution (inputs reach scripts only as environment variables); "
            f"use ${example} (inputs), $TACX_RESULT_<STAGE> (stage results), $TACX_TASK_ID",
        )

    def _provider_kind(self, value: Any, where: _Loc) -> tuple[str, str] | None:
        """(kind, first provider) of a ``provider:`` value, reporting unknown names and mixes."""
        found: dict[str, str] = {}
        for path, name in _entries(value, where):
            if name in self.kinds:
                found.setdefault(self.kinds[name], name)
            else:
                known = ", ".join(sorted(self.kinds))
                self.doc.add(path, f"unknown provider '{name}'{_suggest(name, self.kinds)}; known: {known}")
        if len(found) > 1:
            mixed = " and ".join(f"{kind} provider '{name}'" for kind, name in found.items())
            self.doc.add(where, f"mixes {mixed}; a stage runs either a script or a prompt")
            return None
        languages: dict[str, str] = {}
        for _, name in _entries(value, where):
            if self.kinds.get(name) == "script":
                languages.setdefault(SCRIPT_LANGUAGES.get(name, name), name)
        if len(languages) > 1:
            names = " and ".join(f"'{name}'" for name in languages.values())
            self.doc.add(where, f"mixes {names}, which read different languages; one run: script needs one")
            return None
        return next(iter(found.items()), None)

    def _stage_provider(self, i: int, stage: dict, default_kind: tuple[str, str] | None, has_default: bool) -> None:
        path: _Loc = ("stages", i)
        label = self._label(stage)
        if "provider" in stage:
            kind = self._provider_kind(stage["provider"], path + ("provider",))
        elif has_default:
            kind = default_kind
        else:
            self.doc.add(path, f"{label} has no provider; set provider: on the stage or in defaults:")
            return
        if kind is None:
            return
        has_run, has_prompt = stage.get("run") is not None, stage.get("prompt") is not None
        scripts = ", ".join(sorted(n for n, k in self.kinds.items() if k == "script"))
        if kind[0] == "script" and has_prompt:
            self.doc.add(
                path + ("prompt",),
                f"{label} has prompt:, but its provider '{kind[1]}' runs scripts; "
                "give run: or use an agent provider",
                at="key",
            )
        elif kind[0] == "script" and not has_run:
            self.doc.add(path, f"{label} needs run: (its provider '{kind[1]}' runs scripts)")
        elif kind[0] == "agent" and has_run:
            self.doc.add(
                path + ("run",),
                f"{label} has run:, but its provider '{kind[1]}' is an agent that takes prompt:; "
                f"scripts run on {scripts}",
                at="key",
            )
        elif kind[0] == "agent" and not has_prompt:
            self.doc.add(path, f"{label} needs prompt: (its provider '{kind[1]}' is an agent)")

    def _needs(self, i: int, stage: dict) -> None:
        own = stage.get("name")
        for path, name in _entries(stage.get("needs"), ("stages", i, "needs")):
            if name == own:
                self.doc.add(path, f"stage '{own}' cannot need itself")
            elif name not in self.names:
                self.doc.add(path, self._unknown_stage(name))

    def _unknown_stage(self, name: str) -> str:
        return f"unknown stage '{name}'{_suggest(name, self.names)}; stages: {', '.join(self.names)}"

    def _loop(self, i: int, stage: dict) -> None:
        target = _mapping(stage.get("loop")).get("back_to")
        if not isinstance(target, str):
            return
        path: _Loc = ("stages", i, "loop", "back_to")
        if target not in self.names:
            self.doc.add(path, self._unknown_stage(target))
        elif self.names[target] >= i:
            self.doc.add(
                path, f"loop.back_to must name an earlier stage; '{target}' does not come before {self._label(stage)}"
            )

    def _cycles(self) -> None:
        graph: dict[str, list[tuple[str, _Loc]]] = {}
        for i, stage in self.stages:
            name = stage.get("name")
            if isinstance(name, str) and self.names.get(name) == i:
                entries = _entries(stage.get("needs"), ("stages", i, "needs"))
                graph[name] = [(dep, path) for path, dep in entries if dep in self.names and dep != name]
        state: dict[str, bool] = {}  # name -> still on the trail
        trail: list[str] = []

        def visit(name: str) -> None:
            state[name] = True
            trail.append(name)
            for dep, path in graph[name]:
                if state.get(dep):
                    cycle = trail[trail.index(dep) :] + [dep]
                    self.doc.add(path, f"needs form a cycle: {' -> '.join(cycle)}")
                elif dep not in state:
                    visit(dep)
            trail.pop()
            state[name] = False

        for name in graph:
            if name not in state:
                visit(name)


# --- loading -----------------------------------------------------------------------------


def load_workflow_text(text: str, source: str, providers: Mapping[str, str] | None = None) -> Workflow:
    """Parse and validate a workflow; raise WorkflowError listing every mistake.

    ``providers`` maps every usable provider name to its kind ("script" or "agent").
    """
    doc = _Document(text, source)
    workflow = None
    try:
        data = doc.load()
        if data is not None and (problem := bounds.too_many_stages(data.get("stages"))):
            doc.add(("stages",), problem)  # before anything walks them
        elif data is not None:
            if "source" in data:
                doc.add(("source",), "unknown key 'source'", at="key")
            try:
                workflow = Workflow.model_validate({**data, "source": source})
            except ValidationError as err:
                doc.add_validation_errors(err)
            _References(data, BUILTIN_PROVIDER_KINDS if providers is None else providers, doc).run()
    except bounds.TooManyIssues:  # a hostile file: each issue costs, so stop counting
        last = max(doc.issues, key=lambda issue: (issue.line, issue.col))
        doc.issues.append(last._replace(loc="", message=f"checking stopped after {bounds.MAX_ISSUES} mistakes"))
    if doc.issues or workflow is None:
        raise WorkflowError(doc.issues)
    return workflow


def read_workflow(path: str | Path) -> str:
    """A workflow file's text, read once through the bounded reader (a regular file, UTF-8,
    at most 1 MiB): validate this text and store this text, never a second read."""
    try:
        return userfiles.read_text_file(path, userfiles.WORKFLOW_FILE_LIMIT, "a workflow file")
    except userfiles.FileRefused as err:
        raise WorkflowError([Issue(err.path, err.line, err.col, "", err.message)]) from None


def load_workflow(path: str | Path, providers: Mapping[str, str] | None = None) -> Workflow:
    """Read and validate a workflow file; see load_workflow_text."""
    return load_workflow_text(read_workflow(path), str(path), providers)
