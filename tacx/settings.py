"""Optional project settings from `tacx.yaml` at the project root."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from tacx.agents.custom import check_custom_argv
from tacx.agents.registry import PARSER_KINDS
from tacx.engine.ray.config import ExecutorSettings
from tacx.server.notify.rules import NotifyRule, place_on_keys
from tacx.sources.config import GitHubSourceSettings
from tacx.userfiles import SETTINGS_FILE_LIMIT, FileRefused, load_yaml, read_text_file
from tacx.durations import setting_duration
from tacx.workflow.model import Budget
from tacx.workflow.templates import template_names

DEFAULT_COOLDOWN = 60.0


Duration = Annotated[float, BeforeValidator(setting_duration)]


def _on_off(value: object) -> object:
    """YAML reads a bare `off` as false (and `on` as true)."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    return value


class ProviderSettings(BaseModel):
    """Tunes a built-in provider (limit, cooldown), or defines a new one (argv, parser).

    ``argv`` items are text with ``{{ prompt }}``, ``{{ model }}``, ``{{ workspace }}``,
    ``{{ session_id }}``, ``{{ max_turns }}``, ``{{ permission_mode }}``, ``{{ task.id }}``
    and ``{{ stage }}``; an item that is only a template and comes out empty is left out,
    and a list item (``[--model, "{{ model }}"]``) is kept whole or left out whole.
    """

    model_config = ConfigDict(extra="forbid")
    limit: int | None = Field(default=None, ge=1, description="most daughters of this provider at once")
    cooldown: Duration = Field(default=DEFAULT_COOLDOWN, description="rest after the agent reported rate limiting")
    argv: list[str | list[str]] | None = Field(default=None, description="command of a provider defined here")
    parser: Literal[PARSER_KINDS] = "plain"  # type: ignore[valid-type]  # the registry's kinds
    model: str | None = Field(default=None, description="the model to price usage with when a stage names none")
    env: dict[str, str] = Field(default_factory=dict)
    check_login: bool = Field(default=True, description="false: never hold the agent back as logged out "
                                                          "(its credentials are where tacx cannot look)")

    @field_validator("argv")
    @classmethod
    def _argv(cls, argv: list[str | list[str]] | None) -> list[str | list[str]] | None:
        if argv is not None:
            if not argv or not isinstance(argv[0], str) or not argv[0].strip() or "{{" in argv[0]:
                raise ValueError("argv starts with the program to run (a plain name or path, no template)")
            check_custom_argv(argv)
            if not any("prompt" in template_names(a if isinstance(a, str) else " ".join(a)) for a in argv):
                raise ValueError("argv must pass the prompt somewhere: add an item with {{ prompt }}")
        return argv


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_workers: int = Field(default=4, ge=1, description="most daughters at once, all providers")
    kill_grace: Duration = Field(default=5.0, description="seconds between SIGTERM and SIGKILL")
    sample_interval: Duration = Field(default=1.0, description="seconds between psutil samples")
    cgroups: Annotated[Literal["auto", "off"], BeforeValidator(_on_off)] = Field(
        default="auto", description="a cgroup per daughter where cgroup v2 is writable (auto), or never (off)"
    )
    unreachable_after: Duration = Field(
        default=60.0, description="end an agent that reports only connection failures, no answer, this long (0: never)"
    )
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    sources: list[GitHubSourceSettings] = Field(default_factory=list, description="where tasks come from: GitHub issues")
    budget: Budget | None = Field(default=None, description="for tasks whose workflow sets none")
    prices: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="USD per million tokens by model prefix: input, output, cache_read, cache_write"
    )
    notify: list[NotifyRule] = Field(default_factory=list, description="who hears of task ends, budget stops, "
                                     "agents waiting and source errors: a webhook, a command or the terminal")
    executors: ExecutorSettings = Field(default_factory=ExecutorSettings,
                                        description="where stages with an `executor:` other than local run (ray)")

    @model_validator(mode="after")
    def _positive_intervals(self) -> Settings:
        if self.sample_interval <= 0:
            raise ValueError("sample_interval must be greater than 0")
        names = [s.source_name for s in self.sources]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"two sources are named {', '.join(twice)}: give one a name: of its own")
        return self

    def provider_limit(self, name: str) -> int | None:
        settings = self.providers.get(name)
        return settings.limit if settings else None

    def checks_login(self, name: str) -> bool:
        settings = self.providers.get(name)
        return settings.check_login if settings else True

    def cooldown(self, name: str) -> float:
        settings = self.providers.get(name)
        return settings.cooldown if settings else DEFAULT_COOLDOWN


class SettingsError(Exception):
    pass


def load_settings(project_root: Path) -> Settings:
    path = project_root / "tacx.yaml"
    if not path.exists() and not path.is_symlink():
        return Settings()
    try:
        text = read_text_file(path, SETTINGS_FILE_LIMIT, "tacx.yaml")
    except FileRefused as exc:
        raise SettingsError(str(exc)) from None
    try:
        data = load_yaml(text) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SettingsError(f"{where}: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:  # a control character, found before any parsing
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SettingsError(f"{path}:{line}:{col}: invalid YAML: {exc.reason}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}:1:1: expected a mapping of settings")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_located(text, path, exc)) from None


def _settings_keys(parent: tuple[str | int, ...]) -> list[str]:
    """The keys the tacx.yaml mapping at ``parent`` may hold, for "did you mean"."""
    match parent:
        case ():
            model: type[BaseModel] = Settings
        case ("providers", str()):
            model = ProviderSettings
        case ("sources", int()):
            model = GitHubSourceSettings
        case ("budget",):
            model = Budget
        case ("notify", int()):
            model = NotifyRule
        case _:
            return []
    return list(model.model_fields)


def _located(text: str, path: Path, exc: ValidationError) -> str:
    """Each mistake as ``tacx.yaml:LINE:COL: loc: message``, as workflows are checked."""
    from tacx.workflow.document import Document  # the YAML reader that remembers positions

    doc = Document(text, str(path))
    doc.load()
    doc.issues.clear()  # the text parsed above: only the validation's findings are wanted
    place_on_keys(doc)
    doc.keys_allowed = _settings_keys
    doc.add_validation_errors(exc)
    return "\n".join(str(issue) for issue in doc.issues) or str(exc)
