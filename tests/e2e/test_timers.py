"""Lifecycle timers on a real server whose lifecycle minute lasts one second."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, DaytonaNotFoundError
from daytona.common.sandbox import SandboxState

from tests.e2e.conftest import KEY, Server, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("cove-timers"), 2,
                        {"COVE_MINUTE_SECONDS": "1"}) as srv:
        yield srv


@pytest.fixture
def client(fast_server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=fast_server.api_url))


def _wait_state(client: Daytona, sandbox_id: str, state: SandboxState, within: float) -> float:
    start = time.monotonic()
    while client.get(sandbox_id).state != state:
        assert time.monotonic() - start < within, f"not {state} after {within}s"
        time.sleep(0.2)
    return time.monotonic() - start


def _gone(client: Daytona, sandbox_id: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            client.get(sandbox_id)
        except DaytonaNotFoundError:
            return
        time.sleep(0.2)
    raise AssertionError(f"{sandbox_id} still exists after {within}s")


def test_auto_stop_fires_and_respects_disable_and_activity(client: Daytona) -> None:
    idle = client.create(CreateSandboxFromSnapshotParams(auto_stop_interval=2))
    never = client.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    busy = client.create(CreateSandboxFromSnapshotParams(auto_stop_interval=3))
    try:
        # A background process inside does not count as activity.
        idle.process.exec("nohup sleep 600 >/dev/null 2>&1 &")
        for _ in range(8):  # toolbox calls every 0.5 s keep `busy` alive
            busy.process.exec("true")
            time.sleep(0.5)
        assert client.get(idle.id).state == SandboxState.STOPPED
        assert client.get(busy.id).state == SandboxState.STARTED
        busy.refresh_activity()
        assert client.get(busy.id).state == SandboxState.STARTED
        _wait_state(client, busy.id, SandboxState.STOPPED, within=10)
        assert client.get(never.id).state == SandboxState.STARTED
        never.set_autostop_interval(1)  # changed on a live sandbox
        _wait_state(client, never.id, SandboxState.STOPPED, within=6)
    finally:
        for sb in (idle, never, busy):
            sb.delete()


def test_auto_archive_and_auto_delete(client: Daytona) -> None:
    archived = client.create(CreateSandboxFromSnapshotParams(auto_archive_interval=1))
    deleted = client.create(CreateSandboxFromSnapshotParams(auto_delete_interval=2))
    try:
        archived.process.exec("echo keep > /home/daytona/f")
        archived.stop()
        deleted.stop()
        _wait_state(client, archived.id, SandboxState.ARCHIVED, within=8)
        _gone(client, deleted.id, within=8)
        archived.start()
        assert archived.process.exec("cat /home/daytona/f").result == "keep\n"
    finally:
        archived.delete()


def test_ephemeral_sandbox_disappears_when_stopped(client: Daytona) -> None:
    sb = client.create(CreateSandboxFromSnapshotParams(ephemeral=True))
    sb.stop()
    with pytest.raises(DaytonaNotFoundError):
        client.get(sb.id)


def test_timers_survive_kill9(fast_server: Server, client: Daytona) -> None:
    sb = client.create(CreateSandboxFromSnapshotParams(auto_stop_interval=2))
    try:
        fast_server.kill9()
        time.sleep(3)  # the timer falls due while the server is down
        assert fast_server.runtime().status(sb.id) == "running"
        fast_server.start()
        took = _wait_state(client, sb.id, SandboxState.STOPPED, within=5)
        assert took < 5
    finally:
        sb.delete()
