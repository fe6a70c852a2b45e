"""Hostile use of issue 12's commands (init, rm/prune, colour, pipes), through the real `tacx`:
each test here broke once."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Project


def test_init_force_refuses_a_folder_named_tacx_yaml_and_replaces_a_link_not_its_target(project: Project, tmp_path: Path) -> None:
    (project.root / "tacx.yaml").mkdir()
    refused = project.tacx("init", "--force", check=2)  # was exit 70: IsADirectoryError
    assert "tacx.yaml" in refused.stderr and "folder" in refused.stderr
    assert not (project.root / "workflows").exists()
    (project.root / "tacx.yaml").rmdir()

    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me\n")
    (project.root / "tacx.yaml").symlink_to(elsewhere)
    project.tacx("init", "--force")
    assert elsewhere.read_text() == "keep me\n"  # was overwritten through the link
    assert not (project.root / "tacx.yaml").is_symlink()
    assert "max_workers" in (project.root / "tacx.yaml").read_text()
