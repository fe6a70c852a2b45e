"""The price table: shipped prices matched by model-name prefix, costs, and tacx.yaml's
overrides. Expected figures are worked out by hand in the comments."""

from __future__ import annotations

import pytest

from tacx.agents.base import Usage
from tacx.agents.prices import Price, PriceTable


def test_price_table_prefix_matching() -> None:
    table = PriceTable.load()
    sonnet = table.price_for("claude-sonnet-4-5-20250929")
    assert sonnet == Price(3.0, 15.0, 0.30, 3.75)
    assert table.price_for("claude-opus-4-5-20251101") == Price(5.0, 25.0, 0.50, 6.25)
    assert table.price_for("claude-opus-4-1-20250805") == Price(15.0, 75.0, 1.50, 18.75)  # older, dearer
    assert table.price_for("claude-haiku-4-5") == Price(1.0, 5.0, 0.10, 1.25)
    # The longest prefix wins: gpt-5-mini is not gpt-5, gpt-5-codex-x is gpt-5-codex.
    assert table.price_for("gpt-5-mini-2025-08-07") == Price(0.25, 2.0, 0.025, None)
    assert table.price_for("gpt-5") == table.price_for("gpt-5-2025-08-07") == Price(1.25, 10.0, 0.125, None)
    assert table.price_for("gpt-5.1-codex") == Price(1.25, 10.0, 0.125, None)
    assert table.price_for("gemini-2.5-flash-lite") == Price(0.30, 2.50, 0.03, None)
    assert table.price_for("GPT-5-Codex") == Price(1.25, 10.0, 0.125, None)  # case
    assert table.price_for("anthropic/claude-sonnet-4-5") == sonnet  # aider's provider/ prefix
    assert table.price_for("mock-sonnet") == sonnet
    assert table.price_for("llama-3-70b") is None
    assert table.price_for("") is None and table.price_for(None) is None


def test_price_cost_and_cache_write_priced_as_input() -> None:
    table = PriceTable.load()
    usage = Usage(input=1000, output=100, cache_read=10_000, cache_write=2000)
    # gpt-5 has no cache-write price: cache writes cost input, 1.25.
    # (1000*1.25 + 100*10 + 10000*0.125 + 2000*1.25) / 1e6 = (1250 + 1000 + 1250 + 2500) / 1e6
    assert table.cost("gpt-5", usage) == pytest.approx(0.006)
    # sonnet: (1000*3 + 100*15 + 10000*0.30 + 2000*3.75) / 1e6 = (3000 + 1500 + 3000 + 7500) / 1e6
    assert table.cost("claude-sonnet-4-5", usage) == pytest.approx(0.015)
    assert table.cost("unknown-model", usage) is None


def test_price_overrides_win_field_by_field() -> None:
    table = PriceTable.load({
        "claude-sonnet-4": {"output": 20},
        "my-local": {"input": 0, "output": 0},
        "gpt-5-codex": {"cache_write": 2.5},
    })
    assert table.price_for("claude-sonnet-4-5") == Price(3.0, 20.0, 0.30, 3.75)
    assert table.price_for("my-local-llm") == Price(0.0, 0.0, 0.0, None)
    assert table.price_for("gpt-5-codex") == Price(1.25, 10.0, 0.125, 2.5)
    assert table.price_for("gpt-5") == Price(1.25, 10.0, 0.125, None)  # untouched
    assert PriceTable.load().price_for("claude-sonnet-4-5") == Price(3.0, 15.0, 0.30, 3.75)  # shipped table intact


@pytest.mark.parametrize("overrides, words", [
    ({"gpt-5": {"input": -1}}, "gpt-5: input must not be negative"),
    ({"gpt-5": {"output": "ten"}}, "gpt-5: output must be a number"),
    ({"gpt-5": {"output": True}}, "gpt-5: output must be a number"),
    ({"gpt-5": {"cache_read": float("nan")}}, "gpt-5: cache_read must be a number"),
    ({"gpt-5": {"price": 1}}, "gpt-5: unknown field 'price'"),
    ({"new-model": {"output": 1}}, "new-model: input is required"),
    ({"new-model": 3}, "new-model: expected a mapping"),
])
def test_price_overrides_are_checked(overrides: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        PriceTable.load(overrides)



def test_prices_of_the_2026_models() -> None:
    table = PriceTable.load()
    assert table.price_for("claude-opus-5") == Price(5.0, 25.0, 0.50, 6.25)
    assert table.price_for("claude-opus-5-5") == Price(4.0, 20.0, 0.20, 5.0)  # not Opus 5's
    assert table.price_for("claude-sonnet-5") == table.price_for("claude-sonnet-5-5") == Price(2.0, 10.0, 0.20, 2.50)
    # Each gpt-5.x its own price, no longer gpt-5's through the prefix.
    assert table.price_for("gpt-5.1-codex-max") == Price(1.25, 10.0, 0.125, None)
    assert table.price_for("gpt-5.2-codex") == table.price_for("gpt-5.3-codex") == Price(1.75, 14.0, 0.175, None)
    assert table.price_for("gpt-5.4") == Price(2.50, 15.0, 0.25, None)
    assert table.price_for("gpt-5.4-mini") == Price(0.75, 4.50, 0.075, None)
    assert table.price_for("gpt-5.5") == Price(5.0, 30.0, 0.50, None)
    assert table.price_for("gpt-5.5-pro") == Price(30.0, 180.0, 30.0, None)
    assert table.price_for("gemini-3-pro-preview") == table.price_for("gemini-3.1-pro-preview") == Price(2.0, 12.0, 0.20, None)
    assert table.price_for("gemini-3-flash-preview") == Price(0.50, 3.0, 0.05, None)
    # gemini-3-flash, 10k uncached + 40k cached in, 2k out (thinking included):
    # (10000*0.50 + 40000*0.05 + 2000*3) / 1e6 = (5000 + 2000 + 6000) / 1e6 = 0.013
    assert table.cost("gemini-3-flash-preview", Usage(10_000, 2000, 40_000)) == pytest.approx(0.013)
