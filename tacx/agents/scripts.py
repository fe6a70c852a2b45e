"""shell, bash and python: each names its interpreter explicitly (lesson 4).

Scripts get inputs only through the environment. Each daughter records its own exit
status in a file beside its log (an EXIT trap for shells, a few lines of bootstrap for
python: no extra process), so a tacx restarted after a crash learns how it ended.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tacx.agents.agent import unwrapped
from tacx.agents.base import Launch, Provider, StageContext
from tacx.workflow.model import StageSpec

# On the same line as the script's first line, so shell error line numbers stay right.
_STATUS_TRAP = "trap 'echo $? > \"$TACX_STATUS_FILE\"' EXIT; "

_PYTHON_BOOT = """\
import os, sys, runpy
def _tacx_status(code):
    try:
        with open(os.environ["TACX_STATUS_FILE"], "w") as f:
            f.write(str(code))
    except OSError:
        pass
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
        code = e.code or 0
    else:
        print(e.code, file=sys.stderr)
        code = 1
except BaseException:
    import traceback
    traceback.print_exc()
    code = 1
else:
    code = 0
try:
    sys.stdout.flush()
    sys.stderr.flush()
except Exception:
    pass
_tacx_status(code)
sys.exit(code)
"""


class ShellProvider(Provider):
    """POSIX /bin/sh, named by path."""

    name = "shell"
    interpreter = "/bin/sh"

    def availability(self) -> str | None:
        if shutil.which(self.interpreter) is None:
            return f"{self.interpreter} is not installed"
        return None

    def launch(self, spec: StageSpec, ctx: StageContext) -> Launch:
        assert spec.run is not None
        return Launch(argv=[self.interpreter, "-c", _STATUS_TRAP + spec.run],
                      command=[self.interpreter, "-c", spec.run])


class BashProvider(ShellProvider):
    """bash, found on PATH once and then named by its full path."""

    name = "bash"

    def __init__(self) -> None:
        self.interpreter = shutil.which("bash") or "bash"

    def availability(self) -> str | None:
        if shutil.which(self.interpreter) is None:
            return "bash is not installed (not found on PATH)"
        return None


class PythonProvider(Provider):
    """The Python running tacx (sys.executable), never a shell."""

    name = "python"

    def launch(self, spec: StageSpec, ctx: StageContext) -> Launch:
        assert spec.run is not None
        return Launch(
            argv=[sys.executable, "-c", _PYTHON_BOOT, str(ctx.script_path)],
            env={"PYTHONUNBUFFERED": "1"},
            files={ctx.script_path: spec.run},
            command=[sys.executable, "-c", spec.run],
        )


def workflow_command(argv: list[str]) -> list[str]:
    """The command the workflow asked for, from a daughter's real argv (one found by its
    marker after a crash, never recorded): tacx's status wrappers taken off exactly as
    they were put on (`Launch.command` says the same at the start); any other argv as it
    is. Reads a python stage's script from its file: call it off the event loop."""
    agent = unwrapped(argv)
    if agent is not None:
        return agent
    if len(argv) == 3 and argv[1] == "-c" and argv[2].startswith(_STATUS_TRAP):
        return [argv[0], "-c", argv[2][len(_STATUS_TRAP):]]
    if len(argv) == 4 and argv[1:3] == ["-c", _PYTHON_BOOT]:
        try:
            return [argv[0], "-c", Path(argv[3]).read_text(encoding="utf-8", errors="replace")]
        except OSError:
            return [argv[0], argv[3]]
    return list(argv)
