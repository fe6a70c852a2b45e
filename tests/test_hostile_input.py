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

from tacx.bounds import MAX_RETRY_DELAY, TEXT_VALUE_LIMIT, handoff_text, retry_delay
from tacx.userfiles import FileRefused, read_text_file
from tacx.workflow.loader import WorkflowError, load_workflow_text
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
    from tacx.agents.registry import builtin_provider_kinds

    (tmp_path / "big.yaml").write_text(OK + "#" * (1 << 20))
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (tmp_path / "ok.yaml").write_text(OK)
    choices = {c.name: c for c in find_workflows([tmp_path], builtin_provider_kinds())}
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


# --- numbers -------------------------------------------------------------------------------


def test_ids_and_priorities_beyond_sqlite_are_usage_errors(project: Project) -> None:
    project.workflow("ok", OK)
    huge = "99999999999999999999"
    err = refused(project, "submit", "ok.yaml", "--priority", huge)
    assert "argument --priority: must be a whole number between -9223372036854775808 and 9223372036854775807" in err
    assert not project.home.exists()
    for command in ("show", "cancel", "retry", "logs", "clean"):
        err = refused(project, command, huge)
        assert "task ids are whole numbers between 1 and 9223372036854775807" in err, (command, err)
    assert "'12abc' is not a whole number" in refused(project, "show", "12abc")
    project.submit("ok.yaml", "--priority", str(-(2**63)))
    project.submit("ok.yaml", "--priority", str(2**63 - 1))
    assert sorted(t["priority"] for t in project.ls()) == [-(2**63), 2**63 - 1]
    assert "no task 9223372036854775807" in refused(project, "show", str(2**63 - 1))
    assert "argument --tasks: must be between 1 and 10000" in refused(project, "demo", "--no-ui", "--tasks", huge)


# --- names and values the loader refuses ------------------------------------------------------


def test_names_too_long_or_not_one_line() -> None:
    found = issues(f"name: x\nstages:\n  - {{name: {'a' * 5000}, provider: shell, run: 'true'}}\n")
    assert len(found) == 1 and found[0].startswith("w.yaml:3:12: stages[0].name: 'aaaa")
    assert "is 5,000 characters long; at most 100 are allowed (a stage's name is part of its log file's name)" in found[0]
    found = issues(f"name: {'w' * 101}\n" + OK.split("\n", 1)[1])
    assert found[0].startswith("w.yaml:1:7: name: ") and "is 101 characters long; at most 100" in found[0]
    for shown, escaped in (("a\\nb", "'\\n'"), ("a\\e[31mred", "'\\x1b'"), ("a\\tb", "'\\t'"), ("a\\u0085b", "'\\x85'")):
        found = issues(f'name: "{shown}"\n' + OK.split("\n", 1)[1])
        assert len(found) == 1 and found[0].startswith("w.yaml:1:7: name: "), found
        assert found[0].endswith(f"contains the control character {escaped}; a name is one line of plain text"), found
    assert load_workflow_text(f"name: {'w' * 100}\nstages:\n  - {{name: {'s' * 100}, provider: shell, run: 'true'}}\n", "w")


@pytest.mark.parametrize(
    ("stage", "where"),
    [
        ('{name: s, provider: shell, run: "echo \\0"}', "3:37: stages[0].run"),
        ('{name: s, provider: shell, run: "true", env: {A: "x\\0"}}', "3:54: stages[0].env.A"),
        ('{name: s, provider: mock, prompt: "hi\\0"}', "3:39: stages[0].prompt"),
        ('{name: s, provider: mock, prompt: hi, extra_args: ["--x\\0"]}', "3:56: stages[0].extra_args[0]"),
        ('{name: s, provider: shell, run: !!binary AA==}', "3:37: stages[0].run"),
    ],
    ids=["run", "env", "prompt", "extra_args", "binary"],
)
def test_a_nul_byte_in_any_value_is_refused_where_it_is(stage: str, where: str) -> None:
    found = issues(f"name: x\nstages:\n  - {stage}\n")
    assert any(f"w.yaml:{where}: " in issue for issue in found), found
    assert any("NUL byte" in issue or "binary" in issue for issue in found), found


def test_a_lone_surrogate_in_a_value_is_refused(project: Project) -> None:
    found = issues('name: "x\\ud800"\n' + OK.split("\n", 1)[1])
    assert found == ["w.yaml:1:7: name: contains '\\ud800', which is not a character (not UTF-8 text)"]
    (project.root / "s.yaml").write_text('name: "x\\ud800"\n' + OK.split("\n", 1)[1])
    assert "s.yaml:1:7: name: contains" in refused(project, "submit", "s.yaml")  # was UnicodeEncodeError
    assert not project.home.exists()


def test_a_needs_chain_of_1500_stages_is_refused_not_a_recursion_error(project: Project) -> None:
    n = 1500
    lines = [f"  - {{name: s{i}, provider: shell, run: 'true', needs: [{f's{i + 1}' if i + 1 < n else ''}]}}\n" for i in range(n)]
    (project.root / "chain.yaml").write_text("name: chain\nstages:\n" + "".join(lines))
    err = refused(project, "validate", "chain.yaml")
    assert "chain.yaml:3:3: stages: 1,500 stages; a workflow may have at most 100" in err, err
    wf = load_workflow_text("name: chain\nstages:\n" + "".join(lines[-100:]), "w.yaml")  # 100 is allowed
    assert wf.topo_order()[0] == "s1499"


def test_checking_a_hostile_file_stops_after_100_mistakes() -> None:
    """25,000 unknown names against 2,000 inputs took over five minutes to report."""
    inputs = "".join(f"  input_number_{i}: {{}}\n" for i in range(2000))
    text = f"name: t\ninputs:\n{inputs}stages:\n  - {{name: s, provider: mock, prompt: \"{'{{ inputs.nope }}' * 25000}\"}}\n"
    found = issues(text)
    assert len(found) == 101 and found[-1].endswith(": checking stopped after 100 mistakes"), found[-1]
    assert all("unknown name 'inputs.nope'" in issue for issue in found[:-1])


# --- inputs and titles ---------------------------------------------------------------------------


INPUTS = "name: in\ninputs: {x: {}}\nstages:\n  - {name: s, provider: shell, run: 'printf %s \"$TACX_INPUT_X\"'}\n"


def test_an_input_too_big_for_an_environment_variable_is_refused(project: Project) -> None:
    project.workflow("in", INPUTS)
    (project.root / "each.jsonl").write_text(json.dumps({"x": "y" * (TEXT_VALUE_LIMIT + 1)}) + "\n")
    err = refused(project, "submit", "in.yaml", "--each", "each.jsonl")
    assert f"each.jsonl:1: input x is {TEXT_VALUE_LIMIT + 1:,} bytes; a value may be at most 64 KiB" in err, err
    err = refused(project, "submit", "in.yaml", "-i", "x=" + "y" * (TEXT_VALUE_LIMIT + 1))
    assert "input x is 65,537 bytes" in err
    assert not project.home.exists()
    project.tacx("run", "in.yaml", "--no-ui", "-i", "x=" + "é" * (TEXT_VALUE_LIMIT // 2))
    assert (project.home / "logs" / "1" / "s.1.log").read_text() == "é" * (TEXT_VALUE_LIMIT // 2)


def test_binary_input_and_title_are_refused(project: Project) -> None:
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates, which
    the store cannot encode (a UnicodeEncodeError traceback before)."""
    project.workflow("in", INPUTS)
    binary = os.fsdecode(b"caf\xe9")
    assert "input x contains '\\udce9', which is not a character" in refused(project, "submit", "in.yaml", "-i", f"x={binary}")
    assert "argument --title: contains '\\udce9'" in refused(project, "submit", "in.yaml", "--title", binary)
    assert "argument --dedupe-key: contains" in refused(project, "submit", "in.yaml", "--dedupe-key", binary)
    assert "argument --workflow: contains" in refused(project, "ls", "--workflow", binary)
    (project.root / "each.jsonl").write_text('{"x": "\\ud800"}\n')
    assert "each.jsonl:1: input x contains '\\ud800'" in refused(project, "submit", "in.yaml", "--each", "each.jsonl")
    assert not project.home.exists()


def test_a_workflow_path_that_is_not_utf8_is_refused(project: Project) -> None:
    name = os.fsdecode(b"w\xff.yaml")  # how Python hands such a name to tacx
    (project.root / name).write_text(OK)
    assert "the workflow's path contains" in refused(project, "submit", name)
    assert not project.home.exists()


def test_inputs_and_titles_with_newlines_and_escapes(project: Project) -> None:
    project.workflow("in", INPUTS)
    task = project.submit("in.yaml", "-i", "x=line one\nline two\x1b[2J", "--title", "\x1b[31mred\x1b[0m\nsecond")
    listed = project.tacx("ls").stdout
    assert "\x1b" not in listed and "\\x1b[31mred\\x1b[0m" in listed
    shown = project.tacx("show", str(task)).stdout
    assert "\x1b" not in shown
    assert project.show(task)["title"] == "\x1b[31mred\x1b[0m"  # the first line, kept as given
    project.tacx("--no-ui", "--exit-when-idle")
    assert (project.home / "logs" / str(task) / "s.1.log").read_text() == "line one\nline two\x1b[2J"


# --- retries -------------------------------------------------------------------------------


def test_retry_delay_doubles_caps_at_an_hour_and_never_overflows() -> None:
    assert [retry_delay(2.0, n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert retry_delay(2.0, 12) == MAX_RETRY_DELAY == 3600.0
    assert retry_delay(0.0, 1025) == 0.0 and retry_delay(0.0, 10**9) == 0.0  # 2 ** 1024 overflowed a float
    assert retry_delay(5.0, 10**9) == 3600.0
    assert retry_delay(7200.0, 1) == 7200.0 and retry_delay(7200.0, 50) == 7200.0  # a long backoff is kept
    assert retry_delay(1e308, 3000) == 1e308


def test_a_stage_retried_1100_times_ends_failed(project: Project) -> None:
    """Took ~5 s here: each attempt is a /bin/sh; before the fix attempt 1025 raised OverflowError."""
    project.workflow("r", "name: r\nstages:\n  - {name: s, provider: shell, run: 'exit 3', retries: 1100, backoff: 0}\n")
    out = project.tacx("run", "r.yaml", "--no-ui", check=1)
    assert "internal error" not in out.stdout + out.stderr
    task = project.show(1)
    assert task["status"] == "failed" and task["stages"][0]["attempt"] == 1101
    assert task["stages"][0]["status"] == "failed"


# --- results handed to later stages ------------------------------------------------------------


def test_handoff_text() -> None:
    assert handoff_text(None) is None
    assert handoff_text("a\x00b") == "ab"
    assert handoff_text("ok \ud800 done") == "ok \ufffd done"
    cut = handoff_text("\ufffd" * 65536)  # what 64 KiB of 0xFF bytes decode to: 192 KiB
    assert cut is not None and len(cut.encode()) <= TEXT_VALUE_LIMIT and cut.endswith("…")
    assert handoff_text("x" * TEXT_VALUE_LIMIT) == "x" * TEXT_VALUE_LIMIT
    assert handoff_text("é" * TEXT_VALUE_LIMIT).startswith("é" * 1000)


def test_a_nul_byte_in_a_result_does_not_break_later_stages(project: Project) -> None:
    project.workflow("nul", """
        name: nul
        stages:
          - {name: emit, provider: shell, run: "printf 'a\\\\0b\\\\n'"}
          - {name: read, provider: bash, run: 'echo "got [$TACX_RESULT_EMIT]"'}
          - {name: tail, provider: python, run: "print('x' * 10 + '\\\\xff' * 70000)"}
          - {name: last, provider: bash, run: 'echo "${#TACX_RESULT_TAIL}"'}
    """)
    out = project.tacx("run", "nul.yaml", "--no-ui")
    assert "Traceback" not in out.stderr
    task = project.show(1)
    assert task["status"] == "succeeded", task
    stages = {s["name"]: s for s in task["stages"]}
    assert stages["emit"]["result"] == "ab" and stages["read"]["result"] == "got [ab]"
    assert (project.home / "logs" / "1" / "emit.1.log").read_bytes() == b"a\x00b\n"  # the log keeps every byte
    assert len(stages["tail"]["result"].encode()) <= TEXT_VALUE_LIMIT
    assert int(stages["last"]["result"]) > 10_000


def test_an_agent_result_with_a_lone_surrogate_is_handed_on(project: Project) -> None:
    agent = project.root / "agent.py"
    agent.write_text(
        "import json, sys\n"
        "print(json.dumps({'type': 'system', 'subtype': 'init', 'session_id': 's1', 'model': 'm'}))\n"
        "print('{\"type\": \"result\", \"subtype\": \"success\", \"is_error\": false, \"num_turns\": 1,'\n"
        "      ' \"session_id\": \"s1\", \"result\": \"done \\\\ud800 \\\\u0000 ok\"}')\n"
    )
    (project.root / "tacx.yaml").write_text(
        f"providers:\n  fake: {{argv: [{sys.executable}, {agent}, '{{{{ prompt }}}}'], parser: claude-stream-json}}\n"
    )
    project.workflow("a", """
        name: a
        stages:
          - {name: work, provider: fake, prompt: go}
          - {name: next, provider: bash, run: 'echo "[$TACX_RESULT_WORK]"'}
    """)
    project.tacx("run", "a.yaml", "--no-ui")
    stages = {s["name"]: s for s in project.show(1)["stages"]}
    assert stages["work"]["result"] == "done \ufffd  ok"
    assert stages["next"]["result"] == "[done \ufffd  ok]"


def test_an_environment_over_the_kernels_limit_fails_the_stage_saying_why(project: Project) -> None:
    """Three 60 kB results in one env value: the spawn is refused (E2BIG); the stage fails
    saying why, and the stages after it still run."""
    project.workflow("big", """
        name: big
        stages:
          - {name: a, provider: python, run: 'print("x" * 60000)'}
          - name: b
            provider: bash
            env: {BIG: "{{ stages.a.result }}{{ stages.a.result }}{{ stages.a.result }}"}
            run: echo ${#BIG}
          - {name: c, provider: shell, when: always, run: echo still fine}
    """)
    project.tacx("run", "big.yaml", "--no-ui", check=1)
    stages = {s["name"]: s for s in project.show(1)["stages"]}
    assert "Argument list too long" in stages["b"]["error"] and "over the kernel's limits" in stages["b"]["error"]
    assert stages["c"]["status"] == "succeeded" and stages["c"]["result"] == "still fine"
