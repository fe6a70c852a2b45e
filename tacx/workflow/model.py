"""The workflow model: the pydantic classes that validate a workflow's data field by field,
durations, and the text of the inputs a task is submitted with.

Scripts see inputs only as environment variables ($TACX_INPUT_<NAME>), never spliced into
their text; the provider tables below say which stages run scripts and which run agents.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from tacx import bounds
from tacx.durations import parse_duration  # noqa: F401 - the model's duration fields, and its importers

SCRIPT_LANGUAGES: dict[str, str] = {"shell": "sh", "bash": "sh", "python": "python"}
"""The language a script provider's run: is written in (a POSIX sh script also runs in bash).
One run: script is never offered to two languages: python is never run by /bin/sh."""

_STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""An input's name (it becomes part of an environment variable's name)."""


# --- durations: tacx/durations.py ----------------------------------------------------------

# --- field types -------------------------------------------------------------------------


def describe_value(value: Any) -> str:
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
        raise ValueError(f"expected a name or a list of names, got {describe_value(value)}")
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
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(f"invalid environment variable name {value!r}: use letters, digits and '_'")
    if value.upper().startswith("TACX_"):
        raise ValueError(f"environment variable {value!r}: names starting with TACX_ are set by tacx")
    return value


EXECUTORS = ("local", "ray")
"""Where a stage's daughter runs: this machine, or a Ray cluster (tacx.yaml's executors.ray)."""


@functools.cache
def _ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _executor(value: str) -> str:
    """Ray is an optional extra: a workflow that asks for it says how to get it."""
    if value == "ray" and not _ray_installed():
        raise ValueError("executor 'ray' needs Ray, which is not installed here: pip install 'tacx[ray]'")
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
    _pattern(IDENTIFIER, "input name", "use letters, digits and '_', not starting with a digit"),
    WithJsonSchema({"type": "string", "pattern": f"^{IDENTIFIER.pattern}$"}),
]
_EnvName = Annotated[str, AfterValidator(_env_name)]
_RelativePath = Annotated[str, AfterValidator(_relative_path)]
_Executor = Annotated[Literal[EXECUTORS], AfterValidator(_executor)]  # type: ignore[valid-type]


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
    executor: _Executor = "local"


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
    executor: _Executor = "local"


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
            for key in ("timeout", "idle_timeout", "retries", "backoff", "model", "executor"):
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
            executor=self.defaults.executor,
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

    @cached_property
    def _needs(self) -> dict[str, tuple[str, ...]]:
        """Each stage's needs, worked out once: the engine asks on every step of a task."""
        if any(s.needs is not None for s in self.stages):
            return {s.name: tuple(s.needs or ()) for s in self.stages}
        names = [s.name for s in self.stages]
        return {name: (names[i - 1],) if i else () for i, name in enumerate(names)}

    def needs_of(self, name: str) -> list[str]:
        """Explicit ``needs:``; with none anywhere in the workflow, the previous stage."""
        if name not in self._needs:
            raise KeyError(f"workflow {self.name!r} has no stage {name!r}")
        return list(self._needs[name])

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
        return list(self._topo_order)

    @cached_property
    def _topo_order(self) -> tuple[str, ...]:
        order: list[str] = []
        done: set[str] = set()
        remaining = [s.name for s in self.stages]
        while remaining:
            ready = next((n for n in remaining if all(d in done for d in self._needs[n])), None)
            if ready is None:
                raise ValueError(f"needs form a cycle among: {', '.join(remaining)}")
            remaining.remove(ready)
            order.append(ready)
            done.add(ready)
        return tuple(order)


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of workflow files, for editors and ``tacx schema``."""
    schema = Workflow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tacx workflow"
    return schema


# --- inputs ------------------------------------------------------------------------------


def input_env_name(name: str) -> str:
    """The environment variable a script reads an input from: title -> TACX_INPUT_TITLE."""
    if not IDENTIFIER.fullmatch(name):
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
    raise ValueError(f"input {name!r}: cannot use {describe_value(value)} as a value")


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
