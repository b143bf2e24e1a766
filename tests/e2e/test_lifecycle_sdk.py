"""The sandbox lifecycle through the official daytona SDK against a real server."""

from __future__ import annotations

import threading

import pytest
import socketio
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaAuthenticationError,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaValidationError,
    ListSandboxesQuery,
    Resources,
)
from daytona.common.sandbox import SandboxState

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e


def _sh(server: Server, sandbox_id: str, script: str, user: str = "root") -> str:
    result = server.runtime().exec(sandbox_id, ["sh", "-c", script], user=user, timeout=30)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


def test_full_lifecycle_sync(server: Server, daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create(
        CreateSandboxFromSnapshotParams(
            language="python", labels={"agent_id": "e2e-sync"}, env_vars={"X": "1"},
            auto_stop_interval=15, name="e2e-sync",
        )
    )
    sandboxes.append(sb)
    assert sb.state == SandboxState.STARTED
    assert (sb.cpu, sb.memory, sb.disk) == (1, 1, 3)
    assert sb.env == {"X": "1"} and sb.labels["code-toolbox-language"] == "python"
    assert _sh(server, sb.id, "hostname").strip() == "e2e-sync"
    _sh(server, sb.id, "echo kept > /home/daytona/note.txt; rm /etc/issue")

    assert daytona.get(sb.id).name == "e2e-sync" == daytona.get("e2e-sync").name
    found = list(daytona.list(ListSandboxesQuery(labels={"agent_id": "e2e-sync"})))
    assert [s.id for s in found] == [sb.id]
    assert list(daytona.list(ListSandboxesQuery(labels={"agent_id": "nobody"}))) == []

    sb.stop()
    assert sb.state == SandboxState.STOPPED
    sb.start()
    assert _sh(server, sb.id, "cat /home/daytona/note.txt") == "kept\n"
    sb.archive()
    sb.refresh_data()
    assert sb.state == SandboxState.ARCHIVED
    sb.start()
    assert sb.state == SandboxState.STARTED
    assert _sh(server, sb.id, "cat /home/daytona/note.txt; test ! -e /etc/issue && echo gone") \
        == "kept\ngone\n"

    boot = _sh(server, sb.id, "cut -d' ' -f22 /proc/1/stat")
    sb.resize(Resources(cpu=2, memory=2))
    assert (sb.cpu, sb.memory, sb.state) == (2, 2, SandboxState.STARTED)
    limit = _sh(server, sb.id, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
                " || cat /sys/fs/cgroup/memory.max")
    assert int(limit) == 2 * 1024**3
    assert _sh(server, sb.id, "cut -d' ' -f22 /proc/1/stat") == boot  # not restarted
    with pytest.raises(DaytonaValidationError, match="stopped"):
        sb.resize(Resources(disk=5))
    sb.stop()
    sb.resize(Resources(cpu=1, memory=1, disk=5))
    assert (sb.cpu, sb.disk) == (1, 5)
    sb.start()
    size_kb = int(_sh(server, sb.id, "df -k --output=size / | tail -1"))
    assert size_kb > 4 * 1024 * 1024
    assert _sh(server, sb.id, "cat /home/daytona/note.txt") == "kept\n"

    sb.delete()
    with pytest.raises(DaytonaNotFoundError):
        daytona.get(sb.id)
    assert sb.id not in server.runtime().list_ids()


async def test_full_lifecycle_async(server: Server, async_daytona) -> None:
    sb = await async_daytona.create(
        CreateSandboxFromSnapshotParams(labels={"agent_id": "e2e-async"})
    )
    try:
        assert sb.state == SandboxState.STARTED
        got = await async_daytona.get(sb.id)
        assert got.id == sb.id
        listed = [s.id async for s in async_daytona.list(
            ListSandboxesQuery(labels={"agent_id": "e2e-async"}))]
        assert listed == [sb.id]
        await sb.stop()
        assert sb.state == SandboxState.STOPPED
        await sb.start()
        assert sb.state == SandboxState.STARTED
        await sb.archive()
        await sb.recover()
        assert sb.state == SandboxState.STARTED
        await sb.resize(Resources(cpu=2, memory=3))
        assert (sb.cpu, sb.memory) == (2, 3)
    finally:
        await sb.delete()
    with pytest.raises(DaytonaNotFoundError):
        await async_daytona.get(sb.id)


def test_error_cases(server: Server, daytona: Daytona) -> None:
    with pytest.raises(DaytonaNotFoundError):
        daytona.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(DaytonaValidationError, match="exceeds the per-sandbox limit"):
        daytona.create(CreateSandboxFromImageParams(
            image="cove-default", resources=Resources(cpu=16)))
    with pytest.raises(DaytonaValidationError, match="docker.io is not allowed on this server"):
        daytona.create(CreateSandboxFromImageParams(image="python:3.12-slim"))  # (test servers)
    with pytest.raises(DaytonaAuthenticationError):
        Daytona(DaytonaConfig(api_key="wrong", api_url=server.api_url)).get("x")
    assert list(daytona.list(ListSandboxesQuery(labels={"never": "created"}))) == []
    assert server.runtime().list_ids() == {
        s.id for s in daytona.list()
    }


def test_create_from_local_image_with_resources(daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create(CreateSandboxFromImageParams(
        image="cove-default", resources=Resources(cpu=2, memory=2, disk=4)))
    sandboxes.append(sb)
    assert (sb.cpu, sb.memory, sb.disk, sb.state) == (2, 2, 4, SandboxState.STARTED)


def test_socketio_pushes_events_to_the_owning_organization(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    received: list[tuple[str, dict]] = []
    got_started = threading.Event()
    client = socketio.Client()

    @client.on("sandbox.created")
    def created(data: dict) -> None:
        received.append(("created", data))

    @client.on("sandbox.state.updated")
    def updated(data: dict) -> None:
        received.append(("updated", data))
        if data["newState"] == "started":
            got_started.set()

    client.connect(server.url, socketio_path="/api/socket.io", transports=["websocket"],
                   auth={"token": KEY})
    try:
        sb = daytona.create()
        sandboxes.append(sb)
        assert got_started.wait(10)
    finally:
        client.disconnect()
    assert received[0][0] == "created" and received[0][1]["id"] == sb.id
    started = [d for kind, d in received if kind == "updated" and d["newState"] == "started"]
    assert started[0]["sandbox"]["id"] == sb.id and started[0]["sandbox"]["state"] == "started"

    intruder = socketio.Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        intruder.connect(server.url, socketio_path="/api/socket.io",
                         transports=["websocket"], auth={"token": "wrong"})


def test_error_state_is_reported_not_started(server: Server, daytona: Daytona,
                                             sandboxes: list) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    sb.stop()
    runtime = server.runtime()
    disk = server.data_dir / "sandboxes" / sb.id / "disk.img"
    assert disk.exists()
    disk.rename(disk.with_suffix(".moved"))
    try:
        with pytest.raises(DaytonaError, match="error"):
            sb.start()
        sb.refresh_data()
        assert sb.state == SandboxState.ERROR and sb.error_reason
    finally:
        disk.with_suffix(".moved").rename(disk)
    sb.recover()
    assert sb.state == SandboxState.STARTED
    assert runtime.status(sb.id) == "running"
