"""The checks that span fields: names that must exist, agree or differ, providers that
match their stage, and the rule that ``run:`` scripts take no templates (inputs reach
scripts only as environment variables, so no text from an issue is spliced into a shell).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tacx.workflow.document import Document, Loc, suggest
from tacx.workflow.model import IDENTIFIER, SCRIPT_LANGUAGES, SETUP_STAGE, input_env_name
from tacx.workflow.templates import not_plain_message, scan

_TASK_NAMES = ("task.id", "task.title", "task.trace_id")


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _entries(value: Any, path: Loc) -> list[tuple[Loc, str]]:
    """(path, name) for each name in ``x`` or ``[x, y]``, the forms provider and needs take."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [(path + (i,), item) for i, item in enumerate(value) if isinstance(item, str)]
    return []


class References:
    """Checks pydantic cannot make field by field: names that must exist, agree or differ.

    They read the raw data, so they run (and report) even where pydantic found mistakes.
    """

    def __init__(self, data: dict, kinds: Mapping[str, str], doc: Document) -> None:
        self.data, self.kinds, self.doc = data, kinds, doc
        stages = data.get("stages")
        stages = stages if isinstance(stages, list) else []
        self.stages = [(i, stage) for i, stage in enumerate(stages) if isinstance(stage, dict)]
        self.inputs = [name for name in _mapping(data.get("inputs")) if isinstance(name, str)]
        self.names: dict[str, int] = {}  # stage name -> index of the stage that first uses it

    def run(self) -> None:
        self._input_clashes()
        self._stage_names()
        if self.data.get("setup") is not None and SETUP_STAGE in self.names:
            self.doc.add(
                ("stages", self.names[SETUP_STAGE], "name"),
                f"a stage named '{SETUP_STAGE}' clashes with the workflow's setup: (which runs as a stage of that name)",
            )
        inputs = [f"inputs.{name}" for name in self.inputs]
        everywhere = inputs + [f"stages.{name}.result" for name in self.names] + [*_TASK_NAMES, "workflow.name"]
        for key in ("title", "dedupe_key"):
            self._template((key,), self.data.get(key), inputs + ["workflow.name"], submit_time=True)
        defaults = _mapping(self.data.get("defaults"))
        for key, value in _mapping(defaults.get("env")).items():
            self._template(("defaults", "env", key), value, everywhere)
        default_kind = self._provider_kind(defaults.get("provider"), ("defaults", "provider"))
        for i, stage in self.stages:
            path: Loc = ("stages", i)
            self._template(path + ("prompt",), stage.get("prompt"), everywhere)
            for key, value in _mapping(stage.get("env")).items():
                self._template(path + ("env", key), value, everywhere)
            self._script(path + ("run",), stage.get("run"))
            self._stage_provider(i, stage, default_kind, defaults.get("provider") is not None)
            self._needs(i, stage)
            self._loop(i, stage)
        self._cycles()

    def _label(self, stage: dict) -> str:
        name = stage.get("name")
        return f"stage '{name}'" if isinstance(name, str) else "this stage"

    def _input_clashes(self) -> None:
        first: dict[str, str] = {}
        for name in self.inputs:
            if not IDENTIFIER.fullmatch(name):
                continue
            env = input_env_name(name)
            if env in first:
                self.doc.add(("inputs", name), f"input '{name}' clashes with '{first[env]}': both become ${env}", at="key")
            else:
                first[env] = name

    def _stage_names(self) -> None:
        """Names must differ, also as $TACX_RESULT_<STAGE> (upper case, '-' as '_')."""
        by_env: dict[str, str] = {}
        for i, stage in self.stages:
            name = stage.get("name")
            if not isinstance(name, str):
                continue
            env = "TACX_RESULT_" + name.upper().replace("-", "_")
            if name in self.names:
                self.doc.add(("stages", i, "name"), f"duplicate stage name '{name}' (also stages[{self.names[name]}])")
                continue
            if env in by_env:
                self.doc.add(("stages", i, "name"), f"stage '{name}' clashes with '{by_env[env]}': both become ${env}")
            by_env[env] = name
            self.names[name] = i

    def _template(self, path: Loc, value: Any, known: list[str], submit_time: bool = False) -> None:
        if not isinstance(value, str):
            return
        for token in scan(value):
            if token.name is None:
                message = not_plain_message(token)
            elif token.name in known:
                continue
            elif submit_time and not token.name.startswith("inputs."):
                message = (
                    f"'{token.name}' is not known when the task is submitted; "
                    f"{path[-1]} may use only {', '.join(known)}"
                )
            else:
                message = f"unknown name '{token.name}'{suggest(token.name, known)}; known names: {', '.join(known)}"
            self.doc.add_in_text(path, token.start, message)

    def _script(self, path: Loc, run: Any) -> None:
        """The security rule: no template reaches a shell; scripts read the environment."""
        tokens = scan(run) if isinstance(run, str) else []
        if not tokens:
            return
        name = tokens[0].name or ""
        input_name = name.removeprefix("inputs.")
        is_input = name.startswith("inputs.") and IDENTIFIER.fullmatch(input_name)
        example = input_env_name(input_name) if is_input else "TACX_INPUT_<NAME>"
        self.doc.add_in_text(
            path,
            tokens[0].start,
            "scripts take no {{ }} substitution (inputs reach scripts only as environment variables); "
            f"use ${example} (inputs), $TACX_RESULT_<STAGE> (stage results), $TACX_TASK_ID",
        )

    def _provider_kind(self, value: Any, where: Loc) -> tuple[str, str] | None:
        """(kind, first provider) of a ``provider:`` value, reporting unknown names and mixes."""
        found: dict[str, str] = {}
        for path, name in _entries(value, where):
            if name in self.kinds:
                found.setdefault(self.kinds[name], name)
            else:
                known = ", ".join(sorted(self.kinds))
                self.doc.add(path, f"unknown provider '{name}'{suggest(name, self.kinds)}; known: {known}")
        if len(found) > 1:
            mixed = " and ".join(f"{kind} provider '{name}'" for kind, name in found.items())
            self.doc.add(where, f"mixes {mixed}; a stage runs either a script or a prompt")
            return None
        languages: dict[str, str] = {}
        for _, name in _entries(value, where):
            if self.kinds.get(name) == "script":
                languages.setdefault(SCRIPT_LANGUAGES.get(name, name), name)
        if len(languages) > 1:
            names = " and ".join(f"'{name}'" for name in languages.values())
            self.doc.add(where, f"mixes {names}, which read different languages; one run: script needs one")
            return None
        return next(iter(found.items()), None)

    def _stage_provider(self, i: int, stage: dict, default_kind: tuple[str, str] | None, has_default: bool) -> None:
        path: Loc = ("stages", i)
        label = self._label(stage)
        if "provider" in stage:
            kind = self._provider_kind(stage["provider"], path + ("provider",))
        elif has_default:
            kind = default_kind
        else:
            self.doc.add(path, f"{label} has no provider; set provider: on the stage or in defaults:")
            return
        if kind is None:
            return
        has_run, has_prompt = stage.get("run") is not None, stage.get("prompt") is not None
        scripts = ", ".join(sorted(n for n, k in self.kinds.items() if k == "script"))
        if kind[0] == "script" and has_prompt:
            self.doc.add(
                path + ("prompt",),
                f"{label} has prompt:, but its provider '{kind[1]}' runs scripts; "
                "give run: or use an agent provider",
                at="key",
            )
        elif kind[0] == "script" and not has_run:
            self.doc.add(path, f"{label} needs run: (its provider '{kind[1]}' runs scripts)")
        elif kind[0] == "agent" and has_run:
            self.doc.add(
                path + ("run",),
                f"{label} has run:, but its provider '{kind[1]}' is an agent that takes prompt:; "
                f"scripts run on {scripts}",
                at="key",
            )
        elif kind[0] == "agent" and not has_prompt:
            self.doc.add(path, f"{label} needs prompt: (its provider '{kind[1]}' is an agent)")

    def _needs(self, i: int, stage: dict) -> None:
        own = stage.get("name")
        for path, name in _entries(stage.get("needs"), ("stages", i, "needs")):
            if name == own:
                self.doc.add(path, f"stage '{own}' cannot need itself")
            elif name not in self.names:
                self.doc.add(path, self._unknown_stage(name))

    def _unknown_stage(self, name: str) -> str:
        return f"unknown stage '{name}'{suggest(name, self.names)}; stages: {', '.join(self.names)}"

    def _loop(self, i: int, stage: dict) -> None:
        target = _mapping(stage.get("loop")).get("back_to")
        if not isinstance(target, str):
            return
        path: Loc = ("stages", i, "loop", "back_to")
        if target not in self.names:
            self.doc.add(path, self._unknown_stage(target))
        elif self.names[target] >= i:
            self.doc.add(
                path, f"loop.back_to must name an earlier stage; '{target}' does not come before {self._label(stage)}"
            )

    def _cycles(self) -> None:
        graph: dict[str, list[tuple[str, Loc]]] = {}
        for i, stage in self.stages:
            name = stage.get("name")
            if isinstance(name, str) and self.names.get(name) == i:
                entries = _entries(stage.get("needs"), ("stages", i, "needs"))
                graph[name] = [(dep, path) for path, dep in entries if dep in self.names and dep != name]
        state: dict[str, bool] = {}  # name -> still on the trail
        trail: list[str] = []

        def visit(name: str) -> None:
            state[name] = True
            trail.append(name)
            for dep, path in graph[name]:
                if state.get(dep):
                    cycle = trail[trail.index(dep) :] + [dep]
                    self.doc.add(path, f"needs form a cycle: {' -> '.join(cycle)}")
                elif dep not in state:
                    visit(dep)
            trail.pop()
            state[name] = False

        for name in graph:
            if name not in state:
                visit(name)
