"""`tacx report cost|stats|compare`: what was spent, and how workflows and stages went, from
the store (tacx/store/reports.py). Read-only, like `tacx ls`: it works while a coordinator
runs and makes no store where there is none. Tables for people, `--json` and `--csv` for
scripts."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from tacx.agents.prices import cost_text
from tacx.cli.colour import Palette
from tacx.cli.common import EXIT_OK, UsageError, reader
from tacx.home import Home
from tacx.store import reports
from tacx.text import fit, printable


def cmd_report(home: Home, args: argparse.Namespace) -> int:
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise UsageError("--since must be before --until (the window would be empty)")
    conn = reader(home)
    try:
        if args.report == "cost":
            rows = reports.cost_rows(conn, args.by, since=args.since, until=args.until) if conn else []
            _cost_out(rows, args)
        elif args.report == "stats":
            rows = reports.stage_stats(conn, since=args.since, until=args.until,
                                       workflow=args.workflow) if conn else []
            _stats_out(rows, args)
        else:
            _compare_out(_compared(conn, args), args)
    finally:
        if conn is not None:
            conn.close()
    return EXIT_OK


def _compared(conn: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The comparison asked for; a usage error when a side has no stage runs to compare."""
    dimension = next(d for d in reports.DIMENSIONS if getattr(args, f"{d}s"))
    a, b = getattr(args, f"{dimension}s")
    if a == b:
        raise UsageError(f"compare two different {dimension}s, not {a!r} with itself")
    found = reports.compare(conn, dimension, a, b, workflow=args.workflow, since=args.since,
                            until=args.until) if conn else None
    empty = [name for i, name in enumerate((a, b)) if found is None or not found["sides"][i]["overall"]["runs"]]
    if found is None or empty:
        where = f" of workflow {args.workflow!r}" if args.workflow and dimension != "workflow" else ""
        window = " in this window" if args.since is not None or args.until is not None else ""
        raise UsageError(f"no stage runs{where} for {dimension} {', '.join(map(repr, empty))}{window}:"
                         " nothing to compare")
    return found


def _csv(header: list[str], rows: list[list[Any]]) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(header)
    out.writerows(rows)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _reasons(failures: dict[str, int]) -> str:
    return "; ".join(f"{reason}={n}" for reason, n in failures.items())


# -- cost --------------------------------------------------------------------------------------

_COST_FIELDS = ["input", "output", "cache_read", "cache_write", "cost_usd", "tasks"]


def _cost_out(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(rows))
        return
    by_task = args.by == "task"
    if args.csv:
        header = ["key", *(["title"] if by_task else []), *_COST_FIELDS, "unpriced"]
        _csv(header, [[r["key"], *([r["title"]] if by_task else []), *(r[f] for f in _COST_FIELDS),
                       "; ".join(r["unpriced"])] for r in rows])
        return
    palette = Palette.for_stream(sys.stdout)
    label = "ID" if by_task else args.by.upper()
    width = max([len(label), 10, *(len(r["key"]) for r in rows)]) if not by_task else 6
    width = min(width, 32)
    print(f"{label:<{width}} {'TASKS':>6} {'INPUT':>12} {'OUTPUT':>11} {'CACHE READ':>13} {'CACHE WRITE':>12}"
          f" {'COST':>12}" + ("  TITLE" if by_task else ""))

    def line(key: str, r: dict[str, Any], tasks: str, unpriced: list[str]) -> str:
        cost = cost_text(r["cost_usd"], unpriced, digits=4)
        text = (fit(key, width) + f" {tasks:>6} {r['input']:>12,} {r['output']:>11,} {r['cache_read']:>13,}"
                f" {r['cache_write']:>12,} ")
        return text + palette.paint(f"{cost:>12}", "yellow" if unpriced else "")

    for r in rows:
        title = "  " + printable(r["title"][:60]) if by_task else ""
        print(line(r["key"], r, str(r["tasks"]), r["unpriced"]) + title)
    total = {f: sum(r[f] for r in rows) for f in _COST_FIELDS}
    total["cost_usd"] = round(total["cost_usd"], 6)
    unpriced = sorted({m for r in rows for m in r["unpriced"]})
    print(palette.paint(line("TOTAL", total, "", unpriced), "bold"))


# -- stats -------------------------------------------------------------------------------------

_STATS_FIELDS = ["runs", "succeeded", "failed", "timed_out", "cancelled", "skipped", "running", "success_rate",
                 "p50_seconds", "p95_seconds", "retries", "timeouts"]


def _stats_out(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(rows))
        return
    if args.csv:
        header = ["workflow", "stage", *_STATS_FIELDS, *(f"tokens_{k}" for k in reports.TOKEN_KINDS), "cost_usd",
                  "cost_per_run", "failures"]
        _csv(header, [[r["workflow"], r["stage"], *(r[f] for f in _STATS_FIELDS),
                       *(r["tokens"][k] for k in reports.TOKEN_KINDS), r["cost_usd"], r["cost_per_run"],
                       _reasons(r["failures"])] for r in rows])
        return
    palette = Palette.for_stream(sys.stdout)
    print(f"{'WORKFLOW':<18} {'STAGE':<14} {'RUNS':>6} {'OK':>5} {'P50':>7} {'P95':>7} {'RETRIES':>7}"
          f" {'TIMEOUTS':>8} {'COST':>10}  FAILURES")
    for r in rows:
        rate = _rate(r["success_rate"])
        style = "" if r["success_rate"] is None else "green" if r["success_rate"] >= 0.9 else "bold red" if r["success_rate"] < 0.5 else "yellow"
        print(fit(r["workflow"], 18) + " " + fit(r["stage"], 14) + f" {r['runs']:>6} "
              + palette.paint(f"{rate:>5}", style)
              + f" {_seconds(r['p50_seconds']):>7} {_seconds(r['p95_seconds']):>7} {r['retries']:>7}"
              f" {r['timeouts']:>8} {'$' + format(r['cost_usd'], '.4f'):>10}  "
              + printable(_reasons_short(r["failures"])))


def _reasons_short(failures: dict[str, int], most: int = 4) -> str:
    """The commonest reasons for a table (--json and --csv give them all)."""
    shown = ", ".join(f"{reason} ×{n}" for reason, n in list(failures.items())[:most])
    rest = sum(list(failures.values())[most:])
    return shown + (f", {rest} more" if rest else "")


# -- compare -----------------------------------------------------------------------------------

_COMPARE_FIELDS = ["runs", "succeeded", "failed", "timed_out", "cancelled", "success_rate", "p50_seconds",
                   "p95_seconds", "retries"]


def _compare_out(found: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(found))
        return
    sides = found["sides"]
    stages = list(dict.fromkeys(s["stage"] for side in sides for s in side["stages"]))
    lines: list[tuple[str, str, dict[str, Any] | None]] = []
    for stage in ["(all)", *stages]:
        for side in sides:
            figures = side["overall"] if stage == "(all)" else next(
                (s for s in side["stages"] if s["stage"] == stage), None)
            lines.append((stage, side["name"], figures))
    if args.csv:
        header = ["stage", found["dimension"], *_COMPARE_FIELDS, *(f"tokens_{k}" for k in reports.TOKEN_KINDS),
                  "cost_usd", "cost_per_run"]
        _csv(header, [[stage, name, *(f[k] for k in _COMPARE_FIELDS), *(f["tokens"][k] for k in reports.TOKEN_KINDS),
                       f["cost_usd"], f["cost_per_run"]] for stage, name, f in lines if f is not None])
        return
    palette = Palette.for_stream(sys.stdout)
    side_width = min(max(len(found["dimension"]), *(len(s["name"]) for s in sides)), 24)
    print(f"{'STAGE':<14} {found['dimension'].upper():<{side_width}} {'RUNS':>6} {'OK':>5} {'P50':>7} {'P95':>7}"
          f" {'RETRIES':>7} {'TOKENS':>12} {'COST':>10} {'COST/RUN':>9}")
    for stage, name, f in lines:
        head = fit(stage, 14) + " " + fit(name, side_width)
        if f is None:
            print(head + palette.paint(f" {'-':>6}", "dim"))
            continue
        per_run = "-" if f["cost_per_run"] is None else f"${f['cost_per_run']:.4f}"
        text = (head + f" {f['runs']:>6} {_rate(f['success_rate']):>5} {_seconds(f['p50_seconds']):>7}"
                f" {_seconds(f['p95_seconds']):>7} {f['retries']:>7} {sum(f['tokens'].values()):>12,}"
                f" {'$' + format(f['cost_usd'], '.4f'):>10} {per_run:>9}")
        print(palette.paint(text, "bold") if stage == "(all)" else text)
