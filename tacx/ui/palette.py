"""The command palette's "Launch <workflow>" entries: one for every workflow the dashboard
found, each opening the launch form on it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider as CommandProvider

from tacx.ui.launch import WorkflowChoice


@runtime_checkable
class Launcher(Protocol):
    """What the palette needs of the app: the workflows found, and the launch form."""

    workflow_choices: list[WorkflowChoice]

    def open_launch(self, preselect: str | None) -> None: ...


class WorkflowCommands(CommandProvider):
    """The command palette offers "Launch <workflow>" for every workflow found."""

    async def discover(self) -> Hits:
        """Listed as soon as the palette opens, before anything is typed."""
        app = self.app
        assert isinstance(app, Launcher)
        for choice in app.workflow_choices:
            help_text = choice.error or (choice.workflow.description if choice.workflow else "")
            yield DiscoveryHit(f"Launch {choice.name}", lambda name=choice.name: app.open_launch(name), help=help_text)

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, Launcher)
        matcher = self.matcher(query)
        for choice in app.workflow_choices:
            label = f"Launch {choice.name}"
            score = matcher.match(label)
            if score > 0:
                help_text = choice.error or (choice.workflow.description if choice.workflow else "")
                yield Hit(score, matcher.highlight(label), lambda name=choice.name: app.open_launch(name), help=help_text)
