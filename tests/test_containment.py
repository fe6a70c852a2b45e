"""A stage's whole tree ends with it, also a grandchild that left the process group and
dropped the environment marker (`setsid env -i`): cgroup v2 where the machine allows it,
the marker sweep elsewhere; `tacx doctor` says which is in force."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from tacx.engine.local import cgroups
from tests.conftest import Project, wait_for

HAS_CGROUPS, WHY = cgroups.containment(Path("/tmp/tacx-containment-probe"), True)
needs_cgroups = pytest.mark.skipif(not HAS_CGROUPS, reason=f"no writable cgroup v2 here: {WHY}")

# The escapee: a new session and an empty environment, so neither the process group nor
# the marker knows it; it ignores SIGTERM (only SIGKILL ends it), writes its pid, sleeps.
ESCAPE = 'setsid env -i /bin/sh -c \'trap "" TERM; echo $$ > "$0"; exec sleep 300\' "$ESCAPEE" &'


def escapee_pid(project: Project) -> int:
    path = project.root / "escapee.pid"
    text = wait_for(lambda: path.exists() and path.read_text().strip(), what="the escapee's pid")
    return int(text)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def workflow(project: Project, run: str, **stage: str) -> None:
    project.env["ESCAPEE"] = str(project.root / "escapee.pid")
    settings = project.root / "tacx.yaml"
    if not settings.exists():
        settings.write_text("kill_grace: 1s\n")
    extra = "".join(f"\n            {k}: {v}" for k, v in stage.items())
    project.workflow("escape", f"""
        name: escape
        stages:
          - name: s
            provider: bash
            run: |
              {ESCAPE}
              while [ ! -s "$ESCAPEE" ]; do sleep 0.02; done
              {run}{extra}
    """)


@needs_cgroups
def test_a_timeout_ends_a_grandchild_that_left_the_group_and_the_marker(project: Project) -> None:
    workflow(project, "sleep 300", timeout="1s")
    project.tacx("run", "escape.yaml", "--no-ui", check=1)
    pid = escapee_pid(project)
    assert not alive(pid)
    stage = project.show(1)["stages"][0]
    assert stage["status"] == "timed_out"
    assert not any(Path(cgroups.cgroup_of("self") or "/").glob(f"{cgroups.parent_name(project.home)}/*"))


@needs_cgroups
def test_leftovers_of_a_daughter_that_exited_are_ended_through_its_cgroup(project: Project) -> None:
    workflow(project, "echo done")
    project.tacx("run", "escape.yaml", "--no-ui")
    pid = escapee_pid(project)
    wait_for(lambda: not alive(pid), what="the escapee ended")
    assert project.show(1)["status"] == "succeeded"


@needs_cgroups
def test_cancel_from_another_terminal_ends_the_escapee(project: Project) -> None:
    workflow(project, "sleep 300")
    project.submit("escape.yaml")
    project.start("--no-ui")
    pid = escapee_pid(project)
    project.tacx("cancel", "1")
    wait_for(lambda: project.show(1)["status"] == "cancelled", what="cancelled")
    wait_for(lambda: not alive(pid), what="the escapee ended")


@needs_cgroups
def test_after_kill9_the_keeper_ends_the_leftovers_of_a_stage_that_ended(project: Project) -> None:
    """tacx is gone, the daughter exits, its escapee lives on: nobody will ever watch that
    stage's tree again, so the keeper ends it through the cgroup."""
    gate = project.root / "gate"
    workflow(project, f"while [ ! -e {gate} ]; do sleep 0.05; done")
    project.submit("escape.yaml")
    coordinator = project.start("--no-ui")
    pid = escapee_pid(project)
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    gate.touch()
    wait_for(lambda: not alive(pid), what="the escapee ended by the keeper")
    project.tacx("--no-ui", "--exit-when-idle")
    assert project.show(1)["status"] == "succeeded"


def test_with_cgroups_off_the_marker_sweep_is_the_fallback_and_doctor_says_so(project: Project) -> None:
    (project.root / "tacx.yaml").write_text("cgroups: off\nkill_grace: 1s\n")
    checks = {c["check"]: c for c in json.loads(project.tacx("doctor", "--json").stdout)}
    assert checks["containment"]["status"] == "warn"
    assert "cgroups: off" in checks["containment"]["detail"] and "marker" in checks["containment"]["detail"]
    # A grandchild that keeps the marker is still found and ended ...
    project.workflow("marked", """
        name: marked
        stages:
          - {name: s, provider: bash, run: "setsid sleep 300 & sleep 300", timeout: 1s}
    """)
    project.tacx("run", "marked.yaml", "--no-ui", check=1)
    wait_for(lambda: project.marked_processes() == [], what="the marked grandchild swept")
    # ... one that dropped it escapes: the limit doctor warns about.
    workflow(project, "echo done")
    project.tacx("run", "escape.yaml", "--no-ui")
    pid = escapee_pid(project)
    try:
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


@needs_cgroups
def test_doctor_reports_cgroup_containment_where_the_machine_allows_it(project: Project) -> None:
    out = project.tacx("doctor").stdout
    line = next(ln for ln in out.splitlines() if "containment" in ln)
    assert line.startswith("ok") and "cgroup v2" in line and "cgroup.kill" in line
