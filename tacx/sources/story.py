"""The story of a task told back on its issue: one comment, edited as the task goes on
(picked up, each stage as it ends, the end with the pull request or the reason it failed),
and the body of the pull request. Plain functions from `tacx show --json`'s task to
Markdown; no I/O.

Issue text is untrusted and never appears here; the agents' results and errors do (they may
quote it), so they are fenced or escaped, and bounded.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- tacx:claim home={home} -->"
COMMENT_LIMIT = 60_000  # GitHub refuses a comment over 65,536 characters
DETAIL_LIMIT = 1_500  # characters of an error or a plan quoted in a comment
DONE = ("succeeded", "failed", "cancelled", "timed_out", "skipped")


def marker(home: str) -> str:
    return MARKER.format(home=home)


def home_of(body: Any) -> str | None:
    """The home id a tacx comment was claimed by, or None when it is not tacx's."""
    if not isinstance(body, str) or not body.startswith("<!-- tacx:claim home="):
        return None
    end = body.find(" -->")
    return body[len("<!-- tacx:claim home="):end] if end > 0 else None


def _tokens(t: dict[str, int]) -> int:
    return sum(int(v) for v in t.values())


def _money(usd: float, unpriced: list[str]) -> str:
    return ("unpriced" if not usd else f"${usd:.4f} + unpriced") if unpriced else f"${usd:.4f}"


def _took(stage: dict[str, Any]) -> str:
    if stage.get("started_at") and stage.get("ended_at"):
        seconds = stage["ended_at"] - stage["started_at"]
        return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
    return ""


def fence(text: str, limit: int = DETAIL_LIMIT) -> str:
    """Text fenced so that no Markdown, mention or HTML in it acts."""
    cut = text if len(text) <= limit else text[:limit] + "\n…"
    fence = "~~~~" if "```" in cut else "```"
    return f"{fence}text\n{cut.replace(fence, '')}\n{fence}"


def stage_table(task: dict[str, Any]) -> str:
    rows = ["| stage | state | took | tokens | cost |", "|---|---|---|---|---|"]
    for s in task.get("stages", []):
        state = s["status"].replace("_", " ")
        rows.append(f"| {s['name']} | {state} | {_took(s)} | {_tokens(s['tokens']):,} |"
                    f" {_money(s['cost_usd'], s.get('unpriced', []))} |")
    rows.append(f"| **total** | | | **{_tokens(task['tokens']):,}** |"
                f" **{_money(task['cost_usd'], task.get('unpriced', []))}** |")
    return "\n".join(rows)


def comment(home: str, task: dict[str, Any] | None, *, pull_url: str | None = None, note: str | None = None,
            retry_hint: str = "") -> str:
    """The one comment on an issue: picked up, then the stages, then the end."""
    lines = [marker(home)]
    if task is None:
        lines.append("**tacx** picked this issue up; its task is being queued.")
        return "\n".join(lines)
    status = task["status"]
    head = {"queued": "queued", "running": "working on it", "succeeded": "done", "failed": "failed",
            "cancelled": "cancelled", "timed_out": "timed out"}.get(status, status)
    lines.append(f"**tacx** task {task['id']} (`{task['workflow']}`): **{head}**")
    lines.append("")
    lines.append(stage_table(task))
    if status == "succeeded" and pull_url:
        lines += ["", f"Pull request: {pull_url}"]
    if status in ("failed", "timed_out", "cancelled") and task.get("error"):
        lines += ["", "Why:", fence(task["error"])]
    if note:
        lines += ["", note]
    if status in ("failed", "timed_out", "cancelled") and retry_hint:
        lines += ["", retry_hint]
    body = "\n".join(lines)
    return body if len(body) <= COMMENT_LIMIT else body[:COMMENT_LIMIT] + "\n…"


def pull_body(task: dict[str, Any], issue: int, plan: str | None) -> str:
    """The pull request's body: what it closes, the plan in short, and the cost table."""
    lines = [f"Closes #{issue}", "", f"Made by tacx task {task['id']} (`{task['workflow']}`)."]
    if plan and plan.strip():
        lines += ["", "### Plan", fence(plan.strip())]
    lines += ["", "### Cost", stage_table(task)]
    return "\n".join(lines)
