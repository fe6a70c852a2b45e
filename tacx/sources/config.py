"""What tacx.yaml says about sources of tasks: for now GitHub repositories whose labelled
issues become tasks. Checked when tacx.yaml is read, like every other setting, so a typo is
`tacx.yaml:LINE:COL: sources[0].label: ...` before anything runs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from tacx.workflow.model import parse_duration
from tacx.workflow.templates import template_names

REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
ISSUE_NAMES = ("issue.title", "issue.body", "issue.number", "issue.url", "issue.author", "issue.labels")
# An unchanged answer (304) costs no rate limit, but every request counts against GitHub's
# secondary limits: a poll makes two, so at most one a second.
MIN_POLL = 2.0
LABEL = re.compile(r"^[^\x00-\x1f\x7f,]{1,50}$")


def _duration(value: object) -> float:
    return parse_duration(value)  # type: ignore[arg-type]


class GitHubSourceSettings(BaseModel):
    """Issues of one repository carrying ``label`` become tasks of ``workflow``."""

    model_config = ConfigDict(extra="forbid")
    github: str = Field(description="owner/repo")
    label: str = Field(default="tacx", description="the label that asks for a task (only people who can label can)")
    workflow: str = Field(default="issue-to-pr", description="the workflow each issue runs")
    inputs: dict[str, str] = Field(
        default_factory=lambda: {"title": "{{ issue.title }}", "body": "{{ issue.body }}"},
        description="the workflow's inputs, from issue.title, .body, .number, .url, .author, .labels",
    )
    poll: Annotated[float, BeforeValidator(_duration)] = Field(default=30.0, description="seconds between polls")
    priority: int = Field(default=0, description="the tasks' priority")
    draft: bool = Field(default=True, description="open pull requests as drafts")
    base: str | None = Field(default=None, description="the pull requests' base branch (default: the repository's)")
    name: str | None = Field(default=None, description="the source's name (default github:owner/repo)")

    @field_validator("github")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not REPO.match(value):
            raise ValueError(f"expected owner/repo, like octo/widgets, got {value!r}")
        return value

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not LABEL.match(value) or value != value.strip():
            raise ValueError("a label is 1 to 50 characters, without commas, control characters or edge spaces")
        if value.startswith("tacx:"):
            raise ValueError("labels starting with tacx: are tacx's own (tacx:working, tacx:done, tacx:failed)")
        return value

    @field_validator("poll")
    @classmethod
    def _poll(cls, value: float) -> float:
        if value < MIN_POLL:
            raise ValueError(f"poll at most every {MIN_POLL:g}s (each poll is two requests to GitHub)")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: dict[str, str]) -> dict[str, str]:
        for key, template in value.items():
            for name in template_names(template):
                if name not in ISSUE_NAMES:
                    raise ValueError(f"inputs.{key}: unknown name {name!r}; known: {', '.join(ISSUE_NAMES)}")
        return value

    @property
    def source_name(self) -> str:
        return self.name or f"github:{self.github}"
