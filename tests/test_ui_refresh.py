"""The dashboard's refresh path under load: what keeps a key press quick while daughters
flood their logs (speed itself is measured by bench/ui.py, never asserted here)."""

from __future__ import annotations

import sys
from typing import Any

from textual.app import App, ComposeResult

from tacx.home import Home
from tacx.settings import Settings
from tacx.ui.app import GIL_SLICE_SECONDS, make_app
from tacx.ui.panels import KeyedTable
from tests.conftest import Project


async def test_the_dashboard_hands_the_gil_over_finely_while_it_runs(project: Project) -> None:
    before = sys.getswitchinterval()
    app = make_app(Home(project.home), Settings(), refresh_seconds=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert sys.getswitchinterval() == GIL_SLICE_SECONDS < before
        app.exit(0)
    assert sys.getswitchinterval() == before


class _OneTable(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable([("id", 4), ("time", 6)], id="table")


def _rows(times: list[str]) -> list[tuple[str, tuple[str, str]]]:
    return [(str(i), (str(i), t)) for i, t in enumerate(times)]


async def test_a_changed_cell_repaints_its_row_and_renders_no_other_row_again() -> None:
    app = _OneTable()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.apply(_rows(["1s", "2s", "3s", "4s"]))
        await pilot.pause()
        rendered: list[int] = []
        compute = table._compute_row_renderables

        def counted(row_index: int) -> Any:
            rendered.append(row_index)
            return compute(row_index)

        table._compute_row_renderables = counted  # type: ignore[method-assign]
        table.apply(_rows(["1s", "2s", "9s", "4s"]))
        await pilot.pause()
        assert set(rendered) == {2}
        assert table.get_row("2") == ["2", "9s"]
        assert "9s" in table.render_line(3).text  # the header, then rows 0, 1, 2
        assert table.selected_key == "0"
