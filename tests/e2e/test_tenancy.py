"""A second organization, through the official SDK and plain HTTP against a real server,
reaches nothing of the first: its sandboxes, snapshots (also as an image or a Dockerfile's
base), volumes, previews, toolbox and Socket.IO events."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest
import socketio
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    Image,
)
from daytona.common.sandbox import SandboxState

from tests.e2e.conftest import KEY, Server, run_ok

pytestmark = pytest.mark.e2e


def _key(server: Server, organization: str) -> str:
    return server.org_key(organization)


@pytest.fixture(scope="module")
def other_key(server: Server) -> str:
    return _key(server, "tenancy-other")


@pytest.fixture
def other(server: Server, other_key: str) -> Daytona:
    return Daytona(DaytonaConfig(api_key=other_key, api_url=server.api_url))


def _refused(other: Daytona, params: object) -> None:
    """Creating must fail, and nothing is created (deleted if it was, so nothing leaks)."""
    try:
        made = other.create(params)  # type: ignore[arg-type]
    except DaytonaError:
        return
    made.delete()
    raise AssertionError(f"created from another organization's snapshot: {params}")


def test_another_organization_reaches_nothing(server: Server, daytona: Daytona, other: Daytona,
                                              other_key: str, sandboxes: list) -> None:  # fmt: skip
    sb = daytona.create(CreateSandboxFromSnapshotParams(name="tenancy-a"))
    sandboxes.append(sb)
    run_ok(sb, "echo secret > /home/daytona/secret.txt")
    sb.create_snapshot("tenancy-a-snap", timeout=300)  # a capture on a loaded host
    snap = daytona.snapshot.get("tenancy-a-snap")
    vol = daytona.volume.get("tenancy-a-vol", create=True)
    signed = sb.create_signed_preview_url(3000, expires_in_seconds=600)

    for get in (lambda: other.get(sb.id), lambda: other.get("tenancy-a"),
                lambda: other.snapshot.get(snap.id), lambda: other.snapshot.get(snap.name),
                lambda: other.volume.get(vol.name)):  # fmt: skip
        with pytest.raises(DaytonaNotFoundError):
            get()
    for ref in (snap.id, snap.name):
        _refused(other, CreateSandboxFromSnapshotParams(snapshot=ref))
        _refused(other, CreateSandboxFromImageParams(image=ref))
        _refused(other, CreateSandboxFromImageParams(
            image=Image.base(ref).run_commands("cat /home/daytona/secret.txt")))  # fmt: skip
    assert list(other.list()) == [] and other.volume.list() == []

    headers = {"Authorization": f"Bearer {other_key}"}
    for method, url in [
        ("POST", f"{server.url}/toolbox/{sb.id}/process/execute"),
        ("GET", f"{server.api_url}/sandbox/{sb.id}/ports/3000/preview-url"),
        ("POST", f"{server.api_url}/sandbox/{sb.id}/ports/3000/signed-preview-url/"
                 f"{signed.token}/expire"),
        ("POST", f"{server.api_url}/sandbox/{sb.id}/stop"),
        ("DELETE", f"{server.api_url}/snapshots/{snap.id}"),
        ("DELETE", f"{server.api_url}/volumes/{vol.id}"),
        ("DELETE", f"{server.api_url}/sandbox/{sb.id}"),
    ]:  # fmt: skip
        r = httpx.request(method, url, headers=headers, json={"command": "id"}, timeout=30)
        assert r.status_code == 404, (method, url, r.text)
    r = httpx.get(f"{server.url}/preview/{sb.id}/3000/", headers=headers)
    assert r.status_code == 401

    assert daytona.get(sb.id).state == SandboxState.STARTED
    assert daytona.snapshot.get(snap.id).state == "active"
    assert daytona.volume.get(vol.name).id == vol.id
    assert run_ok(sb, "cat /home/daytona/secret.txt") == "secret\n"
    # The signed URL was not expired (no server listens: 502, not 404).
    assert httpx.get(signed.url).status_code == 502


class Listener:
    """A Socket.IO connection like the SDK's, recording the sandbox ids it hears of."""

    def __init__(self, server: Server, key: str, query: str = "") -> None:
        self.ids: list[str] = []
        self.started: dict[str, threading.Event] = {}
        self.client = socketio.Client()
        self.client.on("sandbox.created", lambda data: self.ids.append(data["id"]))
        self.client.on("sandbox.state.updated", self._updated)
        self.client.connect(f"{server.url}{query}", socketio_path="/api/socket.io",
                            transports=["websocket"], auth={"token": key})  # fmt: skip

    def _updated(self, data: dict) -> None:
        sandbox_id = data["sandbox"]["id"]
        self.ids.append(sandbox_id)
        if data["newState"] == "started":
            self.started.setdefault(sandbox_id, threading.Event()).set()

    def wait_started(self, sandbox_id: str) -> None:
        assert self.started.setdefault(sandbox_id, threading.Event()).wait(30)


def test_socketio_events_reach_only_the_owning_organization(
    server: Server, daytona: Daytona, other: Daytona, other_key: str, sandboxes: list
) -> None:
    mine = Listener(server, KEY)
    cleanup: list[Callable[[], None]] = [mine.client.disconnect]
    try:
        sb = daytona.create()
        sandboxes.append(sb)
        # The other organization connects claiming the first one's id (the SDK sends it).
        theirs = Listener(server, other_key, f"?organizationId={sb.organization_id}")
        cleanup.append(theirs.client.disconnect)
        sb.stop()
        sb.start()
        mine.wait_started(sb.id)
        own = other.create()
        cleanup.append(own.delete)
        # Events of one connection arrive in order: the other organization's own
        # sandbox's come after any of the first one's it could have been sent.
        theirs.wait_started(own.id)
        assert set(theirs.ids) == {own.id}
        assert own.id not in mine.ids
    finally:
        for undo in reversed(cleanup):
            undo()
