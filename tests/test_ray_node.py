"""The Ray executor's node-side runner, run as Ray runs it (`sh -c 'python3 -c
"$TACX_RAY_RUNNER"'`, stdout and stderr into one log file with Ray's own lines around),
without Ray: frames, binary output, process trees ended on stop and on exit, clone
workspaces pushed to a real bare repo, the runner's own errors."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import psutil
import pytest

from tacx.engine.ray import frames, node

RUNNER_SOURCE = Path(node.__file__).read_text(encoding="utf-8")
NONCE = "9f2c4e"
RAY_NOISE = "Running entrypoint for job raysubmit_Xe7c: python3 -c \"$TACX_RAY_RUNNER\"\n"
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the runner reads /proc")


_MARKERS: list[str] = []


def new_marker(tmp_path: Path) -> str:
    _MARKERS.append(f"{tmp_path}/.tacx#{uuid.uuid4().hex[:8]}/build/1")
    return _MARKERS[-1]


@pytest.fixture(autouse=True)
def _end_what_a_failing_test_left():
    """A failing test must not leave `sleep 300`s behind: end this test's marked processes."""
    yield
    while _MARKERS:
        for pid in marked_pids(_MARKERS.pop()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def make_spec(marker: str, argv: list[str], **fields) -> dict:
    spec = {"v": 1, "nonce": NONCE, "marker": marker, "argv": argv, "env": {}, "files": {}, "mkdirs": [],
            "workspace": {"kind": "scratch"}, "grace": 0.5}
    spec.update(fields)
    return spec


class Job:
    """One runner started the way Ray's job supervisor starts an entrypoint."""

    def __init__(self, tmp_path: Path, spec: dict, extra_env: dict | None = None) -> None:
        self.log = tmp_path / f"job-{uuid.uuid4().hex[:6]}.log"
        self.stopped_runner: psutil.Process | None = None
        self.log.write_text(RAY_NOISE)
        self.spec_text = frames.encode_spec(spec)
        env = dict(os.environ, TACX_RAY_RUNNER=RUNNER_SOURCE, TACX_RAY_SPEC=self.spec_text, **(extra_env or {}))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["sh", "-c", node.ENTRYPOINT], env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def frames(self, nonce: str = NONCE) -> list[tuple[str, str]]:
        lines = self.log.read_bytes().decode("utf-8", "replace").split("\n")
        return [f for f in (frames.parse_frame(line, nonce) for line in lines) if f]

    def payloads(self, kind: str) -> list:
        return [json.loads(p) if kind != "o" else p for k, p in self.frames() if k == kind]

    def output(self) -> bytes:
        return b"".join(base64.b64decode(p) for k, p in self.frames() if k == "o")

    def wait_for(self, check, what: str, timeout: float = 20.0, runner_may_end: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            ended = not runner_may_end and self.proc.poll() is not None
            assert not ended or check(), f"the runner ended before {what}: {self.log.read_text()!r}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s: {self.log.read_text()!r}"
            time.sleep(0.05)

    def finish(self, timeout: float = 30.0) -> dict:
        self.proc.wait(timeout=timeout)
        if self.stopped_runner is not None:  # Ray's SIGTERM may end the shell before the runner
            _gone, alive = psutil.wait_procs([self.stopped_runner], timeout=timeout)
            assert not alive
        exits = self.payloads("x")
        assert len(exits) == 1, self.log.read_text()
        assert self.frames()[-1][0] == "x"
        return exits[0]

    def runner_pid(self) -> int:
        """The python runner: sh itself when it exec'd the entrypoint, else its child."""
        shell = psutil.Process(self.proc.pid)
        for candidate in [shell, *shell.children()]:
            if "python" in os.path.basename(candidate.cmdline()[0]):
                return candidate.pid
        raise AssertionError("no runner process under the entrypoint's shell")

    def stop_like_ray(self) -> None:
        """Ray's stop_job: SIGTERM to the entrypoint's shell and all its descendants."""
        self.stopped_runner = psutil.Process(self.runner_pid())
        shell = psutil.Process(self.proc.pid)
        for process in [shell, *shell.children(recursive=True)]:
            try:
                process.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment carries this marker, read straight from /proc."""
    entry = f"TACX_DAUGHTER={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if entry in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                    found.append(int(name))
            except OSError:
                pass
    return found


def wait_none_marked(marker: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while marked_pids(marker):
        assert time.monotonic() < deadline, f"still running with the marker: {marked_pids(marker)}"
        time.sleep(0.05)


def test_binary_output_and_exit_code_come_back_exactly_through_ray_noise(tmp_path):
    marker = new_marker(tmp_path)
    fake = f"\x1etacx {NONCE} x {{\"exit_code\": 0}}\n"  # the daughter cannot forge a frame
    code = ("import sys; o = sys.stdout.buffer; o.write(bytes(range(256)) * 300); o.flush(); "
            f"sys.stderr.write('err\\n'); sys.stderr.flush(); o.write({fake!r}.encode() + b'last line'); "
            "o.flush(); sys.exit(3)")
    job = Job(tmp_path, make_spec(marker, [sys.executable, "-c", code]))
    end = job.finish()
    with open(job.log, "a") as log:
        log.write("ray: job finished\n" + node.format_frame("0ther", "x", "{}").decode())
    assert job.output() == bytes(range(256)) * 300 + b"err\n" + fake.encode() + b"last line"
    assert len(job.payloads("o")) > 1  # more than one 48 KiB chunk
    assert end["exit_code"] == 3 and end["signal"] is None and end["error"] is None
    assert end["peak_rss"] > 0 and end["cpu_seconds"] >= 0 and end["leftovers"] == 0
    assert job.proc.returncode == 3
    deadline = time.monotonic() + 10
    while runs_of(job.spec_text):  # the watcher left with the runner
        assert time.monotonic() < deadline, runs_of(job.spec_text)
        time.sleep(0.05)
    assert [k for k, _ in job.frames()].count("x") == 1 and job.frames()[0][0] == "s"
    start = job.payloads("s")[0]
    assert start["host"] and start["pid"] > 0 and not os.path.exists(start["cwd"])  # scratch removed


def test_frames_and_specs_parse_as_documented():
    frame = node.format_frame(NONCE, "n", '{"text": "hi"}').decode()
    assert frames.parse_frame(frame, NONCE) == ("n", '{"text": "hi"}')
    assert frames.parse_frame("noise " + frame, NONCE) == ("n", '{"text": "hi"}')
    assert frames.parse_frame(frame.splitlines()[1], NONCE) == ("n", '{"text": "hi"}')  # splitlines cuts at \x1e
    assert frames.parse_frame(frame, "other") is None
    assert frames.parse_frame(frame.replace(" n ", " q "), NONCE) is None
    assert frames.parse_frame(RAY_NOISE, NONCE) is None
    spec = {"v": 1, "nonce": NONCE, "argv": ["é", "a b"]}
    assert node.decode_spec(frames.encode_spec(spec)) == spec
    standard = base64.b64encode(zlib.compress(json.dumps(spec).encode())).decode()
    assert node.decode_spec(standard) == spec
    with pytest.raises(ValueError, match="not a tacx Ray job spec"):
        node.decode_spec("not base64 at all!")
    with pytest.raises(ValueError, match="at most"):
        frames.encode_spec({"v": 1, "files": {"/x": os.urandom(200_000).hex()}})


def test_stop_signal_to_the_runner_ends_a_double_forked_tree(tmp_path):
    marker = new_marker(tmp_path)
    script = "(sleep 300 &); (setsid sleep 300 &); echo up; sleep 300"  # one grandchild in its own session
    job = Job(tmp_path, make_spec(marker, ["sh", "-c", script]))
    job.wait_for(lambda: job.output() == b"up\n", "the daughter's first line")
    job.wait_for(lambda: len(marked_pids(marker)) >= 3, "the grandchildren")
    os.kill(job.runner_pid(), signal.SIGTERM)
    end = job.finish()
    assert end["signal"] == signal.SIGTERM and end["exit_code"] is None
    assert end["leftovers"] >= 2
    assert job.proc.returncode == 128 + signal.SIGTERM
    wait_none_marked(marker)
    assert "Traceback" not in job.log.read_text()


def test_a_runner_killed_outright_leaves_nothing_behind(tmp_path):
    """Ray SIGKILLs the whole tree RAY_JOB_STOP_WAIT_TIME_S after a stop: the daughter goes with
    the runner (parent-death signal), the grandchild in its own session goes by the watcher."""
    marker = new_marker(tmp_path)
    script = "(setsid sleep 300 &); echo up; sleep 300"
    job = Job(tmp_path, make_spec(marker, ["sh", "-c", script]))
    job.wait_for(lambda: job.output() == b"up\n", "the daughter's first line")
    job.wait_for(lambda: len(marked_pids(marker)) >= 2, "the grandchild")
    os.kill(job.runner_pid(), signal.SIGKILL)
    job.proc.wait(timeout=30)
    wait_none_marked(marker)
    assert not job.payloads("x")
    scratch = Path(job.payloads("s")[0]["cwd"])
    job.wait_for(lambda: not scratch.exists(), "the scratch dir removed", runner_may_end=True)


def runs_of(spec_text: str) -> list[int]:
    """Processes (runner, watcher) started with this TACX_RAY_SPEC."""
    entry = f"TACX_RAY_SPEC={spec_text}".encode()
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and entry in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                found.append(int(name))
        except OSError:
            pass
    return found


def test_a_daughter_ignoring_sigterm_is_killed_after_grace(tmp_path):
    marker = new_marker(tmp_path)
    script = 'trap "" TERM; (sleep 300 &); echo ready; while :; do sleep 0.2; done'
    job = Job(tmp_path, make_spec(marker, ["sh", "-c", script], grace=0.7))
    job.wait_for(lambda: job.output() == b"ready\n", "the trap set")
    job.stop_like_ray()
    end = job.finish()
    assert end["signal"] == signal.SIGKILL and end["leftovers"] >= 1
    wait_none_marked(marker)


def test_a_grandchild_holding_the_pipe_does_not_keep_the_runner(tmp_path):
    marker = new_marker(tmp_path)
    job = Job(tmp_path, make_spec(marker, ["sh", "-c", "(sleep 300 &); (setsid sleep 300 &); echo done"]))
    end = job.finish(timeout=30)
    assert end["exit_code"] == 0 and end["signal"] is None
    assert end["leftovers"] >= 2
    assert job.output() == b"done\n" and job.proc.returncode == 0
    wait_none_marked(marker)


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def seeded_remote(tmp_path: Path) -> tuple[Path, str]:
    """A bare repo whose main branch has one commit (README); its sha."""
    remote, seed = tmp_path / "remote.git", tmp_path / "seed"
    git("init", "--quiet", "--bare", str(remote))
    git("--git-dir", str(remote), "symbolic-ref", "HEAD", "refs/heads/main")
    git("init", "--quiet", str(seed))
    (seed / "README").write_text("seed\n")
    git("add", "README", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "seed", cwd=seed)
    git("push", "--quiet", str(remote), "HEAD:refs/heads/main", cwd=seed)
    return remote, git("rev-parse", "HEAD", cwd=seed)


def test_clone_workspace_commits_and_pushes_then_builds_on_it(tmp_path):
    remote, seed_sha = seeded_remote(tmp_path)

    def attempt(n: int, script: str) -> tuple[Job, dict]:
        workspace = {"kind": "clone", "remote": str(remote), "branch": "tacx/7-build", "base": None,
                     "author": "tacx <tacx@localhost>", "message": f"tacx: build attempt {n} on node"}
        spec = make_spec(new_marker(tmp_path), ["sh", "-c", script], workspace=workspace,
                         env={"TACX_WORKSPACE": "/control/only/path"})
        job = Job(tmp_path, spec)
        return job, job.finish()

    job, end = attempt(1, 'test -f README && test "$TACX_WORKSPACE" = "$PWD" && echo one >> notes.txt')
    assert end["exit_code"] == 0 and end["push_error"] is None, job.log.read_text()
    first = git("--git-dir", str(remote), "rev-parse", "refs/heads/tacx/7-build")
    assert end["pushed"] == first
    assert git("--git-dir", str(remote), "show", "tacx/7-build:notes.txt") == "one"
    assert git("--git-dir", str(remote), "rev-parse", f"{first}^") == seed_sha
    assert git("--git-dir", str(remote), "log", "-1", "--format=%an <%ae>|%s", first) == \
        "tacx <tacx@localhost>|tacx: build attempt 1 on node"
    assert any("cloned" in n["text"] for n in job.payloads("n"))
    assert not os.path.exists(job.payloads("s")[0]["cwd"])

    job, end = attempt(2, "grep -q one notes.txt && echo two >> notes.txt")
    assert end["exit_code"] == 0 and end["push_error"] is None, job.log.read_text()
    assert git("--git-dir", str(remote), "show", "tacx/7-build:notes.txt") == "one\ntwo"
    assert git("--git-dir", str(remote), "rev-parse", "tacx/7-build^") == first
    assert end["pushed"] == git("--git-dir", str(remote), "rev-parse", "tacx/7-build")

    job, end = attempt(3, "true")  # nothing changed: nothing pushed
    assert end["pushed"] is None and end["push_error"] is None


def test_a_stopped_clone_attempt_pushes_nothing(tmp_path):
    remote, _ = seeded_remote(tmp_path)
    workspace = {"kind": "clone", "remote": str(remote), "branch": "tacx/8-build", "base": None,
                 "author": "tacx <tacx@localhost>", "message": "tacx: build attempt 1 on node"}
    job = Job(tmp_path, make_spec(new_marker(tmp_path), ["sh", "-c", "echo half > notes.txt; echo ready; sleep 300"],
                                  workspace=workspace))
    job.wait_for(lambda: job.output() == b"ready\n", "the daughter's file")
    job.stop_like_ray()
    end = job.finish()
    assert end["signal"] == signal.SIGTERM and end["pushed"] is None and end["push_error"] is None
    branch = subprocess.run(["git", "--git-dir", str(remote), "rev-parse", "--verify", "-q", "refs/heads/tacx/8-build"],
                            capture_output=True)
    assert branch.returncode != 0


def test_the_runners_own_errors_are_one_clear_line(tmp_path):
    missing = tmp_path / "not-mounted-here"
    job = Job(tmp_path, make_spec(new_marker(tmp_path), ["true"], workspace={"kind": "shared", "path": str(missing)}))
    end = job.finish()
    assert end["error"].startswith(f"the workspace {missing} does not exist on this node (")
    assert "needs a filesystem shared with the control machine" in end["error"]
    assert end["exit_code"] is None and job.proc.returncode == 1 and not job.payloads("s")

    job = Job(tmp_path, make_spec(new_marker(tmp_path), ["no-such-program-tacx"]))
    end = job.finish()
    assert end["error"] == "cannot start no-such-program-tacx: No such file or directory"
    assert end["exit_code"] == 127 and job.proc.returncode == 127 and not job.payloads("s")

    job = Job(tmp_path, make_spec(new_marker(tmp_path), ["true"], workspace={
        "kind": "clone", "remote": str(tmp_path / "no-repo.git"), "branch": "b", "base": None}))
    end = job.finish()
    assert end["error"].startswith(f"cannot clone {tmp_path / 'no-repo.git'} on ") and job.proc.returncode == 1

    job = Job(tmp_path, {"v": 1})
    job.proc.wait(timeout=30)
    assert job.proc.returncode == 1 and not job.frames()
    assert "tacx ray runner: TACX_RAY_SPEC has no usable nonce" in job.log.read_text()
    assert "Traceback" not in job.log.read_text()


def test_files_whose_folder_cannot_be_made_move_and_argv_follows(tmp_path):
    script = "/proc/nonexistent/tacx/run.sh"
    prompt = tmp_path / "in" / "prompt.txt"
    spec = make_spec(new_marker(tmp_path), [script, str(prompt)], path_map={script: ""},
                     files={script: '#!/bin/sh\ntest -x "$SCRIPT" && echo "script at $SCRIPT"; cat "$1"\n',
                            str(prompt): "the prompt\n"},
                     mkdirs=[str(tmp_path / "logs")], env={"SCRIPT": script})
    job = Job(tmp_path, spec)
    end = job.finish()
    assert end["exit_code"] == 0, job.log.read_text()
    first, second = job.output().decode().splitlines()
    assert first.startswith("script at /") and first.endswith("/run.sh") and script not in first
    assert second == "the prompt"
    assert prompt.stat().st_mode & 0o777 == 0o644 and (tmp_path / "logs").is_dir()
    assert any(n["text"].startswith("moved: /proc/nonexistent/tacx -> ") for n in job.payloads("n"))


def test_daughter_environment_has_the_marker_and_not_the_job_vars(tmp_path):
    marker = new_marker(tmp_path)
    stale = subprocess.Popen(["sleep", "300"], env=dict(os.environ, TACX_DAUGHTER=marker))
    try:
        spec = make_spec(marker, ["env"], env={"FROM_SPEC": "yes", "DROPPED": None})
        job = Job(tmp_path, spec, extra_env={"NODE_CREDENTIAL": "from-node", "DROPPED": "x"})
        end = job.finish()
        assert stale.wait(timeout=10) == -signal.SIGTERM  # an earlier runner's leftover, ended first
    finally:
        stale.kill()
        stale.wait()
    lines = job.output().decode().splitlines()
    assert f"TACX_DAUGHTER={marker}" in lines
    assert "FROM_SPEC=yes" in lines and "NODE_CREDENTIAL=from-node" in lines
    assert not [ln for ln in lines if ln.startswith(("TACX_RAY_SPEC=", "TACX_RAY_RUNNER=", "DROPPED="))]
    assert end["exit_code"] == 0
    assert any("earlier runner" in n["text"] for n in job.payloads("n"))


def test_live_samples_of_the_daughters_group_come_every_two_seconds(tmp_path):
    """p frames: the daughter's process group's RSS, CPU and children on its node, while it runs."""
    marker = new_marker(tmp_path)
    code = ("import subprocess, time; block = bytearray(64 * 1024 * 1024); child = subprocess.Popen(['sleep', '30']);"
            " deadline = time.time() + 1.5\nwhile time.time() < deadline: pass\ntime.sleep(3); child.kill()")
    job = Job(tmp_path, make_spec(marker, [sys.executable, "-c", code]))
    job.wait_for(lambda: len(job.payloads("p")) >= 2, "two samples", timeout=30)
    first, second = job.payloads("p")[:2]
    assert first["rss"] >= 64 * 1024 * 1024 and first["children"] == 1, first
    assert first["cpu_seconds"] >= 1.0 and second["cpu_seconds"] >= first["cpu_seconds"]
    assert second["at"] - first["at"] >= 1.9
    end = job.finish()
    assert end["exit_code"] == 0
