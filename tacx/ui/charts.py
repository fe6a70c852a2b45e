"""Bar charts drawn with block characters, as Rich Text: rows of figures in, lines out.

Pure functions of their rows and a width (no widget, no store), so a chart is the same on
every terminal of that width and a test can read its bars. A bar's length is its value's
share of the chart's largest value, in eighths of a cell (▏▎▍▌▋▊▉█); a value above zero
gets at least one eighth, so a small spend is never drawn as none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.text import Text

from tacx.states import STATUS_STYLE
from tacx.ui.panels import fmt_cost

EIGHTHS = " ▏▎▍▌▋▊▉"  # EIGHTHS[n]: a cell n eighths full
FULL = "█"
TRACK = "░"  # the empty part of a gauge
MIN_BAR = 6  # a chart narrower than its labels and figures still draws bars this wide
MIN_GAUGE, MAX_GAUGE = 12, 30  # a success gauge's length: how the other tasks ended is said only beside a long one
NAME_WIDTH = 20  # workflow names longer than this are cut (with …)
COST_STYLE = "cyan"
GOOD, FAIR = 0.9, 0.7  # success rates at or above GOOD are green, at or above FAIR yellow, below red


def bar(value: float, top: float, width: int) -> str:
    """``value``'s share of ``top`` as a bar at most ``width`` cells long."""
    if value <= 0 or top <= 0 or width <= 0:
        return ""
    eighths = max(1, min(width * 8, round(value / top * width * 8)))
    full, part = divmod(eighths, 8)
    return FULL * full + (EIGHTHS[part] if part else "")


def dollars(usd: float, unpriced: Sequence[str] = ()) -> str:
    """The dashboard's cost figure ("unpriced", or "+" after a known part, for usage with no
    price); a day without spend reads "$0", not a dash."""
    return fmt_cost(usd, unpriced) if usd or unpriced else "$0"


def rate_style(rate: float | None) -> str:
    """How good a success rate is, in the dashboard's colours for the task states."""
    if rate is None:
        return "dim"
    if rate >= GOOD:
        return STATUS_STYLE["succeeded"]
    return "yellow" if rate >= FAIR else STATUS_STYLE["failed"]


def cut(name: str, width: int) -> str:
    """``name`` in at most ``width`` cells, "…" marking a cut."""
    return name if cell_len(name) <= width else set_cell_size(name, max(width - 1, 0)) + "…"


def _rows(labels: Sequence[str], values: Sequence[float], figures: Sequence[str], width: int,
          label_styles: Sequence[str] | None = None) -> Text:
    """One line per value: its label, its bar, its figure; labels and figures in columns."""
    text = Text(no_wrap=True, overflow="ellipsis")
    label_width = max((cell_len(label) for label in labels), default=0)
    figure_width = max((cell_len(figure) for figure in figures), default=0)
    bar_width = max(MIN_BAR, width - label_width - figure_width - 2)
    top = max(values, default=0.0)
    for i, (label, value, figure) in enumerate(zip(labels, values, figures)):
        if i:
            text.append("\n")
        text.append(label.ljust(label_width), style=label_styles[i] if label_styles else "")
        text.append(" ")
        text.append(bar(value, top, bar_width).ljust(bar_width), style=COST_STYLE)
        text.append(" ")
        text.append(figure.rjust(figure_width), style="bold" if value == top and value > 0 else "")
    return text


def day_label(key: str, with_year: bool) -> str:
    """"Sat 11-21" (or "2025-11-21" on a chart of more than one year) for a "YYYY-MM-DD" key."""
    if with_year:
        return key
    return date.fromisoformat(key).strftime("%a %m-%d")


def day_chart(days: Sequence[tuple[str, float, Sequence[str]]], width: int, *, today: str | None = None) -> Text:
    """Cost per day, newest first: every day of the period, those without spend too (their
    gaps are the point). Rows are (day key, cost, unpriced models). Today's label is bold."""
    if not any(cost or unpriced for _, cost, unpriced in days):
        return Text("No spending in these days (shell stages cost nothing).", style="dim")
    ordered = list(reversed(days))
    with_year = ordered[0][0][:4] != ordered[-1][0][:4]
    labels = [day_label(key, with_year) for key, _, _ in ordered]
    return _rows(labels, [cost for _, cost, _ in ordered], [dollars(cost, unpriced) for _, cost, unpriced in ordered],
                 width, label_styles=["bold" if key == today else "" for key, _, _ in ordered])


def workflow_cost_chart(rows: Sequence[dict[str, Any]], width: int) -> Text:
    """Cost per workflow (rows of reports.cost_rows by workflow, the costliest first), with
    each workflow's task count when there is room for it."""
    if not any(row["cost_usd"] or row.get("unpriced") for row in rows):
        return Text("No spending by any workflow in this period.", style="dim")
    names = [cut(str(row["key"]), NAME_WIDTH) for row in rows]
    figures = [dollars(row["cost_usd"], row.get("unpriced", ())) for row in rows]
    counts = [f"{row['tasks']} task{'s' if row['tasks'] != 1 else ''}" for row in rows]
    with_counts = [f"{f} · {c}" for f, c in zip(figures, counts)]
    room = width - max(map(cell_len, names)) - max(map(cell_len, with_counts)) - 2
    return _rows(names, [row["cost_usd"] for row in rows], with_counts if room >= 2 * MIN_BAR else figures, width)


def outcome_words(row: dict[str, Any]) -> str:
    """How a workflow's other tasks ended, and those not ended yet: "2 failed, 1 timed out, 1 running"."""
    states = ("failed", "timed_out", "cancelled", "running", "queued")
    return ", ".join(f"{row[state]} {state.replace('_', ' ')}" for state in states if row.get(state))


def success_chart(rows: Sequence[dict[str, Any]], width: int) -> Text:
    """Success rate per workflow (rows of reports.workflow_outcomes): a gauge coloured by
    how good the rate is, "succeeded/ended" and the percentage, and how the others ended
    when there is room. A workflow with no ended task says what its tasks are doing."""
    if not rows:
        return Text("No task in this period.", style="dim")
    names = [cut(str(row["workflow"]), NAME_WIDTH) for row in rows]
    name_width = max(map(cell_len, names))
    figures = []
    for row in rows:
        ended = row["succeeded"] + row["failed"] + row["cancelled"] + row["timed_out"]
        rate = row["success_rate"]
        figures.append(f"{rate * 100:3.0f}% {row['succeeded']}/{ended}" if rate is not None else "")
    figure_width = max(map(cell_len, figures))
    notes = [outcome_words(row) for row in rows]
    note_width = max(map(cell_len, notes))
    room = width - name_width - figure_width - 3  # the gauge's, and the notes' if they fit beside one
    with_notes = bool(note_width) and room - note_width - 1 >= MIN_GAUGE
    gauge_width = max(MIN_BAR, min(MAX_GAUGE, room - note_width - 1 if with_notes else room + 1))
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (row, name, figure, note) in enumerate(zip(rows, names, figures, notes)):
        if i:
            text.append("\n")
        text.append(name.ljust(name_width) + " ")
        rate = row["success_rate"]
        if rate is None:
            waiting = [f"{row[s]} {s}" for s in ("running", "queued") if row[s]]
            text.append(("no task ended yet" + (f": {', '.join(waiting)}" if waiting else "")), style="dim")
            continue
        filled = bar(rate, 1.0, gauge_width)
        text.append(filled, style=rate_style(rate))
        text.append(TRACK * (gauge_width - cell_len(filled)), style="dim")
        text.append(" " + figure.rjust(figure_width), style=rate_style(rate))
        if note and with_notes:
            text.append(" " + note, style="dim")
    return text
