"""Workflow files: every mistake is reported at the right line and column, and
templates never turn input text into code (the template language itself: test_templates.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tacx.workflow.document import Issue
from tacx.workflow import model as model_module
from tacx.workflow.loader import WorkflowError, load_workflow, load_workflow_text
from tacx.agents.registry import builtin_provider_kinds
from tacx.workflow.model import (
    Workflow,
    input_env_name,
    parse_duration,
    resolve_inputs,
    workflow_json_schema,
)

DATA = Path(__file__).parent / "data"
KINDS = {**builtin_provider_kinds(), "claude": "agent"}

# file, line, col, part of the message, the text found at line:col (checked against the file)
MALFORMED = [
    ("yaml_syntax.yaml", 5, 14, "mapping values are not allowed here", ": all"),
    ("tab_indent.yaml", 4, 1, "indent with spaces, not tabs", "\tprovider"),
    ("duplicate_key.yaml", 6, 5, "duplicate key 'run' (first on line 5)", "run: pytest -q --lf"),
    ("unknown_top_key.yaml", 2, 1, "unknown key 'stagse' (did you mean 'stages'?)", "stagse:"),
    ("unknown_stage_key.yaml", 6, 5, "unknown key 'timout' (did you mean 'timeout'?)", "timout:"),
    ("missing_stages.yaml", 2, 1, "missing required key 'stages'", "name: no-stages"),
    ("empty_stages.yaml", 2, 9, "a workflow needs at least one stage", "[]"),
    ("stage_without_name.yaml", 3, 5, "missing required key 'name'", "provider: bash"),
    ("duplicate_stage_names.yaml", 6, 11, "duplicate stage name 'test' (also stages[0])", "test"),
    ("stage_result_clash.yaml", 6, 11, "clashes with 'code-review': both become $TACX_RESULT_CODE_REVIEW", "code_"),
    ("duration_words.yaml", 6, 14, "invalid duration '20 minutes'", "20 minutes"),
    ("duration_negative.yaml", 4, 17, "cannot be negative", "-5s"),
    ("retries_negative.yaml", 6, 14, "must be at least 0, got the number -1", "-1"),
    ("unknown_provider.yaml", 4, 22, "unknown provider 'bsh' (did you mean 'bash'?); known: aider, bash,", "bsh]"),
    ("no_provider.yaml", 3, 5, "stage 'build' has no provider", "name: build"),
    ("script_without_run.yaml", 3, 5, "stage 'build' needs run:", "name: build"),
    ("script_with_prompt.yaml", 5, 5, "its provider 'shell' runs scripts", "prompt:"),
    ("agent_with_run.yaml", 5, 5, "'claude' is an agent that takes prompt:", "run:"),
    ("mixed_providers.yaml", 4, 15, "mixes agent provider 'claude' and script provider 'bash'", "[claude, bash]"),
    (
        "run_template.yaml",
        7,
        31,
        "inputs reach scripts only as environment variables); use $TACX_INPUT_TITLE (inputs)",
        "{{ inputs.title }}",
    ),
    ("prompt_unknown_name.yaml", 11, 16, "unknown name 'inputs.nope' (did you mean 'inputs.title'?)", "{{ inputs.nope }}"),
    ("template_expression.yaml", 5, 26, "not a plain {{ dotted.name }}: '{{ 1 + 1 }}'", "{{ 1 + 1 }}"),
    ("template_filter.yaml", 9, 7, "not a plain {{ dotted.name }}", "{{ inputs.title | upper }}"),
    ("title_task_id.yaml", 2, 13, "'task.id' is not known when the task is submitted", "{{ task.id }}"),
    ("unquoted_template.yaml", 4, 9, "a value starting with '{{' or '[' must be quoted", "{ inputs.title }"),
    ("needs_unknown.yaml", 8, 13, "unknown stage 'biuld' (did you mean 'build'?)", "biuld"),
    ("needs_cycle.yaml", 9, 13, "needs form a cycle: a -> c -> b -> a", "a]"),
    ("needs_self.yaml", 6, 12, "stage 'build' cannot need itself", "build"),
    ("when_sometimes.yaml", 8, 11, "expected 'success', 'failure' or 'always', got the text 'sometimes'", "sometimes"),
    ("expects_parent.yaml", 8, 9, "'../secrets.txt': expects paths may not contain '..'", "../secrets.txt"),
    ("input_required_default.yaml", 5, 14, "a required input takes no default", "untitled"),
    ("input_bad_name.yaml", 3, 3, "invalid input name 'issue-title'", "issue-title:"),
    ("input_case_clash.yaml", 4, 3, "clashes with 'title': both become $TACX_INPUT_TITLE", "Title:"),
    ("env_reserved.yaml", 8, 7, "names starting with TACX_ are set by tacx", "TACX_HOME:"),
    ("loop_later.yaml", 6, 21, "must name an earlier stage; 'test' does not come before", "test,"),
    ("bool_key.yaml", 2, 1, "key 'on' is read as true; keys must be text, so quote it", "on:"),
    ("top_level_list.yaml", 1, 1, "a workflow file is a mapping", "- name"),
    ("empty.yaml", 1, 1, "the file is empty", "# nothing"),
]


@pytest.mark.parametrize(("name", "line", "col", "message", "token"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_reports_line_col_and_message(name: str, line: int, col: int, message: str, token: str) -> None:
    path = DATA / "malformed" / name
    # The expected position is hand-computed; make sure it really is the offending token.
    assert path.read_text().splitlines()[line - 1][col - 1 :].startswith(token)
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path, KINDS)
    found = [issue for issue in caught.value.issues if (issue.line, issue.col) == (line, col)]
    assert any(message in issue.message for issue in found), str(caught.value)
    assert all(issue.source == str(path) for issue in caught.value.issues)


def test_every_malformed_file_is_in_the_table() -> None:
    on_disk = {p.name for p in (DATA / "malformed").glob("*.yaml")}
    assert on_disk == {m[0] for m in MALFORMED}


def test_all_issues_are_collected_in_file_order() -> None:
    text = """\
name: many
stages:
  - name: one
    provider: bash
    run: echo {{ inputs.x }}
    timeout: soon
  - name: two
    provider: nope
    run: make
    retries: -2
"""
    with pytest.raises(WorkflowError) as caught:
        load_workflow_text(text, "many.yaml")
    positions = [(issue.line, issue.col) for issue in caught.value.issues]
    assert positions == [(5, 15), (6, 14), (8, 15), (10, 14)]
    assert str(caught.value).splitlines()[1] == (
        "many.yaml:6:14: stages[0].timeout: invalid duration 'soon': "
        "use seconds (90) or a number with units: 500ms, 90s, 20m, 1h30m, 2d"
    )


def test_issue_format() -> None:
    assert str(Issue("w.yaml", 12, 5, "stages[1].timeout", "bad")) == "w.yaml:12:5: stages[1].timeout: bad"
    assert str(Issue("w.yaml", 1, 1, "", "the file is empty")) == "w.yaml:1:1: the file is empty"
    err = WorkflowError([Issue("w", 3, 1, "", "b"), Issue("w", 1, 2, "", "a")])
    assert [issue.message for issue in err.issues] == ["a", "b"]
    assert str(err) == "w:1:2: a\nw:3:1: b"


def test_missing_file_is_a_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read the file"):
        load_workflow(tmp_path / "absent.yaml")


def test_agent_providers_are_built_in() -> None:
    wf = load_workflow(DATA / "valid" / "plan_build_review.yaml")
    assert wf.stage("plan").provider == ["claude"]


def test_setup_runs_as_a_first_stage() -> None:
    text = (
        "name: x\nworkspace: worktree\nsetup: cp ../.env .env\ndefaults: {provider: mock, timeout: 5m}\n"
        "stages:\n  - {name: plan, prompt: p}\n  - {name: build, prompt: b}\n"
    )
    wf = load_workflow_text(text, "x.yaml")
    assert [s.name for s in wf.stages] == ["setup", "plan", "build"]
    setup = wf.stage("setup")
    assert (setup.provider, setup.run, setup.timeout) == (["shell"], "cp ../.env .env", 300.0)
    assert wf.needs_of("plan") == ["setup"]


def test_setup_comes_before_every_root_of_a_dag() -> None:
    text = (
        "name: x\nsetup: {run: 'import os', provider: python, timeout: 30s}\n"
        "stages:\n  - {name: a, provider: bash, run: 'true', needs: []}\n"
        "  - {name: b, provider: bash, run: 'true'}\n  - {name: c, provider: bash, run: 'true', needs: [a, b]}\n"
    )
    wf = load_workflow_text(text, "x.yaml")
    assert (wf.needs_of("a"), wf.needs_of("b"), wf.needs_of("c")) == (["setup"], ["setup"], ["a", "b"])
    assert wf.stage("setup").provider == ["python"] and wf.stage("setup").timeout == 30.0
    assert wf.topo_order()[0] == "setup"


def test_a_stage_named_setup_clashes_with_setup() -> None:
    text = "name: x\nsetup: ls\nstages:\n  - {name: setup, provider: bash, run: 'true'}\n"
    with pytest.raises(WorkflowError, match="4:12: stages\\[0\\].name: a stage named 'setup' clashes"):
        load_workflow_text(text, "x.yaml")


def test_source_is_not_a_file_key() -> None:
    text = "name: x\nsource: elsewhere\nstages: [{name: a, provider: bash, run: ls}]\n"
    with pytest.raises(WorkflowError, match="2:1: source: unknown key 'source'"):
        load_workflow_text(text, "x.yaml")


def test_folded_and_multiline_values_still_point_into_the_text() -> None:
    text = 'name: x\nstages:\n  - name: a\n    provider: claude\n    prompt: "first line\n      then {{ nope }}"\n'
    with pytest.raises(WorkflowError) as caught:
        load_workflow_text(text, "x.yaml", KINDS)
    assert [(i.line, i.col) for i in caught.value.issues] == [(6, 12)]


# --- valid files -------------------------------------------------------------------------


def test_sequential_workflow_applies_defaults() -> None:
    wf = load_workflow(DATA / "valid" / "plan_build_review.yaml", KINDS)
    assert isinstance(wf, Workflow)
    assert wf.source.endswith("plan_build_review.yaml")
    assert wf.workspace == "dir" and wf.budget is not None and wf.budget.usd == 3.0
    assert wf.inputs["title"].required and wf.inputs["body"].default == ""
    assert wf.inputs["attempts"].default == "3"  # a YAML number becomes text
    plan, build, test, review, pr = wf.stages
    assert plan.provider == ["claude"] and test.provider == ["bash"] and pr.provider == ["shell"]
    assert (plan.timeout, plan.idle_timeout, plan.retries, plan.backoff) == (1200.0, 300.0, 1, 2.0)
    assert (test.timeout, test.retries) == (5400.0, 0)
    assert build.env == {"LANG": "C.UTF-8", "TASK": "{{ task.id }}"}
    assert plan.expects == ["plan.md"]
    assert review.loop is not None and (review.loop.back_to, review.loop.max) == ("build", 2)
    assert wf.stage("review") is review
    with pytest.raises(KeyError):
        wf.stage("deploy")


def test_sequential_workflow_order() -> None:
    wf = load_workflow(DATA / "valid" / "plan_build_review.yaml", KINDS)
    assert wf.needs_of("plan") == []
    assert wf.needs_of("build") == ["plan"]
    assert wf.needs_of("pr") == ["review"]
    assert wf.upstream_of("review") == {"plan", "build", "test"}
    assert wf.upstream_of("plan") == set()
    assert wf.topo_order() == ["plan", "build", "test", "review", "pr"]


def test_dag_workflow_order() -> None:
    wf = load_workflow(DATA / "valid" / "dag.yaml")
    assert wf.needs_of("fetch") == []
    assert wf.needs_of("lint") == ["fetch"]  # `needs: fetch` is a one-item list
    assert wf.needs_of("report") == ["lint", "test"]
    assert wf.needs_of("notify") == []  # no needs in a DAG: free to start at once
    assert wf.upstream_of("report") == {"fetch", "lint", "test"}
    assert wf.topo_order() == ["fetch", "lint", "test", "report", "notify"]
    assert wf.stage("test").timeout is None  # `timeout: null` on the stage beats the default
    assert wf.stage("lint").timeout == 90.0
    assert wf.stage("report").when == "always"


def test_anchors_and_merge_keys() -> None:
    wf = load_workflow(DATA / "valid" / "anchors.yaml")
    first, second = wf.stages
    assert (second.run, second.timeout, second.retries) == ("make", 300.0, 0)
    assert first.retries == 2
    assert second.env == {"A": "1", "B": "three", "DEBUG": "true"}


def test_every_valid_file_loads() -> None:
    for path in (DATA / "valid").glob("*.yaml"):
        load_workflow(path, KINDS)


# --- names templates may use -------------------------------------------------------------


def test_stage_results_of_later_stages_and_task_names_are_known() -> None:
    text = """\
name: x
defaults: {provider: claude, env: {TRACE: "{{ task.trace_id }}"}}
stages:
  - name: a
    prompt: "{{ stages.b.result }} {{ task.title }} {{ workflow.name }}"
  - name: b
    prompt: "{{ stages.a.result }}"
"""
    wf = load_workflow_text(text, "x.yaml", KINDS)
    assert wf.stage("a").env == {"TRACE": "{{ task.trace_id }}"}


# --- durations and inputs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("20m", 1200.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("90", 90.0),
        (" 5m ", 300.0),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "20 minutes", "-5s", "5x", "h", "30m1h", "1h1h", -1, float("inf"), True, None])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


def test_input_env_name() -> None:
    assert input_env_name("title") == "TACX_INPUT_TITLE"
    assert input_env_name("issue_body") == "TACX_INPUT_ISSUE_BODY"
    with pytest.raises(ValueError):
        input_env_name("bad-name")


def _inputs_workflow() -> Workflow:
    text = """\
name: inputs
inputs:
  title: {required: true}
  body: {default: none given}
  labels: {}
stages: [{name: a, provider: bash, run: echo "$TACX_INPUT_TITLE"}]
"""
    return load_workflow_text(text, "inputs.yaml")


def test_resolve_inputs_applies_defaults() -> None:
    wf = _inputs_workflow()
    assert resolve_inputs(wf, {"title": "Fix it"}) == {"title": "Fix it", "body": "none given", "labels": ""}
    assert resolve_inputs(wf, {"title": "t", "body": None})["body"] == "none given"


def test_resolve_inputs_converts_values() -> None:
    wf = _inputs_workflow()
    values = resolve_inputs(wf, {"title": 42, "body": True, "labels": ["bug", "ui"]})
    assert values == {"title": "42", "body": "true", "labels": '["bug", "ui"]'}
    assert resolve_inputs(wf, {"title": False, "labels": {"a": 1}})["labels"] == '{"a": 1}'
    assert resolve_inputs(wf, {"title": 1.5})["title"] == "1.5"


def test_resolve_inputs_rejects_missing_and_unknown() -> None:
    wf = _inputs_workflow()
    with pytest.raises(ValueError, match="needs input 'title'"):
        resolve_inputs(wf, {"body": "x"})
    with pytest.raises(ValueError, match="no input 'tittle'; known inputs: title, body, labels"):
        resolve_inputs(wf, {"tittle": "x"})


# --- schema ------------------------------------------------------------------------------


def test_json_schema() -> None:
    schema = workflow_json_schema()
    text = json.dumps(schema)
    assert json.loads(text) == schema
    assert "stages" in schema["properties"] and "stages" in schema["required"]
    assert "source" not in schema["properties"]
    stage = schema["$defs"]["StageSpec"]
    assert stage["additionalProperties"] is False
    assert {"type": "string"} in stage["properties"]["provider"]["anyOf"]
    assert "string" in text and "1h30m" in stage["properties"]["backoff"]["description"]


# --- executors -----------------------------------------------------------------------------


def test_defaults_executor_puts_every_stage_on_it_unless_a_stage_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module, "_ray_installed", lambda: True)
    text = ("name: x\nsetup: make deps\ndefaults: {executor: ray}\nstages:\n  - {name: a, provider: bash, run: ls}\n"
            "  - {name: b, provider: bash, run: ls, executor: local}\n")
    wf = load_workflow_text(text, "x.yaml")
    assert [(s.name, s.executor) for s in wf.stages] == [("setup", "ray"), ("a", "ray"), ("b", "local")]
    assert load_workflow_text("name: y\nstages: [{name: a, provider: bash, run: ls}]\n", "y.yaml").stages[0].executor == "local"


def test_a_workflow_asking_for_ray_without_ray_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(model_module, "_ray_installed", lambda: False)
    text = "name: x\nstages:\n  - name: a\n    provider: bash\n    run: ls\n    executor: ray\n"
    with pytest.raises(WorkflowError) as caught:
        load_workflow_text(text, "x.yaml")
    (issue,) = caught.value.issues
    assert (issue.line, issue.col) == (6, 15)
    assert "executor 'ray' needs Ray, which is not installed here: pip install 'tacx[ray]'" in str(caught.value)
    path = tmp_path / "x.yaml"
    path.write_text(text)
    from tacx.cli.main import main

    assert main(["--home", str(tmp_path / ".tacx"), "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:6:15" in err and "pip install 'tacx[ray]'" in err and "Traceback" not in err


def test_an_unknown_executor_is_refused_with_the_known_ones() -> None:
    with pytest.raises(WorkflowError, match="'local' or 'ray'"):
        load_workflow_text("name: x\nstages: [{name: a, provider: bash, run: ls, executor: k8s}]\n", "x.yaml")


def test_mistakes_in_tacx_yaml_executors_are_located(tmp_path: Path) -> None:
    from tacx.settings import SettingsError, load_settings

    (tmp_path / "tacx.yaml").write_text("executors:\n  ray:\n    adress: http://head:8265\n")
    with pytest.raises(SettingsError, match=r"tacx.yaml:3:5: executors.ray.adress: unknown key 'adress'"):
        load_settings(tmp_path)
    (tmp_path / "tacx.yaml").write_text("executors:\n  ray:\n    resources: {claude: {num_cpus: -1}}\n")
    with pytest.raises(SettingsError, match=r"tacx.yaml:3:\d+: executors.ray.resources.claude.num_cpus"):
        load_settings(tmp_path)
    (tmp_path / "tacx.yaml").write_text("executors:\n  k8s: {}\n")
    with pytest.raises(SettingsError, match=r"tacx.yaml:2:3: executors.k8s"):
        load_settings(tmp_path)
