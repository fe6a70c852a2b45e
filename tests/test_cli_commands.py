"""The first hour's commands (issue 12), through the real `tacx` command: cancel and retry of
several ids, priority, rm and prune, shell completion, init, and a `--help` on one screen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tacx.cli.parser import COMMAND_GROUPS, build_parser
from tacx.settings import Settings, load_settings
from tacx.store.database import connect
from tacx.store.removal import TASK_TABLES
from tests.conftest import REPO, Project, wait_for
from tests.test_workspaces import git, init_repo, workflow

SLEEPER = """
    name: sleeper
    inputs: {seconds: {default: "0"}}
    stages:
      - {name: nap, provider: bash, run: 'sleep "$TACX_INPUT_SECONDS"; echo napped'}
"""


def _change(project: Project, sql: str, *params: object) -> None:
    conn = project.db()
    with conn:
        conn.execute(sql, params)
    conn.close()


def _statuses(project: Project) -> dict[int, str]:
    """Each task's status, read from the store itself (cheaper than a `tacx` per look)."""
    return {r[0]: r[1] for r in project.query("SELECT id, status FROM tasks")}


def _task(project: Project, task_id: int) -> dict[str, object]:
    rows = project.query("SELECT * FROM tasks WHERE id = ?", task_id)
    return dict(rows[0]) if rows else {}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_help_fits_one_screen_and_names_every_command_and_option(project: Project) -> None:
    project.env["COLUMNS"] = "80"
    text = project.tacx("--help").stdout
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= 34 and max(map(len, lines)) <= 80, text  # 34: with report, notify, token and --listen (issue 13)
    commands = build_parser().parse_args(["ls"]).parsers
    assert sorted(commands) == sorted(n for names in COMMAND_GROUPS.values() for n in names)
    for name, parser in commands.items():
        assert any(line.split()[:1] == [name] and len(line.split()) > 1 for line in lines), f"{name} not in --help"
        for action in parser._actions:
            assert action.help, f"tacx {name}: {action.dest} has no description"
    assert "--older-than AGE" in project.tacx("help", "prune").stdout
    readme = (REPO / "README.md").read_text()
    assert [n for n in commands if f"tacx {n}" not in readme] == []


def test_cancel_retry_and_priority_take_several_ids_and_refuse_bad_ones(project: Project) -> None:
    project.workflow("sleeper", SLEEPER)
    first, second, third = (project.submit("sleeper.yaml") for _ in range(3))

    bad = project.tacx("cancel", str(first), "99", check=2)
    assert "no task 99" in bad.stderr and bad.stdout == ""
    assert set(_statuses(project).values()) == {"queued"}  # nothing done for any id
    # 40,000 ids (more than SQLite takes in one statement): one line naming a few, no bug report
    many = [str(i) for i in range(1, 40_001)]
    for command in ("cancel", "rm"):
        flood = project.tacx(command, *many, check=2)
        assert len(flood.stderr.splitlines()) == 1 and "(39,997 ids in all)" in flood.stderr, flood.stderr[:300]
    assert set(_statuses(project).values()) == {"queued"}

    out = project.tacx("cancel", str(first), str(second)).stdout
    assert _lines(out) == [f"task {first} cancelled", f"task {second} cancelled"]
    partly = project.tacx("cancel", str(first), str(third), check=1)  # one refused, the other goes through
    assert "already cancelled" in partly.stderr and f"task {third} cancelled" in partly.stdout

    retried = project.tacx("retry", str(first), str(second), str(third)).stdout
    assert len(_lines(retried)) == 3 and set(_statuses(project).values()) == {"queued"}
    assert "only failed" in project.tacx("retry", str(first), str(second), check=2).stderr  # every one refused

    assert project.tacx("priority", str(third), "7").stdout.strip() == f"task {third}: priority 0 -> 7"
    assert _task(project, third)["priority"] == 7
    project.tacx("cancel", str(third))
    assert "only a queued task" in project.tacx("priority", str(third), "1", check=2).stderr
    assert "no task 42" in project.tacx("priority", "42", "1", check=2).stderr


def test_a_running_coordinator_follows_priority_cancel_and_rm_from_another_terminal(project: Project) -> None:
    project.workflow("sleeper", SLEEPER)
    blocker = project.submit("sleeper.yaml", "-i", "seconds=60")
    coordinator = project.start("--no-ui", "--max-workers", "1")
    wait_for(lambda: _statuses(project)[blocker] == "running", what="the blocker runs")
    earlier, later, doomed = (project.submit("sleeper.yaml") for _ in range(3))

    assert "is running" in project.tacx("priority", str(blocker), "9", check=2).stderr
    project.tacx("priority", str(later), "5")
    out = project.tacx("cancel", str(blocker), str(doomed)).stdout  # through the coordinator
    assert f"task {doomed} cancelled" in out and "cancel requested" in out
    wait_for(lambda: _statuses(project)[earlier] == "succeeded", what="the queue to drain")
    assert _task(project, later)["started_at"] < _task(project, earlier)["started_at"]  # raised: ran first
    assert _statuses(project)[blocker] == "cancelled"

    project.tacx("rm", str(earlier), str(later), str(doomed))  # doomed: the newest id
    assert project.tacx("show", str(earlier), check=2).stderr
    again = project.submit("sleeper.yaml")
    assert again == doomed + 1  # an id is never given twice
    wait_for(lambda: _statuses(project).get(again) == "succeeded", what="a task after the rm")
    assert coordinator.poll() is None  # neither crashed nor stopped by the deletion
    assert [r[0] for r in project.query("SELECT id FROM tasks ORDER BY id")] == [blocker, again]


def test_rm_and_prune_delete_ended_tasks_with_their_rows_logs_and_workspaces(project: Project, tmp_path: Path) -> None:
    init_repo(project, tmp_path)
    dirty = workflow(tmp_path, "dirty", """
        name: dirty
        workspace: worktree
        stages:
          - {name: edit, provider: bash, run: 'echo draft > notes.txt'}
    """)
    tidy = workflow(tmp_path, "tidy", """
        name: tidy
        workspace: dir
        stages:
          - {name: make, provider: shell, run: 'echo made > out.txt'}
    """)
    for path in (tidy, dirty, tidy):
        project.submit(path)
    project.tacx("--no-ui", "--exit-when-idle")
    live = project.submit(tidy)
    made, kept, old = 1, 2, 3
    tree, branch = Path(str(_task(project, kept)["workspace"])), _task(project, kept)["branch"]
    assert (tree / "notes.txt").exists() and (project.home / "logs" / str(made)).is_dir()

    assert "no task 99" in project.tacx("rm", str(made), "99", check=2).stderr
    assert "queued" in project.tacx("rm", str(live), check=2).stderr
    planned = project.tacx("rm", "--dry-run", str(made), str(kept)).stdout
    assert "would delete" in planned and str(tree) in planned
    assert len(_statuses(project)) == 4 and tree.exists()  # a dry run deletes nothing

    _change(project, "UPDATE tasks SET source = 'github:o/r' WHERE id = ?", old)  # not yet told how it ended
    partly = project.tacx("rm", str(made), str(kept), str(old), check=1)
    assert "uncommitted" in partly.stderr and "--force" in partly.stderr and "not been told" in partly.stderr
    assert f"task {made}: deleted" in partly.stdout
    for table in ("tasks", *TASK_TABLES):
        column = "id" if table == "tasks" else "task_id"
        assert not project.query(f"SELECT 1 FROM {table} WHERE {column} = ?", made), table
    assert not (project.home / "logs" / str(made)).exists() and not (project.home / "trees" / str(made)).exists()
    assert tree.exists() and _statuses(project)[kept] == "succeeded"  # unsaved work: kept

    project.tacx("rm", "--force", str(kept))
    assert not tree.exists() and not git(project, project.root, "branch", "--list", str(branch)).strip()
    _change(project, "UPDATE tasks SET source_told = ended_at, ended_at = ended_at - 40 * 86400 WHERE id = ?", old)
    pruned = json.loads(project.tacx("prune", "--older-than", "30d", "--json").stdout)
    assert [(e["id"], e["deleted"]) for e in pruned] == [(old, True)]
    assert list(_statuses(project)) == [live]
    assert "nothing to prune" in project.tacx("prune", "--older-than", "1h").stdout
    assert git(project, project.root, "status", "--porcelain") == ""
    assert "older-than" in project.tacx("prune", check=2).stderr


def test_every_table_that_names_a_task_is_emptied_by_rm(tmp_path: Path) -> None:
    conn = connect(tmp_path / "tacx.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    naming = {t for t in tables if any(c[1] == "task_id" for c in conn.execute(f"PRAGMA table_info({t})"))}
    conn.close()
    assert naming == set(TASK_TABLES)


def _tacx_on_path(project: Project, tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH finds a `tacx` that is this checkout (as an installed one)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "tacx"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tacx "$@"\n')
    script.chmod(0o755)
    return {**project.env, "PATH": f"{folder}{os.pathsep}{project.env['PATH']}"}


def test_completion_scripts_complete_commands_options_and_task_ids(project: Project, tmp_path: Path) -> None:
    project.workflow("sleeper", SLEEPER)
    ids = [project.submit("sleeper.yaml") for _ in range(2)]
    env = _tacx_on_path(project, tmp_path)
    driver = """
        source <(tacx completion bash)
        ask() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
                _python_argcomplete tacx "${@: -1}" "${@: -2:1}"; echo "${COMPREPLY[*]}"; }
        ask tacx ca
        ask tacx ls --st
        ask tacx show ''
        ask tacx completion ''
        ask tacx report co
        ask tacx report cost --by ''
    """
    out = subprocess.run(["bash", "-c", driver], cwd=project.root, env=env, capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    answers = [line.split() for line in out.stdout.splitlines()]
    assert answers[0] == ["cancel"] and answers[1] == ["--status"], out
    assert sorted(answers[2]) == sorted(map(str, ids)) and answers[3] == ["bash", "zsh", "fish"], out
    assert answers[4] == ["cost", "compare"] and answers[5] == ["day", "week", "month", "workflow", "provider",
                                                                "model", "task"], out
    unknown = project.tacx("completion", "tcsh", check=2)
    assert "bash" in unknown.stderr and "fish" in unknown.stderr and unknown.stdout == ""


def test_init_starts_a_project_whose_git_status_stays_clean(project: Project, tmp_path: Path) -> None:
    init_repo(project, tmp_path)
    project.tacx("run", "shell-pipeline", "--no-ui")  # a user who never ran init
    assert git(project, project.root, "status", "--porcelain") == ""
    (project.root / "tacx.yaml").write_text("max_workers: 2\n")

    refused = project.tacx("init", check=2)
    assert "tacx.yaml" in refused.stderr and "--force" in refused.stderr
    assert (project.root / "tacx.yaml").read_text() == "max_workers: 2\n" and not (project.root / "workflows").exists()
    out = project.tacx("init", "--force").stdout
    assert "wrote tacx.yaml" in out and "tacx run starter --no-ui" in out
    assert load_settings(project.root) == Settings()  # every setting at its default, as it says
    assert project.tacx("validate", "workflows/starter.yaml").stdout.startswith("workflows/starter.yaml: ok")
    project.tacx("run", "starter", "--no-ui")
    assert list(_statuses(project).values()) == ["succeeded", "succeeded"]
    assert sorted(_lines(git(project, project.root, "status", "--porcelain"))) == ["?? tacx.yaml", "?? workflows/"]
    assert (project.home / ".gitignore").read_text().splitlines()[-1] == "*"
    assert "already exist" in project.tacx("init", check=2).stderr
    # In a subfolder of this project: its own home, and it says it is apart from the one above.
    part = project.root / "part"
    part.mkdir()
    env = {k: v for k, v in project.env.items() if k != "TACX_HOME"}
    said = subprocess.run([sys.executable, "-m", "tacx", "init"], cwd=part, env=env, capture_output=True, text=True,
                          timeout=60)
    assert said.returncode == 0 and f"note: {project.home} holds the tasks of {project.root}" in said.stdout, said


def test_the_commented_examples_in_the_initial_tacx_yaml_load(project: Project, tmp_path: Path) -> None:
    project.tacx("init")
    examples = []
    for line in (project.root / "tacx.yaml").read_text().splitlines():
        if line in ("providers: {}", "sources: []", "budget: null", "prices: {}", "executors: {}"):
            continue  # the default, given again below by the example
        if line.startswith("# ") and (line[2:].split(":")[0] in ("providers", "sources", "budget", "prices", "executors")
                                      or line.startswith("#   ")):
            line = line[2:]
        examples.append(line)
    (project.root / "tacx.yaml").write_text("\n".join(examples))
    settings = load_settings(project.root)
    assert settings.sources[0].github == "owner/repo" and settings.providers["house-agent"].limit == 1
    assert settings.budget is not None and settings.prices["gpt-5-codex"]["output"] == 10.0
    ray = settings.executors.ray
    assert ray is not None and ray.resources_for("claude").submit_args() == {
        "entrypoint_num_cpus": 1, "entrypoint_resources": {"agent": 1}}


# zsh completes only inside its line editor: a pseudo-terminal (zpty) types `tacx ca<TAB>`.
ZSH_DRIVER = r"""
zmodload zsh/zpty
typed() {
  zpty z zsh -f -i
  zpty -w z "autoload -U compinit; compinit -u -d $DUMP; source <(tacx completion zsh)"
  zpty -w -n z "$1"$'\t'
  local out="" chunk
  for i in {1..300}; do
    zpty -r -t z chunk && out+=$chunk
    [[ $out == *"$2"* ]] && break
    sleep 0.1
  done
  zpty -d z
  [[ $out == *"$2"* ]] && print "completed $2"
}
typed "tacx ca" "tacx cancel"
typed "tacx ls --st" "tacx ls --status"
"""


def test_zsh_and_fish_complete_from_the_generated_scripts(project: Project, tmp_path: Path) -> None:
    """Where zsh or fish is installed, each completes for real; where neither is, their scripts
    are still checked for what they must hold."""
    env = _tacx_on_path(project, tmp_path)
    zsh_script = project.tacx("completion", "zsh").stdout
    assert zsh_script.startswith("#compdef tacx") and "compdef _python_argcomplete tacx" in zsh_script
    fish_script = project.tacx("completion", "fish").stdout
    assert "complete --command tacx" in fish_script
    run = dict(cwd=project.root, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    if shutil.which("zsh"):
        out = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVER], env={**env, "DUMP": str(tmp_path / "zcompdump")}, **run)
        assert out.stdout.split("\n")[:2] == ["completed tacx cancel", "completed tacx ls --status"], out
    if shutil.which("fish"):
        asked = 'tacx completion fish | source; complete -C"tacx ca"; complete -C"tacx ls --st"'
        out = subprocess.run(["fish", "--no-config", "-c", asked], env=env, **run)
        assert [line.split("\t")[0] for line in out.stdout.splitlines()] == ["cancel", "--status"], out
