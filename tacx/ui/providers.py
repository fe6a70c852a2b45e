"""The agents screen (`a`): for every provider, whether it can work now (installed, logged
in, resting after a rate limit, failing on auth or out of reach of its API since when), its
version and what it has done so far: `tacx providers` in the dashboard. The report runs in a
worker thread (it asks each CLI for its version), so the screen opens at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tacx.agents.report import health_words
from tacx.ui.panels import fmt_cost, fmt_tokens

HEALTH_STYLE = {"ready": "green", "not installed": "dim", "not logged in": "bold red", "resting": "yellow",
                "failing on auth": "bold red", "unreachable": "bold red"}

Report = Callable[[], list[dict[str, Any]]]


class ProvidersScreen(Screen[None]):
    """Every provider's health, version and usage; r reads them again."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,a", "app.pop_screen", "Back"),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    ProvidersScreen DataTable { height: 1fr; }
    ProvidersScreen #provider-detail { height: auto; max-height: 12; padding: 0 1; border-top: solid $accent; }
    """

    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report
        self.entries: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield DataTable(id="providers", cursor_type="row", zebra_stripes=True)
        yield Static("reading the providers...", id="provider-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("provider", "kind", "version", "health", "stages", "ok", "tokens", "cost")
        table.focus()
        self.action_reload()

    def action_reload(self) -> None:
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _read(self) -> None:
        try:
            entries = self.report()
        except Exception as exc:  # shown on the screen, never a dead dashboard
            self.app.call_from_thread(self._show_error, exc)
            return
        self.app.call_from_thread(self._show, entries)

    def _show_error(self, exc: Exception) -> None:
        self.query_one("#provider-detail", Static).update(Text(f"cannot read the providers: {exc}", style="red"))

    def _show(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for e in entries:
            u = e["usage"]
            state = e["health"]["state"]
            version = (e["version"] or ("built in" if e["kind"] == "script" or e["name"] == "mock" else "")) \
                if e["installed"] else "-"
            rate = f"{u['success_rate'] * 100:.0f}%" if u["success_rate"] is not None else "-"
            cost = "unpriced" if u["unpriced"] and not u["cost_usd"] else fmt_cost(u["cost_usd"])
            table.add_row(e["name"], e["kind"], version, Text(health_words(e["health"]), style=HEALTH_STYLE.get(state, "")),
                          str(u["stages"]), rate, fmt_tokens(sum(u["tokens"].values())), cost, key=e["name"])
        if entries:
            table.move_cursor(row=min(max(row, 0), len(entries) - 1))
        self._detail(table.cursor_row)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail(event.cursor_row)

    def _detail(self, index: int) -> None:
        if not 0 <= index < len(self.entries):
            return
        e = self.entries[index]
        text = Text()
        text.append(e["name"], style="bold")
        text.append(f"  {health_words(e['health'])}", style=HEALTH_STYLE.get(e["health"]["state"], ""))
        if e["health"]["state"] != "ready" and e["health"].get("detail"):
            text.append(f"\n{e['health']['detail']}")
        if e["login"] is not None and e["health"]["state"] != "not logged in":
            text.append(f"\nlogin: {e['login']['how']}" if e["login"]["state"] == "yes"
                        else f"\nlogin unknown: {e['login']['how']}", style="dim")
        if e["path"]:
            text.append(f"\n{e['path']}", style="dim")
        if e["usage"]["unpriced"]:
            text.append(f"\nunpriced (no price known): {', '.join(e['usage']['unpriced'])}", style="yellow")
        self.query_one("#provider-detail", Static).update(text)
