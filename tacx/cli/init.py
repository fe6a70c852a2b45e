"""`tacx init`: start a project in the current folder: a commented `tacx.yaml` with every
setting and its default, a starter workflow that runs with nothing installed, and the home
`.tacx/` with a `.gitignore` that keeps it out of `git status`."""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

from tacx.cli.common import EXIT_OK, UsageError
from tacx.home import HOME_DIRNAME, make_home_dir, write_home_gitignore

STARTER = "starter"


def _template(name: str) -> str:
    return resources.files("tacx.data").joinpath(name).read_text()


def cmd_init(args: argparse.Namespace) -> int:
    """Refuses (exit 2, nothing written) when a file it would write exists, unless --force."""
    root = Path.cwd()
    chosen = getattr(args, "home", None) or os.environ.get("TACX_HOME")
    home = Path(chosen).expanduser().resolve() if chosen else root / HOME_DIRNAME
    # A project above this folder with a home of its own: from here on, this folder's tasks
    # live apart from it. Said, not refused (a monorepo's parts may each want their own).
    above = next((f / HOME_DIRNAME for f in root.resolve().parents if (f / HOME_DIRNAME).is_dir()), None)
    files = {
        root / "tacx.yaml": _template("init-tacx.yaml"),
        root / "workflows" / f"{STARTER}.yaml": _template("init-starter.yaml"),
    }
    there = [path for path in files if path.exists() or path.is_symlink()]
    if folders := [p for p in there if p.is_dir() and not p.is_symlink()]:
        names = ", ".join(str(p.relative_to(root)) for p in folders)
        raise UsageError(f"{names}: a folder where tacx init writes a file; nothing written")
    if there and not args.force:
        names = ", ".join(str(p.relative_to(root)) for p in there)
        raise UsageError(f"{names} already exist{'s' if len(there) == 1 else ''}; nothing written (--force overwrites)")
    for folder in (home, root / "workflows"):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder} is a file, not a folder; nothing written")
        if folder.is_symlink() and not folder.exists():
            raise UsageError(f"{folder} is a link to nothing ({os.readlink(folder)}); nothing written")
    path = root
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():  # --force replaces the link, never the file it points to
                path.unlink()
            path.write_text(text)
        path = home
        make_home_dir(home)
        ignore = write_home_gitignore(home)
    except OSError as exc:  # a folder tacx may not write in (read-only, not ours), a full disk
        raise UsageError(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from None
    for path in files:
        print(f"wrote {path.relative_to(root)}")
    print(f"made {_shown(home, root)}/ (its {ignore.name} keeps it out of git)")
    if above is not None and not chosen:
        print(f"note: {above} holds the tasks of {above.parent}; tacx here now uses {_shown(home, root)}/, apart from it")
    print(f"next: tacx run {STARTER} --no-ui    (then `tacx show 1`, `tacx logs 1`, or `tacx` for the dashboard)")
    return EXIT_OK


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
