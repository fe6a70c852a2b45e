"""The dashboard's refresh path under load: what keeps a key press quick while daughters
flood their logs (speed itself is measured by bench/ui.py, never asserted here)."""

from __future__ import annotations

import gc
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.renderables.styled import Styled

from tacx.home import Home
from tacx.settings import Settings
from tacx.store.database import connect, transaction
from tacx.ui.app import make_app
from tacx.ui.data import TodayUsage, midnight
from tacx.ui.panels import KeyedTable, QuietStatic, one_line_cell
from tacx.ui.tuning import GIL_SLICE_SECONDS, YOUNG_COLLECTION_ALLOCATIONS
from tests.conftest import Project


async def test_the_dashboard_tunes_the_gil_and_the_collector_while_it_runs_and_puts_them_back(
    project: Project,
) -> None:
    slice_before, thresholds_before = sys.getswitchinterval(), gc.get_threshold()
    app = make_app(Home(project.home), Settings(), refresh_seconds=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(100):  # the collector is tuned once the first snapshot is shown
            await pilot.pause(0.05)
            if gc.get_threshold() != thresholds_before:
                break
        assert sys.getswitchinterval() == GIL_SLICE_SECONDS < slice_before
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_ALLOCATIONS > thresholds_before[0]
        app.exit(0)
    assert sys.getswitchinterval() == slice_before and gc.get_threshold() == thresholds_before


class _OneTable(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable([("id", 4), ("time", 30)], id="table")


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
        assert [cell.plain for cell in table.get_row("2")] == ["2", "9s"]
        assert "9s" in table.render_line(3).text  # the header, then rows 0, 1, 2
        assert table.selected_key == "0"


def _add_usage(conn: sqlite3.Connection, ts: float, stage_id: int, model: str | None, tokens: int, cost: float) -> None:
    with transaction(conn):
        conn.execute("INSERT INTO usage (task_id, stage_id, attempt, ts, message_id, model, input_tokens, cost_usd)"
                     " VALUES (1, ?, 1, ?, ?, ?, ?, ?)", (stage_id, ts, f"m{ts}-{stage_id}", model, tokens, cost))


def test_todays_usage_is_summed_from_the_rows_added_since_the_last_snapshot(tmp_path: Path) -> None:
    conn = connect(tmp_path / "tacx.db")
    day = midnight(time.time())
    now = day + 3600
    _add_usage(conn, day - 60, 1, "claude-sonnet-4-5", 1000, 0.5)  # yesterday: not today's
    _add_usage(conn, day + 60, 1, "claude-sonnet-4-5", 100, 0.01)
    today = TodayUsage()
    today.update(conn, now)
    assert (today.tokens, round(today.cost, 6), today.unpriced()) == (100, 0.01, ())

    _add_usage(conn, day + 120, 2, "o9-preview", 50, 0.0)  # no price known
    _add_usage(conn, day + 130, 3, None, 7, 0.0)
    today.update(conn, now)
    assert (today.tokens, round(today.cost, 6)) == (157, 0.01)
    assert today.unpriced() == ("(model unknown)", "o9-preview")
    read = conn.execute("SELECT COUNT(*) FROM usage WHERE id > ?", (today.last_id,)).fetchone()[0]
    assert read == 0  # the next update reads nothing old again

    tomorrow = day + 86400 + 60
    _add_usage(conn, tomorrow - 30, 1, "claude-sonnet-4-5", 5, 0.002)
    today.update(conn, tomorrow)  # a new day counts from its midnight
    assert (today.tokens, round(today.cost, 6), today.unpriced()) == (5, 0.002, ())
    conn.close()


class _OneStatic(App[None]):
    def compose(self) -> ComposeResult:
        yield QuietStatic(id="static")


async def test_a_text_of_the_same_shape_is_shown_without_a_layout_and_a_longer_one_with_one() -> None:
    app = _OneStatic()
    async with app.run_test(size=(40, 6)) as pilot:
        static = app.query_one(QuietStatic)
        static.show_text(Text("queued 1  running 8"))
        await pilot.pause()
        layouts: list[bool] = []
        relayout = app.screen._refresh_layout

        def counted(*args: Any, **kwargs: Any) -> None:
            layouts.append(True)
            relayout(*args, **kwargs)

        app.screen._refresh_layout = counted  # type: ignore[method-assign]
        static.show_text(Text("queued 2  running 7"))
        await pilot.pause()
        assert layouts == [] and "queued 2  running 7" in str(static.render())
        static.show_text(Text("queued 2  running 7\nand a second line"))
        await pilot.pause()
        assert layouts and static.size.height == 2


def _styled_chars(segments: list[Segment]) -> list[tuple[str, Style]]:
    return [(ch, segment.style or Style()) for segment in segments for ch in segment.text]


@pytest.mark.parametrize("cell", [
    Text("hello"), Text("x", style="bold cyan"), Text(""), Text.from_markup("[red]abc[/] d"), Text("wide 日本語"),
    Text("●", style="green"), Text("failed", style="bold red"), Text.from_markup("[b]bo[/b]ld", style="italic"),
    Text("a title much longer than its column"), Text("tab\there"), Text("right", justify="right"),
])
def test_a_fitting_text_cell_is_drawn_exactly_as_datatable_draws_it_through_rich(cell: Text) -> None:
    console = Console(width=100)
    cell.no_wrap, cell.end = True, ""
    pre = Style(color="white", bgcolor="blue") + Style.from_meta({"row": 3, "column": 1})
    for width in (1, 3, 8, 12, 40):
        for pre_style, post_style in ((pre, Style(bold=True)), (Style(), Style()), (pre, Style(reverse=True))):
            options = console.options.update_dimensions(width, 1).update(no_wrap=True)
            (rich_line,) = console.render_lines(Styled(Padding(cell, (0, 1)), pre_style=pre_style,
                                                       post_style=post_style), options)
            fast = one_line_cell(cell, width, 1, pre_style, post_style, console)
            fits = cell_len(cell.plain) + 2 <= width and "\t" not in cell.plain and cell.justify != "right"
            assert (fast is not None) == fits
            if fast is not None:
                assert _styled_chars(fast) == _styled_chars(rich_line)


async def test_cells_are_shown_as_written_never_read_as_markup() -> None:
    app = _OneTable()
    async with app.run_test(size=(80, 8)) as pilot:
        table = app.query_one(KeyedTable)
        table.apply([("1", ("1", "[bug] crash"))])
        await pilot.pause()
        table.apply([("1", ("1", "fix [/] and [bold]x[/bold]"))])
        await pilot.pause()
        assert "fix [/] and [bold]x[/bold]" in table.render_line(1).text
        table.apply([("2", ("2", "[bug] crash"))])  # a new row
        await pilot.pause()
        assert "[bug] crash" in table.render_line(1).text


def test_the_process_tuning_is_put_back_when_the_app_goes() -> None:
    """The GIL slice, the collector's thresholds and what it froze are process-wide: an app
    that unmounts leaves them as it found them (tests and embedders run several apps)."""
    import gc
    import sys

    from tacx.ui.tuning import ProcessTuning

    before = (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count())
    tuning = ProcessTuning()
    tuning.apply()
    tuning.settle()
    assert sys.getswitchinterval() != before[0] and gc.get_freeze_count() > before[2]
    tuning.restore()
    assert (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()) == before
