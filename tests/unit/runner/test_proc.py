"""Waiting for host commands: at their exit, not at the next poll (``proc.wait``, ``call``).

Before Python 3.14, ``Popen.wait(timeout)`` sleeps 1, 2, 4, 8, 16 ms between checks,
so an 11 ms ``crun run`` answered after 16 ms; these wait on a pidfd instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cove.runner.host import proc


@pytest.fixture
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait that polls sleeps between its checks: make that fail the test."""

    def sleep(seconds: float) -> None:
        raise AssertionError(f"polled (slept {seconds} s)")

    monkeypatch.setattr(time, "sleep", sleep)


def test_wait_returns_the_exit_code_without_polling(no_polling: None) -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.05); exit(3)"])
    assert proc.wait(process, 10) == 3
    assert process.returncode == 3


def test_stock_popen_wait_polls_which_is_what_this_avoids(no_polling: None) -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.05)"])
    try:
        with pytest.raises(AssertionError, match="polled"):
            process.wait(10)
    finally:
        process.kill()
        process.communicate()


def test_wait_times_out_and_leaves_the_process_running() -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(process, 0.05)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_wait_on_a_process_reaped_already() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    assert proc.wait(process, 1) == 0
    other = subprocess.Popen(["false"])
    os.waitpid(other.pid, 0)  # reaped behind Popen's back: no pidfd can be had
    assert proc.wait(other, 1) == 0  # (Popen reports what it can: the pid is gone)


def test_call_returns_the_code_and_passes_popen_arguments(no_polling: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as f:
        code = proc.call(["sh", "-c", "echo hi; exit 5"], timeout=10, stdout=f,
                         stdin=subprocess.DEVNULL)  # fmt: skip
    assert code == 5
    assert out.read_text() == "hi\n"


def test_call_kills_what_outlives_its_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        proc.call(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=0.5)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
