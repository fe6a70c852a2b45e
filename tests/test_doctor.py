"""`tacx doctor`: each check for real, in words a user acts on; exit 1 only on a failure."""

from __future__ import annotations

import json

from tests.conftest import Project, wait_for


def test_a_fresh_project_passes_and_says_what_it_checked(project: Project) -> None:
    checks = {c["check"]: c for c in json.loads(project.tacx("doctor", "--json").stdout)}
    assert {"home", "store", "coordinator", "containment", "keeper", "pidfd", "provider shell"} <= set(checks)
    assert checks["keeper"]["status"] == "ok" and "keeper" in checks["keeper"]["detail"]
    assert checks["provider python"]["status"] == "ok"
    assert not project.home.exists() or not (project.home / "tacx.db").exists()  # it wrote no store


def test_a_corrupt_store_fails_the_doctor_with_the_remedy(project: Project) -> None:
    project.home.mkdir()
    (project.home / "tacx.db").write_bytes(b"\x00garbage" * 1000)
    out = project.tacx("doctor", check=1).stdout
    line = next(ln for ln in out.splitlines() if " store " in ln)
    assert line.startswith("FAIL") and "corrupt" in line and "mv " in line
    assert "Traceback" not in out


def test_a_running_coordinator_is_named(project: Project) -> None:
    project.start("--no-ui")
    wait_for(lambda: (project.home / "lock").exists() and "running: pid" in project.tacx("doctor").stdout,
             what="the doctor naming the coordinator")
