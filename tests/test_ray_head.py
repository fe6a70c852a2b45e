"""The test Ray head (tests/rayhead.py) is a real one: jobs run on it with this venv's python,
their exit codes and logs come back, and stopping it leaves none of its processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, wait_for
from tests.rayhead import RayHead, head_processes, require_ray



def finished(client, submission_id: str):
    info = client.get_job_info(submission_id)
    return info if info.status.is_terminal() else None


def test_a_job_runs_on_the_head_and_stopping_leaves_no_process() -> None:
    require_ray()
    from ray.job_submission import JobStatus, JobSubmissionClient

    head = RayHead()
    began = time.monotonic()
    head.start()
    try:
        started_in = time.monotonic() - began
        temp_dir = head.temp_dir
        assert head.processes(), "a started head has processes"
        client = JobSubmissionClient(head.address)
        began = time.monotonic()
        client.submit_job(entrypoint="echo hi; exit 3", submission_id="hi-exit-3")
        info = wait_for(lambda: finished(client, "hi-exit-3"), timeout=60, interval=0.1, what="the job to end")
        job_took = time.monotonic() - began
        assert info.status == JobStatus.FAILED
        assert info.driver_exit_code == 3
        log = client.get_job_logs("hi-exit-3")
        assert "hi" in log.splitlines()

        client.submit_job(entrypoint='python3 -c "import sys; print(sys.prefix)"', submission_id="which-python")
        wait_for(lambda: finished(client, "which-python"), timeout=60, interval=0.1, what="the job to end")
        assert sys.prefix in client.get_job_logs("which-python").splitlines()
        print(f"\nray head started in {started_in:.1f} s; a trivial job took {job_took:.2f} s from submit to its end")
    finally:
        head.stop()
    assert head_processes(temp_dir) == []
    assert head.temp_dir is None


def test_a_head_restarts_on_new_ports_and_the_old_one_is_gone(ray_head: RayHead) -> None:
    from ray.job_submission import JobSubmissionClient

    old_dir, old_address = ray_head.temp_dir, ray_head.address
    ray_head.restart()
    assert head_processes(old_dir) == []
    assert ray_head.address != old_address
    JobSubmissionClient(ray_head.address).list_jobs()
    with pytest.raises(ConnectionError):
        JobSubmissionClient(old_address)


def test_stop_is_safe_before_start_and_twice() -> None:
    head = RayHead()
    head.stop()
    head.stop()
    assert head.processes() == []


def test_a_head_whose_test_process_is_killed_is_ended_by_its_watchdog(tmp_path) -> None:
    require_ray()
    owner = subprocess.run(
        [sys.executable, "-c", OWNER_KILLED_AFTER_START, str(REPO)],
        capture_output=True, text=True, timeout=180,
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    temp_dir = owner.stdout.split()[-1]
    assert temp_dir.startswith("/tmp/tr")
    wait_for(lambda: not head_processes(temp_dir) and not os.path.exists(temp_dir), timeout=60, interval=0.5,
             what=f"the watchdog to end the head in {temp_dir}")


# Starts a head, says where, and dies the hard way: no atexit, no fixture teardown.
OWNER_KILLED_AFTER_START = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from tests.rayhead import RayHead
head = RayHead(num_cpus=1).start()
assert head.processes()
print(head.temp_dir, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_head_that_cannot_start_says_why_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    require_ray()
    import tests.rayhead as rayhead

    taken = socket.socket()
    taken.bind(("", 0))
    taken.listen(1)
    picked = rayhead.free_ports
    monkeypatch.setattr(rayhead, "free_ports", lambda count: [taken.getsockname()[1]] + picked(count - 1))
    head = RayHead(num_cpus=1, start_deadline=20)
    try:
        with pytest.raises(rayhead.RayHeadError, match="did not start") as failed:
            head.start()
    finally:
        taken.close()
    assert "gcs_server" in str(failed.value)
    assert head.temp_dir is None
    assert head_processes(failed.value.temp_dir) == []
    assert not os.path.exists(failed.value.temp_dir)
