"""The rules the package's shape keeps (DESIGN.md, Layout): no module over 600 lines, no
import cycle between tacx modules, and the engine side (everything but `tacx.ui` and
`tacx.cli`) imports no Textual. Each rule's checker is also run on a small package built
here that breaks it, so a checker that can no longer see a breach fails too."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "tacx"
MAX_LINES = 600
UI_SIDE = ("ui", "cli")  # the only wings that may import Textual


def modules(root: Path) -> dict[str, Path]:
    """Every module under the package folder `root`, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs: at module level or inside functions, but not the ones under
    `if TYPE_CHECKING:`, which never execute."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, known: dict[str, Path]) -> list[str]:
    """The known modules that importing `name` runs: the module and its parent packages."""
    parts = name.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in known]


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's own modules that `module` imports when it runs."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_resolve(alias.name, known))
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
            base = ".".join(anchor + ([base] if base else []))
        found.update(_resolve(base, known))
        for alias in node.names:
            if f"{base}.{alias.name}" in known:  # `from pkg import submodule`
                found.update(_resolve(f"{base}.{alias.name}", known))
    found.discard(module)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def long_modules(root: Path, limit: int = MAX_LINES) -> dict[str, int]:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules(root).items()}
    return {name: n for name, n in sizes.items() if n > limit}


def engine_side(root: Path) -> list[str]:
    sides = [f"{root.name}.{wing}" for wing in UI_SIDE]
    return [m for m in modules(root) if not any(m == side or m.startswith(side + ".") for side in sides)]


def textual_importers(root: Path) -> list[str]:
    """Engine-side modules whose own code imports Textual (at any depth, in any function)."""
    offenders = []
    known = modules(root)
    for name in engine_side(root):
        tree = ast.parse(known[name].read_text(encoding="utf-8"))
        for node in _import_nodes(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n == "textual" or n.startswith("textual.") for n in names):
                offenders.append(name)
                break
    return offenders


# -- the rules, on tacx ----------------------------------------------------------------


def test_no_module_is_over_600_lines() -> None:
    assert long_modules(PACKAGE) == {}, "split these by concern (DESIGN.md, Layout)"


def test_no_import_cycle_between_tacx_modules() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_the_engine_side_imports_no_textual() -> None:
    assert textual_importers(PACKAGE) == []
    # And nothing it imports pulls Textual in either: import every engine-side module.
    names = [m for m in engine_side(PACKAGE) if not m.endswith("__main__")]  # that one runs tacx
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert len(names) > 30  # the walk found the package


def test_the_wings_are_there() -> None:
    """The layout DESIGN.md names: engine (with the local executor), store, workflow,
    agents, workspace, sources, cli and ui, each a package."""
    for wing in ("engine", "engine/local", "store", "workflow", "agents", "workspace", "sources", "cli", "ui"):
        assert (PACKAGE / wing / "__init__.py").is_file(), wing


# -- the checkers see a breach ---------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_cycle_checker_sees_cycles_through_functions_packages_and_relative_imports(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "def f():\n    from pkg.wing import b\n",
        "wing/__init__.py": "",
        "wing/b.py": "from ..c import thing\n",
        "c.py": "import pkg.a\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
        "e.py": "from pkg import d\n",
        "fine.py": "import pkg.c\nimport json\n",
    })
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.c", "pkg.wing.b"]]


def test_the_cycle_checker_sees_a_package_that_imports_its_importer(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "wing/__init__.py": "from pkg import user\n",
        "wing/part.py": "",
        "user.py": "from pkg.wing.part import x\n",
    })
    assert cycles(import_graph(root)) == [["pkg.user", "pkg.wing"]]


def test_the_size_and_textual_checkers_see_breaches(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "big.py": "x = 1\n" * 601,
        "small.py": "x = 1\n" * 600,
        "engine/__init__.py": "",
        "engine/late.py": "def show():\n    from textual.app import App\n",
        "ui/__init__.py": "import textual\n",
    })
    assert long_modules(root) == {"pkg.big": 601}
    assert textual_importers(root) == ["pkg.engine.late"]  # the ui wing may
    assert {"tacx.ui.app", "tacx.cli.main"}.isdisjoint(engine_side(PACKAGE))
    assert "tacx.engine.coordinator" in engine_side(PACKAGE)


def test_reading_commands_import_neither_the_engine_nor_the_workflow_model(tmp_path: Path) -> None:
    """`tacx ls`, `tacx show` and `tacx report` (run by scripts, by a shell's completion at each TAB, by
    people in a loop) start without the engine, the agents' registry, the workflow model's
    schemas or Textual: 0.12 s instead of 0.31 (bench/cli.py)."""
    import subprocess
    import sys

    probe = (
        "import sys\nfrom tacx.cli.main import main\n"
        "for argv in (['ls'], ['ls', '--json'], ['show', '1'], ['report', 'cost'], ['report', 'stats', '--json'],"
        " ['report', 'compare', '--workflows', 'w', 'x']):\n"
        "    main(argv)\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('tacx.engine', 'tacx.ui', 'textual'))"
        " or m in ('tacx.workflow.model', 'tacx.agents.registry', 'tacx.settings'))\n"
        "print('HEAVY', heavy)\n"
    )
    (tmp_path / "w.yaml").write_text("name: w\nstages:\n  - {name: s, provider: shell, run: 'true'}\n")
    subprocess.run([sys.executable, "-m", "tacx", "submit", "w.yaml"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "task 1: w" in out.stdout or '"id": 1' in out.stdout, out.stdout + out.stderr
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_every_package_is_installed_by_pyproject() -> None:
    """pyproject.toml names its packages one by one: a package left out works from a checkout
    (and an editable install) but is missing from `pip install .` (tacx.server.notify was)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(REPO).parts[:-1]) for p in PACKAGE.rglob("__init__.py")}
    assert found - listed == set()
