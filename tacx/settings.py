"""Optional project settings from `tacx.yaml` at the project root."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tacx.workflow import parse_duration


class ProviderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int | None = Field(default=None, ge=1, description="most daughters of this provider at once")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_workers: int = Field(default=4, ge=1, description="most daughters at once, all providers")
    kill_grace: float = Field(default=5.0, description="seconds between SIGTERM and SIGKILL")
    sample_interval: float = Field(default=1.0, description="seconds between psutil samples")
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)

    @field_validator("kill_grace", "sample_interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return parse_duration(value)
        raise ValueError("expected a duration such as 5s")

    def provider_limit(self, name: str) -> int | None:
        settings = self.providers.get(name)
        return settings.limit if settings else None


class SettingsError(Exception):
    pass


def load_settings(project_root: Path) -> Settings:
    path = project_root / "tacx.yaml"
    if not path.exists():
        return Settings()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SettingsError(f"{where}: {exc.problem}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}:1:1: expected a mapping of settings")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("\n".join(lines)) from None
