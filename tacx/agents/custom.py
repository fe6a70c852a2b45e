"""Agents defined in tacx.yaml: an argv template filled from the stage, and the parser (one
of the built-in agents') that reads its output."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tacx.agents.agent import AgentProvider, wrapped
from tacx.agents.base import Launch, StageContext
from tacx.agents.stream import StreamParser
from tacx.workflow.model import StageSpec
from tacx.workflow.templates import render, template_names

_ONLY_TEMPLATE = re.compile(r"\s*\{\{\s*[A-Za-z_][A-Za-z0-9_.-]*\s*\}\}\s*")
CUSTOM_TEMPLATE_NAMES = ("prompt", "model", "workspace", "session_id", "max_turns", "permission_mode", "task.id", "stage")


class CustomProvider(AgentProvider):
    """An agent defined in tacx.yaml: an argv template and the parser that reads it
    (``parser_class``: the class the registry knows the ``parser`` kind by; None for plain)."""

    def __init__(self, name: str, argv: list[str | list[str]], parser: str, parser_class: type[StreamParser] | None,
                 model: str | None, env: dict[str, str]) -> None:
        super().__init__(name)
        self.template = argv
        self.executable = argv[0] if isinstance(argv[0], str) else ""
        self.parser_kind = parser
        self.parser_class = parser_class
        self.default_model = model
        self.extra_env = dict(env)
        self.resumable = any(
            "session_id" in template_names(part) for item in argv for part in ([item] if isinstance(item, str) else item)
        )

    def _path(self) -> str | None:
        if "/" in self.executable:
            path = Path(self.executable).expanduser()
            return str(path) if path.is_file() else None
        return shutil.which(self.executable)

    def launch(self, spec: StageSpec, ctx: StageContext) -> Launch:
        values = {
            "prompt": self.prompt(ctx),
            "model": spec.model or self.default_model or "",
            "workspace": str(ctx.workspace),
            "session_id": ctx.resume_session or "",
            "max_turns": str(spec.max_turns or ""),
            "permission_mode": spec.permission_mode or "",
            "task.id": str(ctx.task_id),
            "stage": ctx.stage,
        }
        argv: list[str] = [self._path() or self.executable]
        for item in self.template[1:]:
            group = [item] if isinstance(item, str) else list(item)
            rendered = [render(part, values) for part in group]
            if isinstance(item, str) and _ONLY_TEMPLATE.fullmatch(item) and not rendered[0]:
                continue  # an optional value not given: leave the item out
            if isinstance(item, list) and any(
                template_names(part) and not value for part, value in zip(group, rendered)
            ):
                continue
            argv += rendered
        argv += list(spec.extra_args)
        return Launch(argv=wrapped(argv), env=dict(self.extra_env), command=argv)


def check_custom_argv(argv: list[str | list[str]]) -> None:
    """Raise ValueError for a template name a custom provider cannot fill."""
    for item in argv:
        for part in [item] if isinstance(item, str) else item:
            for name in template_names(part):
                if name not in CUSTOM_TEMPLATE_NAMES:
                    raise ValueError(f"unknown name {name!r} in argv; known: {', '.join(CUSTOM_TEMPLATE_NAMES)}")
