"""The dashboard's refresh path under load: what keeps a key press quick while daughters
flood their logs (speed itself is measured by bench/ui.py, never asserted here)."""

from __future__ import annotations

import sys

from tacx.home import Home
from tacx.settings import Settings
from tacx.ui.app import GIL_SLICE_SECONDS, make_app
from tests.conftest import Project


async def test_the_dashboard_hands_the_gil_over_finely_while_it_runs(project: Project) -> None:
    before = sys.getswitchinterval()
    app = make_app(Home(project.home), Settings(), refresh_seconds=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert sys.getswitchinterval() == GIL_SLICE_SECONDS < before
        app.exit(0)
    assert sys.getswitchinterval() == before
