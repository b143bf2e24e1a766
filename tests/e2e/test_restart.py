"""kill -9 the server with sandboxes running: they keep running and are re-adopted."""

from __future__ import annotations

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from daytona.common.sandbox import SandboxState

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e


def test_kill9_keeps_sandboxes_and_state(server: Server, daytona: Daytona,
                                          sandboxes: list) -> None:
    running = [daytona.create(CreateSandboxFromSnapshotParams(labels={"restart": "1"}))
               for _ in range(2)]
    stopped = daytona.create(CreateSandboxFromSnapshotParams(labels={"restart": "1"}))
    victim = daytona.create(CreateSandboxFromSnapshotParams(labels={"restart": "1"}))
    sandboxes.extend([*running, stopped, victim])
    stopped.stop()
    runtime = server.runtime()
    marker = runtime.exec(running[0].id, ["sh", "-c", "sleep 1000 & echo $!"]).stdout.strip()

    server.kill9()
    for sb in running:
        assert runtime.status(sb.id) == "running"
    runtime.stop(victim.id, force=True)  # its container dies while the server is down
    server.start()

    client = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    for sb in running:
        assert client.get(sb.id).state == SandboxState.STARTED
    assert client.get(stopped.id).state == SandboxState.STOPPED
    assert client.get(victim.id).state == SandboxState.STOPPED
    alive = runtime.exec(running[0].id, ["sh", "-c", f"kill -0 {marker.decode()} && echo alive"])
    assert alive.stdout.strip() == b"alive"
    # Re-adopted sandboxes are fully manageable.
    adopted = client.get(running[1].id)
    adopted.stop()
    assert adopted.state == SandboxState.STOPPED
    adopted.start()
    assert adopted.state == SandboxState.STARTED
    revived = client.get(victim.id)
    revived.start()
    assert revived.state == SandboxState.STARTED


def test_container_dying_under_a_running_server_is_reported(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    import time

    sb = daytona.create()
    sandboxes.append(sb)
    server.runtime().stop(sb.id, force=True)  # as if its init had been killed
    deadline = time.monotonic() + 30
    while daytona.get(sb.id).state != SandboxState.STOPPED:
        assert time.monotonic() < deadline, "still reported started"
        time.sleep(0.2)
    sb.start()
    assert sb.process.exec("echo back").result == "back\n"
