"""The "launch a task" form (the dashboard's ``n`` key): pick a workflow, fill its inputs.

Two steps in one modal screen:

1. a list of the workflows found (type to filter); an invalid file shows its error and
   cannot be chosen;
2. a form generated from the chosen workflow's ``inputs:``, plus the task's priority and an
   optional title, with a short summary of what the workflow will do.

Enter submits, Tab moves between fields, Escape backs out. The screen dismisses with a
:class:`LaunchRequest` (or ``None`` when cancelled); the caller queues the task. Nothing
here touches the store or the disk except :func:`find_workflows`, which reads files and
so belongs in a thread worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tacx.workflow.loader import WorkflowError, load_workflow
from tacx.workflow.model import Workflow, resolve_inputs

__all__ = ["LaunchRequest", "LaunchScreen", "WorkflowChoice", "find_workflows"]

WORKFLOW_SUFFIXES = (".yaml", ".yml")
"""In this order: with both x.yaml and x.yml in one folder, x.yaml wins (as `tacx run x`)."""

PRIORITY_LIMIT = 1_000_000_000
"""Priorities are kept to a range any store column and any person can handle."""

_PRIORITY = re.compile(r"[+-]?[0-9]+")


# --- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowChoice:
    """A workflow file offered by the form; ``workflow`` is None when the file is invalid."""

    name: str
    path: Path
    workflow: Workflow | None
    error: str | None = None

    @property
    def launchable(self) -> bool:
        return self.workflow is not None

    @property
    def description(self) -> str:
        return self.workflow.description.strip() if self.workflow is not None else ""


@dataclass(frozen=True)
class LaunchRequest:
    """What the person asked for; the app resolves the title and queues the task.

    ``inputs`` holds every declared input as text (defaults filled in), exactly as typed.
    ``title`` is None when the person left it empty: derive it as ``tacx submit`` does.
    """

    name: str
    path: Path
    inputs: dict[str, str]
    priority: int = 0
    title: str | None = None


def find_workflows(dirs: Sequence[Path], provider_kinds: Mapping[str, str]) -> list[WorkflowChoice]:
    """Every ``*.yaml`` / ``*.yml`` in ``dirs``, the first folder winning a name clash, by name.

    Reads and validates every file: call it from a thread, not from the UI's event loop.
    A folder that does not exist is skipped; a file that does not load becomes a choice with
    its error text (every issue, one per line) and no workflow.
    """
    found: dict[str, Path] = {}
    for folder in dirs:
        try:
            files = [p for p in Path(folder).iterdir() if p.suffix in WORKFLOW_SUFFIXES and p.is_file()]
        except OSError:
            continue
        files.sort(key=lambda p: (p.stem, WORKFLOW_SUFFIXES.index(p.suffix)))
        for path in files:
            found.setdefault(path.stem, path)
    choices: list[WorkflowChoice] = []
    for name in sorted(found, key=lambda n: (n.casefold(), n)):
        path = found[name]
        try:
            choices.append(WorkflowChoice(name, path, load_workflow(path, provider_kinds)))
        except WorkflowError as exc:
            choices.append(WorkflowChoice(name, path, None, str(exc) or f"{path}: invalid workflow"))
    return choices


# --- helpers -----------------------------------------------------------------------------


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def parse_priority(text: str) -> int:
    """A priority as typed: a whole number (empty means 0); ValueError says what is wrong."""
    text = text.strip()
    if not text:
        return 0
    if not _PRIORITY.fullmatch(text):
        raise ValueError(f"priority must be a whole number (like 0, 5 or -1), not {text!r}")
    value = int(text)
    if abs(value) > PRIORITY_LIMIT:
        raise ValueError(f"priority must be between -{PRIORITY_LIMIT:,} and {PRIORITY_LIMIT:,}")
    return value


class _PriorityValidator(Validator):
    def validate(self, value: str) -> ValidationResult:
        try:
            parse_priority(value)
        except ValueError as exc:
            return self.failure(str(exc))
        return self.success()


class _RequiredValidator(Validator):
    def validate(self, value: str) -> ValidationResult:
        return self.success() if value.strip() else self.failure("required")


def _summary(choice: WorkflowChoice) -> Content:
    """Description, workspace, budget and stages of a workflow, a few lines."""
    wf = choice.workflow
    assert wf is not None
    parts: list[Content | str | tuple[str, str]] = []
    if wf.description.strip():
        parts += [wf.description.strip(), "\n"]
    parts += [("workspace ", "dim"), wf.workspace]
    if wf.budget is not None:
        limits = []
        if wf.budget.usd is not None:
            limits.append(f"${wf.budget.usd:.2f}")
        if wf.budget.tokens is not None:
            limits.append(f"{wf.budget.tokens:,} tokens")
        parts += [("  budget ", "dim"), " or ".join(limits)]
    parts += [("  file ", "dim"), str(choice.path), "\n", ("stages ", "dim")]
    dag = any(stage.needs is not None for stage in wf.stages)
    for i, stage in enumerate(wf.stages):
        if i:
            parts.append(("  " if dag else " → ", "dim"))
        parts += [(stage.name, "bold"), (f" ({'/'.join(stage.provider) or '?'})", "dim")]
        if dag and stage.needs:
            parts.append((f" after {', '.join(stage.needs)}", "dim italic"))
    return Content.assemble(*parts)


def _choice_prompt(choice: WorkflowChoice) -> Content:
    if choice.workflow is None:
        problem = _first_line(choice.error or "").removeprefix(f"{choice.path}:")
        return Content.assemble((choice.name, "bold"), "  ", ("invalid: " + problem, "red"))
    return Content.assemble((choice.name, "bold"), "  ", (_first_line(choice.description), "dim"))


# --- the screen --------------------------------------------------------------------------


class LaunchScreen(ModalScreen["LaunchRequest | None"]):
    """Pick a workflow, fill in its inputs, Enter: dismisses with a LaunchRequest or None.

    ``preselect`` (a workflow name, as the command palette's "Launch <workflow>") opens the
    form of that workflow straight away; Escape then cancels instead of going back.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back / cancel")]

    DEFAULT_CSS = """
    LaunchScreen {
        align: center middle;
    }
    LaunchScreen #launch-dialog {
        width: 70%;
        min-width: 50;
        max-width: 90;
        height: auto;
        max-height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    LaunchScreen #launch-heading {
        text-style: bold;
        width: 1fr;
        margin-bottom: 1;
    }
    LaunchScreen #launch-pick, LaunchScreen #launch-form {
        height: auto;
    }
    LaunchScreen #launch-filter {
        color: $text-muted;
    }
    LaunchScreen #launch-list {
        height: auto;
        max-height: 14;
    }
    LaunchScreen #launch-detail {
        height: auto;
        max-height: 8;
        margin-top: 1;
    }
    LaunchScreen #launch-detail.-invalid {
        color: $text-error;
    }
    LaunchScreen #launch-summary {
        height: auto;
        max-height: 8;
        margin-bottom: 1;
        padding: 0 1;
        background: $boost;
    }
    LaunchScreen #launch-fields {
        height: auto;
        max-height: 60vh;
    }
    LaunchScreen .launch-row {
        height: auto;
    }
    LaunchScreen .launch-label {
        width: 18;
        padding: 1 1 0 0;
        text-align: right;
        text-overflow: ellipsis;
        text-wrap: nowrap;
    }
    LaunchScreen .launch-row > Input {
        width: 1fr;
    }
    LaunchScreen .launch-note {
        color: $text-muted;
        padding: 0 0 0 18;
    }
    LaunchScreen #launch-error {
        color: $text-error;
        height: auto;
        padding: 0 1;
    }
    LaunchScreen #launch-buttons {
        height: auto;
        align-horizontal: right;
        margin-top: 1;
    }
    LaunchScreen #launch-buttons Button {
        margin-left: 1;
    }
    LaunchScreen #launch-hint {
        color: $text-muted;
        margin-top: 1;
    }
    """

    def __init__(
        self,
        choices: Iterable[WorkflowChoice],
        preselect: str | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.choices: list[WorkflowChoice] = list(choices)
        self.preselect = preselect
        self.chosen: WorkflowChoice | None = None
        self._by_name = {choice.name: choice for choice in self.choices}
        self._filter = ""
        self._shown: list[WorkflowChoice] = list(self.choices)
        self._inputs: dict[str, Input] = {}
        self._drafts: dict[str, dict[str, str]] = {}
        self._preselected = False

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="launch-dialog"):
            yield Static("Launch a task", id="launch-heading", markup=False)
            with Vertical(id="launch-pick"):
                yield Static("", id="launch-filter", markup=False)
                yield OptionList(id="launch-list")
                yield Static("", id="launch-detail", markup=False)
            with Vertical(id="launch-form"):
                yield Static("", id="launch-summary", markup=False)
                yield VerticalScroll(id="launch-fields", can_focus=False)
                yield Static("", id="launch-error", markup=False)
                with Horizontal(id="launch-buttons"):
                    yield Button("Launch", id="launch-submit", variant="primary")
                    yield Button("Back", id="launch-back")
            yield Static("", id="launch-hint", markup=False)

    async def on_mount(self) -> None:
        self.query_one("#launch-form").display = False
        self.query_one("#launch-error").display = False
        self._refresh_list()
        choice = self._by_name.get(self.preselect) if self.preselect else None
        if choice is not None and choice.launchable:
            self._preselected = True
            await self._open_form(choice)
            return
        self._show_pick(highlight=choice.name if choice is not None else None)
        if self.preselect and choice is None:
            self._set_detail(f"There is no workflow named {self.preselect!r}; pick one from the list.", invalid=True)

    # -- step 1: pick a workflow -----------------------------------------------------------

    @property
    def step(self) -> int:
        """1 while picking a workflow, 2 while filling in its form."""
        return 2 if self.query_one("#launch-form").display else 1

    def _matches(self, choice: WorkflowChoice) -> bool:
        needle = self._filter.casefold()
        return needle in choice.name.casefold() or needle in choice.description.casefold()

    def _refresh_list(self, highlight: str | None = None) -> None:
        option_list = self.query_one("#launch-list", OptionList)
        self._shown = [choice for choice in self.choices if self._matches(choice)]
        option_list.set_options(Option(_choice_prompt(c), id=c.name) for c in self._shown)
        names = [c.name for c in self._shown]
        option_list.highlighted = names.index(highlight) if highlight in names else (0 if names else None)
        if self._filter:
            self.query_one("#launch-filter", Static).update(
                Content.assemble(("filter ", "dim"), (self._filter, "bold"), ("   backspace erases, escape clears", "dim"))
            )
        else:
            self.query_one("#launch-filter", Static).update(Content.styled("type to filter", "dim"))
        self._describe_highlighted()

    def _describe_highlighted(self) -> None:
        option_list = self.query_one("#launch-list", OptionList)
        if option_list.highlighted is None:
            if not self.choices:
                self._set_detail("No workflows found: put workflow files (*.yaml) in workflows/.", invalid=True)
            else:
                self._set_detail(f"No workflow matches {self._filter!r}.", invalid=True)
            return
        choice = self._shown[option_list.highlighted]
        if choice.workflow is None:
            self._set_detail(f"{choice.name} cannot be launched; its file is invalid:\n{choice.error}", invalid=True)
        else:
            self._set_detail(choice.description or f"{choice.name} ({choice.path})")

    def _set_detail(self, text: str, invalid: bool = False) -> None:
        detail = self.query_one("#launch-detail", Static)
        detail.update(text)
        detail.set_class(invalid, "-invalid")

    def _show_pick(self, highlight: str | None = None) -> None:
        self.query_one("#launch-form").display = False
        self.query_one("#launch-pick").display = True
        self.query_one("#launch-heading", Static).update("Launch a task: pick a workflow")
        self.query_one("#launch-hint", Static).update(
            "↑↓ choose · type to filter · enter next · escape " + ("clears the filter" if self._filter else "cancels")
        )
        if highlight is not None:
            self._refresh_list(highlight)
        self.query_one("#launch-list", OptionList).focus()

    @on(OptionList.OptionHighlighted, "#launch-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        self._describe_highlighted()

    @on(OptionList.OptionSelected, "#launch-list")
    async def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        choice = self._by_name.get(event.option.id or "")
        if choice is None or self.step != 1:
            return
        if not choice.launchable:
            self._describe_highlighted()
            self.app.bell()
            return
        await self._open_form(choice)

    def on_key(self, event: events.Key) -> None:
        """Type-to-filter: printable keys typed on the list narrow it down."""
        if self.step != 1 or not isinstance(self.focused, OptionList):
            return
        if event.key == "backspace" and self._filter:
            self._filter = self._filter[:-1]
        elif event.is_printable and event.character and (self._filter or not event.character.isspace()):
            self._filter += event.character
        else:
            return
        event.stop()
        event.prevent_default()
        self._refresh_list(self._highlighted_name())
        self._show_pick()

    def _highlighted_name(self) -> str | None:
        option = self.query_one("#launch-list", OptionList).highlighted_option
        return option.id if option is not None else None

    # -- step 2: the form ------------------------------------------------------------------

    async def _open_form(self, choice: WorkflowChoice) -> None:
        wf = choice.workflow
        assert wf is not None
        self.chosen = choice
        draft = self._drafts.get(choice.name, {})
        rows: list[Widget] = []
        self._inputs = {}
        if not wf.inputs:
            rows.append(Static("This workflow takes no inputs.", classes="launch-note", markup=False))
        for input_name, spec in wf.inputs.items():
            field = Input(
                value=draft.get(input_name, spec.default or ""),
                placeholder=_first_line(spec.description) or ("required" if spec.required else "optional"),
                validators=[_RequiredValidator()] if spec.required else None,
                validate_on=["submitted"],
                id=f"launch-input-{input_name}",
                classes="launch-input",
            )
            field.tooltip = spec.description.strip() or None
            self._inputs[input_name] = field
            label = f"{input_name} *" if spec.required else input_name
            rows.append(Horizontal(Label(label, classes="launch-label", markup=False), field, classes="launch-row"))
        if any(spec.required for spec in wf.inputs.values()):
            rows.append(Static("* required", classes="launch-note", markup=False))
        priority = Input(
            value=draft.get("\0priority", "0"),
            placeholder="a whole number; higher runs first",
            validators=[_PriorityValidator()],
            validate_on=["changed", "submitted"],
            id="launch-priority",
        )
        if wf.title:
            title_hint = f"default: {wf.title.strip()}"
        elif "title" in wf.inputs:
            title_hint = "default: the title input"
        else:
            title_hint = "default: the workflow's name"
        title = Input(value=draft.get("\0title", ""), placeholder=title_hint, id="launch-title")
        rows.append(Horizontal(Label("priority", classes="launch-label"), priority, classes="launch-row"))
        rows.append(Horizontal(Label("task title", classes="launch-label"), title, classes="launch-row"))

        fields = self.query_one("#launch-fields", VerticalScroll)
        await fields.remove_children()
        await fields.mount_all(rows)
        fields.scroll_home(animate=False)
        self.query_one("#launch-summary", Static).update(_summary(choice))
        self._show_error(None)
        self.query_one("#launch-heading", Static).update(Content.assemble("Launch ", (choice.name, "bold")))
        self.query_one("#launch-back", Button).label = "Cancel" if self._preselected else "Back"
        self.query_one("#launch-hint", Static).update(
            "tab next field · enter launches · escape " + ("cancels" if self._preselected else "goes back")
        )
        self.query_one("#launch-pick").display = False
        self.query_one("#launch-form").display = True
        first = next(iter(self._inputs.values()), priority)
        first.focus()

    def _keep_draft(self) -> None:
        if self.chosen is None:
            return
        draft = {name: field.value for name, field in self._inputs.items()}
        draft["\0priority"] = self.query_one("#launch-priority", Input).value
        draft["\0title"] = self.query_one("#launch-title", Input).value
        self._drafts[self.chosen.name] = draft

    def _show_error(self, message: str | None) -> None:
        error = self.query_one("#launch-error", Static)
        error.update(message or "")
        error.display = bool(message)

    @on(Input.Submitted)
    def _input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.step == 2:
            self.submit()

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        """Once a field is marked, clear the mark as soon as it is fixed."""
        if event.input.has_class("-invalid"):
            event.input.validate(event.value)

    @on(Button.Pressed, "#launch-submit")
    def _launch_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.submit()

    @on(Button.Pressed, "#launch-back")
    def _back_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_back()

    def submit(self) -> None:
        """Check the form; dismiss with a LaunchRequest, or say inline what is wrong."""
        choice = self.chosen
        if choice is None or choice.workflow is None or self.step != 2:
            return
        wf = choice.workflow
        problems: list[str] = []
        bad: list[Input] = []
        given: dict[str, str | None] = {}
        for input_name, spec in wf.inputs.items():
            field = self._inputs[input_name]
            field.validate(field.value)
            value = field.value
            # a required input of only spaces is a mistake, not a value
            given[input_name] = None if spec.required and not value.strip() else value
            if "\x00" in value:
                problems.append(f"input {input_name} contains a NUL byte, which no environment variable can carry")
                bad.append(field)
        inputs: dict[str, str] = {}
        try:
            inputs = resolve_inputs(wf, given)
        except ValueError as exc:
            problems.insert(0, str(exc))
            bad[:0] = [self._inputs[n] for n, v in given.items() if v is None and wf.inputs[n].required]
        priority_field = self.query_one("#launch-priority", Input)
        priority_field.validate(priority_field.value)
        priority = 0
        try:
            priority = parse_priority(priority_field.value)
        except ValueError as exc:
            problems.append(str(exc))
            bad.append(priority_field)
        title = self.query_one("#launch-title", Input).value.strip() or None
        if problems:
            self._show_error("\n".join(problems))
            if bad:
                bad[0].focus()
            return
        self._show_error(None)
        self.dismiss(LaunchRequest(choice.name, choice.path, inputs, priority, title))

    # -- escape ----------------------------------------------------------------------------

    def action_back(self) -> None:
        """Step 2 → step 1 (or cancel when preselected); step 1: clear the filter, then cancel."""
        if self.step == 2 and not self._preselected:
            self._keep_draft()
            self._show_pick(highlight=self.chosen.name if self.chosen else None)
        elif self.step == 1 and self._filter:
            self._filter = ""
            self._refresh_list(self._highlighted_name())
            self._show_pick()
        else:
            self.dismiss(None)
