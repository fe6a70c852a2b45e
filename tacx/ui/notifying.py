"""tacx.yaml's `notify:` rules in the dashboard: the terminal channel rings and writes its
desktop-notification sequences through Textual's driver (never around it: the screen is
Textual's), and shows a toast; a channel that gives up says so in a toast. Toasts are
never read as markup: an issue title such as "Fix [/x]" would raise as it is drawn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tacx.engine.coordinator import Coordinator
from tacx.home import Home
from tacx.settings import Settings

if TYPE_CHECKING:
    from textual.app import App

    from tacx.server.notify.notifier import Notifier


def dashboard_notifier(app: App, home: Home, settings: Settings, coordinator: Coordinator) -> Notifier | None:
    if not settings.notify:
        return None
    from tacx.server.notify.notifier import start_notifications
    from tacx.server.notify.terminal import TerminalChannel

    def write(sequence: str) -> None:
        """The sequences are written as App.bell writes its BEL: through the app's driver,
        between its frames, and not at all when headless (run_test) or not yet started."""
        driver = app._driver
        if not app.is_headless and driver is not None:
            driver.write(sequence)

    terminal = TerminalChannel(write, app.bell, lambda text: app.notify(text, title="tacx notify", timeout=10, markup=False))
    return start_notifications(home, settings.notify, coordinator.bus, coordinator.lifecycle.done, terminal=terminal,
                               say=lambda line: app.notify(line, severity="warning", timeout=15, markup=False))
