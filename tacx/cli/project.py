"""The project around the tasks: its workflows (`validate`, `schema`, `workflows`), its
agents (`providers`), its machine (`doctor`) and its leftover workspaces (`clean`)."""

from __future__ import annotations

import argparse
import json
import sys

from tacx.agents.registry import configured_providers
from tacx.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, project_provider_kinds, project_settings, reader
from tacx.home import Home
from tacx.submission import workflow_dirs
from tacx.text import printable
from tacx.workflow.loader import WorkflowError, load_workflow
from tacx.workflow.model import workflow_json_schema


def cmd_validate(home: Home, args: argparse.Namespace) -> int:
    kinds = project_provider_kinds(home)
    bad = 0
    for name in args.files:
        try:
            wf = load_workflow(name, kinds)
        except WorkflowError as exc:
            print(str(exc), file=sys.stderr)
            bad += 1
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror}", file=sys.stderr)
            bad += 1
        else:
            print(f"{name}: ok ({wf.name}, {len(wf.stages)} stage{'s' if len(wf.stages) != 1 else ''})")
    return EXIT_USAGE if bad else EXIT_OK


def cmd_schema(home: Home, args: argparse.Namespace) -> int:
    print(json.dumps(workflow_json_schema(), indent=2))
    return EXIT_OK


def cmd_workflows(home: Home, args: argparse.Namespace) -> int:
    seen: set[str] = set()
    kinds = project_provider_kinds(home)
    for folder in workflow_dirs(home):
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                wf = load_workflow(path, kinds)
                print(f"{path.stem:<24} {wf.description.strip().splitlines()[0] if wf.description.strip() else ''}  ({path})")
            except WorkflowError:
                print(f"{path.stem:<24} INVALID  ({path}: `tacx validate` says why)")
    return EXIT_OK


def cmd_providers(home: Home, args: argparse.Namespace) -> int:
    from tacx.agents import report as provider_report

    settings = project_settings(home)
    conn = reader(home)
    try:
        entries = provider_report.report(configured_providers(settings), settings, conn, home.project_root)
    finally:
        if conn:
            conn.close()
    print(json.dumps(entries) if args.json else provider_report.render_text(entries))
    return EXIT_OK


def cmd_clean(home: Home, args: argparse.Namespace) -> int:
    from tacx.workspace import cleanup

    conn = reader(home)
    results = cleanup.clean(home, conn, args.ids or None) if conn else []
    if conn:
        conn.close()
    if args.json:
        print(json.dumps(results))
    elif not results:
        print("nothing to clean: no ended task has a workspace under " + str(home.trees))
    else:
        for entry in results:
            print(printable(cleanup.describe(entry)))
    return EXIT_OK


def cmd_doctor(home: Home, args: argparse.Namespace) -> int:
    from tacx.cli import doctor

    checks = doctor.report(home, project_settings(home))
    print(json.dumps(checks) if args.json else doctor.render(checks))
    return EXIT_FAILED if any(c["status"] == "fail" for c in checks) else EXIT_OK
