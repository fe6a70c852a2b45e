"""Templates: plain ``{{ dotted.name }}`` substitution in one pass, never evaluated, so
input text never turns into code."""

from __future__ import annotations

import pytest

from tacx.workflow.templates import render, template_names


def test_render_is_one_pass() -> None:
    values = {"inputs.x": "{{ inputs.y }}", "inputs.y": "secret"}
    assert render("a {{inputs.x}} b {{ inputs.y }}", values) == "a {{ inputs.y }} b secret"


def test_render_keeps_shell_text_literal() -> None:
    assert render("Title: {{ inputs.title }}", {"inputs.title": "$(touch pwned)"}) == "Title: $(touch pwned)"


def test_render_missing_name_and_expressions() -> None:
    with pytest.raises(KeyError):
        render("{{ inputs.absent }}", {})
    with pytest.raises(ValueError, match="not a plain"):
        render("{{ 1 + 1 }}", {})
    with pytest.raises(ValueError, match="never closed"):
        render("{{ inputs.x", {"inputs.x": "1"})
    assert render("no templates, {single} braces }}", {}) == "no templates, {single} braces }}"


def test_template_names() -> None:
    text = "{{ inputs.a }} {{stages.code-review.result}} {{ inputs.a }} {{ task.id }}"
    assert template_names(text) == ["inputs.a", "stages.code-review.result", "task.id"]
    assert template_names("plain") == []
    with pytest.raises(ValueError):
        template_names("{{ }}")
