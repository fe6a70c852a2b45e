"""Reading a workflow file: the bounded read, then the YAML with its positions, the model
and the cross-references, every mistake reported at once so a user fixes a file in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from tacx import bounds, userfiles
from tacx.workflow.document import Document, Issue
from tacx.agents.registry import builtin_provider_kinds
from tacx.workflow.model import Workflow
from tacx.workflow.references import References


class WorkflowError(Exception):
    """A workflow file is invalid; ``issues`` lists every mistake found, in file order."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: list[Issue] = sorted(issues, key=lambda issue: (issue.line, issue.col))
        super().__init__("\n".join(map(str, self.issues)))


def load_workflow_text(text: str, source: str, providers: Mapping[str, str] | None = None) -> Workflow:
    """Parse and validate a workflow; raise WorkflowError listing every mistake.

    ``providers`` maps every usable provider name to its kind ("script" or "agent").
    """
    doc = Document(text, source)
    workflow = None
    try:
        data = doc.load()
        if data is not None and (problem := bounds.too_many_stages(data.get("stages"))):
            doc.add(("stages",), problem)  # before anything walks them
        elif data is not None:
            if "source" in data:
                doc.add(("source",), "unknown key 'source'", at="key")
            try:
                workflow = Workflow.model_validate({**data, "source": source})
            except ValidationError as err:
                doc.add_validation_errors(err)
            References(data, builtin_provider_kinds() if providers is None else providers, doc).run()
    except bounds.TooManyIssues:  # a hostile file: each issue costs, so stop counting
        last = max(doc.issues, key=lambda issue: (issue.line, issue.col))
        doc.issues.append(last._replace(loc="", message=f"checking stopped after {bounds.MAX_ISSUES} mistakes"))
    if doc.issues or workflow is None:
        raise WorkflowError(doc.issues)
    return workflow


def read_workflow(path: str | Path) -> str:
    """A workflow file's text, read once through the bounded reader (a regular file, UTF-8,
    at most 1 MiB): validate this text and store this text, never a second read."""
    try:
        return userfiles.read_text_file(path, userfiles.WORKFLOW_FILE_LIMIT, "a workflow file")
    except userfiles.FileRefused as err:
        raise WorkflowError([Issue(err.path, err.line, err.col, "", err.message)]) from None


def load_workflow(path: str | Path, providers: Mapping[str, str] | None = None) -> Workflow:
    """Read and validate a workflow file; see load_workflow_text."""
    return load_workflow_text(read_workflow(path), str(path), providers)
