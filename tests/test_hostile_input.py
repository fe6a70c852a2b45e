"""Hostile input (issue 8): files that are not text, not files, too big or too deep; numbers
beyond SQLite's; names and values no command line can carry; results that would break the
next stage. Each is refused with a sentence and exit 2 and nothing written, or made safe,
never a traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tacx.userfiles import FileRefused, read_text_file
from tacx.workflow import WorkflowError, load_workflow_text
from tests.conftest import Project

OK = "name: ok\nstages:\n  - {name: s, provider: shell, run: 'echo hi'}\n"


def refused(project: Project, *args: str) -> str:
    """Run tacx expecting exit 2 with no traceback; its stderr."""
    proc = project.tacx(*args, check=2)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def issues(text: str) -> list[str]:
    with pytest.raises(WorkflowError) as caught:
        load_workflow_text(text, "w.yaml")
    return [str(issue) for issue in caught.value.issues]


# --- files ---------------------------------------------------------------------------------


def test_a_workflow_that_is_not_utf8_is_refused_by_submit_and_run(project: Project) -> None:
    (project.root / "latin1.yaml").write_bytes(b"name: x\nstages:\n  - {name: s, provider: shell, run: 'echo caf\xe9'}\n")
    for command in (["validate"], ["submit"], ["run", "--no-ui"]):
        err = refused(project, command[0], "latin1.yaml", *command[1:])
        assert "latin1.yaml:3:46: not UTF-8 text (invalid continuation byte, byte 0xe9)" in err, err
    assert not project.home.exists()


def test_what_is_stored_is_exactly_the_text_validated(project: Project) -> None:
    text = "# caf\u00e9 \u2713 comment\n" + OK
    (project.root / "ok.yaml").write_text(text, encoding="utf-8")
    task = project.submit("ok.yaml")
    assert project.query("SELECT workflow_text FROM tasks WHERE id = ?", task)[0][0] == text


def test_not_a_regular_file_is_refused_without_hanging(project: Project) -> None:
    os.mkfifo(project.root / "fifo.yaml")  # reading it would wait for a writer forever
    (project.root / "folder.yaml").mkdir()
    assert "fifo.yaml:1:1: is a named pipe (FIFO), not a regular file" in refused(project, "validate", "fifo.yaml")
    assert "folder.yaml:1:1: is a directory, not a regular file" in refused(project, "validate", "folder.yaml")
    assert "/dev/zero:1:1: is a character device" in refused(project, "validate", "/dev/zero")  # no MemoryError
    for name in ("fifo.yaml", "folder.yaml", "/dev/zero"):
        assert "no workflow file" in refused(project, "submit", name)
    assert not project.home.exists()


def test_a_workflow_over_1_mib_is_refused_everywhere_it_is_read(project: Project) -> None:
    big = OK + "# " + "x" * (1 << 20) + "\n"
    (project.root / "big.yaml").write_text(big)
    for command in (["validate"], ["submit"], ["run", "--no-ui"]):
        err = refused(project, command[0], "big.yaml", *command[1:])
        assert f"big.yaml:1:1: is {len(big):,} bytes; a workflow file may be at most 1 MiB" in err, err
    assert not project.home.exists()
    (project.root / "workflows").mkdir()
    (project.root / "workflows" / "big.yaml").write_text(big)
    os.mkfifo(project.root / "workflows" / "pipe.yaml")
    listed = project.tacx("workflows").stdout
    assert "big                      INVALID" in listed and "pipe                     INVALID" in listed


def test_the_launch_form_reads_workflows_through_the_bounded_reader(tmp_path: Path) -> None:
    from tacx.ui.launch import find_workflows
    from tacx.workflow import BUILTIN_PROVIDER_KINDS

    (tmp_path / "big.yaml").write_text(OK + "#" * (1 << 20))
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (tmp_path / "ok.yaml").write_text(OK)
    choices = {c.name: c for c in find_workflows([tmp_path], BUILTIN_PROVIDER_KINDS)}
    assert choices["ok"].workflow is not None
    assert "a workflow file may be at most 1 MiB" in choices["big"].error
    assert "latin1.yaml:1:10: not UTF-8 text" in choices["latin1"].error


def test_the_bounded_reader(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"ab\nc\xc3\xa9d\xff\n")
    with pytest.raises(FileRefused) as caught:
        read_text_file(path, 100, "a file")
    assert (caught.value.line, caught.value.col) == (2, 4)  # é is one column
    path.write_bytes(b"x" * 101)
    with pytest.raises(FileRefused, match="is 101 bytes; a file may be at most 100 bytes"):
        read_text_file(path, 100, "a file")
    path.write_bytes(b"")
    assert read_text_file(path, 100, "a file") == ""
    with pytest.raises(FileRefused, match="cannot read the file: No such file"):
        read_text_file(tmp_path / "absent", 100, "a file")


def test_an_empty_workflow_file_is_refused(project: Project) -> None:
    (project.root / "empty.yaml").write_text("")
    assert "empty.yaml:1:1: the file is empty" in refused(project, "submit", "empty.yaml")
    assert not project.home.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"max_workers: 2\n# caf\xe9\n", "tacx.yaml:2:6: not UTF-8 text"),
        (b"max_workers: " + b"[" * 5000, "tacx.yaml:1:77: nested more than 64 levels deep"),
        (b"max_workers: 2\nx: \x01\n", "tacx.yaml:2:4: invalid YAML: special characters are not allowed"),
        (b"# " + b"x" * (1 << 20), "tacx.yaml:1:1: is 1,048,578 bytes; tacx.yaml may be at most 1 MiB"),
    ],
    ids=["not-utf8", "too-deep", "control-character", "too-big"],
)
def test_a_hostile_tacx_yaml_is_refused(project: Project, content: bytes, message: str) -> None:
    (project.root / "tacx.yaml").write_bytes(content)
    project.workflow("ok", OK)
    err = refused(project, "submit", "ok.yaml")
    assert message in err, err
    assert not project.home.exists()


def test_a_tacx_yaml_that_is_not_a_file_is_refused(project: Project) -> None:
    (project.root / "tacx.yaml").mkdir()
    project.workflow("ok", OK)
    assert "tacx.yaml:1:1: is a directory, not a regular file" in refused(project, "validate", "ok.yaml")


def test_each_file_that_is_not_text_or_not_a_file(project: Project) -> None:
    project.workflow("in", "name: in\ninputs: {x: {}}\nstages:\n  - {name: s, provider: shell, run: 'true'}\n")
    (project.root / "latin1.jsonl").write_bytes(b'{"x": "ok"}\n{"x": "caf\xe9"}\n')
    assert "latin1.jsonl:2:11: not UTF-8 text" in refused(project, "submit", "in.yaml", "--each", "latin1.jsonl")
    os.mkfifo(project.root / "pipe.jsonl")
    assert "pipe.jsonl:1:1: is a named pipe (FIFO)" in refused(project, "submit", "in.yaml", "--each", "pipe.jsonl")
    assert "is a directory" in refused(project, "submit", "in.yaml", "--each", str(project.root))
    assert not project.home.exists()


def test_each_line_may_hold_a_line_separator(project: Project) -> None:
    """JSON strings may hold U+2028 unescaped; splitlines() cut such a line in two."""
    project.workflow("in", "name: in\ninputs: {x: {}}\nstages:\n  - {name: s, provider: shell, run: 'true'}\n")
    (project.root / "each.jsonl").write_text('{"x": "a\u2028b"}\n{"x": "c"}\n', encoding="utf-8")
    assert len(project.tacx("submit", "in.yaml", "--each", "each.jsonl").stdout.split()) == 2
    assert project.show(1)["inputs"]["x"] == "a\u2028b"


# --- nesting -------------------------------------------------------------------------------


def test_yaml_nested_thousands_deep_is_refused_where_it_crosses(project: Project) -> None:
    assert issues("name: x\nstages: " + "[" * 5000 + "]" * 5000) == ["w.yaml:2:72: nested more than 64 levels deep"]
    block = "name: x\nstages:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(1000))
    assert issues(block) == ["w.yaml:66:65: nested more than 64 levels deep"]  # the 65th mapping's first key
    (project.root / "deep.yaml").write_text("[" * 5000 + "]" * 5000)
    assert "deep.yaml:1:65: nested more than 64 levels deep" in refused(project, "validate", "deep.yaml")
    assert "deep.yaml:1:65: nested more than 64 levels deep" in refused(project, "submit", "deep.yaml")


def test_aliases_and_merges_cannot_nest_past_the_bound() -> None:
    chain = "".join(f"a{i}: &a{i} [{f'*a{i - 1}' if i else 1}]\n" for i in range(200))
    found = issues("name: x\n" + chain + OK.split("\n", 1)[1])
    assert any("nested more than 64 levels deep through aliases or merges" in issue for issue in found), found
    merges = "".join(f"m{i}: &m{i} {{<<: *m{i - 1}}}\n" if i else "m0: &m0 {k: 1}\n" for i in range(440))
    found = issues("name: x\n" + merges + OK.split("\n", 1)[1])
    assert any("through aliases or merges" in issue for issue in found), found
    # A mapping merging itself was an AttributeError.
    assert "w.yaml:2:4: a: an alias refers to a value that contains it" in issues("name: x\na: &a {<<: *a}\n")


def test_nesting_up_to_the_bound_is_read() -> None:
    """The root mapping is level 1: 63 lists inside it are 64 levels, the 64th is refused."""
    assert not any("nested" in issue for issue in issues("name: x\nstages: " + "[" * 63 + "]" * 63))
    assert issues("name: x\nstages: " + "[" * 64 + "]" * 64) == ["w.yaml:2:72: nested more than 64 levels deep"]
