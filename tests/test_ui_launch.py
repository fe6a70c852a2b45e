"""The launch form: find workflows, pick one, fill its inputs from the keyboard, submit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Input, OptionList, Static

from tacx.ui.launch import LaunchRequest, LaunchScreen, WorkflowChoice, find_workflows
from tacx.agents.registry import builtin_provider_kinds

_MISSING = object()

BUILD = """\
    name: build
    description: Build a change with the mock agent.
    workspace: dir
    title: "build: {{ inputs.goal }}"
    inputs:
      goal: {required: true, description: what to build}
      branch: {default: main, description: the branch to start from}
      notes: {description: anything else}
    defaults: {provider: mock}
    budget: {usd: 2.50}
    stages:
      - name: plan
        prompt: "Plan {{ inputs.goal }}"
      - name: check
        provider: bash
        run: echo "$TACX_INPUT_GOAL"
"""

ECHO = """\
    name: echo
    description: Print a line.
    inputs:
      text: {default: hello}
    stages:
      - name: say
        provider: shell
        run: echo "$TACX_INPUT_TEXT"
"""

BROKEN = """\
    name: broken
    stages:
      - name: go
        provider: nosuchprovider
        run: echo hi
"""


def write(folder: Path, filename: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def choices(tmp_path: Path) -> list[WorkflowChoice]:
    folder = tmp_path / "workflows"
    write(folder, "build.yaml", BUILD)
    write(folder, "echo.yml", ECHO)
    write(folder, "broken.yaml", BROKEN)
    return find_workflows([folder], builtin_provider_kinds())


class Host(App[None]):
    """A bare app that opens the launch form and records what it returns."""

    def __init__(self, choices: list[WorkflowChoice], preselect: str | None = None) -> None:
        super().__init__()
        self.choices = choices
        self.preselect = preselect
        self.result: object = _MISSING

    def compose(self) -> ComposeResult:
        yield Static("host")

    def on_mount(self) -> None:
        self.push_screen(LaunchScreen(self.choices, self.preselect), self.record)

    def record(self, result: LaunchRequest | None) -> None:
        self.result = result


def shown(widget: Static) -> str:
    return str(widget.render()) if widget.display else ""


async def pick(pilot, app: Host, name: str) -> None:
    """Arrow down to ``name`` in the list and press Enter."""
    screen = app.screen
    option_list = screen.query_one("#launch-list", OptionList)
    assert screen.focused is option_list
    await pilot.press("home")
    names = [option.id for option in option_list.options]
    for _ in range(names.index(name)):
        await pilot.press("down")
    await pilot.press("enter")
    await pilot.pause()


# --- find_workflows ----------------------------------------------------------------------


def test_find_workflows_order_clash_and_errors(tmp_path: Path) -> None:
    first, second = tmp_path / "project", tmp_path / "shipped"
    mine = write(first, "echo.yaml", ECHO)
    write(second, "echo.yaml", ECHO.replace("Print a line.", "The shipped one."))
    write(second, "build.yml", BUILD)
    write(second, "Zeta.yaml", ECHO)
    write(first, "broken.yaml", BROKEN)
    write(first, "notes.txt", "not a workflow")
    (first / "dir.yaml").mkdir()

    found = find_workflows([first, tmp_path / "nowhere", second], builtin_provider_kinds())

    assert [c.name for c in found] == ["broken", "build", "echo", "Zeta"]
    by_name = {c.name: c for c in found}
    assert by_name["echo"].path == mine and by_name["echo"].description == "Print a line."
    assert by_name["build"].workflow is not None and by_name["build"].error is None
    broken = by_name["broken"]
    assert broken.workflow is None and not broken.launchable
    assert "nosuchprovider" in broken.error and str(first / "broken.yaml") in broken.error


# --- the form ----------------------------------------------------------------------------


async def test_launch_with_the_keyboard(choices: list[WorkflowChoice]) -> None:
    app = Host(choices)
    async with app.run_test() as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, LaunchScreen) and screen.step == 1
        assert isinstance(screen.focused, OptionList)
        await pick(pilot, app, "build")

        assert screen.step == 2
        assert screen.focused is screen.query_one("#launch-input-goal", Input)
        summary = shown(screen.query_one("#launch-summary", Static))
        assert "Build a change with the mock agent." in summary
        assert "plan (mock)" in summary and "check (bash)" in summary and "dir" in summary
        assert screen.query_one("#launch-input-branch", Input).value == "main"
        assert screen.query_one("#launch-title", Input).placeholder == "default: build: {{ inputs.goal }}"

        await pilot.press(*"add a cache")
        await pilot.press("tab", "tab", "tab")  # branch, notes, priority
        assert screen.focused is screen.query_one("#launch-priority", Input)
        await pilot.press("5", "enter")
        await pilot.pause()

    assert app.result == LaunchRequest(
        name="build",
        path=choices[1].path,
        inputs={"goal": "add a cache", "branch": "main", "notes": ""},
        priority=5,
        title=None,
    )


async def test_missing_required_input_is_shown_then_fixed(choices: list[WorkflowChoice]) -> None:
    app = Host(choices)
    async with app.run_test() as pilot:
        await pilot.pause()
        await pick(pilot, app, "build")
        screen = app.screen
        goal = screen.query_one("#launch-input-goal", Input)
        await pilot.press("space", "enter")  # only a space: still missing
        await pilot.pause()

        assert app.result is _MISSING and app.screen is screen and screen.step == 2
        error = shown(screen.query_one("#launch-error", Static))
        assert "needs input 'goal'" in error
        assert goal.has_class("-invalid") and screen.focused is goal

        await pilot.press("backspace", *"fix it", "enter")
        await pilot.pause()

    assert isinstance(app.result, LaunchRequest)
    assert app.result.inputs["goal"] == "fix it" and app.result.priority == 0


async def test_bad_priority_is_refused_inline(choices: list[WorkflowChoice]) -> None:
    app = Host(choices, preselect="echo")
    async with app.run_test() as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("tab")  # text -> priority
        priority = screen.query_one("#launch-priority", Input)
        assert screen.focused is priority
        await pilot.press(*"abc", "enter")
        await pilot.pause()

        assert app.result is _MISSING and app.screen is screen
        assert priority.value == "abc" and priority.has_class("-invalid")
        assert "priority must be a whole number" in shown(screen.query_one("#launch-error", Static))

        await pilot.press("ctrl+u", "-", "2", "enter")
        await pilot.pause()

    assert app.result == LaunchRequest("echo", choices[2].path, {"text": "hello"}, -2, None)


async def test_preselect_opens_the_form_and_escape_cancels(choices: list[WorkflowChoice]) -> None:
    app = Host(choices, preselect="build")
    async with app.run_test() as pilot:
        await pilot.pause()
        screen = app.screen
        assert screen.step == 2
        assert screen.focused is screen.query_one("#launch-input-goal", Input)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is not screen
    assert app.result is None


async def test_escape_goes_back_then_cancels(choices: list[WorkflowChoice]) -> None:
    app = Host(choices)
    async with app.run_test() as pilot:
        await pilot.pause()
        screen = app.screen
        await pick(pilot, app, "echo")
        assert screen.step == 2
        await pilot.press("escape")
        await pilot.pause()
        assert screen.step == 1 and isinstance(screen.focused, OptionList)
        assert screen.query_one(OptionList).highlighted_option.id == "echo"
        await pilot.press("escape")
        await pilot.pause()
    assert app.result is None


async def test_type_to_filter(choices: list[WorkflowChoice]) -> None:
    app = Host(choices)
    async with app.run_test() as pilot:
        await pilot.pause()
        screen = app.screen
        option_list = screen.query_one(OptionList)
        await pilot.press("e", "c")
        assert [o.id for o in option_list.options] == ["echo"]
        await pilot.press("backspace", "backspace")
        assert len(option_list.options) == 3
        await pilot.press(*"mock", "enter")  # matches build's description
        await pilot.pause()
        assert screen.step == 2 and screen.chosen.name == "build"


async def test_invalid_workflow_cannot_be_launched(choices: list[WorkflowChoice]) -> None:
    app = Host(choices)
    async with app.run_test() as pilot:
        await pilot.pause()
        screen = app.screen
        assert "invalid" in str(screen.query_one(OptionList).get_option("broken").prompt)
        await pick(pilot, app, "broken")

        assert screen.step == 1 and app.screen is screen and app.result is _MISSING
        detail = shown(screen.query_one("#launch-detail", Static))
        assert "cannot be launched" in detail and "nosuchprovider" in detail

    app = Host(choices, preselect="broken")  # the palette cannot launch it either
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.screen.step == 1
        assert "nosuchprovider" in shown(app.screen.query_one("#launch-detail", Static))


async def test_awkward_values_arrive_verbatim(choices: list[WorkflowChoice]) -> None:
    typed = """it's "quoted" $(rm -rf /) `id` ; | & > é 日本 🚀 {{ inputs.goal }}"""
    pasted = "  lead & trail  \\n $HOME\t"
    app = Host(choices, preselect="build")
    async with app.run_test() as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press(*typed)
        assert screen.query_one("#launch-input-goal", Input).value == typed
        screen.query_one("#launch-input-notes", Input).value = pasted
        screen.query_one("#launch-title", Input).value = "  [b]not markup[/b]  "
        await pilot.press("enter")
        await pilot.pause()

    assert isinstance(app.result, LaunchRequest)
    assert app.result.inputs == {"goal": typed, "branch": "main", "notes": pasted}
    assert app.result.title == "[b]not markup[/b]"
