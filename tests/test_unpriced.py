"""A model without a price is shown as "unpriced", never as $0: `tacx show` (text and
--json), `tacx ls --json`, the headless reporter, the dashboard's data and panels, and
`tacx providers`. A task mixing priced and unpriced usage shows its known cost plus a note.

The run uses the fake CLIs of tests/fakes (their streams are the reference streams of
shared/reference/agent-cli-formats.md): gemini's sample, priced as gemini-2.5-pro, and
codex's sample asked for a model tacx has no price for (o9-preview: codex names no model,
so it is priced by the model the stage asked for, and this one has none).
"""

from __future__ import annotations

import json

import pytest

from tacx.agents.prices import cost_text
from tacx.cli.reporter import _spent
from tacx.ui.data import DashboardData
from tacx.ui.panels import fmt_cost
from tests.conftest import Project
from tests.test_agents import agents  # noqa: F401  (the fixture: fake agent CLIs on PATH)

# gemini sample: input 3676, cached 21263, output 25113 - 24939 = 174 (thinking included);
# gemini-2.5-pro: (3676*1.25 + 21263*0.125 + 174*10) / 1e6 = 0.008992875, shown $0.0090.
GEMINI_COST = 0.008992875
# codex sample: input 24763 - 24448 = 315 uncached, 24448 cached, 122 out: 24885 tokens, no price.
CODEX_TOKENS = 315 + 24448 + 122


def test_cost_text() -> None:
    assert cost_text(0.008992875) == "$0.0090"
    assert cost_text(0.0, ["o9-preview"]) == "unpriced (o9-preview)"
    assert cost_text(0.008992875, ["o9-preview", "o9-preview"]) == "$0.0090 + unpriced (o9-preview)"
    assert cost_text(0.0, True) == "unpriced"
    assert fmt_cost(0.0, ("o9-preview",)) == "unpriced" and fmt_cost(0.009, ("x",)) == "$0.009+"
    assert fmt_cost(0.009) == "$0.009"
    assert _spent((CODEX_TOKENS, 0.0), True) == " · 24.9k tokens · unpriced"
    assert _spent((CODEX_TOKENS, GEMINI_COST), True) == " · 24.9k tokens · $0.0090 + unpriced"


@pytest.fixture
def mixed(agents: Project) -> Project:  # noqa: F811
    agents.workflow(
        "mixed",
        """
        name: mixed
        inputs:
          title: {required: true}
        stages:
          - name: priced
            provider: gemini
            prompt: "Fix it: {{ inputs.title }}"
          - name: local
            provider: codex
            model: o9-preview
            needs: [priced]
            prompt: "Check it: {{ inputs.title }}"
        """,
    )
    agents.run_output = agents.tacx("run", "mixed.yaml", "-i", "title=x", "--no-ui").stdout  # type: ignore[attr-defined]
    return agents


def test_unpriced_everywhere(mixed: Project) -> None:
    task = mixed.show(1)
    assert task["status"] == "succeeded"
    assert task["cost_usd"] == pytest.approx(GEMINI_COST)  # the store keeps 0 for the unpriced part
    assert task["unpriced"] == ["o9-preview"]
    stages = {s["name"]: s for s in task["stages"]}
    assert stages["priced"]["unpriced"] == [] and stages["priced"]["cost_usd"] == pytest.approx(GEMINI_COST)
    assert stages["local"]["unpriced"] == ["o9-preview"] and stages["local"]["cost_usd"] == 0
    assert sum(stages["local"]["tokens"].values()) == CODEX_TOKENS
    (listed,) = mixed.ls()
    assert listed["unpriced"] == ["o9-preview"]

    text = mixed.tacx("show", "1").stdout
    assert "cost $0.0090 + unpriced (o9-preview)" in text
    local = next(line for line in text.splitlines() if line.strip().startswith("local"))
    assert local.endswith("unpriced (o9-preview)") and "$0.0000" not in text

    # the headless reporter: the stage is unpriced, the task its known cost plus the note
    out = mixed.run_output  # type: ignore[attr-defined]
    assert "· local: succeeded" in out and "24.9k tokens · unpriced" in out
    assert "task 1 succeeded" in out and "tokens · $0.0090 + unpriced" in out
    assert out.splitlines()[-1].startswith("summary: 1 task: 1 succeeded · tokens in ")  # the run's summary
    assert " · $0.0090 + unpriced (o9-preview) · " in out.splitlines()[-1]

    # `tacx providers`: codex's cost is unpriced, and which model says so
    providers = {p["name"]: p for p in json.loads(mixed.tacx("providers", "--json").stdout)}
    assert providers["codex"]["usage"]["unpriced"] == ["o9-preview"]
    assert providers["gemini"]["usage"]["unpriced"] == []
    report = mixed.tacx("providers").stdout
    codex = next(line for line in report.splitlines() if line.startswith("codex"))
    assert codex.rstrip().endswith("unpriced")
    assert "unpriced (no price known, not counted in the cost): o9-preview" in report

    # the dashboard's data
    data = DashboardData(mixed.home / "tacx.db")
    try:
        snap = data.snapshot(selected=1)
    finally:
        data.close()
    assert snap.tasks[0].unpriced == ("o9-preview",) and snap.overview.unpriced_today == ("o9-preview",)
    assert snap.detail is not None and snap.detail.task.unpriced == ("o9-preview",)
    shown = {s.name: s.unpriced for s in snap.detail.stages}
    assert shown == {"priced": (), "local": ("o9-preview",)}
    assert fmt_cost(snap.tasks[0].cost_usd, snap.tasks[0].unpriced) == "$0.009+"
