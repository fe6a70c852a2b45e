"""`tacx show --json` agrees with each agent's own final figures, on every fixture that has
them (issue 10, "Done").

The expected figures are read here from each stream's own final record, by code that shares
nothing with tacx's parsers: claude's `result` (`modelUsage` summed over every model when
present, else `usage`; `total_cost_usd`), codex's last `turn.completed` (running totals;
`input_tokens` includes the cached ones), gemini's `result.stats` (`total_tokens` counts the
thoughts too). One task runs every scenario as a stage of its own, side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project

FAKES = Path(__file__).parent / "fakes"

# (fake, scenario): scenarios whose stream ends with the agent's own totals.
FIXTURES = [
    ("claude", "sample"), ("claude", "repeated"), ("claude", "api_error"), ("claude", "rate_limited"),
    ("claude", "not_logged_in"), ("codex", "sample"), ("codex", "two_turns"), ("gemini", "sample"),
    ("gemini", "error"),
]
ARGS = {"claude": ["-p", "x", "--output-format", "stream-json", "--verbose"],
        "codex": ["exec", "--json", "x"], "gemini": ["-p", "x", "-o", "stream-json"]}


def stream(fake: str, scenario: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(FAKES / fake), *ARGS[fake]], capture_output=True, text=True, errors="replace", timeout=30,
                         env={**os.environ, "FAKE_SCENARIO": scenario}, stdin=subprocess.DEVNULL).stdout
    objects = []
    for line in out.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue  # the fakes' noise lines
        if isinstance(value, dict):
            objects.append(value)
    return objects


def own_figures(fake: str, objects: list[dict[str, Any]]) -> tuple[int, int, int, int, float | None]:
    """(input without cache, output, cache read, cache write, USD or None) as the agent said."""
    if fake == "claude":
        result = [o for o in objects if o.get("type") == "result"][-1]
        models = result.get("modelUsage") or {}
        if models:
            total = [sum(m.get(k, 0) for m in models.values()) for k in
                     ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")]
        else:
            u = result["usage"]
            total = [u.get("input_tokens", 0), u.get("output_tokens", 0), u.get("cache_read_input_tokens", 0),
                     u.get("cache_creation_input_tokens", 0)]
        return (*total, result.get("total_cost_usd", 0.0))  # type: ignore[return-value]
    if fake == "codex":
        u = [o for o in objects if o.get("type") == "turn.completed"][-1]["usage"]
        return u["input_tokens"] - u["cached_input_tokens"], u["output_tokens"], u["cached_input_tokens"], 0, None
    stats = [o for o in objects if o.get("type") == "result"][-1]["stats"]
    cached = stats.get("cached", 0)
    output = stats["total_tokens"] - stats["input_tokens"]  # the answer and the thoughts
    return stats["input_tokens"] - cached, output, cached, 0, None


def test_show_json_agrees_with_every_agents_own_final_figures(project: Project) -> None:
    project.env["PATH"] = f"{FAKES}{os.pathsep}{project.env['PATH']}"
    stages = "".join(
        f"  - name: {fake}-{scenario.replace('_', '-')}\n    provider: {fake}\n    prompt: go\n    needs: []\n"
        f"    env: {{FAKE_SCENARIO: {scenario}}}\n"
        for fake, scenario in FIXTURES
    )
    (project.root / "all.yaml").write_text(f"name: all\nstages:\n{stages}")
    # No rest after the rate-limited scenarios: it would hold back the stages not started yet.
    (project.root / "tacx.yaml").write_text("providers:\n  claude: {cooldown: 0s}\n  gemini: {cooldown: 0s}\n")
    project.tacx("--max-workers", "12", "run", "all.yaml", "--no-ui", check=None, timeout=120)
    shown = project.show(project.ls()[0]["id"])
    by_name = {s["name"]: s for s in shown["stages"]}
    for fake, scenario in FIXTURES:
        stage = by_name[f"{fake}-{scenario.replace('_', '-')}"]
        inp, out, read, write, usd = own_figures(fake, stream(fake, scenario))
        assert stage["tokens"] == {"input": inp, "output": out, "cache_read": read, "cache_write": write}, (fake, scenario)
        if usd is not None:
            assert stage["cost_usd"] == pytest.approx(usd, abs=1e-9), (fake, scenario)
    # ... and the task's totals are the sum of its stages'.
    for field in ("input", "output", "cache_read", "cache_write"):
        assert shown["tokens"][field] == sum(s["tokens"][field] for s in shown["stages"])
