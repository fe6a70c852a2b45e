"""Model prices, USD per million tokens, to cost the usage of agents that report no cost.

The figures ship in ``tacx/data/prices.yaml`` (keyed by model-name prefix); a project's
``tacx.yaml`` ``prices:`` section overrides them. Claude Code prices its own runs and tacx
prefers its figure; codex and gemini report tokens only, so tacx computes their cost here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from tacx.agents.base import Usage

FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "web_search")
_REQUIRED = ("input", "output")
_OPTIONAL = ("cache_write", "cache_write_1h", "web_search")  # None: the rule in Price applies
WRITE_1H_FACTOR = 2.0  # a 1-hour cache write costs 2x input (Anthropic's pricing page)
WEB_SEARCH_PER_1000 = 10.0  # USD per 1,000 server-side web searches (Anthropic API)


@dataclass(frozen=True)
class Price:
    """USD per million tokens. A cache_write of None is priced as input; so is a missing
    cache_read (a model without cache pricing bills cached tokens as plain input).
    cache_write is the 5-minute cache write; cache_write_1h the 1-hour one (None: 2x input);
    web_search is USD per 1,000 server-side web searches (None: Anthropic's $10)."""

    input: float
    output: float
    cache_read: float
    cache_write: float | None = None
    cache_write_1h: float | None = None
    web_search: float | None = None

    def cost(self, usage: Usage, write_1h: int = 0, web_searches: int = 0) -> float:
        """``write_1h`` of ``usage.cache_write`` were 1-hour cache writes (the rest 5-minute
        ones); ``web_searches`` server-side searches are charged per request."""
        write = self.input if self.cache_write is None else self.cache_write
        cost = (
            usage.input * self.input
            + usage.output * self.output
            + usage.cache_read * self.cache_read
            + usage.cache_write * write
        )
        if write_1h > 0:
            hour = self.input * WRITE_1H_FACTOR if self.cache_write_1h is None else self.cache_write_1h
            cost += min(write_1h, usage.cache_write) * (hour - write)
        if web_searches > 0:
            per_1000 = WEB_SEARCH_PER_1000 if self.web_search is None else self.web_search
            cost += web_searches * per_1000 * 1000  # per request, in the per-million unit
        return cost / 1_000_000


def _check_number(model: str, name: str, value: Any) -> float | None:
    if value is None and name in _OPTIONAL:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"prices: {model}: {name} must be a number of USD per million tokens, not {value!r}")
    if value < 0:
        raise ValueError(f"prices: {model}: {name} must not be negative (got {value})")
    return float(value)


def _merge(model: Any, fields: Any, base: Mapping[str, float | None] | None) -> dict[str, float | None]:
    """One model's fields, checked, laid over ``base`` (the shipped entry, if any)."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"prices: a model prefix must be non-empty text, not {model!r}")
    if not isinstance(fields, Mapping):
        raise ValueError(f"prices: {model}: expected a mapping of {', '.join(FIELDS)}, not {fields!r}")
    merged: dict[str, float | None] = dict(base or {})
    for name, value in fields.items():
        if name not in FIELDS:
            raise ValueError(f"prices: {model}: unknown field {name!r} (known: {', '.join(FIELDS)})")
        merged[name] = _check_number(model, name, value)
    for name in _REQUIRED:
        if merged.get(name) is None:
            raise ValueError(f"prices: {model}: {name} is required")
    return merged


def _price(fields: Mapping[str, float | None]) -> Price:
    input_ = fields["input"]
    assert input_ is not None and fields["output"] is not None
    cache_read = fields.get("cache_read")
    return Price(input_, fields["output"], input_ if cache_read is None else cache_read, fields.get("cache_write"),
                 fields.get("cache_write_1h"), fields.get("web_search"))


@lru_cache(maxsize=1)
def _shipped() -> dict[str, dict[str, float | None]]:
    """The shipped figures, read and checked once per process."""
    text = (resources.files("tacx.data") / "prices.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError("tacx/data/prices.yaml: expected a mapping of model prefix to prices")
    return {model: _merge(model, fields, None) for model, fields in data.items()}


class PriceTable:
    """Prices by model-name prefix; ``price_for`` picks the longest prefix that matches."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = dict(prices)
        self._keys = sorted(self.prices, key=len, reverse=True)
        self._found: dict[str | None, Price | None] = {}

    @classmethod
    def load(cls, overrides: Mapping[str, Mapping[str, float]] | None = None) -> PriceTable:
        """The shipped table with ``overrides`` laid over it (they win, field by field).
        Raises ValueError naming the model and field of a bad override."""
        table = dict(_shipped())
        for model, fields in (overrides or {}).items():
            table[model] = _merge(model, fields, table.get(model))
        return cls({model: _price(fields) for model, fields in table.items()})

    def price_for(self, model: str | None) -> Price | None:
        """The price of ``model`` (also tried in lower case and without a ``provider/``
        prefix, as aider names models), or None when no prefix matches."""
        try:
            return self._found[model]
        except KeyError:
            pass
        price = None
        if model:
            tail = model.rsplit("/", 1)[-1]
            for candidate in (model, model.lower(), tail, tail.lower()):
                price = self._match(candidate)
                if price is not None:
                    break
        self._found[model] = price
        return price

    def _match(self, name: str) -> Price | None:
        for key in self._keys:
            if name.startswith(key):
                return self.prices[key]
        return None

    def cost(self, model: str | None, usage: Usage, write_1h: int = 0, web_searches: int = 0) -> float | None:
        """USD for ``usage`` on ``model`` (``write_1h`` and ``web_searches`` as in
        Price.cost); None when the model has no price."""
        price = self.price_for(model)
        return None if price is None else price.cost(usage, write_1h, web_searches)


# -- showing costs: "unpriced", never $0 ---------------------------------------------------------
#
# The store keeps a cost of 0 for usage whose model had no price (no schema change: the model
# is kept on every usage row). Shown, such usage is "unpriced": the usage of one model in one
# attempt of a stage with tokens and no cost at all. An agent that prices its own run (claude)
# brings its cost on the result row of the same model, so its usage is priced.

UNPRICED = "unpriced"
UNKNOWN_MODEL = "(model unknown)"  # the model named for usage that arrived with none

# Unpriced: a group of usage rows (one stage attempt's, of one model) with tokens and no
# cost. The SQL and the Python (the dashboard sums today's rows as they come) say the same.
_UNPRICED_SQL = (
    "SELECT u.task_id, s.name, s.provider, u.model FROM usage u JOIN stages s ON s.id = u.stage_id"
    " WHERE {where} GROUP BY u.stage_id, u.attempt, u.model"
    " HAVING SUM(u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens) > 0"
    " AND ABS(SUM(u.cost_usd)) < 1e-12"
)


def is_unpriced(tokens: int, cost: float) -> bool:
    """A usage group's totals: tokens spent and no cost known (``_UNPRICED_SQL``'s HAVING)."""
    return tokens > 0 and abs(cost) < 1e-12


@dataclass(frozen=True)
class Unpriced:
    """Usage with tokens and no known cost: its task, stage, provider and model."""

    task_id: int
    stage: str
    provider: str | None
    model: str

    @staticmethod
    def find(conn: Any, where: str = "1", params: tuple[Any, ...] = ()) -> list[Unpriced]:
        """The unpriced usage among the usage rows ``where`` picks (columns of ``usage u``)."""
        return [
            Unpriced(task_id, stage, provider, model or UNKNOWN_MODEL)
            for task_id, stage, provider, model in conn.execute(_UNPRICED_SQL.format(where=where), params)
        ]

    @staticmethod
    def of_tasks(conn: Any, task_ids: list[int]) -> list[Unpriced]:
        if not task_ids:
            return []
        return Unpriced.find(conn, f"u.task_id IN ({', '.join('?' for _ in task_ids)})", tuple(task_ids))


def models(found: list[Unpriced]) -> list[str]:
    """The models named, each once, sorted."""
    return sorted({u.model for u in found})


def note_unpriced(conn: Any, tasks: list[dict[str, Any]]) -> None:
    """Each task (and each of its stages, when listed) gains ``unpriced``: the models whose
    usage has no price, so a cost of 0 is never shown as $0 (`ls`/`show --json`, the API)."""
    found = Unpriced.of_tasks(conn, [t["id"] for t in tasks])
    for t in tasks:
        t["unpriced"] = models([u for u in found if u.task_id == t["id"]])
        for stage in t.get("stages", ()):
            stage["unpriced"] = models([u for u in found if u.task_id == t["id"] and u.stage == stage["name"]])


def cost_text(usd: float, unpriced: Any = (), digits: int = 4) -> str:
    """A cost for people: ``$0.0123``; ``unpriced (model)`` when nothing of it is known;
    ``$0.0123 + unpriced (model)`` when part is. ``unpriced`` names the models (or is a bool)."""
    if not unpriced:
        return f"${usd:.{digits}f}"
    names = "" if unpriced is True else f" ({', '.join(sorted(set(unpriced)))})"
    if abs(usd) < 1e-12:
        return f"{UNPRICED}{names}"
    return f"${usd:.{digits}f} + {UNPRICED}{names}"
