"""The `mock` provider: runs the shipped simulator (mock_agent.py, beside this module), which
speaks Claude's stream-json and needs nothing installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tacx.agents.base import StageContext
from tacx.agents.claude import ClaudeProvider
from tacx.agents.login import Login, Where
from tacx.workflow.model import StageSpec


class MockProvider(ClaudeProvider):
    """The shipped simulator: speaks Claude's stream-json, needs nothing installed."""

    name = "mock"
    executable = sys.executable
    default_model = "mock-sonnet"

    def _path(self) -> str | None:
        return sys.executable

    def version_argv(self) -> list[str] | None:
        return None

    def login(self, where: Where) -> Login:
        return Login("yes", "built in: needs no login")

    def arguments(self, spec: StageSpec, ctx: StageContext) -> list[str]:
        simulator = str(Path(__file__).resolve().parent / "mock_agent.py")
        writes = [arg for path in spec.expects for arg in ("--write", path)]  # what the stage expects
        # TACX_MOCK_PACE in tacx's environment (daughters never see TACX_* variables): the
        # simulator's thinking at that factor, the same stream (the test suite runs demos at 0.1).
        return [simulator, *self.claude_options(spec, ctx), *writes, *_pace(), *spec.extra_args]


def _pace() -> list[str]:
    """--pace from TACX_MOCK_PACE when it is a number from 0 to 100; else none (full speed)."""
    try:
        pace = float(os.environ.get("TACX_MOCK_PACE", ""))
    except ValueError:
        return []
    return ["--pace", repr(pace)] if 0 <= pace <= 100 else []
