"""The dashboard's panels: each takes plain data (tacx.ui.data, the supervisor's daughters)
and updates itself by keyed diff, so a refresh costs what changed, not what is shown."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Span, Text
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Sparkline, Static
from textual.widgets.data_table import ColumnKey, RowKey

from tacx.states import STATUS_STYLE
from tacx.text import printable
from tacx.ui.data import Overview, StageRow, TaskDetail, TaskRow


def fmt_tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def fmt_cost(usd: float, unpriced: Any = ()) -> str:
    """A cost; usage without a price is "unpriced" (never $0), a known part then "+"."""
    known = f"${usd:.2f}" if usd >= 10 else f"${usd:.3f}" if usd else "-"
    if not unpriced:
        return known
    return "unpriced" if not usd else known + "+"


def fmt_duration(seconds: float | None, running: bool = False) -> str:
    """A duration; whole seconds while it still runs (a cell that changes each refresh
    costs a redraw of its table)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{int(seconds)}s" if running else f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.1f}G" if n >= 2**30 else f"{n / 2**20:.0f}M" if n >= 2**20 else f"{n / 2**10:.0f}K"


def status_text(status: str) -> Text:
    return Text(status.replace("_", " "), style=STATUS_STYLE.get(status, ""))


def elapsed(started: float | None, ended: float | None, now: float) -> float | None:
    if started is None:
        return None
    return (ended or now) - started


def one_line(text: str | None, width: int = 80) -> str:
    if not text:
        return ""
    line = printable(text.strip().splitlines()[0] if text.strip() else "")
    return line if len(line) <= width else line[: width - 1] + "…"


def set_border(widget: Any, which: str, text: str) -> None:
    """Set a border title only when it changes (each set repaints the whole widget), as
    plain text (a branch name or an error is never read as markup)."""
    key = f"_tacx_{which}"
    if getattr(widget, key, None) != text:
        setattr(widget, key, text)
        setattr(widget, which, Text(text))


def task_note(task: Any) -> str:
    """Why the selected task waits, or how it failed, under its stages."""
    if task.status == "queued" and task.wait_reason:
        return f"waiting: {task.wait_reason}"[:160]
    if task.error:
        return task.error.strip().splitlines()[0][:160]
    return f"from {task.source_url}" if getattr(task, "source_url", None) else ""


class KeyedTable(DataTable):
    """A DataTable updated from (key, cells) rows: cells that changed are updated in
    place; the rows are rebuilt only when the keys or their order change. The cursor
    stays on the same key. Columns have fixed widths: no update re-measures a column.

    Only a person's moves post RowHighlighted: the table's own (a rebuild, ``select_key``)
    are silent, so a handler never mistakes them for a choice. A panel too narrow for all
    its columns leaves out those named in DROP, in that order, until the rest fit whole."""

    FLEX: str = ""  # the column that takes the width left over (the widths above are its minimum)
    DROP: tuple[str, ...] = ()  # columns left out, first to last, while the panel is too narrow

    def __init__(self, columns: Sequence[tuple[str, int]], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._widths = dict(columns)
        self._all = [name for name, _ in columns]
        self._columns = list(self._all)  # the columns shown
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._wanted: str | None = None

    def on_mount(self) -> None:
        for column in self._columns:
            self.add_column(column, key=column, width=self._widths[column])

    def _needed(self, columns: Sequence[str]) -> int:
        return sum(self._widths[c] for c in columns) + 2 * self.cell_padding * len(columns)

    def on_resize(self) -> None:
        """Choose the columns that fit, then the flexible one fills the panel's width (set
        once per resize, not per update)."""
        room = self.scrollable_content_region.width - 1
        shown = list(self._all)
        for name in self.DROP:
            if self._needed(shown) <= room:
                break
            shown.remove(name)
        if shown != self._columns:
            self._columns = shown
            self._rebuild(self.selected_key, columns=True)
        if not self.FLEX or self.FLEX not in self._columns:
            return
        width = max(self._widths[self.FLEX], room - self._needed(self._columns) + self._widths[self.FLEX])
        column = self.columns.get(self.FLEX)  # type: ignore[call-overload]
        if column is not None and column.width != width:
            column.width = width
            self._update_dimensions([])  # DataTable recomputes its virtual width from the columns
            self._clear_caches()
            self.refresh()

    @property
    def shown_columns(self) -> list[str]:
        return list(self._columns)

    def _shown(self, cells: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(self._columns) == len(self._all):
            return cells
        return tuple(cell for name, cell in zip(self._all, cells) if name in self._columns)

    @property
    def selected_key(self) -> str | None:
        if not self._keys or self.cursor_row is None or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._keys[self.cursor_row]

    @property
    def wanting(self) -> bool:
        """``select_key`` asked for a row not there yet."""
        return self._wanted is not None

    def select_key(self, key: str | None) -> None:
        """Put the cursor on ``key``'s row, now or when an update brings that row (unless a
        person moves the cursor first)."""
        self._wanted = key
        self._move_to_wanted()

    def _move_to_wanted(self) -> None:
        if self._wanted is None or self._wanted not in self._keys:
            return
        row = self._keys.index(self._wanted)
        self._wanted = None
        if row != self.cursor_row:
            with self.prevent(DataTable.RowHighlighted):
                self.move_cursor(row=row, animate=False)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._wanted = None  # a person moved the cursor: their choice wins over a pending one

    def _rebuild(self, chosen: str | None, columns: bool = False) -> None:
        """Rows (and columns) anew, the cursor kept on ``chosen``'s row where it still is."""
        with self.prevent(DataTable.RowHighlighted):
            self.clear(columns=columns)
            if columns:
                for column in self._columns:
                    self.add_column(column, key=column, width=self._widths[column])
            for key in self._keys:
                self.add_row(*map(_literal, self._shown(self._cells[key])), key=key)
            if chosen in self._keys:
                self.move_cursor(row=self._keys.index(chosen), animate=False)

    def apply(self, rows: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        rows = list(rows)
        keys = [key for key, _ in rows]
        if keys != self._keys:
            chosen = self.selected_key
            self._keys = keys
            self._cells = dict(rows)
            self._rebuild(chosen)
            self._move_to_wanted()
            return
        changed: list[str] = []
        for key, cells in rows:
            old = self._cells.get(key)
            if old == cells:
                continue
            for column, (before, after) in enumerate(zip(old or (), cells)):
                if before != after and self._all[column] in self._columns:
                    self._data[RowKey(key)][ColumnKey(self._all[column])] = _literal(after)
            self._cells[key] = cells
            changed.append(key)
        if changed:
            self._repaint_rows(changed)
        self._move_to_wanted()

    def _repaint_rows(self, keys: list[str]) -> None:
        """Repaint only these rows. DataTable.update_cell counts an update, and every cached
        cell and row of the table carries that count: one changed cell (a running task's
        time, each second) made the next paint render every visible cell through Rich
        again. Here only these rows' cached renders are dropped and only their lines repainted."""
        rows = {RowKey(key) for key in keys}
        indexes = {self._row_locations.get(row) for row in rows}
        for cache, index in ((self._cell_render_cache, 0), (self._row_render_cache, 0)):
            for stale in [k for k in cache.keys() if k[index] in rows]:
                cache.discard(stale)
        for stale in [k for k in self._row_renderable_cache.keys() if k[1] in indexes]:
            self._row_renderable_cache.discard(stale)
        self._line_cache.clear()  # lines are cut from the rows' cached renders: cheap to make again
        for index in indexes:
            if index is not None:
                self.refresh_row(index)

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> Any:
        """A one-line text cell that fits its column is drawn here in a third of the time
        Rich's Padding and render_lines take (a filter, a page or a search renders every
        visible cell again: ~350 cells on a tall terminal); anything else goes to DataTable."""
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        row = self.rows.get(row_key) if row_key is not None else None
        if row is None or column_key is None or row.height != 1 or self.fixed_rows or self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        cache_key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor, self._update_count,
                     self._pseudo_class_state)
        lines = self._cell_render_cache.get(cache_key)
        if lines is not None:
            return lines
        cell = self._get_row_renderables(row_index).cells[column_index]
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        pre_style = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
        line = one_line_cell(cell, width, self.cell_padding, pre_style, post_style, self.app.console)
        if line is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        self._cell_render_cache[cache_key] = lines = [line]
        return lines


def _literal(cell: Any) -> Any:
    """A str cell as plain Text: DataTable reads a str as Rich markup, so a title such as
    "[bug] crash" lost its "[bug]" and one holding "[/]" stopped the app (MarkupError)."""
    return Text(cell, end="") if isinstance(cell, str) else cell


def one_line_cell(cell: Any, width: int, padding: int, pre_style: Style, post_style: Style,
                  console: Console) -> list[Segment] | None:
    """The segments DataTable draws for a Text cell (Styled(Padding(cell, (0, padding)))
    rendered on one line), or None when the cell does not simply fit: not Text, wider than
    its column, tabs or newlines, or justified other than left."""
    if not isinstance(cell, Text):
        return None
    plain = cell.plain
    room = width - 2 * padding - cell_len(plain)
    if room < 0 or cell.justify not in (None, "default", "left") or "\t" in plain or "\n" in plain:
        return None
    if cell.style:  # the base style under the spans, as Text.__rich_console__ applies it
        cell = cell.copy()
        cell.spans.insert(0, Span(0, len(plain), cell.style))
    segments = [Segment(" " * padding)] if padding else []
    segments += [segment for segment in cell.render(console) if segment.text]
    segments.append(Segment(" " * (room + padding)))
    return list(Segment.apply_style(segments, pre_style, post_style))


COMPACT_BELOW = 120  # columns: a narrower terminal gets the footer's compact style, so every key shows


class FittingFooter(Footer):
    """The footer, compact on a narrow terminal, where it leaves out the command palette's
    ctrl+p (the help says it) so that every key still shows at 100 columns."""

    def on_resize(self) -> None:
        narrow = self.app.size.width < COMPACT_BELOW
        self.compact = narrow
        if self.show_command_palette == narrow:
            self.show_command_palette = not narrow
            self.refresh(recompose=True)


class QuietStatic(Static):
    """A Static that does nothing when given the text it already shows, and asks for no
    layout when the new text has lines of the same lengths (its size cannot change)."""

    _shown: Text | None = None

    def show_text(self, text: Text) -> None:
        if text != self._shown:
            same_shape = self._shown is not None and _line_lengths(text) == _line_lengths(self._shown)
            self._shown = text
            # A layout reflows the whole screen and repaints what moved: the header's
            # counts and the token figures change with every snapshot while agents run.
            self.update(text, layout=not same_shape)


def _line_lengths(text: Text) -> list[int]:
    return [cell_len(line) for line in text.plain.split("\n")]


class HeaderBar(QuietStatic):
    """Counts, workers, today's tokens and cost, and whether the coordinator is paused;
    in fewer words when the terminal is too narrow for all of them."""

    _shown_with: tuple[Any, ...] | None = None

    def show(self, overview: Overview | None, busy: int, limit: int, engine: bool, filters: str) -> None:
        self._shown_with = (overview, busy, limit, engine, filters)
        text = self._text(overview, busy, limit, engine, filters, compact=False)
        if self.size.width and text.cell_len > self.size.width:
            text = self._text(overview, busy, limit, engine, filters, compact=True)
        self.show_text(text)

    def on_resize(self) -> None:
        if self._shown_with is not None:
            self.show(*self._shown_with)

    @staticmethod
    def _text(overview: Overview | None, busy: int, limit: int, engine: bool, filters: str, *, compact: bool) -> Text:
        gap = " " if compact else "  "
        text = Text()
        text.append(" tacx ", style="bold reverse")
        if overview is not None:
            c = overview.counts
            for status in ("queued", "running", "succeeded", "failed", "cancelled"):
                n = c.get(status, 0) + (c.get("timed_out", 0) if status == "failed" else 0)
                text.append(f"{gap}{status} ", style="dim")
                text.append(str(n), style=STATUS_STYLE.get(status, ""))
            if engine:
                text.append(f"{gap}│ workers {busy}/{limit}")
            else:
                text.append(f"{gap}│ viewer" if compact else "  │ viewer (another coordinator runs)")
            words = "" if compact else " tokens"
            text.append(f"{gap}│ today {fmt_tokens(overview.tokens_today)}{words} {fmt_cost(overview.cost_today)}")
            if overview.unpriced_today:
                text.append(" + unpriced", style="yellow")
            if overview.paused:
                text.append("  PAUSED ", style="bold reverse yellow")
            alerts = overview.provider_alerts + overview.source_alerts
            if alerts:
                text.append("  │ ", style="dim")
                text.append(" · ".join(alerts), style="bold red")
        if filters:
            text.append(f"{gap}│ {filters}", style="italic")
        return text


class TasksPanel(KeyedTable):
    COLUMNS = (("id", 5), ("status", 9), ("pri", 3), ("workflow", 12), ("title", 16), ("time", 6), ("tokens", 6),
               ("cost", 8))
    FLEX = "title"
    DROP = ("workflow", "tokens", "pri")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.COLUMNS, **kwargs)

    @property
    def selected_task(self) -> int | None:
        key = self.selected_key
        return int(key) if key is not None else None

    def show(self, tasks: list[TaskRow], now: float) -> None:
        self.apply(
            (
                str(t.id),
                (
                    str(t.id), status_text(t.status), str(t.priority), one_line(t.workflow, 12), one_line(t.title, 120),
                    fmt_duration(elapsed(t.started_at, t.ended_at, now), t.ended_at is None),
                    fmt_tokens(t.tokens) if t.tokens else "",
                    fmt_cost(t.cost_usd, t.unpriced) if t.cost_usd or t.unpriced else "",
                ),
            )
            for t in tasks
        )


class StagesPanel(KeyedTable):
    """The selected task's stages as a timeline, with why a waiting stage waits."""

    COLUMNS = (("stage", 12), ("status", 9), ("try", 3), ("provider", 8), ("time", 6), ("tokens", 6), ("cost", 8),
               ("why", 8))
    FLEX = "why"
    DROP = ("tokens", "provider", "try")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.COLUMNS, **kwargs)
        self.stages: dict[str, StageRow] = {}
        self.task_id: int | None = None  # whose stages these are

    @property
    def selected_stage(self) -> StageRow | None:
        key = self.selected_key
        return self.stages.get(key) if key is not None else None

    def show(self, detail: TaskDetail | None, now: float) -> None:
        stages = detail.stages if detail else []
        self.stages = {s.name: s for s in stages}
        self.task_id = detail.task.id if detail else None
        self.apply(
            (
                s.name,
                (
                    one_line(s.name, 12), status_text(s.status), str(s.attempt or ""), one_line(s.provider, 8),
                    fmt_duration(elapsed(s.started_at, s.ended_at, now), s.status == "running"),
                    fmt_tokens(s.tokens) if s.tokens else "",
                    fmt_cost(s.cost_usd, s.unpriced) if s.cost_usd or s.unpriced else "",
                    one_line(s.wait_reason if s.status == "pending" else s.error, 160),
                ),
            )
            for s in stages
        )


TOKEN_COLUMNS = ((10, 7, 7, 8, 8, 9), "stage", "in", "out", "c.read", "c.write", "cost")
NARROW_TOKEN_COLUMNS = ((8, 6, 6, 7, 9), "stage", "in", "out", "cache", "cost")  # cache: read + written


class TokensPanel(Vertical):
    """Per stage input / output / cache, cost against budget, tokens per minute. Narrower
    than its table, cache read and cache written share one column."""

    _detail: TaskDetail | None = None

    def compose(self):  # type: ignore[no-untyped-def]
        yield QuietStatic(id="token-table")
        yield Sparkline([], id="token-spark")

    def on_resize(self) -> None:
        if self._detail is not None:
            self.show(self._detail)

    def _table(self, detail: TaskDetail, width: int) -> Text:
        narrow = 0 < width < sum(TOKEN_COLUMNS[0])
        widths, *labels = NARROW_TOKEN_COLUMNS if narrow else TOKEN_COLUMNS
        text = Text()

        def row(cells: Sequence[str], style: str = "") -> None:
            text.append(cells[0][: widths[0] - 1].ljust(widths[0]) + "".join(
                cell.rjust(w) for cell, w in zip(cells[1:], widths[1:])) + "\n", style=style)

        row(labels, "bold")
        for s in detail.stages:
            if not s.tokens and not s.cost_usd:
                continue
            cache = [fmt_tokens(s.cache_read + s.cache_write)] if narrow else [fmt_tokens(s.cache_read),
                                                                               fmt_tokens(s.cache_write)]
            row([s.name, fmt_tokens(s.input), fmt_tokens(s.output), *cache, fmt_cost(s.cost_usd, s.unpriced)])
        return text

    def show(self, detail: TaskDetail | None) -> None:
        self._detail = detail
        table = self.query_one("#token-table", QuietStatic)
        spark = self.query_one("#token-spark", Sparkline)
        if detail is None:
            table.show_text(Text("select a task", style="dim"))
            if spark.data:
                spark.data = []
            return
        text = self._table(detail, table.size.width)
        task = detail.task
        text.append(f"total {fmt_tokens(task.tokens)} tokens · ")
        if task.unpriced:  # the known cost, and which models have none
            text.append(f"{fmt_cost(task.cost_usd)} + " if task.cost_usd else "")
            text.append(f"unpriced ({', '.join(task.unpriced)}: no price known)", style="yellow")
        else:
            text.append(fmt_cost(task.cost_usd))
        budget = detail.budget
        spent_usd, spent_tokens = task.cost_usd - detail.budget_base[0], task.tokens - detail.budget_base[1]
        since = " since the retry" if detail.budget_base != (0.0, 0) else ""
        if budget.get("usd"):
            share = spent_usd / budget["usd"]
            if since:
                text.append(f"\n{fmt_cost(spent_usd)}{since}", style="dim")
            text.append(f" of ${budget['usd']:.2f} ", style="dim")
            text.append(_bar(share), style="red" if share > 0.9 else "yellow" if share > 0.6 else "green")
        if budget.get("tokens"):
            share = spent_tokens / budget["tokens"]
            text.append(f"\n{fmt_tokens(spent_tokens)}{since} of {fmt_tokens(int(budget['tokens']))} tokens ", style="dim")
            text.append(_bar(share), style="red" if share > 0.9 else "yellow" if share > 0.6 else "green")
        text.append("\ntokens per minute, last 30 minutes:", style="dim")
        table.show_text(text)
        data = [float(n) for n in detail.per_minute]
        if data != spark.data:
            spark.data = data


def _bar(share: float, width: int = 12) -> str:
    filled = min(width, int(round(share * width)))
    return "█" * filled + "░" * (width - filled) + f" {share * 100:.0f}%"


@dataclass(frozen=True)
class DaughterView:
    """One live daughter as the daughters panel shows it."""

    pid: int
    task: str
    stage: str
    command: str
    cpu_percent: float
    rss: int
    children: int
    started_at: float
    live: bool
    node: str = ""  # where it runs: "" this machine, else the cluster node ("ray: placing" until placed)
    shown_pid: str = ""  # its pid where it runs


def daughter_views(daughters: Iterable[Any], home_prefix: str) -> list[DaughterView]:
    """From the supervisor's daughters (in memory, sampled in its thread): no process is
    asked anything here."""
    views = []
    for d in daughters:
        where = d.marker.removeprefix(home_prefix)
        task, _, rest = where.partition("/")
        stage = rest.rsplit("/", 1)[0]
        command = command_text(d.command)
        remote = d.executor != "local"
        node = (d.node or f"{d.executor}: placing") if remote else ""
        pid = str(getattr(d, "remote_pid", 0) or "") if remote else str(d.pid)
        views.append(DaughterView(d.pid, task, stage, one_line(command, 160), d.cpu_percent, d.rss, d.children,
                                  d.started_at, not d.done, node, pid))
    return sorted(views, key=lambda v: v.started_at)


def command_text(argv: list[str]) -> str:
    """A daughter's command (what the workflow asked for, never tacx's wrapper) in the
    narrow column: a shell stage by its script, programs and scripts by their names."""
    if len(argv) == 3 and argv[1] == "-c" and os.path.basename(argv[0]) in ("sh", "bash"):
        return argv[2]
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("python") and argv[1].endswith(".py"):
        argv = argv[1:]  # the script says more than the interpreter
    return " ".join(os.path.basename(a) if a.startswith("/") and "\n" not in a else a for a in argv)


class DaughtersPanel(KeyedTable):
    COLUMNS = (("pid", 7), ("node", 8), ("task", 5), ("stage", 10), ("command", 12), ("cpu", 4), ("rss", 5),
               ("kids", 4), ("age", 6), ("live", 4))
    FLEX = "command"
    DROP = ("live", "node", "kids", "task", "age", "rss", "cpu")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.COLUMNS, **kwargs)

    @property
    def selected_pid(self) -> int | None:
        key = self.selected_key
        return int(key) if key is not None else None

    def show(self, views: list[DaughterView], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.apply(
            (
                str(v.pid),
                (
                    v.shown_pid or str(v.pid), one_line(v.node, 24) or "here", v.task, one_line(v.stage, 10), v.command,
                    f"{v.cpu_percent:.0f}%",
                    fmt_bytes(v.rss) if v.rss else "", str(v.children), fmt_duration(now - v.started_at, True),
                    Text("●", style="green") if v.live else "○",
                ),
            )
            for v in views
        )
