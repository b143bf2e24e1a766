"""Pause, resume and fork through the official daytona SDK against a real server."""

from __future__ import annotations

import time

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona
from daytona.common.sandbox import SandboxState

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

# Holds a random secret and a counter in memory only, and keeps reporting both.
HOLDER = r"""
import os, time
secret, n = os.urandom(8).hex(), 0
while True:
    n += 1
    with open('/tmp/beat.tmp', 'w') as f:
        f.write(f'{os.getpid()} {secret} {n}')
    os.replace('/tmp/beat.tmp', '/tmp/beat')
    time.sleep(0.05)
"""


def _sh(server: Server, sandbox_id: str, script: str) -> str:
    result = server.runtime().exec(sandbox_id, ["sh", "-c", script], user="root", timeout=30)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


def _beat(server: Server, sandbox_id: str) -> tuple[str, str, int]:
    pid, secret, n = _sh(server, sandbox_id, "cat /tmp/beat").split()
    return pid, secret, int(n)


def test_pause_keeps_memory_and_pid(server: Server, daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    _sh(server, sb.id, f"cat > /tmp/holder.py <<'EOF'\n{HOLDER}\nEOF\n"
        "setsid python3 /tmp/holder.py >/dev/null 2>&1 < /dev/null &")  # fmt: skip
    deadline = time.monotonic() + 10
    while _sh(server, sb.id, "test -f /tmp/beat && echo y || true").strip() != "y":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    sb.pause()
    assert sb.state == SandboxState.PAUSED
    assert daytona.get(sb.id).state == SandboxState.PAUSED
    disk_path = server.data_dir / "sandboxes" / sb.id / "disk" / "upper" / "tmp" / "beat"
    frozen = disk_path.read_text().split()
    time.sleep(0.5)
    assert disk_path.read_text().split() == frozen, "a paused process kept running"

    sb.start()
    assert sb.state == SandboxState.STARTED
    deadline = time.monotonic() + 10  # (a thawed process runs again when the host lets it)
    while (beat := _beat(server, sb.id))[2] <= int(frozen[2]) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid, secret, n = beat
    assert (pid, secret) == (frozen[0], frozen[1])
    assert n > int(frozen[2])  # it went on counting from where it was

    sb.pause()
    sb.stop()  # a paused sandbox can be stopped (and then started afresh)
    assert sb.state == SandboxState.STOPPED
    sb.start()
    assert _sh(server, sb.id, "test -f /tmp/holder.py && echo kept").strip() == "kept"
    sb.pause()
    sb.delete()
    sandboxes.remove(sb)


def test_fork_copies_files_and_is_independent(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams(env_vars={"A": "1"}, labels={"l": "x"}))
    sandboxes.append(sb)
    _sh(server, sb.id, "echo original > /home/daytona/f.txt; rm /etc/issue")

    child = sb.fork(name="e2e-fork")
    sandboxes.append(child)
    assert child.id != sb.id and child.name == "e2e-fork"
    assert child.state == SandboxState.STARTED
    assert child.env == {"A": "1"} and child.labels["l"] == "x"
    assert _sh(server, child.id, "cat /home/daytona/f.txt") == "original\n"
    assert _sh(server, child.id, "test -e /etc/issue || echo gone").strip() == "gone"
    assert _sh(server, child.id, "hostname").strip() == "e2e-fork"

    _sh(server, child.id, "echo changed > /home/daytona/f.txt; touch /only-in-fork")
    _sh(server, sb.id, "echo source > /home/daytona/g.txt")
    assert _sh(server, sb.id, "cat /home/daytona/f.txt") == "original\n"
    assert _sh(server, sb.id, "test -e /only-in-fork || echo no").strip() == "no"
    assert _sh(server, child.id, "test -e /home/daytona/g.txt || echo no").strip() == "no"

    sb.pause()  # a paused source forks too, and stays paused
    second = sb.fork()
    sandboxes.append(second)
    assert _sh(server, second.id, "cat /home/daytona/g.txt") == "source\n"
    assert daytona.get(sb.id).state == SandboxState.PAUSED
